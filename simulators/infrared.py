"""The home's infrared and pressure sensors, rendered from the person's `Timeline`.

- `PirSensor`: a PIR motion sensor per room (HC-SR501 / Zigbee PIR behaviour: report on motion, re-report while
  it goes on, report "no motion" after a hold time).
- `ThermopileSensor`: an AMG8833-like 8x8 thermopile, 60 degree field of view, mounted on the ceiling 2.5 m above
  the floor and looking straight down; `frame_for` renders one frame and is pure, for tests and detectors.
- `BedSensor` / `ChairSensor`: a pressure mat under the mattress or on a seat, debounced, refreshed periodically.
- `home_infrared`: the set of them for a home.

Each sensor is a `DeviceSimulator`: it renders one lazy stream of emissions from the timeline, and
`emissions(t0, t1)` hands out the part of it in the window. Random draws happen in the stream's order, never in
the windows' order, so windows of any size give the same messages; a sensor announces itself (retained
`Availability`, then its current state) at the start of the first window.

Realism, and the imperfections a detector at the edge has to live with:
- PIR: motion is seen while the person walks or does something standing (the activities in `MOVING`), when they
  come in and when they leave a room they sat or lay in (getting up, passing the door). A person sitting still,
  lying awake or asleep produces only occasional short triggers (`FIDGETS_PER_H`: turning over in bed about
  1.5 times an hour, shifting in a chair about 4 times an hour); a segment with `still=True` (unconscious,
  unwell) produces none; a person lying on the floor produces none unless the segment says `moving=True`
  (feeble movements, `FLOOR_MOVING_PER_H`). Reports come 0.2-0.8 s after motion starts (the sensor's
  detection latency). False triggers (sunlight patches, heating, a pet) are off by default so scenario tests
  are exact; a PIR in a real home sees a few a day, which `false_triggers_per_day` simulates.
- Thermopile: the background is the room temperature with a slight gradient across the view (a window, a
  radiator), a fixed per-pixel offset (sigma 0.2 C, as the AMG8833's pixels have), a slow drift (sigma 0.3 C,
  over hours) and per-frame noise (sigma 0.25 C), quantised to the sensor's 0.25 C steps. The person is a few
  ellipses of warm surface (clothes about 27-28 C, head about 31-32 C, the duvet over a sleeper 2 C above the
  room) averaged into the pixels they partly cover, plus a little optical crosstalk. In a 22 C room, seen from
  above: a standing person is a compact blob of 3-5 pixels (head and shoulders, peak 27-29 C), a seated one a
  medium blob of 5-8 (head and lap, peak 26-28 C), a person in bed a faint elongated blob with a warm head at the
  pillow (peak 24-25.5 C), a person on the floor a long blob of 8-11 pixels (about 1.6 m x 0.5 m, at 0.33 m per
  pixel at floor level; peak 26-27 C) that stays where they fell. These counts are pixels more than 1.5 C above
  the empty room. A bed or seat just left stays warm for a while (residual heat, decaying over minutes).
- Bed / chair: occupied when the person lies in bed (or sits) in the sensor's room; a change is reported once it
  has held for `debounce_s` (so turning over, which the timeline does not even show, or a momentary shift never
  flips it), and the state is refreshed every `refresh_s`.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np

from careloop.messages import Availability, Message, MotionReport, OccupancyReport, ThermalFrame
from careloop.topics import TopicKind, check_id
from simulators.emission import DeviceSimulator, Emission
from simulators.timeline import MOVING, Activity, Posture, Segment, Timeline

#: Frame size of the thermopile (pixels per side).
FRAME_PX = 8
#: Mounting height of the thermopile above the floor, metres; with a 60 degree view it covers about 2.9 m x 2.9 m
#: of floor (0.36 m per pixel), about 1.7 m x 1.7 m at the height of a standing person's shoulders.
CEILING_HEIGHT_M = 2.5
#: The AMG8833 reports in steps of 0.25 C.
THERMAL_STEP_C = 0.25
#: What the contract accepts as a pixel (degrees C).
PIXEL_MIN_C, PIXEL_MAX_C = -20.0, 100.0

#: Short triggers per hour seen by a PIR while the person stays in its room without walking about.
FIDGETS_PER_H: Mapping[Activity, float] = MappingProxyType(
    {
        Activity.SLEEPING: 1.5,  # turning over: older adults change position roughly 10-15 times a night
        Activity.LYING: 3.0,  # awake in bed or on the sofa: more shifting
        Activity.RESTING: 4.0,  # reading, TV: a PIR catches the bigger shifts (reaching, crossing legs)
    }
)
#: Triggers per hour from a person on the floor who still moves feebly (`moving=True` on an ON_FLOOR segment).
FLOOR_MOVING_PER_H = 6.0

Position = tuple[float, float]
"""(row, column) in pixel units: (0, 0) is the top-left corner of the view, (8, 8) the bottom-right one."""


def _segment_bounds(timeline: Timeline, index: int, t_first: float) -> tuple[float, float]:
    """The first segment also covers anything before it, the last one everything after (as `Timeline.at` does)."""
    segments = timeline.segments
    start = min(segments[0].start, t_first) if index == 0 else segments[index].start
    end = math.inf if index == len(segments) - 1 else segments[index].end
    return start, end


class _TimelineSensor:
    """Windows over one lazily rendered stream of emissions; subclasses render the stream in `_run`."""

    def __init__(self, device_id: str) -> None:
        self.device_id = check_id(device_id, "device_id")
        self._stream: Iterator[Emission] | None = None
        self._pending: Emission | None = None
        self._window_end = -math.inf

    def emissions(self, t0: float, t1: float) -> Iterator[Emission]:
        """What the sensor emits in [t0, t1), in time order; windows must follow each other without going back."""
        if t1 < t0:
            raise ValueError(f"window [{t0}, {t1}) ends before it starts")
        if t0 < self._window_end:
            raise ValueError(f"window [{t0}, {t1}) starts before the previous one ended ({self._window_end})")
        self._window_end = t1
        if self._stream is None:
            self._stream = self._run(t0)
        return self._window(self._stream, t0, t1)

    def _window(self, stream: Iterator[Emission], t0: float, t1: float) -> Iterator[Emission]:
        while True:
            item = self._pending if self._pending is not None else next(stream, None)
            self._pending = None
            if item is None:
                return
            if item.ts >= t1:
                self._pending = item  # the first emission of a later window
                return
            if item.ts >= t0:  # earlier ones fell into a gap between windows: the device was not asked then
                yield item

    def _run(self, t_first: float) -> Iterator[Emission]:
        raise NotImplementedError

    def _emit(self, ts: float, kind: TopicKind, message: Message) -> Emission:
        return Emission(ts=ts, device_id=self.device_id, kind=kind, message=message)

    def _online(self, t_first: float) -> Emission:
        return self._emit(t_first, TopicKind.DEVICE_AVAILABILITY, Availability(online=True, since=t_first))


def _ms(t: float, floor: float) -> float:
    """`t` rounded to the millisecond (readable payloads), never before `floor` (the first window's start)."""
    return max(round(t, 3), floor)


# ---------------------------------------------------------------------------------------------------------------
# PIR
# ---------------------------------------------------------------------------------------------------------------
class PirSensor(_TimelineSensor):
    """A PIR motion sensor in one room: True when motion starts (and every `retrigger_s` while it goes on),
    False once `hold_s` passed without motion."""

    def __init__(
        self,
        device_id: str,
        room: str,
        timeline: Timeline,
        rng: np.random.Generator,
        hold_s: float = 30.0,
        *,
        retrigger_s: float = 60.0,
        false_triggers_per_day: float = 0.0,
        fidgets_per_h: Mapping[Activity, float] = FIDGETS_PER_H,
    ) -> None:
        super().__init__(device_id)
        if hold_s <= 0 or retrigger_s <= 0 or false_triggers_per_day < 0:
            raise ValueError("hold_s and retrigger_s must be positive, false_triggers_per_day not negative")
        self.room = check_id(room, "room")
        self.timeline = timeline
        self.hold_s = hold_s
        self.retrigger_s = retrigger_s
        self.false_triggers_per_day = false_triggers_per_day
        self.fidgets_per_h = fidgets_per_h
        # Two generators drawn lazily by two streams: each stream's draws stay in its own order.
        person_seed, false_seed = rng.integers(0, 2**63, size=2)
        self._person_rng = np.random.default_rng(int(person_seed))
        self._false_rng = np.random.default_rng(int(false_seed))

    def _run(self, t_first: float) -> Iterator[Emission]:
        yield self._online(t_first)
        reports = self._reports(t_first)
        state = False
        for ts, motion in reports:
            if ts <= t_first:  # before the device was first asked: only its state at the start is reported
                state = motion
                continue
            yield self._report(t_first, state, t_first)
            yield self._report(ts, motion, t_first)
            break
        else:
            yield self._report(t_first, state, t_first)
        for ts, motion in reports:
            yield self._report(ts, motion, t_first)

    def _report(self, ts: float, motion: bool, t_first: float) -> Emission:
        ts = _ms(ts, t_first)
        return self._emit(ts, TopicKind.DEVICE_MOTION, MotionReport(ts=ts, room=self.room, motion=motion))

    def _reports(self, t_first: float) -> Iterator[tuple[float, bool]]:
        """(time, motion) reports from the intervals of raw motion (sorted by start, possibly overlapping)."""
        intervals = heapq.merge(self._person_motion(t_first), self._false_triggers(t_first))
        upcoming = next(intervals, None)
        active = False
        last_true = -math.inf
        motion_end = -math.inf
        while upcoming is not None:
            start, end = upcoming
            upcoming = next(intervals, None)
            if not active or start - last_true >= self.retrigger_s:
                yield start, True
                active, last_true = True, start
            retrigger = last_true + self.retrigger_s
            while retrigger < end:  # motion goes on: the module re-reports at its retrigger period
                yield retrigger, True
                last_true = retrigger
                retrigger += self.retrigger_s
            motion_end = max(motion_end, end)
            if upcoming is None or upcoming[0] > motion_end + self.hold_s:
                yield motion_end + self.hold_s, False
                active = False

    def _person_motion(self, t_first: float) -> Iterator[tuple[float, float]]:
        """Intervals (start, end) of motion the person makes in this room, in order of start."""
        rng = self._person_rng
        segments = self.timeline.segments
        for index, segment in enumerate(segments):
            if segment.room != self.room:
                continue
            start, end = _segment_bounds(self.timeline, index, t_first)
            latency = rng.uniform(0.2, 0.8)
            if segment.activity in MOVING:
                yield start + latency, max(end, start + latency)
                continue
            came_in = index > 0 and segments[index - 1].room != self.room
            leaves = index + 1 < len(segments) and segments[index + 1].room != self.room
            entering = [(start + latency, start + latency + rng.uniform(2.0, 6.0))] if came_in else []
            fidgets = self._fidgets(self._fidget_rate(segment), start, end)
            if math.isinf(end):  # the last segment goes on for ever: draw its fidgets lazily
                yield from entering
                yield from fidgets
                continue
            found = entering + list(fidgets)
            if leaves:  # getting up from the bed or the chair and walking out
                found.append((end - rng.uniform(2.0, 5.0), end))
            yield from sorted(found)

    def _fidget_rate(self, segment: Segment) -> float:
        if segment.activity is Activity.ON_FLOOR:
            return FLOOR_MOVING_PER_H if segment.params.get("moving") else 0.0
        if segment.params.get("still"):
            return 0.0
        return self.fidgets_per_h.get(segment.activity, 0.0)

    def _fidgets(self, per_h: float, start: float, end: float) -> Iterator[tuple[float, float]]:
        """Short triggers as a Poisson process at `per_h` an hour in [start, end)."""
        if per_h <= 0:
            return
        rng = self._person_rng
        t = start
        while True:
            t += rng.exponential(3600.0 / per_h)
            if t >= end:
                return
            yield t, t + rng.uniform(1.0, 4.0)

    def _false_triggers(self, t_first: float) -> Iterator[tuple[float, float]]:
        """Triggers without a person (sunlight, heating, a pet), whatever the person does."""
        if self.false_triggers_per_day <= 0:
            return
        rng = self._false_rng
        t = min(self.timeline.start, t_first)
        while True:
            t += rng.exponential(86_400.0 / self.false_triggers_per_day)
            yield t, t + rng.uniform(0.5, 2.0)


# ---------------------------------------------------------------------------------------------------------------
# Thermopile
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Part:
    """An ellipse of warm surface: centred `along_px` along the body's long axis from the body's position."""

    along_px: float
    half_length_px: float
    half_width_px: float
    excess_c: float  # surface temperature above the room's, when it fills a whole pixel


#: The person seen from the ceiling. Sizes in pixels at the part's distance from the sensor (a pixel spans
#: 0.13 m per metre of distance): a standing person's head and shoulders are 1-1.3 m from the sensor, a lying
#: person's body 2.3 m. Clothes are 5-6 C warmer than a 22 C room, a head 8-10 C, a duvet over a body 2 C.
_BODY: Mapping[Posture, tuple[_Part, ...]] = MappingProxyType(
    {
        Posture.STANDING: (_Part(0.0, 1.2, 0.75, 5.5), _Part(0.0, 0.7, 0.65, 10.0)),
        Posture.SITTING: (_Part(0.5, 1.4, 1.0, 5.0), _Part(-0.7, 0.6, 0.55, 9.0)),
        Posture.LYING_BED: (_Part(0.4, 2.3, 0.95, 2.2), _Part(-2.1, 0.5, 0.45, 8.0)),
        Posture.LYING_FLOOR: (_Part(0.3, 2.4, 0.8, 5.5), _Part(-2.2, 0.5, 0.45, 8.5)),
    }
)
_SUPERSAMPLE = 8  # sub-samples per pixel side: a body part covers pixels partly
_FINE = (np.arange(FRAME_PX * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
_FINE_ROWS, _FINE_COLS = np.meshgrid(_FINE, _FINE, indexing="ij")
#: Optical crosstalk between neighbouring pixels.
_CROSSTALK = np.array([[0.025, 0.075, 0.025], [0.075, 0.6, 0.075], [0.025, 0.075, 0.025]])


def body_heat(posture: Posture, position: Position, heading_rad: float = 0.0, *, head: bool = True) -> np.ndarray:
    """How much warmer than the background each pixel reads with the person there, degrees C (8x8, no noise).

    `heading_rad` is the direction of the body's long axis (0: along the rows, towards higher columns; a lying
    person's head is at the far end from the direction it points to). `head=False` leaves the head out (the
    warm imprint left in a bed or on a seat).
    """
    return _body_heat(posture, float(position[0]), float(position[1]), float(heading_rad), head).copy()


@functools.lru_cache(maxsize=256)  # a person sitting or lying stays put: the same picture frame after frame
def _body_heat(posture: Posture, row: float, col: float, heading_rad: float, head: bool) -> np.ndarray:
    parts = _BODY.get(posture, ())
    if not head:
        parts = parts[:1]
    cos_h, sin_h = math.cos(heading_rad), math.sin(heading_rad)
    fine = np.zeros_like(_FINE_ROWS)
    for part in parts:
        d_col = _FINE_COLS - (col + part.along_px * cos_h)
        d_row = _FINE_ROWS - (row + part.along_px * sin_h)
        along = d_col * cos_h + d_row * sin_h
        across = -d_col * sin_h + d_row * cos_h
        inside = (along / part.half_length_px) ** 2 + (across / part.half_width_px) ** 2 <= 1.0
        np.maximum(fine, np.where(inside, part.excess_c, 0.0), out=fine)  # the nearer surface (the head) wins
    pixels = fine.reshape(FRAME_PX, _SUPERSAMPLE, FRAME_PX, _SUPERSAMPLE).mean(axis=(1, 3))
    padded = np.pad(pixels, 1)
    out = np.zeros((FRAME_PX, FRAME_PX))
    for i in range(3):
        for j in range(3):
            out += _CROSSTALK[i, j] * padded[i : i + FRAME_PX, j : j + FRAME_PX]
    out.flags.writeable = False  # shared by every caller of the cache
    return out


def frame_for(
    posture: Posture,
    position: Position,
    rng: np.random.Generator,
    *,
    heading_rad: float = 0.0,
    ambient_c: float = 22.0,
    background: np.ndarray | None = None,
    noise_c: float = 0.25,
) -> np.ndarray:
    """One 8x8 frame (degrees C, quantised to the sensor's 0.25 C) of a person in `posture` at `position`.

    The background is `background` if given, else a uniform `ambient_c`; `Posture.AWAY` renders an empty room.
    """
    base = np.full((FRAME_PX, FRAME_PX), ambient_c) if background is None else np.asarray(background, dtype=float)
    frame = base + rng.normal(0.0, noise_c, (FRAME_PX, FRAME_PX))
    if posture is not Posture.AWAY:
        # clothing, angle and breathing make the apparent warmth vary a little from frame to frame
        heat = _body_heat(posture, float(position[0]), float(position[1]), float(heading_rad), True)
        frame += heat * (1.0 + rng.normal(0.0, 0.03))
    quantised = np.round(frame / THERMAL_STEP_C) * THERMAL_STEP_C
    return np.clip(quantised, PIXEL_MIN_C, PIXEL_MAX_C)


@dataclass(frozen=True, slots=True)
class RoomLayout:
    """Where things are in a thermopile's view (pixel units, see `Position`)."""

    door: Position = (7.6, 4.0)  # where a person walking in first appears
    seat: Position = (2.5, 5.5)  # the chair, sofa or toilet where the person sits
    seat_heading_rad: float = math.pi / 2
    bed: Position | None = None  # the bed, if the room has one (else lying down happens on the seat: a sofa)
    bed_heading_rad: float = math.pi / 2  # pi/2: head towards row 0


#: Default layouts of the usual rooms; other rooms get `RoomLayout()`.
LAYOUTS: Mapping[str, RoomLayout] = MappingProxyType(
    {
        "bedroom": RoomLayout(door=(7.6, 6.0), seat=(6.0, 6.5), bed=(3.2, 2.6)),
        "bathroom": RoomLayout(door=(7.6, 2.0), seat=(1.8, 6.0)),
        "living_room": RoomLayout(door=(4.0, 7.6), seat=(2.6, 2.6), seat_heading_rad=0.0),
        "kitchen": RoomLayout(door=(7.6, 4.0), seat=(5.0, 2.0)),
    }
)

_WALKS = frozenset({Activity.WALKING, Activity.STAIRS})
#: Indoor walking pace of an older person (about 0.4 m/s) in pixels at body height.
_WALK_PX_S = 1.2
#: Residual heat of a place just left: share of the body's warmth, time constant in seconds.
_RESIDUAL: Mapping[Posture, tuple[float, float]] = MappingProxyType(
    {Posture.LYING_BED: (0.45, 900.0), Posture.SITTING: (0.35, 300.0)}
)


class ThermopileSensor(_TimelineSensor):
    """An 8x8 thermopile on the ceiling of one room: a `ThermalFrame` every `interval_s`."""

    def __init__(
        self,
        device_id: str,
        room: str,
        timeline: Timeline,
        rng: np.random.Generator,
        interval_s: float = 2.0,
        ambient_c: float = 22.0,
        *,
        layout: RoomLayout | None = None,
        noise_c: float = 0.25,
        drift_c: float = 0.3,
        drift_tau_s: float = 7200.0,
    ) -> None:
        super().__init__(device_id)
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.room = check_id(room, "room")
        self.timeline = timeline
        self.interval_s = interval_s
        self.ambient_c = ambient_c
        self.layout = layout if layout is not None else LAYOUTS.get(room, RoomLayout())
        self.noise_c = noise_c
        self.drift_c = drift_c
        self.drift_tau_s = drift_tau_s
        # The installation: a gradient across the view (up to ~0.6 C, a window or a radiator), each pixel's offset.
        angle = rng.uniform(0.0, 2 * math.pi)
        slope = rng.uniform(0.0, 0.6) / FRAME_PX
        rows, cols = np.mgrid[0:FRAME_PX, 0:FRAME_PX] - (FRAME_PX - 1) / 2
        self._static = slope * (cols * math.cos(angle) + rows * math.sin(angle)) + rng.normal(0, 0.2, rows.shape)
        self._phase = rng.uniform(0.0, interval_s)  # sensors are not synchronised with each other
        self._rng = np.random.default_rng(int(rng.integers(0, 2**63)))
        # The scene, as the frames go by.
        self._drift = 0.0
        self._posture: Posture | None = None  # None: nobody in view
        self._position: Position | None = None  # last known place of the person in this room
        self._heading = 0.0
        self._waypoint: Position | None = None
        self._residual: tuple[Posture, Position, float, float, float, float] | None = None

    def _run(self, t_first: float) -> Iterator[Emission]:
        yield self._online(t_first)
        step = self.interval_s
        decay = math.exp(-step / self.drift_tau_s)
        k = 0
        while True:
            t = t_first + self._phase + k * step
            self._drift = decay * self._drift + math.sqrt(1 - decay**2) * self.drift_c * self._rng.normal()
            posture, position, heading = self._pose(t, first=k == 0)
            background = self.ambient_c + self._drift + self._static + self._residual_heat(t)
            pixels = frame_for(
                posture, position, self._rng, heading_rad=heading, background=background, noise_c=self.noise_c
            )
            ts = _ms(t, t_first)
            frame = ThermalFrame(ts=ts, room=self.room, pixels_c=tuple(tuple(row) for row in pixels.tolist()))
            yield self._emit(ts, TopicKind.DEVICE_THERMAL, frame)
            k += 1

    def _pose(self, t: float, *, first: bool) -> tuple[Posture, Position, float]:
        """Where the person is in this frame, and how they lie or stand (AWAY: not in view)."""
        segment = self.timeline.at(t)
        previous = self._posture
        here = segment.room == self.room and segment.posture is not Posture.AWAY
        posture = segment.posture if here else None
        if previous is not None and previous != posture and previous in _RESIDUAL and self._position is not None:
            share, tau = _RESIDUAL[previous]
            self._residual = (previous, self._position, self._heading, t, share, tau)
        self._posture = posture
        if posture is None:
            self._waypoint = None
            return Posture.AWAY, (0.0, 0.0), 0.0
        layout = self.layout
        if previous is None:  # came in (or was there when the sensor started)
            walks_in = segment.activity in _WALKS and not first
            self._position = layout.door if walks_in else self._floor_spot()
            self._waypoint = None
        if posture is Posture.SITTING:
            self._position, self._heading = layout.seat, layout.seat_heading_rad
        elif posture is Posture.LYING_BED:
            if layout.bed is not None:
                self._position, self._heading = layout.bed, layout.bed_heading_rad
            else:
                self._position, self._heading = layout.seat, layout.seat_heading_rad + math.pi / 2
        elif posture is Posture.LYING_FLOOR:
            if previous is not Posture.LYING_FLOOR:
                self._fall_down()
        elif segment.activity in _WALKS:
            self._walk()
        assert self._position is not None
        return posture, self._position, self._heading

    def _floor_spot(self) -> Position:
        """A random place on the open floor: inside the view's margins, not on the bed."""
        bed = self.layout.bed
        while True:
            row, col = (float(v) for v in self._rng.uniform(1.5, 6.5, size=2))
            if bed is None or ((row - bed[0]) / 2.8) ** 2 + ((col - bed[1]) / 1.6) ** 2 > 1.0:
                return row, col

    def _walk(self) -> None:
        """One frame of walking between random places on the floor."""
        assert self._position is not None
        if self._waypoint is None:
            self._waypoint = self._floor_spot()
        (row, col), (to_row, to_col) = self._position, self._waypoint
        d_row, d_col = to_row - row, to_col - col
        distance = math.hypot(d_row, d_col)
        stride = _WALK_PX_S * self.interval_s
        if distance <= stride:
            self._position, self._waypoint = self._waypoint, None
        else:
            self._position = (row + d_row * stride / distance, col + d_col * stride / distance)
        if distance > 0:
            self._heading = math.atan2(d_row, d_col) + math.pi / 2  # seen from above, the shoulders are across

    def _fall_down(self) -> None:
        """Land on the floor from where the person was: feet there, the body stretched out in some direction."""
        origin = self._position if self._position is not None else self._floor_spot()
        direction = self._rng.uniform(0.0, 2 * math.pi)
        row = origin[0] + 1.3 * math.sin(direction)
        col = origin[1] + 1.3 * math.cos(direction)
        # Keep the body mostly in view (a sensor is placed to cover the room's open floor).
        self._position = (min(max(row, 2.5), 5.5), min(max(col, 2.5), 5.5))
        self._heading = direction + math.pi  # the head ends up away from the feet

    def _residual_heat(self, t: float) -> np.ndarray | float:
        if self._residual is None:
            return 0.0
        posture, position, heading, left, share, tau = self._residual
        if self._posture == posture:  # back in the same place: the body covers its own imprint
            self._residual = None
            return 0.0
        weight = share * math.exp(-(t - left) / tau)
        if weight < 0.02:
            self._residual = None
            return 0.0
        return weight * _body_heat(posture, position[0], position[1], heading, False)


# ---------------------------------------------------------------------------------------------------------------
# Bed and chair
# ---------------------------------------------------------------------------------------------------------------
class _OccupancySensor(_TimelineSensor):
    """A pressure mat: occupied while the person is in `room` in `posture`, debounced, refreshed periodically."""

    place: Literal["bed", "chair"]
    posture: Posture

    def __init__(self, device_id: str, timeline: Timeline, room: str, refresh_s: float, debounce_s: float) -> None:
        super().__init__(device_id)
        if refresh_s <= 0 or debounce_s < 0:
            raise ValueError("refresh_s must be positive, debounce_s not negative")
        self.room = check_id(room, "room")
        self.timeline = timeline
        self.refresh_s = refresh_s
        self.debounce_s = debounce_s

    def _occupied(self, segment: Segment) -> bool:
        return segment.room == self.room and segment.posture is self.posture

    def changes(self) -> tuple[bool, list[tuple[float, bool]]]:
        """The state before the timeline starts, and every (time, occupied) change the sensor reports."""
        runs: list[tuple[float, float, bool]] = []  # consecutive segments with the same truth, merged
        for index, segment in enumerate(self.timeline.segments):
            start, end = _segment_bounds(self.timeline, index, -math.inf)
            truth = self._occupied(segment)
            if runs and runs[-1][2] == truth:
                runs[-1] = (runs[-1][0], end, truth)
            else:
                runs.append((start, end, truth))
        initial = state = runs[0][2]  # the sensor has been running for a while: its state has settled
        found = []
        for start, end, truth in runs:
            if truth != state and end - start >= self.debounce_s:
                state = truth
                found.append((start + self.debounce_s, truth))
        return initial, found

    def _run(self, t_first: float) -> Iterator[Emission]:
        yield self._online(t_first)
        state, changes = self.changes()
        later = [(ts, occupied) for ts, occupied in changes if ts > t_first]
        for ts, occupied in changes:
            if ts <= t_first:
                state = occupied
        yield self._report(t_first, state, t_first)
        last = t_first
        for ts, occupied in later:
            while last + self.refresh_s < ts:
                last += self.refresh_s
                yield self._report(last, state, t_first)
            state, last = occupied, ts
            yield self._report(ts, occupied, t_first)
        while True:
            last += self.refresh_s
            yield self._report(last, state, t_first)

    def _report(self, ts: float, occupied: bool, t_first: float) -> Emission:
        ts = _ms(ts, t_first)
        report = OccupancyReport(ts=ts, place=self.place, occupied=occupied, room=self.room)
        return self._emit(ts, TopicKind.DEVICE_OCCUPANCY, report)


class BedSensor(_OccupancySensor):
    """A pressure mat under the mattress: occupied while the person lies in bed in `room`."""

    place = "bed"
    posture = Posture.LYING_BED

    def __init__(
        self,
        device_id: str,
        timeline: Timeline,
        room: str = "bedroom",
        refresh_s: float = 300.0,
        *,
        debounce_s: float = 15.0,
    ) -> None:
        super().__init__(device_id, timeline, room, refresh_s, debounce_s)


class ChairSensor(_OccupancySensor):
    """A pressure pad on the person's usual seat in `room`: occupied whenever they sit in that room."""

    place = "chair"
    posture = Posture.SITTING

    def __init__(
        self,
        device_id: str,
        timeline: Timeline,
        room: str = "living_room",
        refresh_s: float = 300.0,
        *,
        debounce_s: float = 15.0,
    ) -> None:
        super().__init__(device_id, timeline, room, refresh_s, debounce_s)


# ---------------------------------------------------------------------------------------------------------------
# A home's set
# ---------------------------------------------------------------------------------------------------------------
def home_infrared(
    rooms: Sequence[str],
    timeline: Timeline,
    rng: np.random.Generator | None = None,
    *,
    rng_for: Callable[[str], np.random.Generator] | None = None,
    thermopile_rooms: Sequence[str] = ("bedroom", "bathroom", "living_room"),
    bed_sensor: bool = True,
    bed_room: str = "bedroom",
    chair_room: str | None = None,
    id_prefix: str = "",
    hold_s: float = 30.0,
    false_triggers_per_day: float = 0.0,
    thermal_interval_s: float = 2.0,
    ambient_c: float = 22.0,
) -> list[DeviceSimulator]:
    """A PIR per room (`PIR-<room>`), thermopiles (`THERMO-<room>`), a bed sensor (`BED-<room>`) and optionally a
    chair sensor (`CHAIR-<room>`), ids prefixed with `id_prefix`.

    Random generators come from `rng_for(device_id)` (independent of the order devices are built in) or, failing
    that, are drawn from `rng` in device order. Thermopile, bed and chair rooms must be rooms of the home.
    """
    if (rng is None) == (rng_for is None):
        raise ValueError("give exactly one of rng and rng_for")
    missing = [r for r in (*thermopile_rooms, *([bed_room] if bed_sensor else []), chair_room) if r and r not in rooms]
    if missing:
        raise ValueError(f"rooms {missing} are not rooms of the home {list(rooms)}")

    def generator(device_id: str) -> np.random.Generator:
        if rng_for is not None:
            return rng_for(device_id)
        assert rng is not None
        return np.random.default_rng(int(rng.integers(0, 2**63)))

    devices: list[DeviceSimulator] = []
    for room in rooms:
        device_id = f"{id_prefix}PIR-{room}"
        devices.append(
            PirSensor(
                device_id, room, timeline, generator(device_id), hold_s, false_triggers_per_day=false_triggers_per_day
            )
        )
    for room in thermopile_rooms:
        device_id = f"{id_prefix}THERMO-{room}"
        devices.append(ThermopileSensor(device_id, room, timeline, generator(device_id), thermal_interval_s, ambient_c))
    if bed_sensor:
        devices.append(BedSensor(f"{id_prefix}BED-{bed_room}", timeline, bed_room))
    if chair_room is not None:
        devices.append(ChairSensor(f"{id_prefix}CHAIR-{chair_room}", timeline, chair_room))
    return devices
