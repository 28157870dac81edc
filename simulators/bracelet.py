"""The health bracelet: vitals, accelerometer, SOS and "I'm OK" buttons, GPS, battery, wear, connection.

A `Bracelet` renders the person's `Timeline` (what they do) and its own `BraceletPlan` (what happens to the
device: presses, taken off / put on, connection lost, battery). What a real bracelet does, it does:
- vitals every `vitals_interval_s` while worn (a wrist sensor cannot measure off the wrist);
- accelerometer batches (from `accel`, e.g. `simulators.motion`) while worn;
- battery every 5 minutes and on every 10 % step, draining; at 0 % the device dies: the connection drops
  (the broker publishes its last will) and nothing more is sent;
- wear status at start and on every change;
- a GPS fix every 2 minutes at home (indoor accuracy 15-40 m) and every 10 s while out, walking away along
  the segment's `bearing_deg` at `speed_mps`;
- while the connection is lost, nothing is sent (readings are not buffered, as on common bracelets).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from careloop import messages as m
from careloop.topics import TopicKind
from simulators.emission import Control, Emission
from simulators.timeline import Activity, Timeline
from simulators.vitals import VitalsModel

AccelSource = Callable[[float, float], Iterator[Emission]]

BATTERY_REPORT_S = 300.0
GPS_HOME_S = 120.0
GPS_OUT_S = 10.0
EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True, slots=True)
class HomeZone:
    """Where the home is, and how far from it still counts as home."""

    lat: float
    lon: float
    radius_m: float = 100.0


@dataclass(frozen=True, slots=True)
class BraceletPlan:
    """What happens to the device itself during a simulation (times are Unix seconds)."""

    presses: tuple[tuple[float, str], ...] = ()  # (time, "sos" | "ok")
    wear_changes: tuple[tuple[float, bool], ...] = ()  # (time, worn); worn at the start unless told
    worn_at_start: bool = True
    connection: tuple[tuple[float, Control], ...] = ()  # (time, lost | reconnect)
    battery_start_pct: float = 80.0
    battery_drain_pct_per_h: float = 1.2  # about three days on a charge
    vitals_interval_s: float = 5.0


def offset_position(zone: HomeZone, distance_m: float, bearing_deg: float) -> tuple[float, float]:
    """The point `distance_m` from the home along `bearing_deg` (flat-earth approximation, fine under 10 km)."""
    bearing = math.radians(bearing_deg)
    dlat = distance_m * math.cos(bearing) / EARTH_RADIUS_M
    dlon = distance_m * math.sin(bearing) / (EARTH_RADIUS_M * math.cos(math.radians(zone.lat)))
    return zone.lat + math.degrees(dlat), zone.lon + math.degrees(dlon)


@dataclass
class Bracelet:
    """A simulated bracelet worn by the person whose timeline it renders."""

    device_id: str
    timeline: Timeline
    vitals: VitalsModel
    zone: HomeZone
    tz: ZoneInfo
    rng: np.random.Generator
    plan: BraceletPlan = field(default_factory=BraceletPlan)
    accel: AccelSource | None = None
    _started: bool = False
    _phase: float = 0.0

    def __post_init__(self) -> None:
        self._phase = float(self.rng.uniform(0.0, 1.0))

    # -- device state over time ---------------------------------------------------------------------------
    def battery_pct(self, t: float) -> float:
        """Charge at time t."""
        hours = (t - self.timeline.start) / 3600.0
        return max(0.0, self.plan.battery_start_pct - self.plan.battery_drain_pct_per_h * hours)

    @property
    def dies_at(self) -> float | None:
        """When the battery runs out, if within the timeline."""
        if self.plan.battery_drain_pct_per_h <= 0:
            return None
        t = self.timeline.start + 3600.0 * self.plan.battery_start_pct / self.plan.battery_drain_pct_per_h
        return t if t < self.timeline.end else None

    def worn(self, t: float) -> bool:
        """Whether the bracelet is on the wrist at time t."""
        state = self.plan.worn_at_start
        for when, worn in self.plan.wear_changes:
            if when <= t:
                state = worn
        return state

    def connected(self, t: float) -> bool:
        """Whether the device has its MQTT connection at time t (and is alive)."""
        dies = self.dies_at
        if dies is not None and t >= dies:
            return False
        state = True
        for when, control in self.plan.connection:
            if when <= t:
                state = control is Control.RECONNECT
        return state

    # -- the stream ---------------------------------------------------------------------------------------
    def emissions(self, t0: float, t1: float) -> Iterator[Emission]:
        """Everything the bracelet sends in [t0, t1), in time order."""
        out: list[Emission] = []
        if not self._started:
            self._started = True
            out.append(self._message(t0, TopicKind.DEVICE_AVAILABILITY, m.Availability(online=True, since=t0)))
            out.append(self._message(t0, TopicKind.DEVICE_WEAR, m.WearStatus(ts=t0, worn=self.worn(t0))))
            out.append(self._battery(t0))
        out += self._periodic(t0, t1)
        for when, worn in self.plan.wear_changes:
            if t0 <= when < t1:
                out.append(self._message(when, TopicKind.DEVICE_WEAR, m.WearStatus(ts=when, worn=worn)))
        for when, button in self.plan.presses:
            if t0 <= when < t1:
                kind, msg = (
                    (TopicKind.DEVICE_SOS, m.SosPress(ts=when))
                    if button == "sos"
                    else (TopicKind.DEVICE_OK, m.OkPress(ts=when))
                )
                out.append(self._message(when, kind, msg))
        for when, control in self.plan.connection:
            if t0 <= when < t1:
                out.append(Emission(ts=when, device_id=self.device_id, control=control))
                if control is Control.RECONNECT:
                    online = m.Availability(online=True, since=when)
                    out.append(self._message(when, TopicKind.DEVICE_AVAILABILITY, online))
        dies = self.dies_at
        if dies is not None and t0 <= dies < t1:
            out.append(self._battery(dies - 0.001))
            out.append(Emission(ts=dies, device_id=self.device_id, control=Control.CONNECTION_LOST))
        if self.accel is not None:
            out += [e for e in self.accel(t0, t1) if self.worn(e.ts) and self.connected(e.ts)]
        out.sort(key=lambda e: e.ts)
        # While the link is down (or the device is dead) nothing leaves the device, except the event itself.
        yield from (e for e in out if e.control is not None or self.connected(e.ts))

    def _periodic(self, t0: float, t1: float) -> list[Emission]:
        out: list[Emission] = []
        step = self.plan.vitals_interval_s
        for t in _grid(t0, t1, step, self._phase * step):
            if self.worn(t):
                segment = self.timeline.at(t)
                local = datetime.fromtimestamp(t, self.tz)
                hour = local.hour + local.minute / 60.0 + local.second / 3600.0
                out.append(self._message(t, TopicKind.DEVICE_VITALS, self.vitals.reading(t, segment, hour)))
        for t in _grid(t0, t1, BATTERY_REPORT_S, self._phase * 7.0):
            out.append(self._battery(t))
        for t in _grid(t0, t1, GPS_OUT_S, self._phase * 3.0):
            if self.timeline.at(t).activity is Activity.OUT or _on_grid(t, GPS_HOME_S, self._phase * 3.0):
                out.append(self._gps(t))
        return out

    def _battery(self, t: float) -> Emission:
        level = round(self.battery_pct(t), 1)
        return self._message(t, TopicKind.DEVICE_BATTERY, m.BatteryStatus(ts=t, level_pct=level, charging=False))

    def _gps(self, t: float) -> Emission:
        segment = self.timeline.at(t)
        if segment.activity is Activity.OUT:
            speed = float(segment.params.get("speed_mps", 1.0))
            bearing = float(segment.params.get("bearing_deg", 45.0))
            lat, lon = offset_position(self.zone, speed * (t - segment.start), bearing)
            accuracy = float(self.rng.uniform(4.0, 12.0))
        else:
            accuracy = float(self.rng.uniform(15.0, 40.0))  # indoors: a weak fix
            lat, lon = offset_position(self.zone, float(self.rng.uniform(0, accuracy / 2)), self.rng.uniform(0, 360))
        fix = m.GpsFix(ts=t, lat=round(lat, 6), lon=round(lon, 6), accuracy_m=round(accuracy, 1))
        return self._message(t, TopicKind.DEVICE_GPS, fix)

    def _message(self, t: float, kind: TopicKind, message: m.Message) -> Emission:
        return Emission(ts=t, device_id=self.device_id, kind=kind, message=message)


def _on_grid(t: float, step: float, phase: float) -> bool:
    k = (t - phase) / step
    return abs(k - round(k)) < 1e-6


def _grid(t0: float, t1: float, step: float, phase: float) -> Iterator[float]:
    """phase + k*step for every k with the time in [t0, t1); identical whatever the window boundaries."""
    k = math.ceil((t0 - phase) / step)
    while (t := phase + k * step) < t1:
        yield t
        k += 1
