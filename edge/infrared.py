"""The home's infrared sensors: presence and inactivity, bed exit, night wandering, and the thermopile's fall.

Pure detectors: no MQTT, no wall clock. Time comes from the messages' timestamps and from `tick(now)`; whether a
moment is at night is asked of a `NightWindow` (the home's local time) by the caller, which passes it in.

- `NightWindow`: is a Unix time inside the home's night window (local time, DST-aware)? Cached per window.
- `ActivityTracker`: presence (is somebody at home?) and inactivity (no movement anywhere for too long).
- `BedExitDetector`: out of bed at night and not back within `bed_exit_return_s`.
- `NightWanderingDetector`: door or hallway motion at night (once per episode).
- `ThermalScene` / `ThermalFallDetector`: an 8x8 ceiling thermopile against a learned empty-room background;
  a warm area shaped like a person lying on the floor that stays there is a fall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from itertools import chain, pairwise
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from careloop import messages as m
from edge.models import HomeConfig, event_id

# ---------------------------------------------------------------------------------------------------------------
# Night
# ---------------------------------------------------------------------------------------------------------------


class NightWindow:
    """The home's night window (`night_start` to `night_end`, local time; may cross midnight), judged per instant.

    The answer is constant between two boundaries, so the current stretch is cached: a call costs a comparison
    except at a boundary (a tick a second for thousands of homes must not convert time zones every time).
    Equal start and end mean no night at all.
    """

    __slots__ = ("_end", "_from", "_night", "_start", "_tz", "_until")

    def __init__(self, start: time, end: time, timezone: str) -> None:
        self._tz = ZoneInfo(timezone)
        self._start = start
        self._end = end
        self._from = math.inf
        self._until = -math.inf
        self._night = False

    def is_night(self, ts: float) -> bool:
        """True when Unix time `ts` is inside the night window in the home's local time."""
        if not self._from <= ts < self._until:
            self._locate(ts)
        return self._night

    def _locate(self, ts: float) -> None:
        if self._start == self._end:
            self._from, self._until, self._night = -math.inf, math.inf, False
            return
        day = datetime.fromtimestamp(ts, self._tz).date()
        marks: list[tuple[float, bool]] = []
        for offset in (-1, 0, 1):  # the boundaries of the day before, the day, the day after surround any instant
            date = day + timedelta(days=offset)
            marks.append((datetime.combine(date, self._start, self._tz).timestamp(), True))
            marks.append((datetime.combine(date, self._end, self._tz).timestamp(), False))
        marks.sort()
        for (begin, night), (until, _) in pairwise(marks):
            if begin <= ts < until:
                self._from, self._until, self._night = begin, until, night
                return
        raise AssertionError("unreachable: three days of boundaries surround any instant")  # pragma: no cover


# ---------------------------------------------------------------------------------------------------------------
# Presence and inactivity
# ---------------------------------------------------------------------------------------------------------------
#: Room names that are a way out of the home: motion there, then nothing, means the person probably left.
EXIT_WORDS = ("door", "entrance", "exit")


def is_exit_room(room: str) -> bool:
    """True for a room that is a way out (a front door, an entrance)."""
    return any(word in room for word in EXIT_WORDS)


class ActivityTracker:
    """Presence (somebody at home, by the infrared) and inactivity (no movement anywhere for too long).

    Presence starts as occupied (an elder's home is normally occupied; saying so at every restart would only add
    noise upstream) and turns empty when the person evidently left: the last PIR motion was at an exit (a front
    door), or the wearer is confirmed outside the geofence, and no infrared evidence (PIR motion, a person in a
    thermopile's view, an occupied bed or chair) came for `empty_after_s`. Any infrared evidence makes it occupied
    again at once. Each change is a `PresenceEvent`.

    Inactivity: movement is PIR motion, getting in or out of a bed or chair, a button press, or the wearable
    moving (walking-level movement: see `edge.monitor`). Quiet time only counts while the home is occupied and the
    wearer is not outside. Day and night have their own limits (`inactivity_day_s`, `inactivity_night_s`): each
    quiet second spends 1 / limit of a budget, the limit being the one of the moment (night in the home's local
    time), and the event is raised when the budget is spent. So 4 h of daytime quiet raise it, 10 h of night
    quiet too, and a quiet stretch across the morning boundary is judged in proportion (5 h of night plus 2 h of
    morning quiet raises it), rather than the limit jumping at 06:00. One event per quiet stretch; movement
    re-arms it. The quiet stretch starts at the last movement, or at the monitor's first tick when none was seen
    yet (so a restart delays the detection by at most the time the agent was down).
    """

    def __init__(self, config: HomeConfig, resident_id: str | None, *, empty_after_s: float = 600.0) -> None:
        self.config = config
        self.resident_id = resident_id
        self.empty_after_s = empty_after_s
        self.present = True
        self.last_room: str | None = None  # room of the last PIR motion
        self.last_evidence_ts = -math.inf  # last infrared sign of somebody at home
        self.last_motion_ts: float | None = None  # last movement seen (None: none yet)
        self.wearer_outside = False
        self._quiet_since: float | None = None
        self._spent = 0.0  # share of the inactivity budget spent in this quiet stretch
        self._raised = False
        self._last_tick: float | None = None
        self._first_tick = -math.inf

    # -- evidence ---------------------------------------------------------------------------------------------
    def infrared_motion(self, ts: float, room: str, now: float) -> list[m.PresenceEvent]:
        """A PIR saw motion in `room` at `ts`: somebody is at home and moving."""
        self.last_room = room
        self.movement(ts)
        return self.infrared_presence(ts, now)

    def infrared_presence(self, ts: float, now: float) -> list[m.PresenceEvent]:
        """The infrared sees somebody (a person in view, an occupied bed or chair) at `ts`, without movement."""
        self.last_evidence_ts = max(self.last_evidence_ts, ts)
        if self.present:
            return []
        self.present = True
        self._restart(ts)
        return [self._presence(now, True, ts)]

    def movement(self, ts: float) -> None:
        """Somebody moved at `ts` (any source): the quiet stretch starts over."""
        if self.last_motion_ts is None or ts > self.last_motion_ts:
            self.last_motion_ts = ts
            self._restart(ts)

    def set_wearer_outside(self, outside: bool) -> None:
        """The geofence's verdict on the wearer: confirmed outside the home zone, or back inside it."""
        self.wearer_outside = outside

    # -- time -------------------------------------------------------------------------------------------------
    def tick(self, now: float, night: bool) -> list[m.PresenceEvent | m.InactivityEvent]:
        """Advance to `now` (`night`: whether `now` is in the home's night window)."""
        out: list[m.PresenceEvent | m.InactivityEvent] = []
        last, self._last_tick = self._last_tick, now
        if self._quiet_since is None:
            self._quiet_since = self._first_tick = now
        if self.present and (self.wearer_outside or (self.last_room is not None and is_exit_room(self.last_room))):
            since = self.last_evidence_ts if self.last_evidence_ts > -math.inf else self._first_tick
            if now - since >= self.empty_after_s:
                self.present = False
                out.append(self._presence(now, False, since))
        if not self.present or self.wearer_outside:
            self._restart(now)  # nobody at home to be inactive: the clock starts when they are back
            return out
        # quiet since the later of the last tick and the last movement (a movement between ticks restarts the
        # stretch at its own time, not at the tick before it)
        start = last if last is None or self._quiet_since is None else max(last, self._quiet_since)
        if start is not None and now > start:
            limit = self.config.inactivity_night_s if night else self.config.inactivity_day_s
            self._spent += (now - start) / limit
        if self._spent >= 1.0 and not self._raised:
            self._raised = True
            out.append(self._inactivity(now))
        return out

    def _restart(self, ts: float) -> None:
        self._quiet_since = ts
        self._spent = 0.0
        self._raised = False

    def _presence(self, now: float, present: bool, evidence_ts: float) -> m.PresenceEvent:
        # Named by the evidence (the sign that brought somebody back, the last sign before the home emptied),
        # not by the tick that noticed: a replay after a restart names it the same.
        return m.PresenceEvent(
            event_id=event_id("present" if present else "absent", self.config.home_id, evidence_ts),
            ts=now,
            resident_id=self.resident_id,
            room=self.last_room,
            present=present,
        )

    def _inactivity(self, now: float) -> m.InactivityEvent:
        assert self._quiet_since is not None
        return m.InactivityEvent(
            event_id=event_id("inactivity", self.config.home_id, self._quiet_since),
            ts=now,
            resident_id=self.resident_id,
            room=self.last_room,
            duration_s=max(now - self._quiet_since, 1e-3),
            last_motion_ts=self.last_motion_ts,
            last_room=self.last_room,
        )


# ---------------------------------------------------------------------------------------------------------------
# Bed exit
# ---------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Bed:
    room: str | None
    occupied: bool | None = None
    left_ts: float | None = None  # got up at night, not back yet
    raised: bool = False


class BedExitDetector:
    """Out of bed at night and not back within `bed_exit_return_s`: one `BedExitEvent` per exit.

    Only a change from occupied to empty counts (the sensor refreshes its state every few minutes), and only when
    it happens inside the night window (judged at the report's time; the mat reports after its own debounce, so
    the exit happened a few seconds earlier). Back in bed before the limit cancels it. The event is raised at the
    first tick past `left_ts + bed_exit_return_s`, even if that is after the night ends: the exit was at night.
    """

    def __init__(self, config: HomeConfig, resident_id: str | None) -> None:
        self.return_s = config.bed_exit_return_s
        self.resident_id = resident_id
        self._beds: dict[str, _Bed] = {}

    def occupancy(self, device_id: str, room: str | None, occupied: bool, ts: float, night: bool) -> None:
        """A bed sensor's report (`night`: whether `ts` is in the night window)."""
        bed = self._beds.get(device_id)
        if bed is None:
            bed = self._beds[device_id] = _Bed(room)
        was, bed.occupied = bed.occupied, occupied
        if occupied:
            bed.left_ts = None
            bed.raised = False
        elif was is True and night:
            bed.left_ts = ts
            bed.raised = False

    def tick(self, now: float) -> list[m.BedExitEvent]:
        """Raise the exits whose return time has passed."""
        out = []
        for device_id, bed in self._beds.items():
            if bed.left_ts is not None and not bed.raised and now - bed.left_ts >= self.return_s:
                bed.raised = True
                out.append(
                    m.BedExitEvent(
                        event_id=event_id("bed_exit", device_id, bed.left_ts),
                        ts=now,
                        resident_id=self.resident_id,
                        device_id=device_id,
                        room=bed.room,
                        left_ts=bed.left_ts,
                        away_s=now - bed.left_ts,
                    )
                )
        return out


# ---------------------------------------------------------------------------------------------------------------
# Night wandering
# ---------------------------------------------------------------------------------------------------------------
class NightWanderingDetector:
    """Motion at night in the home's `wandering_rooms`: one `NightWanderingEvent` per episode.

    Motion at an exit (a front door: see `is_exit_room`) at night raises the event at once. Motion in a corridor
    (a hallway) is how one gets to the bathroom at night, so it raises the event only when it does not lead on:
    no motion in any other room (bathroom, kitchen, back to the bedroom) within `pass_through_s` of it. An
    episode is the run of wandering-room motion with gaps under `episode_gap_s`; its first motion names the
    event, so a restart that sees the same episode gives the same id.
    """

    def __init__(
        self,
        config: HomeConfig,
        resident_id: str | None,
        *,
        pass_through_s: float = 120.0,
        episode_gap_s: float = 900.0,
    ) -> None:
        self.home_id = config.home_id
        self.rooms = frozenset(config.wandering_rooms)
        self.resident_id = resident_id
        self.pass_through_s = pass_through_s
        self.episode_gap_s = episode_gap_s
        self._episode_start: float | None = None
        self._last_motion = -math.inf
        self._raised = False
        self._corridor: tuple[float, str] | None = None  # (time, room) of corridor motion waiting to lead on

    def motion(self, room: str, ts: float, night: bool, now: float) -> list[m.NightWanderingEvent]:
        """A PIR saw motion in `room` at `ts` (`night`: whether `ts` is in the night window)."""
        if room not in self.rooms:
            if self._corridor is not None and ts > self._corridor[0]:
                self._corridor = None  # went on to another room: passing through, not wandering
            return []
        if not night:
            return []
        if self._episode_start is None or ts - self._last_motion > self.episode_gap_s:
            self._episode_start, self._raised, self._corridor = ts, False, None
        self._last_motion = max(self._last_motion, ts)
        if self._raised:
            return []
        if is_exit_room(room):
            return [self._raise(room, now)]
        if self._corridor is None:
            self._corridor = (ts, room)
        return []

    def tick(self, now: float) -> list[m.NightWanderingEvent]:
        """Raise a corridor episode that did not lead on within `pass_through_s`."""
        if self._corridor is None or self._raised or now - self._corridor[0] < self.pass_through_s:
            return []
        return [self._raise(self._corridor[1], now)]

    def _raise(self, room: str, now: float) -> m.NightWanderingEvent:
        assert self._episode_start is not None
        self._raised, self._corridor = True, None
        return m.NightWanderingEvent(
            event_id=event_id("night_wandering", self.home_id, self._episode_start),
            ts=now,
            resident_id=self.resident_id,
            room=room,
            zone=room,
        )


# ---------------------------------------------------------------------------------------------------------------
# Thermopile
# ---------------------------------------------------------------------------------------------------------------
FRAME_PX = 8
#: A pixel this much above the background is part of a warm area, degrees C (sensor noise is about 0.25 C, so
#: 6 sigma; a person's clothes read 3-6 C above a 22 C room where they fill a pixel).
WARM_C = 1.5
#: Pixels this much above the background are kept out of the background's fast learning (they may be a person).
HOT_C = 1.0
#: The background follows the empty room (drift, sunlight) with this time constant, seconds ...
BACKGROUND_TAU_S = 300.0
#: ... learning from the frames of every this many seconds at once.
LEARN_EVERY_S = 10.0
#: ... and absorbs a warm area that does not move (a radiator switched on, a sleeper's duvet) over hours: a person
#: lying still on the floor fades only long after the fall was raised (by about 8 % in 30 minutes). Where the
#: person lay reads a little cold once they get up, and is relearned within minutes.
ABSORB_TAU_S = 6.0 * 3600.0
#: A person in view: the warmest pixel at least this far above the background, degrees C. The warm imprint a
#: person leaves on a seat or bed (under 2 C, fading over minutes) stays below it.
PERSON_PEAK_C = 2.5
#: A person lying on the floor, seen from the ceiling (measured on rendered frames in a 22 C room, see the tests):
#: about 8-11 warm pixels, elongated (ratio of the principal axes about 2.8, >= 2.2), holding 23-35 C.px of excess
#: heat. A standing person: 3-7 pixels, compact (<= 2), <= 22 C.px; sitting: 5-9 pixels, <= 2.2, <= 27 C.px
#: (never both long and heavy at once); in bed, under a duvet: faint (<= 18 C.px).
FLOOR_MIN_PX = 7
FLOOR_MIN_MASS_C = 24.0
FLOOR_MIN_ELONGATION = 2.1
FLOOR_MIN_PEAK_C = 3.0

_ROWS, _COLS = (a.ravel().astype(np.float64) for a in np.mgrid[0:FRAME_PX, 0:FRAME_PX])
#: Weighted sums over pixels in one matrix product: weight, row, col, row^2, col^2, row*col.
_MOMENTS = np.stack([np.ones(FRAME_PX * FRAME_PX), _ROWS, _COLS, _ROWS**2, _COLS**2, _ROWS * _COLS], axis=1)


@dataclass(frozen=True, slots=True)
class BlobFeatures:
    """The warm area of one frame, relative to the learned background."""

    warm_px: int  # pixels more than WARM_C above the background
    mass_c: float  # sum of their excess, degrees C x pixels: area times warmth
    peak_c: float  # the warmest pixel's excess
    elongation: float  # sqrt of the ratio of the principal second moments (1: round); 0 without warm pixels

    @property
    def person(self) -> bool:
        """Somebody is in view (standing, sitting, lying)."""
        return self.peak_c >= PERSON_PEAK_C and self.warm_px >= 2

    @property
    def on_floor(self) -> bool:
        """The warm area has the shape and warmth of a person lying on the floor."""
        return (
            self.warm_px >= FLOOR_MIN_PX
            and self.mass_c >= FLOOR_MIN_MASS_C
            and self.elongation >= FLOOR_MIN_ELONGATION
            and self.peak_c >= FLOOR_MIN_PEAK_C
        )


_EMPTY = BlobFeatures(0, 0.0, 0.0, 0.0)


class ThermalScene:
    """One thermopile's learned empty-room background, and the warm area of each frame against it.

    The first frame seeds the background with its median (most of the 64 pixels see the floor even when somebody
    is in view, and a person present at start then stands out instead of being learned). Then, every
    `LEARN_EVERY_S` of frames, the background moves towards what it sees: quickly (`BACKGROUND_TAU_S`) where
    nothing warm is, very slowly (`ABSORB_TAU_S`) where something is, plus the frame's overall offset there (the
    room warming up), so a person staying put is not learned into the floor within the hours that matter.
    Learning every few frames instead of every frame changes nothing at these time constants and halves the cost
    (a frame costs a few microseconds: thousands of homes, a frame every 2 s per room).
    """

    __slots__ = ("_background", "_last_ts", "_unlearned_s")

    def __init__(self) -> None:
        self._background: npt.NDArray[np.float64] | None = None
        self._last_ts: float | None = None
        self._unlearned_s = 0.0  # frame time not yet learned from

    def update(self, pixels: npt.NDArray[np.float64], ts: float) -> BlobFeatures:
        """Features of the 64-pixel frame (flat, degrees C) taken at `ts`; learns the background from it."""
        background = self._background
        if background is None:
            background = self._background = np.full(FRAME_PX * FRAME_PX, float(np.median(pixels)))
        if self._last_ts is not None:
            self._unlearned_s += min(max(ts - self._last_ts, 0.0), BACKGROUND_TAU_S)
        self._last_ts = ts
        excess = pixels - background
        if self._unlearned_s >= LEARN_EVERY_S:
            self._learn(background, excess, min(self._unlearned_s, BACKGROUND_TAU_S))
            self._unlearned_s = 0.0
        peak = float(excess.max())
        if peak <= WARM_C:
            return _EMPTY
        warm = excess * (excess > WARM_C)
        mass, s_row, s_col, s_rr, s_cc, s_rc = (warm @ _MOMENTS).tolist()
        row, col = s_row / mass, s_col / mass
        var_r = s_rr / mass - row * row
        var_c = s_cc / mass - col * col
        cov = s_rc / mass - row * col
        half_trace = 0.5 * (var_r + var_c)
        spread = math.sqrt(max(half_trace * half_trace - (var_r * var_c - cov * cov), 0.0))
        major, minor = half_trace + spread, max(half_trace - spread, 1e-3)  # a one-pixel-wide line is not infinite
        return BlobFeatures(
            warm_px=int(np.count_nonzero(warm)),
            mass_c=mass,
            peak_c=peak,
            elongation=math.sqrt(max(major, 0.0) / minor),
        )

    @staticmethod
    def _learn(background: npt.NDArray[np.float64], excess: npt.NDArray[np.float64], dt: float) -> None:
        fast, slow = dt / BACKGROUND_TAU_S, dt / ABSORB_TAU_S
        hot = excess > HOT_C
        n_hot = int(np.count_nonzero(hot))
        if n_hot == 0:
            background += fast * excess
            return
        n_cold = excess.size - n_hot
        level = (float(excess.sum()) - float(excess[hot].sum())) / n_cold if n_cold else 0.0
        background += np.where(hot, slow * excess + fast * level, fast * excess)


@dataclass(frozen=True, slots=True)
class ThermalFall:
    """A fall the thermopile saw: a person-shaped warm area at floor level that stayed."""

    device_id: str
    room: str | None
    impact_ts: float  # the first floor-shaped frame
    detected_ts: float
    confidence: float
    features: dict[str, float]


class ThermalFallDetector:
    """Falls seen by one ceiling thermopile: floor-shaped frames (`BlobFeatures.on_floor`) for `stay_s`.

    A candidate starts at the first floor-shaped frame and is confirmed once it has lasted `stay_s` with at least
    `min_share` of its frames floor-shaped (a noisy frame does not break it); `max_misses` non-floor frames in a
    row end it (the person got up, or was only bending down). After a fall, the room re-arms once no floor-shaped
    frame has been seen for `rearm_s` (one event for a person lying there for an hour). Thermal-only confidence is
    `confidence`: the shape says "a person on the floor" but not how they got there.
    """

    def __init__(
        self,
        device_id: str,
        room: str | None,
        *,
        stay_s: float = 15.0,
        min_share: float = 0.6,
        max_misses: int = 3,
        rearm_s: float = 60.0,
        confidence: float = 0.75,
    ) -> None:
        self.device_id = device_id
        self.room = room
        self.stay_s = stay_s
        self.min_share = min_share
        self.max_misses = max_misses
        self.rearm_s = rearm_s
        self.confidence = confidence
        self.scene = ThermalScene()
        self.last_ts = -math.inf
        self.last = _EMPTY
        self._start: float | None = None
        self._frames = 0
        self._floor_frames = 0
        self._misses = 0
        self._raised = False
        self._last_floor = -math.inf

    def update(self, pixels: Sequence[Sequence[float]] | npt.NDArray[np.float64], ts: float) -> ThermalFall | None:
        """Feed one frame (8x8, degrees C) taken at `ts`; a `ThermalFall` when one is confirmed by it."""
        if isinstance(pixels, np.ndarray):
            frame = np.asarray(pixels, dtype=np.float64).reshape(-1)
        else:  # the wire's tuple of rows: fromiter is the cheapest way in
            frame = np.fromiter(chain.from_iterable(pixels), np.float64, FRAME_PX * FRAME_PX)
        features = self.scene.update(frame, ts)
        self.last, self.last_ts = features, ts
        if features.on_floor:
            self._last_floor = ts
            if self._start is None:
                self._start, self._frames, self._floor_frames = ts, 0, 0
            self._frames += 1
            self._floor_frames += 1
            self._misses = 0
        elif self._start is not None:
            self._frames += 1
            self._misses += 1
            if self._misses >= self.max_misses:
                self._start = None
        if self._raised and ts - self._last_floor >= self.rearm_s:
            self._raised = False
        start = self._start
        if (
            start is None
            or self._raised
            or ts - start < self.stay_s
            or self._floor_frames < self.min_share * self._frames
        ):
            return None
        self._raised = True
        self._start = None
        return ThermalFall(
            device_id=self.device_id,
            room=self.room,
            impact_ts=start,
            detected_ts=ts,
            confidence=self.confidence,
            features={
                "thermal_warm_px": float(features.warm_px),
                "thermal_mass_c": round(features.mass_c, 2),
                "thermal_peak_c": round(features.peak_c, 2),
                "thermal_elongation": round(features.elongation, 2),
                "thermal_floor_s": round(ts - start, 1),
            },
        )

    def watching(self, now: float, fresh_s: float = 5.0) -> bool:
        """A person is in view (or a floor candidate runs) in a frame from the last `fresh_s`: it could confirm
        a fall the wearable just reported."""
        return now - self.last_ts <= fresh_s and (self.last.person or self._start is not None)

    @property
    def candidate(self) -> bool:
        """A floor-shaped area is being watched and not yet confirmed."""
        return self._start is not None
