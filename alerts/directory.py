"""What the alerts service knows of residents from the registry: who wears which device, their limits, their card.

Loaded whole (a county's few thousand residents fit in memory) at start and again every ``refresh_s`` in an
executor, never on the event loop. A device the registry does not know still raises alarms: its events name the
resident when the edge knows it, and otherwise the device id stands for the resident, so a fall is never dropped
because the paperwork is behind.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from alerts.models import ResidentProfile
from careloop.registry.models import Device, Home, Resident
from careloop.registry.store import Registry


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """A device's home, its wearer (None for home sensors) and what kind of device it is."""

    home_id: str
    resident_id: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class ResidentCard:
    """The static part of an alarm's context: who the resident is and whom to call."""

    name: str
    age: int | None
    sex: str
    phone: str | None
    conditions: tuple[str, ...]
    medications: tuple[str, ...]
    allergies: tuple[str, ...]
    address: str | None
    home_location: tuple[float, float] | None
    contacts: tuple[dict[str, object], ...]


@dataclass(slots=True)
class Snapshot:
    """One load of the registry."""

    devices: dict[str, DeviceEntry] = field(default_factory=dict)
    profiles: dict[str, ResidentProfile] = field(default_factory=dict)
    cards: dict[str, ResidentCard] = field(default_factory=dict)
    wearables: dict[str, tuple[str, ...]] = field(default_factory=dict)  # resident -> their wearable devices


def condition_key(text: str) -> str:
    """A health record's condition as rule files name it: "Atrial fibrillation" -> "atrial_fibrillation"."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _age(birth: dt.date | None, today: dt.date) -> int | None:
    if birth is None:
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _f(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def load_snapshot(registry: Registry, *, today: dt.date | None = None) -> Snapshot:
    """Read every resident, device and health profile (a handful of queries, whatever the count)."""
    today = today or dt.date.today()
    snap = Snapshot()
    with registry.session() as session:
        homes = {h.id: h for h in session.scalars(select(Home))}
        residents = session.scalars(
            select(Resident).options(selectinload(Resident.health_profile), selectinload(Resident.family))
        ).all()
        by_id = {r.id: r for r in residents}
        for device in session.scalars(select(Device).where(Device.active)):
            home = homes.get(device.home_id)
            if home is None:
                continue
            wearer = by_id[device.resident_id].code if device.resident_id in by_id else None
            snap.devices[device.code] = DeviceEntry(home.code, wearer, device.kind.value)
        wearables: dict[str, list[str]] = {}
        for code, entry in snap.devices.items():
            if entry.resident_id is not None and entry.kind in ("bracelet", "belt"):
                wearables.setdefault(entry.resident_id, []).append(code)
        for resident in by_id.values():
            home = homes[resident.home_id]
            hp = resident.health_profile
            snap.profiles[resident.code] = ResidentProfile(
                resident_id=resident.code,
                home_id=home.code,
                status=resident.status.value,
                conditions=tuple(condition_key(c) for c in hp.conditions) if hp else (),
                spo2_scale=hp.spo2_scale if hp else 1,
                hr_min_bpm=_f(hp.hr_min_bpm) if hp else None,
                hr_max_bpm=_f(hp.hr_max_bpm) if hp else None,
                spo2_min_pct=_f(hp.spo2_min_pct) if hp else None,
                skin_temp_min_c=_f(hp.skin_temp_min_c) if hp else None,
                skin_temp_max_c=_f(hp.skin_temp_max_c) if hp else None,
                bp_systolic_min_mmhg=_f(hp.bp_systolic_min_mmhg) if hp else None,
                bp_systolic_max_mmhg=_f(hp.bp_systolic_max_mmhg) if hp else None,
                bp_diastolic_min_mmhg=_f(hp.bp_diastolic_min_mmhg) if hp else None,
                bp_diastolic_max_mmhg=_f(hp.bp_diastolic_max_mmhg) if hp else None,
                timezone=home.timezone,
            )
            location = (home.latitude, home.longitude) if home.latitude is not None and home.longitude else None
            snap.cards[resident.code] = ResidentCard(
                name=resident.name,
                age=_age(resident.birth_date, today),
                sex=resident.sex.value,
                phone=resident.phone,
                conditions=tuple(hp.conditions) if hp else (),
                medications=tuple(hp.medications) if hp else (),
                allergies=tuple(hp.allergies) if hp else (),
                address=home.address,
                home_location=location,
                contacts=tuple(
                    {
                        "name": f.name,
                        "relation": f.relation,
                        "phone": f.phone,
                        "emergency_contact": f.emergency_contact,
                    }
                    for f in sorted(resident.family, key=lambda f: (f.priority, f.name))
                ),
            )
        snap.wearables = {r: tuple(sorted(devs)) for r, devs in wearables.items()}
    return snap


class ResidentBook:
    """The registry's residents and devices as the alerts service needs them; look-ups are dict reads."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot or Snapshot()

    def replace(self, snapshot: Snapshot) -> None:
        """Swap in a fresh load (one assignment: readers see the old or the new, never half)."""
        self.snapshot = snapshot

    def device(self, device_id: str) -> DeviceEntry | None:
        """What the registry says of a device, or None when it does not know it."""
        return self.snapshot.devices.get(device_id)

    def wearer(self, device_id: str, home_id: str) -> str:
        """The resident a device's readings belong to: its registered wearer, else the device itself."""
        entry = self.snapshot.devices.get(device_id)
        if entry is not None and entry.resident_id is not None:
            return entry.resident_id
        return device_id

    def profile(self, resident_id: str, home_id: str) -> ResidentProfile:
        """The resident's limits and status; defaults (in the home's reported id) for one the registry lacks."""
        profile = self.snapshot.profiles.get(resident_id)
        return profile if profile is not None else ResidentProfile(resident_id=resident_id, home_id=home_id)

    def card(self, resident_id: str) -> ResidentCard | None:
        """The resident's static alarm context, when the registry knows them."""
        return self.snapshot.cards.get(resident_id)

    def residents(self) -> list[str]:
        """Every resident the registry knows."""
        return list(self.snapshot.profiles)
