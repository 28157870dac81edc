"""Synthetic accelerometer signal of a person's timeline, as a bracelet (wrist) or a belt clip (waist) measures it.

The reading, in g and in the sensor's frame, is modelled as `up(t) + dyn(t) + noise`:
- `up(t)`: the unit vector pointing up (away from the floor) in the sensor frame: an accelerometer at rest reads
  +1 g along it, so it carries the orientation of the limb or trunk;
- `dyn(t)`: the sensor's own acceleration, g: gait, hand movements, the free fall and impact of a fall;
- noise: white, per axis (0.005 g at the wrist, 0.0035 g at the waist: the floors seen in the recordings).
A free fall is `dyn` cancelling `up` (the magnitude drops towards 0); an impact is a short pulse of several g.

Sensor frames (so that gravity sits where the real devices have it):
- wrist: x along the forearm towards the hand, y towards the thumb, z out of the watch face;
- waist (belt clip, as SisFall's device): x to the wearer's left, y down the trunk, z forward.
A standing person's waist reads about (0, -1, 0); lying on the back (0, 0, 1); a hanging arm's wrist (-1, 0, 0).

Each segment of the timeline gets a renderer, built when the stream first reaches it from a generator seeded by
the synth's seed and the segment's index: orientations, gait frequency, the moments of hand movements and
turn-overs are functions of time. A renderer starts from the orientation the previous one had at the boundary
and the previous renderer's movement is cross-faded out, so consecutive windows (and segments) join without a
jump. Only the last two renderers are kept. Noise comes from the synth's generator, window by window, so a run is
deterministic for a seed and a sequence of calls.

Falls: a FALL segment should last `FALL_SEGMENT_S`. It holds the activity before the fall (walking for trips,
slips and lateral falls, standing for a syncope, sitting for a fall from a chair), the loss of balance, the
descent (magnitude well below 1 g), the impact at `impact_time(segment)` (the largest peak of the segment), and
the first seconds on the floor. See `FALL_PHASES` for the durations of each kind.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from careloop.messages import ACCEL_LIMIT_G, MAX_ACCEL_SAMPLES, AccelBatch
from careloop.topics import TopicKind
from simulators.emission import Emission
from simulators.timeline import Activity, FallKind, Posture, Segment, Timeline

Array = npt.NDArray[np.float64]
Placement = Literal["wrist", "waist"]
PLACEMENTS: tuple[Placement, ...] = ("wrist", "waist")

#: How long a scenario should make a FALL segment, seconds: 4 s of activity and fall, about 4 s on the floor.
FALL_SEGMENT_S = 8.0
#: Normal activity at the start of a FALL segment before the loss of balance, seconds (when the segment allows).
PRE_FALL_S = 3.0
#: A FALL segment keeps at least this long after the impact; shorter segments lose pre-fall activity first.
POST_IMPACT_MIN_S = 1.0
#: Per kind: (loss of balance, descent) in seconds. The impact comes at the end of the descent; the magnitude
#: is lowest (free fall) during the descent. WEDA-FALL's annotated falls peak 1.1-1.3 s after they start.
FALL_PHASES: Mapping[FallKind, tuple[float, float]] = MappingProxyType(
    {
        FallKind.TRIP_FORWARD: (0.5, 0.5),
        FallKind.SLIP_BACKWARD: (0.45, 0.55),
        FallKind.LATERAL: (0.5, 0.5),
        FallKind.SYNCOPE: (1.3, 0.6),  # the knees give way slowly before the body drops
        FallKind.FROM_SITTING: (0.7, 0.35),  # sliding off the seat, then a short drop
    }
)
#: Renderers evaluate up to this far past their segment's end (while the next one fades in), seconds.
_OVERRUN_S = 2.0
_NOISE_G: Mapping[Placement, float] = MappingProxyType({"wrist": 0.005, "waist": 0.0035})
_TWO_PI = 2.0 * math.pi


def fall_kind(segment: Segment) -> FallKind:
    """The kind of a FALL segment (its `kind` param); ValueError when it has none."""
    kind = segment.params.get("kind")
    if kind is None:
        raise ValueError(
            f"the FALL segment at {segment.start} has no `kind` param (one of {[k.value for k in FallKind]})"
        )
    return FallKind(kind)


def impact_time(segment: Segment) -> float:
    """Ground-truth impact time (Unix s) of a FALL segment: where the synthesised magnitude peaks.

    `start + PRE_FALL_S + loss of balance + descent` (see `FALL_PHASES`); in a segment shorter than
    `FALL_SEGMENT_S` the pre-fall activity is shortened so that `POST_IMPACT_MIN_S` remain after the impact.
    A segment too short for its fall's loss of balance and descent raises ValueError.
    """
    if segment.activity is not Activity.FALL:
        raise ValueError(f"impact_time needs a FALL segment, not {segment.activity}")
    onset, descent = FALL_PHASES[fall_kind(segment)]
    core = onset + descent
    if segment.duration < core:
        raise ValueError(
            f"the FALL segment at {segment.start} lasts {segment.duration:.2f} s; a {fall_kind(segment)} fall needs "
            f"at least {core:.2f} s (give it FALL_SEGMENT_S = {FALL_SEGMENT_S} s)"
        )
    pre = min(PRE_FALL_S, max(0.0, segment.duration - core - POST_IMPACT_MIN_S))
    return segment.start + pre + core


# ---------------------------------------------------------------------------------------------------------------
# vectors
# ---------------------------------------------------------------------------------------------------------------
def _unit(v: Array) -> Array:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True), dtype=np.float64)


def _smoothstep(u: Array) -> Array:
    c = np.clip(u, 0.0, 1.0)
    return np.asarray(c * c * (3.0 - 2.0 * c), dtype=np.float64)


def _perpendicular(v: Array) -> Array:
    """Some unit vector perpendicular to unit vector v."""
    other = np.array([1.0, 0.0, 0.0]) if abs(v[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    return _unit(np.cross(v, other))


def _slerp(u0: Array, u1: Array, w: Array) -> Array:
    """Rows of u0 turned towards the rows of u1 by fraction w, along great circles (unit vectors in, out)."""
    u0 = np.broadcast_to(u0, (len(w), 3))
    u1 = np.broadcast_to(u1, (len(w), 3))
    dot = np.clip(np.einsum("ij,ij->i", u0, u1), -1.0, 1.0)
    if np.all(dot > 0.9999):
        return _unit(u0 + (u1 - u0) * w[:, None])
    omega = np.arccos(dot)
    sin_omega = np.sin(omega)
    opposite = sin_omega < 1e-6
    if np.any(opposite):  # no unique great circle: go round through a perpendicular
        u1 = u1.copy()
        for i in np.flatnonzero(opposite):
            if dot[i] < 0:
                u1[i] = _unit(u1[i] + 1e-3 * _perpendicular(u0[i]))
        dot = np.clip(np.einsum("ij,ij->i", u0, u1), -1.0, 1.0)
        omega = np.arccos(dot)
        sin_omega = np.maximum(np.sin(omega), 1e-9)
    a = np.sin((1.0 - w) * omega) / sin_omega
    b = np.sin(w * omega) / sin_omega
    same = omega < 1e-6
    a = np.where(same, 1.0 - w, a)
    b = np.where(same, w, b)
    return _unit(u0 * a[:, None] + u1 * b[:, None])


def _slerp_pair(p0: Array, p1: Array, w: Array) -> Array:
    """Unit vector p0 turned towards unit vector p1 by fractions w (n,), along the great circle: (n, 3)."""
    omega = math.acos(max(-1.0, min(1.0, float(p0 @ p1))))
    if omega < 1e-6:
        return np.asarray(np.broadcast_to(p0, (len(w), 3)), dtype=np.float64)
    if omega > math.pi - 1e-6:  # opposite poses: the general case picks a way round
        return _slerp(p0, p1, w)
    s = math.sin(omega)
    return np.asarray(np.outer(np.sin((1.0 - w) * omega) / s, p0) + np.outer(np.sin(w * omega) / s, p1))


def _rotate(v: Array, axis: Array, angle: Array | float) -> Array:
    """Rodrigues: v (3,) turned about unit `axis` (3,) by `angle` radians (a scalar, or (n,) giving (n, 3))."""
    c2 = axis * float(axis @ v)
    c1 = np.cross(axis, v)
    a = np.asarray(angle, dtype=np.float64)
    if a.ndim == 0:
        return np.asarray((v - c2) * math.cos(float(a)) + c1 * math.sin(float(a)) + c2, dtype=np.float64)
    return np.asarray(np.outer(np.cos(a), v - c2) + np.outer(np.sin(a), c1) + c2, dtype=np.float64)


def _turned(v: Array, degrees: float, rng: np.random.Generator) -> Array:
    """v turned by `degrees` about a random axis perpendicular to it."""
    e1 = _perpendicular(v)
    e2 = np.cross(v, e1)
    beta = rng.uniform(0.0, _TWO_PI)
    axis = math.cos(beta) * e1 + math.sin(beta) * e2
    return _unit(_rotate(v, axis, math.radians(degrees)))


def _random_unit(rng: np.random.Generator) -> Array:
    return _unit(rng.normal(size=3))


def _pulse(t: Array, centre: float, width_s: float) -> Array:
    """Gaussian bump of height 1 at `centre`."""
    z = (t - centre) / width_s
    return np.asarray(np.exp(-0.5 * z * z), dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------
# poses: where "up" is in the sensor frame, per placement and posture
# ---------------------------------------------------------------------------------------------------------------
def _wrist(elevation_deg: float, roll_deg: float) -> Array:
    """Forearm `elevation_deg` below the horizontal (negative: hand above the elbow), rolled `roll_deg` from
    thumb-up (0) towards watch-face-up (90)."""
    e, r = math.radians(elevation_deg), math.radians(roll_deg)
    return np.array([-math.sin(e), math.cos(e) * math.cos(r), math.cos(e) * math.sin(r)])


def _waist(pitch_deg: float, roll_deg: float) -> Array:
    """Trunk leaning `pitch_deg` forward (negative: reclined) and `roll_deg` sideways."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    return _unit(np.array([math.sin(r), -math.cos(p) * math.cos(r), -math.sin(p)]))


_SUPINE = np.array([0.0, 0.0, 1.0])
_PRONE = np.array([0.0, 0.0, -1.0])
_LEFT_SIDE = np.array([-1.0, 0.0, 0.0])  # lying on the left side: the wearer's right points up
_RIGHT_SIDE = np.array([1.0, 0.0, 0.0])
_LYING_WAIST = (_SUPINE, _LEFT_SIDE, _RIGHT_SIDE, _PRONE)

PoseFamily = Literal["hanging", "working", "sitting", "upright", "lying", "floor"]


def _pose(placement: Placement, family: PoseFamily, rng: np.random.Generator) -> Array:
    """A random pose of a family: `hanging` arm while walking, hands `working` while standing, `sitting`,
    `upright` trunk, `lying` in bed or on the `floor`."""
    if placement == "wrist":
        if family in ("hanging", "upright"):
            return _wrist(rng.uniform(45.0, 85.0), rng.uniform(-20.0, 70.0))
        if family == "working":
            return _wrist(rng.uniform(-10.0, 35.0), rng.uniform(40.0, 110.0))
        if family == "sitting":
            return _wrist(rng.uniform(-5.0, 30.0), rng.uniform(30.0, 120.0))
        return _random_unit(rng)  # lying, floor: the arm can be anywhere
    if family in ("sitting",):
        return _waist(rng.uniform(-18.0, -2.0), rng.normal(0.0, 3.0))
    if family in ("lying", "floor"):
        pose = _LYING_WAIST[int(rng.choice(4, p=[0.5, 0.2, 0.2, 0.1]))]
        return _turned(pose, rng.uniform(0.0, 15.0), rng)
    return _waist(rng.normal(4.0, 3.0), rng.normal(0.0, 2.0))  # standing, walking, hands busy


# ---------------------------------------------------------------------------------------------------------------
# renderers
# ---------------------------------------------------------------------------------------------------------------
class _Renderer:
    """Renders one segment: `render(t)` gives up (3,) or (n, 3), and dyn (n, 3), for times t (n,)."""

    #: How long the previous segment's signal fades out at this one's start, seconds.
    fade_s = 1.0

    def __init__(self, segment: Segment, placement: Placement) -> None:
        self.segment = segment
        self.placement = placement
        self.start = segment.start
        self.end = segment.end

    def render(self, t: Array) -> tuple[Array, Array]:
        """Orientation and movement at times t."""
        raise NotImplementedError

    def up_at(self, t: float) -> Array:
        """The orientation at one time."""
        up, _ = self.render(np.array([t]))
        return np.asarray(np.broadcast_to(up, (1, 3))[0], dtype=np.float64)


class _Oscillators:
    """Sum of fixed sinusoids along fixed directions: tremor, fidgeting, sway, breathing. Cheap: one sin call."""

    def __init__(self, t_ref: float, hz: list[float], phase: list[float], vectors: list[Array]) -> None:
        self.t_ref = t_ref
        self.omega = _TWO_PI * np.asarray(hz, dtype=np.float64)
        self.phase = np.asarray(phase, dtype=np.float64)
        self.weights = np.asarray(vectors, dtype=np.float64).reshape(-1, 3)

    def render(self, t: Array) -> Array:
        """Their sum at times t, (n, 3)."""
        if not len(self.omega):
            return np.zeros((len(t), 3))
        return np.asarray(np.sin(np.multiply.outer(t - self.t_ref, self.omega) + self.phase) @ self.weights)


class _PoseTrack:
    """Orientation that holds still, then moves to the next pose (smoothly, with a burst of movement), and so on.

    Move k starts at `times[k]`, lasts `durations[k]`, goes from `poses[k]` to `poses[k + 1]`.
    """

    def __init__(
        self,
        poses: Array,
        times: Array,
        durations: Array,
        burst_g: Array,
        burst_hz: Array,
        burst_dir: Array,
    ) -> None:
        self.poses = poses
        self.times = times
        self.durations = durations
        self.ends = times + durations
        self.burst_g = burst_g
        self.burst_hz = burst_hz
        self.burst_dir = burst_dir
        self._times = times.tolist()
        self._ends = self.ends.tolist()

    def render(self, t: Array) -> tuple[Array, Array | None]:
        """Orientation (3,) or (n, 3), and the movement bursts (n, 3) or None when still."""
        k0 = bisect.bisect_right(self._times, float(t[0])) - 1
        k1 = bisect.bisect_right(self._times, float(t[-1])) - 1
        if k0 == k1 and (k0 < 0 or float(t[0]) >= self._ends[k0]):
            return self.poses[k0 + 1], None
        if k0 == k1:  # within one move (the usual case): two fixed poses, no per-sample lookups
            u = np.clip((t - self.times[k0]) / self.durations[k0], 0.0, 1.0)
            up = _slerp_pair(self.poses[k0], self.poses[k0 + 1], _smoothstep(u))
            wave = np.sin(_TWO_PI * self.burst_hz[k0] * (t - self.times[k0]))
            return up, np.outer(self.burst_g[k0] * np.sin(np.pi * u) ** 2 * wave, self.burst_dir[k0])
        k = np.searchsorted(self.times, t, side="right") - 1
        moving = k >= 0
        kc = np.maximum(k, 0)
        u = np.where(moving, np.clip((t - self.times[kc]) / self.durations[kc], 0.0, 1.0), 1.0)
        up = _slerp(self.poses[kc], self.poses[k + 1], _smoothstep(u))
        envelope = np.sin(np.pi * u) ** 2 * moving
        wave = np.sin(_TWO_PI * self.burst_hz[kc] * (t - self.times[kc]))
        dyn = (self.burst_g[kc] * envelope * wave)[:, None] * self.burst_dir[kc]
        return up, dyn


@dataclass(frozen=True, slots=True)
class _StillProfile:
    """How a quiet activity moves at one placement."""

    family: PoseFamily  # pose of a fresh segment
    every_s: float  # mean time between movements
    turn_deg: tuple[float, float]  # how far a movement turns the sensor from the segment's base pose
    move_s: tuple[float, float]  # how long a movement lasts
    burst_g: tuple[float, float]  # its acceleration
    tremor_g: float = 0.0  # physiological tremor, 5-10 Hz (hands)
    fidget_g: float = 0.0  # continuous slow movement (busy hands, standing sway), 0.2-1.5 Hz
    breath_g: float = 0.0  # breathing, 0.2-0.35 Hz, along up
    redraw: bool = False  # a movement draws a fresh pose of the family (turning over in bed)
    home_p: float = 0.4  # chance that a movement returns to the base pose


_STILL: Mapping[tuple[Activity, Placement], _StillProfile] = MappingProxyType(
    {
        (Activity.SLEEPING, "wrist"): _StillProfile(
            "lying", 900.0, (0, 0), (2.0, 5.0), (0.1, 0.4), breath_g=0.001, redraw=True
        ),
        (Activity.SLEEPING, "waist"): _StillProfile(
            "lying", 1200.0, (0, 0), (2.0, 5.0), (0.05, 0.2), breath_g=0.003, redraw=True
        ),
        (Activity.LYING, "wrist"): _StillProfile("lying", 60.0, (10, 60), (1.0, 3.0), (0.05, 0.2), tremor_g=0.002),
        (Activity.LYING, "waist"): _StillProfile("lying", 240.0, (3, 20), (1.0, 3.0), (0.02, 0.08), breath_g=0.003),
        (Activity.RESTING, "wrist"): _StillProfile(
            "sitting", 30.0, (10, 45), (0.8, 2.5), (0.05, 0.25), tremor_g=0.004, fidget_g=0.003
        ),
        (Activity.RESTING, "waist"): _StillProfile("sitting", 120.0, (2, 8), (1.0, 3.0), (0.02, 0.08), breath_g=0.002),
        (Activity.STANDING, "wrist"): _StillProfile(
            "working", 6.0, (10, 50), (0.8, 2.0), (0.05, 0.3), tremor_g=0.004, fidget_g=0.02
        ),
        (Activity.STANDING, "waist"): _StillProfile("upright", 15.0, (1, 5), (0.8, 2.0), (0.03, 0.1), fidget_g=0.008),
        (Activity.ON_FLOOR, "wrist"): _StillProfile("floor", 120.0, (3, 10), (1.0, 3.0), (0.01, 0.04), tremor_g=0.003),
        (Activity.ON_FLOOR, "waist"): _StillProfile("floor", 300.0, (1, 3), (1.0, 3.0), (0.005, 0.02), breath_g=0.003),
    }
)
#: ON_FLOOR with `moving`: feeble attempts to move, no getting up.
_ON_FLOOR_MOVING: Mapping[Placement, _StillProfile] = MappingProxyType(
    {
        "wrist": _StillProfile("floor", 6.0, (5, 30), (1.5, 4.0), (0.05, 0.25), tremor_g=0.005),
        "waist": _StillProfile("floor", 12.0, (2, 10), (1.5, 4.0), (0.03, 0.1), breath_g=0.004),
    }
)


def _track(
    rng: np.random.Generator,
    placement: Placement,
    base: Array,
    profile: _StillProfile,
    start: float,
    end: float,
) -> _PoseTrack:
    """Random movements from `start` to past `end`, as a Poisson process of mean interval `profile.every_s`."""
    horizon = end + _OVERRUN_S - start
    expected = horizon / profile.every_s
    gaps = rng.exponential(profile.every_s, size=int(expected + 4.0 * math.sqrt(expected) + 8))
    times = start + np.cumsum(gaps)
    times = times[times < start + horizon]
    m = len(times)
    next_gap = np.append(np.diff(times), np.inf)
    durations = np.minimum(rng.uniform(*profile.move_s, size=m), 0.8 * next_gap)
    if profile.redraw:
        poses = [base] + [_pose(placement, profile.family, rng) for _ in range(m)]
        targets = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
    else:
        e1 = _perpendicular(base)
        e2 = np.cross(base, e1)
        beta = rng.uniform(0.0, _TWO_PI, size=m)
        angles = np.radians(rng.uniform(*profile.turn_deg, size=m)) * (rng.random(m) >= profile.home_p)
        axes = np.outer(np.cos(beta), e1) + np.outer(np.sin(beta), e2)
        # Rodrigues with the axis perpendicular to base: base cos(a) + (axis x base) sin(a)
        turned = np.outer(np.cos(angles), base) + np.cross(axes, base) * np.sin(angles)[:, None]
        targets = np.vstack([base, _unit(turned)]) if m else base[None, :]
    burst_dir = _unit(rng.normal(size=(m, 3))) if m else np.zeros((0, 3))
    return _PoseTrack(
        targets,
        times,
        durations,
        rng.uniform(*profile.burst_g, size=m),
        rng.uniform(0.8, 2.5, size=m),
        burst_dir,
    )


class _Still(_Renderer):
    """Quiet activities: sleeping, lying, resting, standing, on the floor. A base pose, occasional movements,
    and continuous small oscillations (tremor, busy hands, sway, breathing)."""

    def __init__(
        self,
        segment: Segment,
        placement: Placement,
        rng: np.random.Generator,
        entry_up: Array | None,
        same_posture: bool,
        profile: _StillProfile,
    ) -> None:
        super().__init__(segment, placement)
        base = entry_up if (entry_up is not None and same_posture) else _pose(placement, profile.family, rng)
        self.base = base
        self.track = _track(rng, placement, base, profile, segment.start, segment.end)
        hz: list[float] = []
        vectors: list[Array] = []
        if profile.tremor_g:
            amp = profile.tremor_g * rng.uniform(0.5, 1.5)
            direction = _random_unit(rng)
            f = rng.uniform(5.0, 9.0)
            hz += [f, f * rng.uniform(1.05, 1.2)]
            vectors += [amp * direction, 0.6 * amp * _random_unit(rng)]
        if profile.fidget_g:
            amp = profile.fidget_g * rng.uniform(0.5, 1.5)
            hz += [rng.uniform(0.2, 0.6), rng.uniform(0.6, 1.5), rng.uniform(0.1, 0.3)]
            vectors += [amp * _random_unit(rng), 0.6 * amp * _random_unit(rng), 0.5 * amp * _random_unit(rng)]
        if profile.breath_g:
            hz.append(rng.uniform(0.2, 0.35))
            vectors.append(profile.breath_g * rng.uniform(0.6, 1.4) * base)
        self.oscillators = _Oscillators(segment.start, hz, list(rng.uniform(0.0, _TWO_PI, size=len(hz))), vectors)

    def render(self, t: Array) -> tuple[Array, Array]:
        """Orientation and movement at times t."""
        up, burst = self.track.render(t)
        dyn = self.oscillators.render(t)
        if burst is not None:
            dyn += burst
        return up, dyn


class _Gait(_Renderer):
    """Walking, stairs, walking outdoors (with pauses). Step frequency 1.6-2 Hz (stairs 1.2-1.6 Hz); vertical
    bounce and heel strikes along up; at the wrist the arm swings at half the step frequency."""

    fade_s = 0.8

    def __init__(
        self,
        segment: Segment,
        placement: Placement,
        rng: np.random.Generator,
        prev: _Renderer | None,
        activity: Activity,
    ) -> None:
        super().__init__(segment, placement)
        stairs = activity is Activity.STAIRS
        self.stairs = stairs
        inherit = prev if isinstance(prev, _Gait) else None
        self.step_hz = rng.uniform(1.2, 1.6) if stairs else rng.uniform(1.6, 2.0)
        self.base: Array
        if inherit is not None:  # walking on from one room to the next: same arm, same cadence, same phase
            self.phase0 = float(inherit.theta(np.array([segment.start]))[0])
            self.base = inherit.base
            if inherit.stairs == stairs:
                self.step_hz = inherit.step_hz
        else:
            self.phase0 = rng.uniform(0.0, _TWO_PI)
            self.base = _pose(placement, "hanging", rng)
        self.t_ref = segment.start
        self.wander = (rng.uniform(0.03, 0.08), rng.uniform(0.0, _TWO_PI))
        self.heel_phase = rng.uniform(0.0, _TWO_PI)
        self.heel_width_s = rng.uniform(0.018, 0.03)
        self.trough = rng.uniform(0.4, 0.7)
        self.step_salt = rng.uniform(0.0, 1000.0)  # seeds the step-to-step variation of the heel strikes
        psi2, psi_ap, psi_ml = rng.uniform(0.0, _TWO_PI, size=3)
        self.psi = np.array([0.0, psi2, psi_ap, psi_ml])
        if placement == "waist":
            a1 = rng.uniform(0.15, 0.25)
            heel = rng.uniform(0.45, 0.75) if stairs else rng.uniform(0.3, 0.5)
            up = self.base
            forward = _unit(np.array([0.0, 0.0, 1.0]) - up * up[2])
            left = np.cross(up, forward)
            vert_k = 1.0
        else:
            a1 = rng.uniform(0.15, 0.3) if stairs else rng.uniform(0.12, 0.22)
            heel = rng.uniform(0.7, 1.2) if stairs else rng.uniform(0.45, 0.75)
            forearm = np.array([1.0, 0.0, 0.0])
            axis = np.cross(forearm, self.base)
            self.axis = _unit(axis) if np.linalg.norm(axis) > 1e-3 else np.array([0.0, 0.0, 1.0])
            self.swing_rad = math.radians(rng.uniform(8.0, 22.0))
            self.swing_g = rng.uniform(0.15, 0.3) * (1.4 if stairs else 1.0)
            forward = _unit(np.cross(self.axis, forearm))
            left = self.axis
            self.base_along = self.axis * float(self.axis @ self.base)
            self.base_ortho = self.base - self.base_along
            self.base_cross = np.cross(self.axis, self.base)
            up = self.base
            vert_k = 0.8
        # columns: sin(theta), sin(2 theta + psi2), sin(theta + psi_ap), sin(theta / 2 + psi_ml), heel pulse
        self.weights = np.vstack(
            [
                vert_k * a1 * up,
                vert_k * 0.3 * a1 * up,
                rng.uniform(0.06, 0.14) * forward,
                rng.uniform(0.03, 0.08) * left,
                vert_k * heel * up,
            ]
        )
        self.vertical_only = placement == "waist"
        if (
            inherit is not None and inherit.stairs == stairs
        ):  # the same gait, seamlessly (the fade then changes nothing)
            self.wander, self.heel_phase, self.heel_width_s = inherit.wander, inherit.heel_phase, inherit.heel_width_s
            self.trough, self.step_salt, self.psi, self.weights = (
                inherit.trough,
                inherit.step_salt,
                inherit.psi,
                inherit.weights,
            )
            self.phase0, self.t_ref = inherit.phase0, inherit.t_ref
            if placement == "wrist":
                self.swing_rad, self.swing_g = inherit.swing_rad, inherit.swing_g
        elif inherit is not None:  # another gait: the step phase goes on where it was
            depth, phase = self.wander
            self.phase0 -= depth * math.sin(phase)
        knots: list[float] = []
        values: list[float] = []
        if activity is Activity.OUT:  # walking bouts with pauses (crossings, chats, shop windows)
            t = segment.start
            while t < segment.end + _OVERRUN_S:
                walk = rng.uniform(20.0, 240.0)
                knots += [t, t + 0.7, t + walk - 0.7, t + walk]
                values += [1.0 if not values else 0.0, 1.0, 1.0, 0.0]  # already walking as the segment starts
                t += walk + rng.uniform(3.0, 40.0)
        self.knots = np.asarray(knots, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)

    def theta(self, t: Array) -> Array:
        """Step phase (radians): one step per 2 pi."""
        x = t - self.t_ref
        depth, phase = self.wander
        return np.asarray(
            self.phase0 + _TWO_PI * self.step_hz * x + depth * np.sin(_TWO_PI * 0.05 * x + phase), dtype=np.float64
        )

    def render(self, t: Array) -> tuple[Array, Array]:
        """Orientation and movement at times t."""
        theta = self.theta(t)
        cycles = (theta - self.heel_phase) / _TWO_PI
        heel_dt = ((cycles + 0.5) % 1.0 - 0.5) / self.step_hz
        columns = np.empty((len(t), 5))
        np.sin(np.multiply.outer(theta, [1.0, 2.0, 1.0, 0.5]) + self.psi, out=columns[:, :4])
        # no two steps alike: a cheap hash of the step number scales each heel strike by 0.5-1.5
        jitter = np.sin(np.floor(cycles + 0.5) * 12.9898 + self.step_salt) * 43758.5453
        jitter -= np.floor(jitter)
        strike = np.exp(-0.5 * (heel_dt / self.heel_width_s) ** 2)
        rebound = np.exp(-0.5 * ((heel_dt - 0.09) / 0.035) ** 2)  # the body unloads after the strike
        columns[:, 4] = (0.5 + jitter) * (strike - self.trough * rebound)
        envelope = np.interp(t, self.knots, self.values) if len(self.knots) else None
        if envelope is not None:
            columns *= envelope[:, None]
        dyn = columns @ self.weights
        if self.vertical_only:
            return self.base, dyn
        swing = np.sin(0.5 * theta)
        if envelope is not None:
            swing *= envelope
        # up = base turned about the axis by the swing angle (Rodrigues, with c1 = axis x base, c2 = its part along
        # the axis); the hand moves along axis x up = c1 cos - (base - c2) sin
        angle = self.swing_rad * swing
        cos, sin = np.cos(angle), np.sin(angle)
        up = np.outer(cos, self.base_ortho) + np.outer(sin, self.base_cross) + self.base_along
        push = -self.swing_g * swing
        dyn += np.outer(push * cos, self.base_cross) - np.outer(push * sin, self.base_ortho)
        return up, dyn


class _SitDown(_Renderer):
    """Standing to sitting: the body lowers (magnitude below 1 g, then above as it brakes) and lands on the seat.
    `hard`: collapsing into the chair: a near free fall and a landing peak of 2-5 g, then stillness."""

    fade_s = 0.3

    def __init__(
        self,
        segment: Segment,
        placement: Placement,
        rng: np.random.Generator,
        entry_up: Array | None,
    ) -> None:
        super().__init__(segment, placement)
        self.hard = bool(segment.params.get("hard", False))
        self.from_up = entry_up if entry_up is not None else _pose(placement, "upright", rng)
        self.to_up = _pose(placement, "sitting", rng)
        lead = min(0.3, 0.2 * segment.duration)
        lower_s = rng.uniform(0.35, 0.6) if self.hard else rng.uniform(0.8, 1.4)
        lower_s = max(0.2, min(lower_s, segment.duration - lead - 0.3))
        self.t_move = segment.start + lead
        self.t_land = self.t_move + lower_s
        wrist = placement == "wrist"
        if self.hard:
            self.dip = 1.0 - (rng.uniform(0.55, 0.9) if wrist else rng.uniform(0.4, 0.75))
            excess = rng.lognormal(math.log(1.3 if wrist else 2.4), 0.35)
        else:
            self.dip = rng.uniform(0.1, 0.25)
            excess = rng.uniform(0.25, 0.7) if wrist else rng.uniform(0.2, 1.0)
        self.excess = min(excess, 10.0)
        self.width_s = rng.uniform(0.02, 0.035)
        self.rebound = (rng.uniform(0.08, 0.16), rng.uniform(0.15, 0.4))
        self.direction = _unit(self.to_up + 0.3 * _random_unit(rng))
        self.settle = _Oscillators(
            self.t_land,
            [rng.uniform(2.0, 4.0)],
            [0.0],
            [(0.06 if wrist else 0.02) * excess * _random_unit(rng)],
        )
        # then the arms find the armrests or the lap: slower movement dying away over a few seconds
        adjust = rng.lognormal(math.log(0.25 if wrist else 0.01), 0.5) * rng.uniform(0.5, 1.0, size=2)
        self.adjust = _Oscillators(
            self.t_land,
            list(rng.uniform(0.5, 2.0, size=2)),
            list(rng.uniform(0.0, _TWO_PI, size=2)),
            list(adjust[:, None] * _unit(rng.normal(size=(2, 3)))),
        )
        self.adjust_tau = rng.uniform(1.0, 3.0)
        profile = _STILL[(Activity.RESTING, placement)]
        self.after = _Still(
            Segment(self.t_land, segment.end, Activity.RESTING, segment.room, Posture.SITTING, segment.params),
            placement,
            rng,
            self.to_up,
            True,
            profile,
        )

    def render(self, t: Array) -> tuple[Array, Array]:
        """Orientation and movement at times t."""
        span = self.t_land + 0.2 - self.t_move
        up = _slerp(self.from_up, self.to_up, _smoothstep((t - self.t_move) / span))
        u = np.clip((t - self.t_move) / (self.t_land - self.t_move), 0.0, 1.0)
        if self.hard:  # drop quickly, stay light until the seat stops the fall
            lowering = -self.dip * _smoothstep(u / 0.35) * (1.0 - _smoothstep((t - self.t_land + 0.03) / 0.03))
        else:  # accelerate down, then brake
            lowering = -self.dip * np.sin(_TWO_PI * u)
        delay, ratio = self.rebound
        landing = self.excess * (_pulse(t, self.t_land, self.width_s) + ratio * _pulse(t, self.t_land + delay, 0.03))
        since = np.maximum(t - self.t_land, 0.0)
        ring = np.where(t > self.t_land, np.exp(-since / 0.4), 0.0)
        adjust = _smoothstep(since / 0.3) * np.exp(-since / self.adjust_tau)
        dyn = up * lowering[:, None] + np.outer(landing, self.direction)
        dyn += self.settle.render(t) * ring[:, None] + self.adjust.render(t) * adjust[:, None]
        after_up, after_dyn = self.after.render(t)
        still = t >= self.t_move + span  # seated: from here on, resting
        if np.any(still):
            up[still] = np.broadcast_to(after_up, (len(t), 3))[still]
            dyn[still] += after_dyn[still]
        return up, dyn


class _GetUp(_Renderer):
    """Up from the floor: roll over, hands and knees, kneel, stand; each stage a movement with effort."""

    fade_s = 0.3

    def __init__(self, segment: Segment, placement: Placement, rng: np.random.Generator, entry_up: Array | None):
        super().__init__(segment, placement)
        d = segment.duration
        start = entry_up if entry_up is not None else _pose(placement, "floor", rng)
        if placement == "waist":
            stages = [
                _turned(_PRONE, 15.0, rng),
                _waist(rng.uniform(20.0, 40.0), 0.0),
                _pose(placement, "upright", rng),
            ]
        else:
            stages = [
                _wrist(rng.uniform(-10, 10), rng.uniform(70, 100)),
                _random_unit(rng),
                _pose(placement, "hanging", rng),
            ]
        fractions = np.array([0.05, 0.35, 0.65])
        durations = np.array([0.2, 0.2, 0.25]) * d
        self.track = _PoseTrack(
            np.vstack([start, *stages]),
            segment.start + fractions * d,
            durations,
            rng.uniform(0.15, 0.45, size=3),
            rng.uniform(0.8, 2.0, size=3),
            _unit(rng.normal(size=(3, 3))),
        )
        self.effort = _Oscillators(segment.start, [rng.uniform(6.0, 9.0)], [0.0], [0.006 * _random_unit(rng)])

    def render(self, t: Array) -> tuple[Array, Array]:
        """Orientation and movement at times t."""
        up, burst = self.track.render(t)
        dyn = self.effort.render(t)
        if burst is not None:
            dyn += burst
        return up, dyn


class _Strikes(_Renderer):
    """CLAPPING and HITTING_TABLE: sharp impacts of the hand (large peaks, no fall: the posture does not change).

    Clapping: the hands come up, clap at 1.8-3.5 Hz until the segment ends, then go back to where they were.
    Hitting a table: 1-3 strikes (param `strikes`): the hand lifts, swings down (magnitude well below 1 g),
    hits the table (3-5 g at the wrist) and rests on it. At the waist either is a small jolt of the body.
    """

    fade_s = 0.3

    def __init__(
        self,
        segment: Segment,
        placement: Placement,
        rng: np.random.Generator,
        entry_up: Array | None,
        activity: Activity,
    ) -> None:
        super().__init__(segment, placement)
        wrist = placement == "wrist"
        self.clapping = activity is Activity.CLAPPING
        d = segment.duration
        self.home = entry_up if entry_up is not None else _pose(placement, "working" if wrist else "upright", rng)
        lead = min(0.6 if self.clapping else 0.8, 0.3 * d)
        self.t_in = segment.start + lead
        if self.clapping:
            self.pose = _turned(self.home, rng.uniform(10.0, 60.0), rng) if wrist else self.home
            hz = rng.uniform(1.8, 3.5)
            tail = min(0.6, 0.25 * d)
            self.t_out = segment.end - tail
            times = np.arange(self.t_in + 0.2, max(self.t_out, self.t_in + 0.21), 1.0 / hz)
            times = times + rng.normal(0.0, 0.04 / hz, size=len(times))
            self.rest = self.home
            median = 2.0 if wrist else 0.04
            self.amps = rng.lognormal(math.log(median), 0.3, size=len(times))
            self.widths = rng.uniform(0.01, 0.02, size=len(times))
            self.dirs = _unit(np.array([0.0, 0.0, 1.0]) + 0.25 * rng.normal(size=(len(times), 3)))
            self.swing = (rng.uniform(0.15, 0.35) if wrist else 0.01, hz)
            self.bob_g = rng.uniform(0.05, 0.18) if wrist else 0.005  # the hands also bob up and down
        else:
            self.pose = _turned(self.home, rng.uniform(0.0, 25.0), rng) if wrist else self.home
            strikes = int(segment.params.get("strikes", rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])))
            gap = rng.uniform(0.9, 1.4)
            times = self.t_in + 0.4 + gap * np.arange(max(1, strikes))
            times = times[times < segment.end - 0.2] if np.any(times < segment.end - 0.2) else times[:1]
            self.t_out = math.inf
            self.rest = _turned(self.pose, rng.uniform(5.0, 30.0), rng) if wrist else self.home
            median = 3.0 if wrist else 0.12
            self.amps = rng.lognormal(math.log(median), 0.15, size=len(times))
            self.widths = rng.uniform(0.012, 0.02, size=len(times))
            self.dirs = _unit(self.pose + 0.2 * rng.normal(size=(len(times), 3)))
            self.lift_rad = np.radians(rng.uniform(15.0, 35.0, size=len(times)))
            self.lift_axis = np.cross(np.array([1.0, 0.0, 0.0]), self.pose)
            self.lift_axis = (
                _unit(self.lift_axis) if np.linalg.norm(self.lift_axis) > 1e-3 else _perpendicular(self.pose)
            )
            self.swing_depth = (1.0 - rng.uniform(0.1, 0.4, size=len(times))) * (1.0 if wrist else 0.05)
            self.rebound = rng.uniform(0.2, 0.5, size=len(times))
            # the hand stays on the table but is not still at once (WEDA D09: 0.02-0.06 g of movement after)
            settle = rng.lognormal(math.log(0.1 if wrist else 0.004), 0.5) * rng.uniform(0.5, 1.0, size=2)
            self.settle = _Oscillators(
                float(times[-1]),
                list(rng.uniform(0.5, 2.5, size=2)),
                list(rng.uniform(0.0, _TWO_PI, size=2)),
                list(settle[:, None] * _unit(rng.normal(size=(2, 3)))),
            )
            self.settle_tau = rng.uniform(1.5, 4.0)
        self.times = times
        self.quiet = _Oscillators(
            segment.start, [rng.uniform(5.0, 9.0)], [0.0], [(0.004 if wrist else 0.001) * _random_unit(rng)]
        )

    def _nearest(self, t: Array) -> Array:
        k = np.searchsorted(self.times, t)
        left = np.maximum(k - 1, 0)
        right = np.minimum(k, len(self.times) - 1)
        closer_left = np.abs(t - self.times[left]) <= np.abs(t - self.times[right])
        return np.asarray(np.where(closer_left, left, right))

    def render(self, t: Array) -> tuple[Array, Array]:
        """Orientation and movement at times t."""
        w_in = _smoothstep((t - self.segment.start) / (self.t_in - self.segment.start))
        k = self._nearest(t)
        dt = t - self.times[k]
        pulses = self.amps[k] * np.exp(-0.5 * (dt / self.widths[k]) ** 2)
        dyn = self.quiet.render(t)
        if self.clapping:
            up = _slerp(self.home, self.pose, w_in)
            w_out = _smoothstep((t - self.t_out) / max(self.segment.end - self.t_out, 1e-3))
            if np.any(w_out > 0):
                up = _slerp(up, self.home, w_out)
            amp, hz = self.swing
            active = (t > self.times[0] - 0.3) & (t < self.times[-1] + 0.3)
            phase = _TWO_PI * hz * (t - self.times[0])
            dyn += (pulses + amp * np.cos(phase) * active)[:, None] * self.dirs[k]
            dyn += up * (self.bob_g * np.sin(phase) * active)[:, None]
            return up, dyn
        # hitting a table: base pose, after the last strike the resting pose; the wrist lifts before each strike
        w_rest = _smoothstep((t - self.times[-1] - 0.05) / 0.4)
        base = _slerp(_slerp(self.home, self.pose, w_in), self.rest, w_rest)
        lift = self.lift_rad[k] * _pulse(dt, -0.28, 0.1)
        up = _unit(base * np.cos(lift)[:, None] + np.cross(self.lift_axis, base) * np.sin(lift)[:, None])
        vertical = 0.25 * _pulse(dt, -0.4, 0.06) - self.swing_depth[k] * _pulse(dt, -0.09, 0.045)
        dyn += up * vertical[:, None]
        rebound = self.rebound[k] * self.amps[k] * _pulse(dt, 0.075, 0.02)
        dyn += (pulses + rebound)[:, None] * self.dirs[k]
        since = t - self.times[-1] - 0.15
        if since[-1] > 0:
            decay = _smoothstep(since / 0.3) * np.exp(-np.maximum(since, 0.0) / self.settle_tau)
            dyn += self.settle.render(t) * decay[:, None]
        return up, dyn


class _Fall(_Renderer):
    """A fall: pre-fall activity, loss of balance, descent, impact at `impact_time`, the first seconds down."""

    fade_s = 1.0

    def __init__(
        self,
        segment: Segment,
        placement: Placement,
        rng: np.random.Generator,
        prev: _Renderer | None,
        make: Callable[[Segment, _Renderer | None], _Renderer],
    ) -> None:
        super().__init__(segment, placement)
        wrist = placement == "wrist"
        kind = self.kind = fall_kind(segment)
        onset, descent = FALL_PHASES[kind]
        self.t_impact = impact_time(segment)
        self.t_drop = self.t_impact - descent
        self.t_lob = self.t_drop - onset
        before = {FallKind.SYNCOPE: Activity.STANDING, FallKind.FROM_SITTING: Activity.RESTING}.get(
            kind, Activity.WALKING
        )
        posture = Posture.SITTING if before is Activity.RESTING else Posture.STANDING
        pre_segment = Segment(segment.start, max(self.t_lob, segment.start + 1e-3), before, segment.room, posture)
        self.pre = make(pre_segment, prev)
        self.up_lob = self.pre.up_at(self.t_lob)
        if wrist:
            self.mid = _turned(self.up_lob, rng.uniform(30.0, 90.0), rng)
            self.final = _turned(self.up_lob, rng.uniform(40.0, 120.0), rng)
        else:
            self.mid = self.up_lob
            choices = {
                FallKind.TRIP_FORWARD: [_PRONE],
                FallKind.SLIP_BACKWARD: [_SUPINE],
                FallKind.LATERAL: [_LEFT_SIDE, _RIGHT_SIDE],
                FallKind.SYNCOPE: [_SUPINE, _LEFT_SIDE, _RIGHT_SIDE, _PRONE],
                FallKind.FROM_SITTING: [_LEFT_SIDE, _RIGHT_SIDE, _SUPINE, _PRONE],
            }[kind]
            self.final = _turned(choices[int(rng.integers(len(choices)))], rng.uniform(0.0, 20.0), rng)
        # magnitudes, after WEDA-FALL (wrist) and SisFall (waist) falls: peak median ~5 g, IQR ~4.3-6.5 g
        scale = {FallKind.SYNCOPE: 0.9, FallKind.FROM_SITTING: 0.85}.get(kind, 1.0)
        peak = scale * rng.lognormal(math.log(5.3 if wrist else 5.6), 0.22 if wrist else 0.25)
        self.excess = float(np.clip(peak, 2.5, 14.0)) - 1.0
        low = rng.uniform(0.15, 0.7) if wrist else rng.uniform(0.1, 0.5)
        if kind in (FallKind.SYNCOPE, FallKind.FROM_SITTING):
            low = min(0.8, low + 0.1)
        self.dip = 1.0 - low
        self.width_s = rng.uniform(0.025, 0.04) if wrist else rng.uniform(0.018, 0.03)
        self.direction = _unit(self.final + 0.35 * _random_unit(rng))
        # more contacts: the hand, the knees, a bounce; each smaller than the main impact and apart from it
        count = int(rng.integers(2, 4)) if wrist else int(rng.integers(1, 3))
        self.echo_dt = np.concatenate([[-rng.uniform(0.09, 0.16)], rng.uniform(0.1, 0.3, size=count - 1)])
        self.echo_amp = rng.uniform(0.2, 0.6, size=count) * self.excess
        self.echo_dirs = _unit(self.final + 0.6 * rng.normal(size=(count, 3)))
        # the perturbation that starts the fall: a jolt (trip), the feet sliding away (slip), a sway (lateral)
        jolt = {FallKind.TRIP_FORWARD: 0.8, FallKind.SLIP_BACKWARD: 0.5, FallKind.LATERAL: 0.6}.get(kind, 0.2)
        self.jolt = (rng.uniform(0.5, 1.0) * jolt, _random_unit(rng), rng.uniform(0.05, 0.09))
        # settling afterwards: the arm moves and comes to rest; the trunk barely moves
        n = 3
        amp = rng.lognormal(math.log(0.35 if wrist else 0.045), 0.6) * rng.uniform(0.5, 1.0, size=n)
        self.settle = _Oscillators(
            self.t_impact,
            list(rng.uniform(0.4, 2.5, size=n)),
            list(rng.uniform(0.0, _TWO_PI, size=n)),
            list(amp[:, None] * _unit(rng.normal(size=(n, 3)))),
        )
        self.settle_tau = rng.uniform(1.5, 4.0) if wrist else rng.uniform(1.0, 3.0)
        self.floor_noise = _Oscillators(
            self.t_impact,
            [rng.uniform(5.0, 9.0), rng.uniform(0.2, 0.35)],
            [0.0, 1.0],
            [(0.003 if wrist else 0.0005) * _random_unit(rng), (0.001 if wrist else 0.003) * self.final],
        )

    def render(self, t: Array) -> tuple[Array, Array]:
        """Orientation and movement at times t."""
        n = len(t)
        up = np.empty((n, 3))
        dyn = np.zeros((n, 3))
        before = t < self.t_lob
        falling = ~before
        lead = t < self.t_drop
        if np.any(lead):  # the activity before the fall, fading as balance is lost
            pre_up, pre_dyn = self.pre.render(t[lead])
            fade = 1.0 - _smoothstep((t[lead] - self.t_lob) / (self.t_drop - self.t_lob))
            up[lead] = np.broadcast_to(pre_up, (int(lead.sum()), 3))
            dyn[lead] = pre_dyn * fade[:, None]
        if np.any(falling):
            tf = t[falling]
            span = self.t_impact + 0.06 - self.t_lob
            w1 = _smoothstep((tf - self.t_lob) / (0.6 * span))
            w2 = _smoothstep((tf - self.t_lob - 0.3 * span) / (0.7 * span))
            up[falling] = _slerp(_slerp(self.up_lob, self.mid, w1), self.final, w2)
        magnitude, jolt_dir, jolt_w = self.jolt
        jolt = magnitude * _pulse(t, self.t_lob + 0.1, jolt_w)
        light = (
            self.dip
            * _smoothstep((t - self.t_drop + 0.05) / 0.2)
            * (1.0 - _smoothstep((t - self.t_impact + 0.04) / 0.04))
        )
        dyn += np.outer(jolt, jolt_dir) - up * light[:, None]
        dyn += np.outer(self.excess * _pulse(t, self.t_impact, self.width_s), self.direction)
        for dt, amp, direction in zip(self.echo_dt, self.echo_amp, self.echo_dirs, strict=True):
            dyn += np.outer(amp * _pulse(t, self.t_impact + dt, 0.025), direction)
        after = t > self.t_impact + 0.1
        if np.any(after):
            ta = t[after]
            decay = np.exp(-(ta - self.t_impact) / self.settle_tau) * _smoothstep((ta - self.t_impact - 0.1) / 0.3)
            dyn[after] += self.settle.render(ta) * decay[:, None] + self.floor_noise.render(ta)
        return up, dyn


# ---------------------------------------------------------------------------------------------------------------
# the synth
# ---------------------------------------------------------------------------------------------------------------
class MotionSynth:
    """Deterministic accelerometer signal (g, sensor frame) of a timeline at the wrist or the waist.

    `samples(t0, n)` renders n samples at `t0 + i / rate_hz`. Call it with consecutive windows (as a device
    does): the signal joins across windows and segments, and the same seed and calls give the same samples.
    Memory stays bounded: only the renderers of the current and previous segment are kept.
    """

    def __init__(
        self,
        timeline: Timeline,
        placement: Placement,
        rng: np.random.Generator,
        rate_hz: float = 50.0,
    ) -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        if not 1.0 <= rate_hz <= 1000.0:
            raise ValueError(f"rate_hz must be between 1 and 1000, not {rate_hz}")
        for segment in timeline.segments:
            if segment.activity is Activity.FALL:
                impact_time(segment)  # a FALL without a kind, or too short, is refused here, not mid-stream
        self.timeline = timeline
        self.placement: Placement = placement
        self.rate_hz = rate_hz
        self._rng = rng
        self._seed = int(rng.integers(0, 2**63 - 1))
        self._noise_g = _NOISE_G[placement]
        # how the device sits on this person (strap roll, belt tilt): a small fixed rotation
        axis = _random_unit(rng)
        angle = math.radians(rng.uniform(0.0, 10.0))
        k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
        self._mount_t = (np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)).T
        self._starts = [s.start for s in timeline.segments]
        self._renderers: dict[int, _Renderer] = {}

    def samples(self, t0: float, n: int) -> Array:
        """n samples (rows x, y, z in g) at t0 + i / rate_hz, following the timeline's activity at each time."""
        if n <= 0:
            return np.zeros((0, 3))
        t = t0 + np.arange(n) / self.rate_hz
        out = np.empty((n, 3))
        segments = self.timeline.segments
        last = len(segments) - 1
        index = max(0, bisect.bisect_right(self._starts, t0) - 1)
        i = 0
        while i < n:
            j = n if index == last else int(np.searchsorted(t, segments[index].end, side="left"))
            if j > i:
                out[i:j] = self._render(index, t[i:j])
            i = max(i, j)
            index += 1
        out = np.asarray(out @ self._mount_t, dtype=np.float64)
        out += self._rng.standard_normal((n, 3)) * self._noise_g
        return out

    def _render(self, index: int, t: Array) -> Array:
        renderer = self._renderer(index)
        up, dyn = renderer.render(t)
        fade_end = renderer.start + renderer.fade_s
        if index > 0 and t[0] < fade_end:
            m = int(np.searchsorted(t, fade_end))
            prev_up, prev_dyn = self._renderer(index - 1).render(t[:m])
            w = _smoothstep((t[:m] - renderer.start) / renderer.fade_s)
            up = np.array(np.broadcast_to(up, (len(t), 3)))
            up[:m] = _slerp(np.broadcast_to(prev_up, (m, 3)), up[:m], w)
            dyn[:m] = prev_dyn * (1.0 - w)[:, None] + dyn[:m] * w[:, None]
        return np.asarray(up + dyn, dtype=np.float64)

    def _renderer(self, index: int) -> _Renderer:
        renderer = self._renderers.get(index)
        if renderer is not None:
            return renderer
        prev = self._renderers.get(index - 1)
        if prev is None and index > 0:
            prev = self._build(index - 1, None)
            self._renderers[index - 1] = prev
        renderer = self._build(index, prev)
        self._renderers[index] = renderer
        for old in [k for k in self._renderers if k < index - 1 or k > index]:
            del self._renderers[old]
        return renderer

    def _build(self, index: int, prev: _Renderer | None) -> _Renderer:
        rng = np.random.default_rng([self._seed, index])
        return self._make(self.timeline.segments[index], prev, rng)

    def _make(self, segment: Segment, prev: _Renderer | None, rng: np.random.Generator) -> _Renderer:
        placement = self.placement
        entry_up = prev.up_at(segment.start) if prev is not None else None
        same_posture = prev is not None and prev.segment.posture == segment.posture
        activity = segment.activity
        if activity in (Activity.WALKING, Activity.STAIRS, Activity.OUT):
            return _Gait(segment, placement, rng, prev, activity)
        if activity is Activity.SITTING_DOWN:
            return _SitDown(segment, placement, rng, entry_up)
        if activity is Activity.GETTING_UP:
            return _GetUp(segment, placement, rng, entry_up)
        if activity in (Activity.CLAPPING, Activity.HITTING_TABLE):
            return _Strikes(segment, placement, rng, entry_up, activity)
        if activity is Activity.FALL:
            return _Fall(segment, placement, rng, prev, lambda s, p: self._make(s, p, rng))
        profile = _STILL[(activity, placement)]
        if activity is Activity.ON_FLOOR and _moving(segment):
            profile = _ON_FLOOR_MOVING[placement]
        return _Still(segment, placement, rng, entry_up, same_posture, profile)


def _moving(segment: Segment) -> bool:
    if "moving" in segment.params:
        return bool(segment.params["moving"])
    return not bool(segment.params.get("still", True))


# ---------------------------------------------------------------------------------------------------------------
# the device
# ---------------------------------------------------------------------------------------------------------------
def accel_batch(t0: float, rate_hz: float, samples: Array) -> AccelBatch:
    """An AccelBatch of samples (n, 3) in g: clipped to the sensor range and rounded to 0.1 mg."""
    values = np.round(np.clip(samples, -ACCEL_LIMIT_G, ACCEL_LIMIT_G), 4).tolist()
    return AccelBatch(t0=t0, rate_hz=rate_hz, samples_g=tuple(tuple(row) for row in values))


def samples_per_batch(batch_s: float, rate_hz: float) -> int:
    """Samples in one AccelBatch of `batch_s` seconds; a whole number that the wire contract allows, or ValueError."""
    per_batch = batch_s * rate_hz
    if abs(per_batch - round(per_batch)) > 1e-9 or not 1 <= round(per_batch) <= MAX_ACCEL_SAMPLES:
        raise ValueError(
            f"batch_s * rate_hz must be a whole number of samples from 1 to {MAX_ACCEL_SAMPLES}, not {per_batch}"
        )
    return round(per_batch)


class BraceletAccel:
    """The accelerometer of a bracelet (or belt clip): one AccelBatch of `batch_s` of samples per `batch_s`.

    Batch k holds the samples from `origin + k * batch_s` (its `t0`) and is published when it is complete, at
    `origin + (k + 1) * batch_s`. `origin` defaults to the start of the synth's timeline.
    """

    def __init__(self, device_id: str, synth: MotionSynth, batch_s: float = 1.0, origin: float | None = None):
        self.device_id = device_id
        self.synth = synth
        self.batch_s = batch_s
        self.per_batch = samples_per_batch(batch_s, synth.rate_hz)
        self.origin = synth.timeline.start if origin is None else origin

    def emissions(self, t0: float, t1: float) -> Iterator[Emission]:
        """The batches completed in [t0, t1), in time order."""
        k = max(0, math.ceil((t0 - self.origin) / self.batch_s - 1e-9) - 1)
        while True:
            sent = self.origin + (k + 1) * self.batch_s
            if sent >= t1:
                return
            if sent >= t0:
                first = self.origin + k * self.batch_s
                samples = self.synth.samples(first, self.per_batch)
                message = accel_batch(first, self.synth.rate_hz, samples)
                yield Emission(ts=sent, device_id=self.device_id, kind=TopicKind.DEVICE_ACCEL, message=message)
            k += 1
