"""The edge agent's data: a home's configuration, what its detectors produce, and the fall detector's contract.

The pure cores (`edge.falls`, `edge.monitor`) take and return these; the async shell (`edge.service`) moves them
between MQTT, the outbox and the uplink. Wire items (events, vitals summaries, device health) are the contract's
own models from `careloop.messages`, so what a detector produces is exactly what travels upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from typing import Annotated, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from careloop import messages as m
from careloop.topics import ID_PATTERN

Id = Annotated[str, Field(pattern=ID_PATTERN)]
Placement = Literal["wrist", "waist"]
DeviceKind = Literal["bracelet", "belt", "pir", "thermopile", "bed_sensor", "chair_sensor"]


class DeviceConfig(BaseModel):
    """One device of the home, as the registry knows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: Id
    kind: DeviceKind
    resident_id: Id | None = None  # the wearer of a bracelet or belt
    room: str | None = None  # where an infrared or bed sensor is
    placement: Placement | None = None  # bracelet: wrist, belt: waist


class GeoZone(BaseModel):
    """The home zone for the GPS geofence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_m: float = Field(100.0, gt=0)


class HomeConfig(BaseModel):
    """Everything the edge needs to watch one home; per-home limits have defaults a care programme would use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home_id: Id
    timezone: str = "Asia/Shanghai"
    devices: tuple[DeviceConfig, ...] = ()
    zone: GeoZone | None = None
    night_start: time = time(22, 0)
    night_end: time = time(6, 0)
    inactivity_day_s: float = Field(4 * 3600.0, gt=0)  # no motion anywhere for this long by day: inactivity
    inactivity_night_s: float = Field(10 * 3600.0, gt=0)  # at night (asleep) the limit is longer
    bed_exit_return_s: float = Field(1800.0, gt=0)  # out of bed at night without return for this long
    wandering_rooms: tuple[str, ...] = ("front_door", "hallway")
    low_battery_pct: float = Field(20.0, ge=0, le=100)
    offline_after_s: float = Field(600.0, gt=0)  # no data for this long: offline
    vitals_interval_s: float = Field(60.0, gt=0)  # one summary per resident per interval
    ppg_min_quality: float = Field(0.6, ge=0, le=1)  # HR / SpO2 taken below this quality are dropped
    motion_max_g: float = Field(0.5, ge=0)  # ... and so are those taken while moving harder than this

    def device(self, device_id: str) -> DeviceConfig | None:
        """The configured device with this id, if any."""
        for device in self.devices:
            if device.device_id == device_id:
                return device
        return None


@dataclass(frozen=True, slots=True)
class FallDetection:
    """A fall the accelerometer detector found: when the impact was, how sure it is, why, and the signal around it."""

    impact_ts: float
    detected_ts: float  # time of the last sample the detector had seen when it decided
    confidence: float  # 0..1
    features: dict[str, float]  # the values that decided it (names: lower_snake_case, <= 48 chars)
    clip_t0: float  # time of the first clip sample
    clip_g: npt.NDArray[np.float64]  # (n, 3) samples around the impact, g, at `clip_rate_hz`
    clip_rate_hz: float  # the detector's rate (a detector that resamples the device's signal gives its own)


class FallDetector(Protocol):
    """A streaming fall detector for one device; bounded memory, fed consecutive chunks of samples at the rate it
    was made for."""

    def update(self, samples: npt.NDArray[np.float64], t0: float) -> list[FallDetection]:
        """Feed (n, 3) samples in g, the first taken at t0; return the falls decided with this chunk."""
        ...


@dataclass(slots=True)
class Outputs:
    """What the edge sends upstream as a result of one message or one tick."""

    events: list[m.FallEvent | m.InactivityEvent | m.BedExitEvent | m.NightWanderingEvent | m.GeofenceExitEvent
                 | m.SosEvent | m.OkEvent | m.PresenceEvent] = field(default_factory=list)  # fmt: skip
    vitals: list[m.VitalsSummary] = field(default_factory=list)
    health: list[m.DeviceHealth] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        """Append another result's items."""
        self.events += other.events
        self.vitals += other.vitals
        self.health += other.health

    def __bool__(self) -> bool:
        return bool(self.events or self.vitals or self.health)


def event_id(kind: str, source: str, ts: float) -> str:
    """A deterministic event id (the same detection after a restart gets the same id, so delivery is idempotent)."""
    return f"{kind}-{source}-{round(ts * 1000)}"[:64]
