"""An alarm's context: what a responder needs on the way to the door.

The resident's conditions, medications and allergies, the last 10 minutes of vitals, the last known location, the
home address and key contacts. The static part comes from the registry (``ResidentBook``); the live part is kept
here, per resident, in bounded memory, from the same messages the rules see, so building a context costs no query
on the paging path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from alerts.directory import ResidentBook
from alerts.models import VitalsObservation

VITALS_WINDOW_S = 600.0
MAX_VITALS_KEPT = 120  # a reading every 5 s for 10 minutes; older or denser readings are thinned
MIN_SPACING_S = VITALS_WINDOW_S / MAX_VITALS_KEPT


@dataclass(frozen=True, slots=True)
class Location:
    """Where the resident was last seen, and how sure the fix was."""

    lat: float
    lon: float
    accuracy_m: float | None
    ts: float
    source: str  # "gps" or "geofence_exit"


class ContextBook:
    """The live part of alarm contexts, per resident; `context()` merges it with the registry's card."""

    def __init__(self, residents: ResidentBook) -> None:
        self.residents = residents
        self._vitals: dict[str, deque[tuple[float, dict[str, float]]]] = {}
        self._locations: dict[str, Location] = {}

    def add_vitals(self, obs: VitalsObservation) -> None:
        """Keep a reading (at most one per 5 s per resident, for 10 minutes)."""
        values = {
            name: value
            for name, value in (
                ("hr_bpm", obs.hr_bpm),
                ("spo2_pct", obs.spo2_pct),
                ("skin_temp_c", obs.skin_temp_c),
                ("bp_systolic_mmhg", obs.bp_systolic_mmhg),
                ("bp_diastolic_mmhg", obs.bp_diastolic_mmhg),
            )
            if value is not None
        }
        if not values:
            return
        kept = self._vitals.get(obs.resident_id)
        if kept is None:
            kept = self._vitals[obs.resident_id] = deque(maxlen=MAX_VITALS_KEPT)
        if kept and obs.ts - kept[-1][0] < MIN_SPACING_S:
            return
        kept.append((obs.ts, values))

    def add_location(self, resident_id: str, location: Location) -> None:
        """Remember the newest location of a resident."""
        old = self._locations.get(resident_id)
        if old is None or location.ts >= old.ts:
            self._locations[resident_id] = location

    def recent_vitals(self, resident_id: str, now: float) -> list[dict[str, float]]:
        """The readings of the last 10 minutes, oldest first, each with its time."""
        kept = self._vitals.get(resident_id, ())
        return [{"ts": ts, **values} for ts, values in kept if now - ts <= VITALS_WINDOW_S]

    def context(self, resident_id: str, home_id: str, now: float) -> Mapping[str, object]:
        """Everything a responder needs about this resident, as plain data (stored with the alarm).

        Keys are those ``alerts.notify.render`` shows: resident_name, timezone, conditions, medications,
        allergies, vitals (last 10 minutes), location, address, contacts; plus age, sex, phone and registered.
        """
        card = self.residents.card(resident_id)
        location = self._locations.get(resident_id)
        profile = self.residents.profile(resident_id, home_id)
        result: dict[str, object] = {
            "resident_id": resident_id,
            "home_id": home_id,
            "timezone": profile.timezone,
            "vitals": self.recent_vitals(resident_id, now),
            "location": None
            if location is None
            else {
                "lat": location.lat,
                "lon": location.lon,
                "accuracy_m": location.accuracy_m,
                "ts": location.ts,
                "source": location.source,
            },
        }
        if card is None:
            result["registered"] = False
            return result
        result.update(
            registered=True,
            resident_name=card.name,
            age=card.age,
            sex=card.sex,
            phone=card.phone,
            conditions=list(card.conditions),
            medications=list(card.medications),
            allergies=list(card.allergies),
            address=card.address,
            home_location=None if card.home_location is None else list(card.home_location),
            contacts=[dict(c) for c in card.contacts],
        )
        return result
