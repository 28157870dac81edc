"""The per-home monitor: routes one home's decoded device messages to its detectors and collects what they raise.

    monitor = HomeMonitor(config, fall_detector=edge.falls.fall_detector)  # a factory: (placement, rate) -> detector
    outputs = monitor.on_message(topic, message, now)   # every decoded device message, as it arrives
    outputs = monitor.tick(now)                          # about once a second

Pure: no MQTT, no wall clock, no I/O. `now` is the receiver's time (sim time in tests); measurements are judged at
their own timestamps. Every call is O(1) in the length of the history (a few dict lookups, a detector's update),
so one process can run thousands of homes.

Routing, by stream:
- `sos`, `ok`: a `SosEvent` / `OkEvent` at once.
- `accel`: the wearable's `FallDetector` (one per bracelet or belt, from the factory, for the batch's sample rate;
  a new one after a gap in the stream or after the device was taken off, since detectors expect consecutive
  chunks, and when the device's rate changes); its falls go through `FallFusion`. The shipped factory
  (`edge.falls.fall_detector`) resamples a device that does not sample at the model's 50 Hz. The batch also
  tells whether the wearer walks about (inactivity).
- `vitals`: `edge.vitals.VitalsSummarizer` per wearable; heavy `motion_g` also counts as movement.
- `gps`: `edge.geofence.Geofence` per wearable (when the home has a zone).
- `battery`, `wear`, `availability`, and every message's arrival: `edge.health.DeviceHealthTracker`.
- `motion` (PIR): presence, inactivity, night wandering. `thermal`: the room's `ThermalFallDetector`, presence.
  `occupancy`: bed exit (bed mats), presence and inactivity (getting in or out is movement).

Devices the configuration does not list are adopted by the stream they publish on (a wearable stream makes a
wrist bracelet, `motion` a PIR, `thermal` a thermopile, `occupancy` a bed or chair mat), up to `MAX_ADOPTED` per
home, and counted in `stats["adopted"]`. Rationale: the device streams come from the home's own broker, so a
device publishing there is in the home; a bracelet paired before the registry caught up must not have its SOS
dropped. Status-only messages (battery, availability) from an unknown device cannot tell what it is and are
counted and dropped until it sends something that does. Messages for another home, on a non-device topic, or
whose model does not match the topic are counted in `stats` and dropped.
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from careloop import messages as m
from careloop.topics import Topic, TopicKind
from edge.geofence import Geofence
from edge.health import DeviceHealthTracker
from edge.infrared import (
    ActivityTracker,
    BedExitDetector,
    NightWanderingDetector,
    NightWindow,
    ThermalFall,
    ThermalFallDetector,
)
from edge.models import DeviceConfig, FallDetection, FallDetector, HomeConfig, Outputs, Placement, event_id
from edge.vitals import VitalsSummarizer

#: Makes the fall detector of a wearable: its placement and the rate its accelerometer samples at (Hz).
FallDetectorFactory = Callable[[Placement, float], FallDetector]
WearableSource = Literal["bracelet", "belt"]

#: Walking-level movement of a wearable: the standard deviation of |a| over a batch (1 s) at or above this, for
#: `MOVING_BATCHES` batches in a row. Walking gives 0.15-0.24 g at the wrist, 0.15-0.20 g at the waist in
#: nearly every second; the occasional hand movement of somebody sitting or lying (which an unwell person still
#: makes) stays under 0.1 g in 99.9 % of seconds and never lasts three in a row.
MOVING_STD_G = 0.1
MOVING_BATCHES = 3
#: A vitals reading taken while moving at least this hard (RMS g) also counts as movement (walking: 0.15-0.35).
MOVING_MOTION_G = 0.1
#: A jump of more than this between the end of one accelerometer batch and the start of the next starts a new
#: fall detector (its window would otherwise join two unrelated moments into one signal).
ACCEL_GAP_S = 2.0
#: Devices adopted per home without being configured (bounded memory against a chatty broker).
MAX_ADOPTED = 32
#: A PIR motion this recent names the room an SOS or a wearable-only fall probably happened in.
ROOM_HINT_S = 600.0
#: A wearable that sent accelerometer data this recently and is not known to be off the wrist is watching for falls.
WEARABLE_ACTIVE_S = 10.0

_FEATURE_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_MAX_FEATURES = 32

#: The topic each device message model belongs on.
_STREAM: Mapping[type[m.Message], TopicKind] = {
    m.VitalsReading: TopicKind.DEVICE_VITALS,
    m.AccelBatch: TopicKind.DEVICE_ACCEL,
    m.SosPress: TopicKind.DEVICE_SOS,
    m.OkPress: TopicKind.DEVICE_OK,
    m.GpsFix: TopicKind.DEVICE_GPS,
    m.BatteryStatus: TopicKind.DEVICE_BATTERY,
    m.WearStatus: TopicKind.DEVICE_WEAR,
    m.MotionReport: TopicKind.DEVICE_MOTION,
    m.ThermalFrame: TopicKind.DEVICE_THERMAL,
    m.OccupancyReport: TopicKind.DEVICE_OCCUPANCY,
    m.Availability: TopicKind.DEVICE_AVAILABILITY,
}
_WEARABLE_STREAMS = frozenset(
    {
        TopicKind.DEVICE_VITALS,
        TopicKind.DEVICE_ACCEL,
        TopicKind.DEVICE_GPS,
        TopicKind.DEVICE_WEAR,
        TopicKind.DEVICE_SOS,
        TopicKind.DEVICE_OK,
    }
)


# ---------------------------------------------------------------------------------------------------------------
# Falls: the wearable's and the thermopile's, fused
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WearableFall:
    """A fall a wearable's detector reported, with what the event needs to say about the device."""

    device_id: str
    resident_id: str | None
    source: WearableSource
    placement: Placement
    detection: FallDetection
    room: str | None  # where the person probably is (recent PIR motion)


@dataclass(slots=True)
class _Held:
    impact_ts: float
    since: float
    deadline: float
    wearable: WearableFall | None = None
    thermal: ThermalFall | None = None


class FallFusion:
    """Turns wearable and thermal falls into `FallEvent`s: one event per fall, from both sources when both saw it.

    A wearable fall and a thermal fall whose impacts lie within `window_s` of each other are the same fall: one
    event with both sources, the wearable's impact time, clip and placement, the thermopile's room, both sets of
    features, and confidence 1 - (1 - c_wearable)(1 - c_thermal) (two independent witnesses: higher than either).

    To fuse, the first report waits for the second, but only when the second can come, and briefly (the alarm's
    own cancel window starts upstream when the event arrives):
    - a wearable fall waits when a thermopile has the person in view: while a floor-shaped area is being watched
      there (it takes `ThermalFallDetector.stay_s` to confirm), at least `min_hold_s` (a frame or two, for the
      area to show up) and at most `wearable_hold_s`; otherwise it goes at once;
    - a thermal fall waits up to `thermal_hold_s` when a wearable is worn and streaming (its detector normally
      decides first; if it has not, it probably missed the fall); otherwise (bracelet off, charging, dead: the
      case the infrared is there for) it goes at once with placement "infrared" and source "thermal".
    A report that arrives after the event for the same fall went out is absorbed (`absorbed` counts them): the
    alarm is already on its way, and a second event would page twice.
    """

    def __init__(
        self,
        resident_id: str | None,
        *,
        window_s: float = 30.0,
        wearable_hold_s: float = 20.0,
        min_hold_s: float = 4.0,
        thermal_hold_s: float = 10.0,
        memory_s: float = 300.0,
    ) -> None:
        self.resident_id = resident_id
        self.window_s = window_s
        self.wearable_hold_s = wearable_hold_s
        self.min_hold_s = min_hold_s
        self.thermal_hold_s = thermal_hold_s
        self.memory_s = memory_s
        self.absorbed = 0
        self._held: list[_Held] = []
        self._sent: deque[tuple[float, str | None]] = deque()  # (impact, wearable device or None) of sent events

    def wearable(self, fall: WearableFall, now: float, thermal_watching: bool) -> list[m.FallEvent]:
        """A wearable's detector reported a fall (`thermal_watching`: a thermopile has the person in view)."""
        impact = fall.detection.impact_ts
        for held in self._held:
            if held.thermal is not None and abs(held.impact_ts - impact) <= self.window_s:
                self._held.remove(held)
                return [self._send(fused_event(fall, held.thermal, now), impact, fall.device_id)]
        if self._already_sent(impact, fall.device_id):
            self.absorbed += 1
            return []
        if thermal_watching and self.wearable_hold_s > 0:
            self._held.append(_Held(impact, now, now + self.wearable_hold_s, wearable=fall))
            return []
        return [self._send(wearable_event(fall, now), impact, fall.device_id)]

    def thermal(self, fall: ThermalFall, now: float, wearable_active: bool) -> list[m.FallEvent]:
        """A thermopile confirmed a fall (`wearable_active`: a wearable is worn and streaming)."""
        for held in self._held:
            if held.wearable is not None and abs(held.impact_ts - fall.impact_ts) <= self.window_s:
                self._held.remove(held)
                return [self._send(fused_event(held.wearable, fall, now), held.impact_ts, held.wearable.device_id)]
        if self._already_sent(fall.impact_ts, None):
            self.absorbed += 1
            return []
        if wearable_active and self.thermal_hold_s > 0:
            self._held.append(_Held(fall.impact_ts, now, now + self.thermal_hold_s, thermal=fall))
            return []
        return [self._send(thermal_event(fall, self.resident_id, now), fall.impact_ts, None)]

    def tick(self, now: float, thermal_candidate: bool = False) -> list[m.FallEvent]:
        """Send the held reports whose partner did not come in time, on their own (`thermal_candidate`: a
        thermopile is watching a floor-shaped area that may still confirm)."""
        while self._sent and self._sent[0][0] < now - self.memory_s:
            self._sent.popleft()
        if not self._held:
            return []
        out = []
        for held in [h for h in self._held if h.deadline <= now or self._hopeless(h, now, thermal_candidate)]:
            self._held.remove(held)
            if held.wearable is not None:
                out.append(self._send(wearable_event(held.wearable, now), held.impact_ts, held.wearable.device_id))
            elif held.thermal is not None:
                out.append(self._send(thermal_event(held.thermal, self.resident_id, now), held.impact_ts, None))
        return out

    @property
    def holding(self) -> bool:
        """A report is waiting for its partner."""
        return bool(self._held)

    def _hopeless(self, held: _Held, now: float, thermal_candidate: bool) -> bool:
        # A wearable fall need not wait once no thermopile watches anything that could still become a fall.
        return held.wearable is not None and not thermal_candidate and now - held.since >= self.min_hold_s

    def _already_sent(self, impact: float, device_id: str | None) -> bool:
        # A thermal report joins any event for the same moment; a wearable one joins an event that is
        # thermal-only or from the same device (another wearable's fall at the same moment is another person).
        return any(
            abs(t - impact) <= self.window_s and (device_id is None or sent is None or sent == device_id)
            for t, sent in self._sent
        )

    def _send(self, event: m.FallEvent, impact: float, device_id: str | None) -> m.FallEvent:
        self._sent.append((impact, device_id))
        return event


def clean_features(features: Mapping[str, float], limit: int = _MAX_FEATURES) -> dict[str, float]:
    """Features the contract accepts: names lower_snake_case (others coerced, or dropped), finite, at most `limit`."""
    out: dict[str, float] = {}
    for name, value in features.items():
        if len(out) >= limit:
            break
        key = name if _FEATURE_RE.fullmatch(name) else re.sub(r"[^a-z0-9_]", "_", name.lower())[:48]
        if not _FEATURE_RE.fullmatch(key) or key in out:
            continue
        number = float(value)
        if math.isfinite(number):
            out[key] = number
    return out


def accel_clip(detection: FallDetection) -> m.AccelClip | None:
    """The detection's clip as the contract carries it: 0.1 mg steps, within the sensor range, at most
    `MAX_CLIP_SAMPLES` (centred on the impact when longer), at the detector's rate. None when there is nothing
    usable."""
    rate_hz = detection.clip_rate_hz
    samples = np.asarray(detection.clip_g, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != 3 or len(samples) == 0 or not np.isfinite(samples).all():
        return None
    t0 = detection.clip_t0
    if len(samples) > m.MAX_CLIP_SAMPLES:
        centre = round((detection.impact_ts - t0) * rate_hz)
        first = min(max(centre - m.MAX_CLIP_SAMPLES // 2, 0), len(samples) - m.MAX_CLIP_SAMPLES)
        samples = samples[first : first + m.MAX_CLIP_SAMPLES]
        t0 += first / rate_hz
    values = np.round(np.clip(samples, -m.ACCEL_LIMIT_G, m.ACCEL_LIMIT_G), 4).tolist()
    return m.AccelClip(t0=t0, rate_hz=rate_hz, samples_g=tuple((x, y, z) for x, y, z in values))


def _confidence(value: float) -> float:
    # A detector that returns NaN has a bug; the fall is still reported, with an honest "don't know".
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.5


def wearable_event(fall: WearableFall, now: float) -> m.FallEvent:
    """A fall seen by the wearable alone."""
    d = fall.detection
    return m.FallEvent(
        event_id=event_id("fall", fall.device_id, d.impact_ts),
        ts=now,
        resident_id=fall.resident_id,
        device_id=fall.device_id,
        room=fall.room,
        impact_ts=d.impact_ts,
        confidence=_confidence(d.confidence),
        placement=fall.placement,
        sources=(fall.source,),
        features=clean_features(d.features),
        clip=accel_clip(d),
    )


def thermal_event(fall: ThermalFall, resident_id: str | None, now: float) -> m.FallEvent:
    """A fall seen by a thermopile alone (the bracelet not worn, or it missed it)."""
    return m.FallEvent(
        event_id=event_id("fall", fall.device_id, fall.impact_ts),
        ts=now,
        resident_id=resident_id,
        device_id=fall.device_id,
        room=fall.room,
        impact_ts=fall.impact_ts,
        confidence=_confidence(fall.confidence),
        placement="infrared",
        sources=("thermal",),
        features=clean_features(fall.features),
    )


def fused_event(wearable: WearableFall, thermal: ThermalFall, now: float) -> m.FallEvent:
    """One fall seen by both: the wearable's timing and signal, the thermopile's room, a higher confidence."""
    d = wearable.detection
    both = 1.0 - (1.0 - _confidence(d.confidence)) * (1.0 - _confidence(thermal.confidence))
    own = clean_features(thermal.features)
    features = clean_features(d.features, _MAX_FEATURES - len(own))
    features.update(own)
    return m.FallEvent(
        event_id=event_id("fall", wearable.device_id, d.impact_ts),
        ts=now,
        resident_id=wearable.resident_id,
        device_id=wearable.device_id,
        room=thermal.room or wearable.room,
        impact_ts=d.impact_ts,
        confidence=both,
        placement=wearable.placement,
        sources=(wearable.source, "thermal"),
        features=features,
        clip=accel_clip(d),
    )


# ---------------------------------------------------------------------------------------------------------------
# The monitor
# ---------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Wearable:
    device_id: str
    resident_id: str | None
    source: WearableSource
    placement: Placement
    vitals: VitalsSummarizer
    geofence: Geofence | None
    detector: FallDetector | None = None
    rate_hz: float = 0.0
    next_t0: float | None = None  # where the next accelerometer batch should start
    moving_batches: int = 0  # consecutive batches of walking-level movement
    last_accel: float = -math.inf


class HomeMonitor:
    """Everything the edge watches in one home: feed it messages and ticks, send what it returns upstream."""

    def __init__(self, config: HomeConfig, fall_detector: FallDetectorFactory | None = None) -> None:
        self.config = config
        self._factory = fall_detector
        self.stats: Counter[str] = Counter()
        self._devices: dict[str, DeviceConfig] = {d.device_id: d for d in config.devices}
        residents = {d.resident_id for d in config.devices if d.resident_id is not None}
        #: The home's resident when there is exactly one: infrared events are about them.
        self.resident_id: str | None = next(iter(residents)) if len(residents) == 1 else None
        self.night = NightWindow(config.night_start, config.night_end, config.timezone)
        self.activity = ActivityTracker(config, self.resident_id)
        self.bed = BedExitDetector(config, self.resident_id)
        self.wandering = NightWanderingDetector(config, self.resident_id)
        self.health = DeviceHealthTracker(config)
        self.fusion = FallFusion(self.resident_id)
        self._wearables: dict[str, _Wearable] = {}
        self._thermal: dict[str, ThermalFallDetector] = {}
        self._occupied: dict[str, bool] = {}
        self._last_pir: tuple[float, str] | None = None
        self._adopted = 0

    # -- input ------------------------------------------------------------------------------------------------
    def on_message(self, topic: Topic, message: m.Message, now: float) -> Outputs:
        """Route one decoded device message received at `now`; returns what it raised."""
        out = Outputs()
        if topic.home_id != self.config.home_id or topic.device_id is None:
            self.stats["not_this_home"] += 1
            return out
        if _STREAM.get(type(message)) is not topic.kind:
            self.stats["model_not_for_topic"] += 1
            return out
        device = self._device(topic.device_id, topic.kind, message)
        if device is None:
            return out
        if not isinstance(message, m.Availability):  # the last will is the broker's word, not the device's
            out.health += self.health.seen(device.device_id, now)
        if isinstance(message, m.MotionReport):
            self._motion(device, message, now, out)
        elif isinstance(message, m.ThermalFrame):
            self._thermal_frame(device, message, now, out)
        elif isinstance(message, m.OccupancyReport):
            self._occupancy(device, message, now, out)
        elif isinstance(message, m.SosPress | m.OkPress):
            self._press(device, message, now, out)
        elif isinstance(message, m.BatteryStatus):
            out.health += self.health.battery(device.device_id, message, now)
        elif isinstance(message, m.Availability):
            out.health += self.health.availability(device.device_id, message, now)
        else:
            wearable = self._wearable(device)
            if wearable is None:
                self.stats["wearable_stream_from_" + device.kind] += 1
            elif isinstance(message, m.AccelBatch):
                self._accel(wearable, message, now, out)
            elif isinstance(message, m.VitalsReading):
                self._vitals(wearable, message, now, out)
            elif isinstance(message, m.GpsFix):
                self._gps(wearable, message, now, out)
            elif isinstance(message, m.WearStatus):
                self._wear(wearable, message, now, out)
        return out

    def tick(self, now: float) -> Outputs:
        """Advance the clocks of the time-based rules to `now` (call about once a second)."""
        out = Outputs()
        if self.fusion.holding:
            out.events += self.fusion.tick(now, any(d.candidate for d in self._thermal.values()))
        else:
            out.events += self.fusion.tick(now)
        out.events += self.activity.tick(now, self.night.is_night(now))
        out.events += self.bed.tick(now)
        out.events += self.wandering.tick(now)
        for wearable in self._wearables.values():
            out.vitals += wearable.vitals.tick(now)
        out.health += self.health.tick(now)
        return out

    # -- devices ----------------------------------------------------------------------------------------------
    def _device(self, device_id: str, kind: TopicKind, message: m.Message) -> DeviceConfig | None:
        device = self._devices.get(device_id)
        if device is not None:
            return device
        if self._adopted >= MAX_ADOPTED:
            self.stats["unknown_device_over_limit"] += 1
            return None
        if kind in _WEARABLE_STREAMS:
            device = DeviceConfig(device_id=device_id, kind="bracelet", placement="wrist")
        elif isinstance(message, m.MotionReport):
            device = DeviceConfig(device_id=device_id, kind="pir", room=message.room)
        elif isinstance(message, m.ThermalFrame):
            device = DeviceConfig(device_id=device_id, kind="thermopile", room=message.room)
        elif isinstance(message, m.OccupancyReport):
            mat: Literal["bed_sensor", "chair_sensor"] = "bed_sensor" if message.place == "bed" else "chair_sensor"
            device = DeviceConfig(device_id=device_id, kind=mat, room=message.room)
        else:
            self.stats["unknown_device_status"] += 1  # battery or availability: what is it?
            return None
        self._adopted += 1
        self.stats["adopted"] += 1
        self._devices[device_id] = device
        self.health.add(device_id, device.kind)
        return device

    def _wearable(self, device: DeviceConfig) -> _Wearable | None:
        wearable = self._wearables.get(device.device_id)
        if wearable is not None:
            return wearable
        if device.kind not in ("bracelet", "belt"):
            return None
        source: WearableSource = "belt" if device.kind == "belt" else "bracelet"
        placement: Placement = device.placement or ("waist" if source == "belt" else "wrist")
        resident = device.resident_id or self.resident_id
        c = self.config
        wearable = _Wearable(
            device_id=device.device_id,
            resident_id=resident,
            source=source,
            placement=placement,
            vitals=VitalsSummarizer(
                device.device_id,
                resident,
                interval_s=min(c.vitals_interval_s, 3600.0),
                ppg_min_quality=c.ppg_min_quality,
                motion_max_g=c.motion_max_g,
            ),
            geofence=None if c.zone is None else Geofence(c.zone, device.device_id, resident),
        )
        self._wearables[device.device_id] = wearable
        return wearable

    def _room_hint(self, now: float) -> str | None:
        if self._last_pir is not None and now - self._last_pir[0] <= ROOM_HINT_S:
            return self._last_pir[1]
        return None

    def _thermal_watching(self, now: float) -> bool:
        return any(detector.watching(now) for detector in self._thermal.values())

    def _wearable_active(self, now: float) -> bool:
        return any(
            now - w.last_accel <= WEARABLE_ACTIVE_S and self.health.worn(w.device_id) is not False
            for w in self._wearables.values()
        )

    # -- infrared ---------------------------------------------------------------------------------------------
    def _motion(self, device: DeviceConfig, message: m.MotionReport, now: float, out: Outputs) -> None:
        if not message.motion:
            return  # "no motion for the hold time": not a sign of anything
        room = device.room or message.room
        self._last_pir = (message.ts, room)
        out.events += self.activity.infrared_motion(message.ts, room, now)
        out.events += self.wandering.motion(room, message.ts, self.night.is_night(message.ts), now)

    def _thermal_frame(self, device: DeviceConfig, message: m.ThermalFrame, now: float, out: Outputs) -> None:
        detector = self._thermal.get(device.device_id)
        if detector is None:
            detector = self._thermal[device.device_id] = ThermalFallDetector(
                device.device_id, device.room or message.room
            )
        if message.ts <= detector.last_ts:
            self.stats["thermal_frame_out_of_order"] += 1
            return
        fall = detector.update(message.pixels_c, message.ts)
        if detector.last.person:
            out.events += self.activity.infrared_presence(message.ts, now)
        if fall is not None:
            out.events += self.fusion.thermal(fall, now, self._wearable_active(now))

    def _occupancy(self, device: DeviceConfig, message: m.OccupancyReport, now: float, out: Outputs) -> None:
        if message.place == "bed":
            night = self.night.is_night(message.ts)
            self.bed.occupancy(device.device_id, device.room or message.room, message.occupied, message.ts, night)
        before = self._occupied.get(device.device_id)
        self._occupied[device.device_id] = message.occupied
        if before is not None and before != message.occupied:
            self.activity.movement(message.ts)  # getting into or out of a bed or chair
        if message.occupied:
            out.events += self.activity.infrared_presence(message.ts, now)

    # -- wearables --------------------------------------------------------------------------------------------
    def _press(self, device: DeviceConfig, message: m.SosPress | m.OkPress, now: float, out: Outputs) -> None:
        self.activity.movement(message.ts)
        resident = device.resident_id or self.resident_id
        room = self._room_hint(now)
        if isinstance(message, m.SosPress):
            out.events.append(
                m.SosEvent(
                    event_id=event_id("sos", device.device_id, message.ts),
                    ts=now,
                    resident_id=resident,
                    device_id=device.device_id,
                    room=room,
                    pressed_ts=message.ts,
                )
            )
        else:
            out.events.append(
                m.OkEvent(
                    event_id=event_id("ok", device.device_id, message.ts),
                    ts=now,
                    resident_id=resident,
                    device_id=device.device_id,
                    room=room,
                    pressed_ts=message.ts,
                )
            )

    def _accel(self, wearable: _Wearable, message: m.AccelBatch, now: float, out: Outputs) -> None:
        samples = np.asarray(message.samples_g, dtype=np.float64)
        rate = message.rate_hz
        end = message.t0 + len(samples) / rate
        # std of |a| from two sums (np.std and np.mean cost more than the rest of this method)
        n = len(samples)
        squares = np.einsum("ij,ij->i", samples, samples)
        mean = float(np.sqrt(squares).sum()) / n
        if float(squares.sum()) / n - mean * mean >= MOVING_STD_G * MOVING_STD_G:
            wearable.moving_batches += 1
            if wearable.moving_batches >= MOVING_BATCHES:
                self.activity.movement(end)
        else:
            wearable.moving_batches = 0
        wearable.last_accel = max(wearable.last_accel, now)
        if self._factory is None:
            return
        expected = wearable.next_t0
        if expected is not None and message.t0 < expected - 0.5 / rate:
            self.stats["accel_out_of_order"] += 1  # a detector is fed consecutive chunks only
            return
        if (
            wearable.detector is None
            or expected is None
            or message.t0 - expected > ACCEL_GAP_S
            or rate != wearable.rate_hz
        ):
            wearable.detector = self._factory(wearable.placement, rate)
            wearable.rate_hz = rate
        wearable.next_t0 = end
        for detection in wearable.detector.update(samples, message.t0):
            fall = WearableFall(
                device_id=wearable.device_id,
                resident_id=wearable.resident_id,
                source=wearable.source,
                placement=wearable.placement,
                detection=detection,
                room=self._room_hint(now),
            )
            out.events += self.fusion.wearable(fall, now, self._thermal_watching(now))

    def _vitals(self, wearable: _Wearable, message: m.VitalsReading, now: float, out: Outputs) -> None:
        out.vitals += wearable.vitals.add(message, now)
        if message.motion_g is not None and message.motion_g >= MOVING_MOTION_G:
            self.activity.movement(message.ts)

    def _gps(self, wearable: _Wearable, message: m.GpsFix, now: float, out: Outputs) -> None:
        if wearable.geofence is None:
            self.stats["gps_without_zone"] += 1
            return
        event = wearable.geofence.update(message, now, self.night.is_night(message.ts))
        if event is not None:
            out.events.append(event)
        # Inactivity pauses only while every wearer with a fix is out (one resident out, the other at home: watch).
        fences = [w.geofence for w in self._wearables.values() if w.geofence is not None]
        self.activity.set_wearer_outside(all(f.outside for f in fences))

    def _wear(self, wearable: _Wearable, message: m.WearStatus, now: float, out: Outputs) -> None:
        out.health += self.health.wear(wearable.device_id, message, now)
        if not message.worn:  # off the wrist: whatever the accelerometer sees next is not a person's movement
            wearable.detector = None
            wearable.next_t0 = None
            wearable.moving_batches = 0
