"""Accelerometer synthesis: realism against real recordings, continuity, determinism, the wire contract.

Realism: the statistics a fall detector relies on are computed the same way (the functions below) on real
recordings, WEDA-FALL at the wrist and SisFall at the waist (read from CARELOOP_FALLS_DIR, by default
`shared/data/falls` beside the repository; never copied into it), and on simulated signals:
- peak: the largest acceleration magnitude, g;
- free fall: the lowest magnitude in the second before the peak, g (a body in free fall reads 0 g);
- stillness: the standard deviation of the magnitude from 1 s to 5 s after the peak, g (at least 2 s of it);
- orientation change: the angle between the mean acceleration (gravity) 3 s to 1.5 s before the peak and
  1.5 s to 3 s after it, degrees (lying down after a fall turns the trunk by about 90 degrees).
Two samples resemble each other when their interquartile ranges overlap and their medians are close: peaks
within a factor 1.25, stillness within a factor 2 (a spread over an order of magnitude between recordings, so a
ratio), free fall within 0.15 g, orientation within 20 degrees. A synth with no free fall (about 0.9 g), no
stillness after the impact (0.3 g at the wrist) or peaks of 1.5 g fails these bounds by a factor of 2 or more;
`test_the_resemblance_bounds_reject_wrong_synths` checks that on the real data itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from careloop.codec import decode, encode
from careloop.messages import ACCEL_LIMIT_G, AccelBatch
from careloop.recordings import read_samples, read_trials
from careloop.testing.service_fixtures import require_falls_dataset
from careloop.topics import TopicKind
from simulators.motion import (
    FALL_PHASES,
    FALL_SEGMENT_S,
    PRE_FALL_S,
    BraceletAccel,
    MotionSynth,
    Placement,
    accel_batch,
    impact_time,
)
from simulators.timeline import Activity, FallKind, Posture, Segment, Timeline

Array = npt.NDArray[np.float64]
T0 = 1_790_000_000.0
RATE = 50


# ---------------------------------------------------------------------------------------------------------------
# the statistics, the same for real and simulated signals
# ---------------------------------------------------------------------------------------------------------------
def magnitude(acc: Array) -> Array:
    """Acceleration magnitude per sample, g."""
    return np.asarray(np.linalg.norm(acc, axis=1))


def free_fall(mag: Array, peak: int) -> float:
    """Lowest magnitude in the second before the peak, g."""
    return float(mag[max(0, peak - RATE) : peak].min()) if peak > 0 else math.nan


def stillness(mag: Array, peak: int) -> float:
    """Standard deviation of the magnitude from 1 s to 5 s after the peak (NaN with less than 2 s of it), g."""
    window = mag[peak + RATE : peak + 5 * RATE]
    return float(window.std()) if len(window) >= 2 * RATE else math.nan


def orientation_change(acc: Array, peak: int) -> float:
    """Angle between the mean acceleration 3-1.5 s before the peak and 1.5-3 s after it, degrees."""
    if peak < 3 * RATE or peak + 3 * RATE > len(acc):
        return math.nan
    before = acc[peak - 3 * RATE : peak - RATE * 3 // 2].mean(axis=0)
    after = acc[peak + RATE * 3 // 2 : peak + 3 * RATE].mean(axis=0)
    cos = before @ after / (np.linalg.norm(before) * np.linalg.norm(after))
    return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))


STATISTICS = ("peak", "free_fall", "stillness", "orientation")


def statistics(acc: Array) -> dict[str, float]:
    """Every statistic of one recording or simulated signal."""
    mag = magnitude(acc)
    peak = int(np.argmax(mag))
    return {
        "peak": float(mag[peak]),
        "free_fall": free_fall(mag, peak),
        "stillness": stillness(mag, peak),
        "orientation": orientation_change(acc, peak),
    }


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range of a sample (NaNs dropped)."""

    median: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        """The spread of the non-NaN values."""
        v = np.asarray([x for x in values if not math.isnan(x)])
        q1, median, q3 = np.percentile(v, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), len(v))

    def __str__(self) -> str:
        return f"{self.median:.3f} [{self.q1:.3f}-{self.q3:.3f}] (n={self.n})"


#: How close the medians must be, per statistic: ("ratio", factor) or ("difference", bound).
CLOSE: Mapping[str, tuple[str, float]] = MappingProxyType(
    {
        "peak": ("ratio", 1.25),
        "free_fall": ("difference", 0.15),
        "stillness": ("ratio", 2.0),
        "orientation": ("difference", 20.0),
    }
)


def resemblance(statistic: str, real: Spread, sim: Spread) -> str | None:
    """None when the two samples resemble each other (IQRs overlap, medians close); else why not."""
    how, bound = CLOSE[statistic]
    if real.n < 8 or sim.n < 8:
        return f"{statistic}: too few values (real {real.n}, simulated {sim.n})"
    if how == "ratio":
        close = 1.0 / bound <= sim.median / real.median <= bound
    else:
        close = abs(sim.median - real.median) <= bound
    overlap = sim.q1 <= real.q3 and real.q1 <= sim.q3
    if close and overlap:
        return None
    return f"{statistic}: real {real}, simulated {sim} (medians within {how} {bound}, IQRs overlapping)"


# ---------------------------------------------------------------------------------------------------------------
# real and simulated samples
# ---------------------------------------------------------------------------------------------------------------
def real_statistics(dataset: str, codes: tuple[str, ...], at_most: int) -> list[dict[str, float]]:
    """Statistics of the dataset's trials of these activity codes; an evenly spread subset of at most `at_most`."""
    trials = [t for t in read_trials(require_falls_dataset(dataset) / "trials.csv") if t.activity in codes]
    assert trials, f"no {codes} trials in {dataset}"
    step = max(1, math.ceil(len(trials) / at_most))
    return [statistics(read_samples(t.file)) for t in trials[::step]]


def timeline(steps: Sequence[tuple[Activity, float, Posture, Mapping[str, Any]]], start: float = T0) -> Timeline:
    """Consecutive segments from `start`: (activity, seconds, posture, params)."""
    segments, t = [], start
    for activity, seconds, posture, params in steps:
        segments.append(Segment(t, t + seconds, activity, "living_room", posture, MappingProxyType(dict(params))))
        t += seconds
    return Timeline(segments)


def render(line: Timeline, placement: Placement, seed: int, t0: float | None = None, t1: float | None = None) -> Array:
    """The synth's signal from t0 to t1 (default: the whole timeline), in 1-s windows as a device asks for it."""
    synth = MotionSynth(line, placement, np.random.default_rng(seed))
    start = line.start if t0 is None else t0
    seconds = round((line.end if t1 is None else t1) - start)
    return np.vstack([synth.samples(start + i, RATE) for i in range(seconds)])


BEFORE_FALL: Mapping[FallKind, tuple[Activity, Posture]] = MappingProxyType(
    {
        FallKind.TRIP_FORWARD: (Activity.WALKING, Posture.STANDING),
        FallKind.SLIP_BACKWARD: (Activity.WALKING, Posture.STANDING),
        FallKind.LATERAL: (Activity.WALKING, Posture.STANDING),
        FallKind.SYNCOPE: (Activity.STANDING, Posture.STANDING),
        FallKind.FROM_SITTING: (Activity.RESTING, Posture.SITTING),
    }
)


def fall_timeline(kind: FallKind, start: float = T0, moving: bool = False) -> Timeline:
    """20 s of the activity a fall of this kind interrupts, the fall, 30 s on the floor."""
    activity, posture = BEFORE_FALL[kind]
    return timeline(
        [
            (activity, 20.0, posture, {}),
            (Activity.FALL, FALL_SEGMENT_S, Posture.LYING_FLOOR, {"kind": kind}),
            (Activity.ON_FLOOR, 30.0, Posture.LYING_FLOOR, {"moving": moving}),
        ],
        start,
    )


def simulated_falls(placement: Placement, seeds: int = 12) -> list[dict[str, float]]:
    """Statistics of simulated falls of every kind, 10 s before the fall segment to 15 s after its start."""
    out = []
    for kind in FallKind:
        for seed in range(seeds):
            out.append(statistics(render(fall_timeline(kind), placement, seed, T0 + 10.0, T0 + 35.0)))
    return out


S, SIT = Posture.STANDING, Posture.SITTING
W = Activity


@dataclass(frozen=True)
class AdlCase:
    """A daily activity recorded in a dataset and its simulated counterpart."""

    name: str
    placement: Placement
    dataset: str
    codes: tuple[str, ...]
    steps: list[tuple[Activity, float, Posture, Mapping[str, Any]]]
    statistics: tuple[str, ...] = ("peak", "free_fall")


ADL_CASES = [
    # the hard ones: large peaks that are not falls
    AdlCase("collapsing into a chair, wrist (WEDA D05)", "wrist", "weda-fall", ("D05",),
            [(W.STANDING, 4, S, {}), (W.SITTING_DOWN, 4, SIT, {"hard": True}), (W.RESTING, 6, SIT, {})]),
    AdlCase("collapsing into a chair, waist (SisFall D11)", "waist", "sisfall", ("D11",),
            [(W.STANDING, 4, S, {}), (W.SITTING_DOWN, 4, SIT, {"hard": True}), (W.RESTING, 6, SIT, {})]),
    AdlCase("hitting a table, wrist (WEDA D09)", "wrist", "weda-fall", ("D09",),
            [(W.RESTING, 4, SIT, {}), (W.HITTING_TABLE, 5, SIT, {}), (W.RESTING, 6, SIT, {})],
            ("peak", "free_fall", "stillness")),
    AdlCase("clapping, wrist (WEDA D10)", "wrist", "weda-fall", ("D10",),
            [(W.RESTING, 3, SIT, {}), (W.CLAPPING, 8, SIT, {}), (W.RESTING, 6, SIT, {})],
            ("peak", "free_fall", "stillness")),
    # the ordinary ones
    AdlCase("sitting down, wrist (WEDA D04)", "wrist", "weda-fall", ("D04",),
            [(W.STANDING, 4, S, {}), (W.SITTING_DOWN, 4, SIT, {}), (W.RESTING, 6, SIT, {})]),
    AdlCase("sitting down slowly and quickly, waist (SisFall D07-D10)", "waist", "sisfall",
            ("D07", "D08", "D09", "D10"),
            [(W.STANDING, 4, S, {}), (W.SITTING_DOWN, 4, SIT, {}), (W.RESTING, 6, SIT, {})]),
    AdlCase("walking, wrist (WEDA D01)", "wrist", "weda-fall", ("D01",), [(W.WALKING, 20, S, {})]),
    AdlCase("walking slowly, waist (SisFall D01)", "waist", "sisfall", ("D01",), [(W.WALKING, 100, S, {})]),
    AdlCase("stairs, wrist (WEDA D03)", "wrist", "weda-fall", ("D03",), [(W.STAIRS, 23, S, {})]),
    AdlCase("stairs slowly, waist (SisFall D05)", "waist", "sisfall", ("D05",), [(W.STAIRS, 25, S, {})]),
]  # fmt: skip


def compare(real: list[dict[str, float]], sim: list[dict[str, float]], names: tuple[str, ...]) -> list[str]:
    """Why the simulated statistics do not resemble the real ones (empty: they do)."""
    problems = []
    for name in names:
        problem = resemblance(name, Spread.of([r[name] for r in real]), Spread.of([s[name] for s in sim]))
        if problem is not None:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------------------------------------------
# realism
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("placement", "dataset", "at_most"),
    [("wrist", "weda-fall", 250), ("waist", "sisfall", 250)],
)
def test_simulated_falls_resemble_real_falls(placement: Placement, dataset: str, at_most: int) -> None:
    codes = tuple(f"F{i:02d}" for i in range(1, 16))
    real = real_statistics(dataset, codes, at_most)
    problems = compare(real, simulated_falls(placement), STATISTICS)
    assert not problems, f"{placement} falls vs {dataset}: " + "; ".join(problems)


@pytest.mark.parametrize("case", ADL_CASES, ids=lambda c: c.name)
def test_simulated_daily_activities_resemble_real_ones(case: AdlCase) -> None:
    real = real_statistics(case.dataset, case.codes, 60)
    sim = [statistics(render(timeline(case.steps), case.placement, seed)) for seed in range(30)]
    problems = compare(real, sim, case.statistics)
    assert not problems, f"{case.name}: " + "; ".join(problems)


def test_the_resemblance_bounds_reject_wrong_synths() -> None:
    real = real_statistics("weda-fall", tuple(f"F{i:02d}" for i in range(1, 9)), 250)
    assert not compare(real, real, STATISTICS)
    wrong: dict[str, Callable[[dict[str, float]], dict[str, float]]] = {
        "peaks of 1.5 g": lambda s: {**s, "peak": 1.5},
        "no free fall": lambda s: {**s, "free_fall": 0.9},
        "no stillness after the impact": lambda s: {**s, "stillness": 0.3},
        "no change of orientation": lambda s: {**s, "orientation": 10.0},
    }
    for what, distort in wrong.items():
        assert compare(real, [distort(s) for s in real], STATISTICS), f"a synth with {what} passes"


# ---------------------------------------------------------------------------------------------------------------
# falls
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["wrist", "waist"])
@pytest.mark.parametrize("kind", list(FallKind))
def test_the_impact_is_the_peak_after_a_free_fall_then_lying(placement: Placement, kind: FallKind) -> None:
    for seed in range(4):
        start = T0 + 0.37 * seed  # segments do not start on the sample grid
        line = fall_timeline(kind, start)
        fall = line.segments[1]
        t0 = fall.start - 5.0
        acc = render(line, placement, seed, t0, fall.end + 10.0)
        mag = magnitude(acc)
        peak = int(np.argmax(mag))
        assert abs(t0 + peak / RATE - impact_time(fall)) <= 2.0 / RATE, (seed, t0 + peak / RATE - impact_time(fall))
        assert mag[peak] > 2.5
        assert free_fall(mag, peak) < 0.85
        assert orientation_change(acc, peak) > 25.0


def test_impact_time_follows_the_kind_and_the_segment() -> None:
    for kind, (onset, descent) in FALL_PHASES.items():
        segment = Segment(T0, T0 + FALL_SEGMENT_S, Activity.FALL, "hallway", Posture.LYING_FLOOR, {"kind": kind})
        assert impact_time(segment) == pytest.approx(T0 + PRE_FALL_S + onset + descent)
        assert impact_time(segment) <= segment.end - 3.0  # room for the first seconds on the floor
        by_name = Segment(T0, T0 + FALL_SEGMENT_S, Activity.FALL, "hallway", Posture.LYING_FLOOR, {"kind": kind.value})
        assert impact_time(by_name) == impact_time(segment)
    short = Segment(T0, T0 + 2.5, Activity.FALL, "hallway", Posture.LYING_FLOOR, {"kind": FallKind.TRIP_FORWARD})
    assert impact_time(short) == pytest.approx(T0 + 1.5)  # the pre-fall activity gives way, 1 s stays after
    too_short = Segment(T0, T0 + 0.5, Activity.FALL, "hallway", Posture.LYING_FLOOR, {"kind": FallKind.SYNCOPE})
    with pytest.raises(ValueError, match="needs at least"):
        impact_time(too_short)
    no_kind = Segment(T0, T0 + FALL_SEGMENT_S, Activity.FALL, "hallway", Posture.LYING_FLOOR)
    with pytest.raises(ValueError, match="no `kind`"):
        impact_time(no_kind)
    with pytest.raises(ValueError, match="no `kind`"):
        MotionSynth(Timeline([no_kind]), "wrist", np.random.default_rng(0))
    with pytest.raises(ValueError, match="FALL segment"):
        impact_time(Segment(T0, T0 + 8, Activity.WALKING, "hallway", Posture.STANDING))


def test_lying_still_on_the_floor_is_stiller_than_moving_feebly() -> None:
    for placement in ("wrist", "waist"):
        still = [
            magnitude(render(fall_timeline(FallKind.LATERAL), placement, s, T0 + 40, T0 + 58)).std() for s in range(5)
        ]
        moving = [
            magnitude(render(fall_timeline(FallKind.LATERAL, moving=True), placement, s, T0 + 40, T0 + 58)).std()
            for s in range(5)
        ]
        assert np.median(moving) > 2 * np.median(still), (placement, still, moving)
        assert (
            max(magnitude(render(fall_timeline(FallKind.LATERAL, moving=True), placement, 0, T0 + 40, T0 + 58))) < 2.0
        )


# ---------------------------------------------------------------------------------------------------------------
# hard movements that are not falls
# ---------------------------------------------------------------------------------------------------------------
def _mean_angle(acc: Array, a: slice, b: slice) -> float:
    u, v = acc[a].mean(axis=0), acc[b].mean(axis=0)
    return math.degrees(math.acos(float(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1.0, 1.0))))


@pytest.mark.parametrize("activity", [Activity.CLAPPING, Activity.HITTING_TABLE])
def test_clapping_and_hitting_a_table_peak_high_without_changing_posture(activity: Activity) -> None:
    steps: list[tuple[Activity, float, Posture, Mapping[str, Any]]] = [
        (W.RESTING, 10, SIT, {}),
        (activity, 8, SIT, {}),
        (W.RESTING, 10, SIT, {}),
    ]
    for seed in range(10):
        acc = render(timeline(steps), "wrist", seed)
        mag = magnitude(acc)
        inside = mag[10 * RATE : 18 * RATE]
        assert inside.max() > 2.5, (seed, inside.max())
        assert mag[: 10 * RATE].max() < 2.0
        assert mag[18 * RATE :].max() < 2.0
        # the hand is where it was: gravity 1-3 s before the segment vs 1-3 s after it
        assert _mean_angle(acc, slice(7 * RATE, 9 * RATE), slice(19 * RATE, 21 * RATE)) < 35.0, seed
        first = int(np.argmax(inside > 2.5)) + 10 * RATE
        if activity is Activity.CLAPPING:  # the hands keep going: no stillness after a peak
            assert stillness(mag, first) > 0.1, seed
        else:  # a strike is preceded by a fast downswing: magnitude well below 1 g, as in WEDA D09
            assert free_fall(mag, first) < 0.8, seed
    waist = magnitude(render(timeline(steps), "waist", 0))
    assert waist.max() < 1.6  # the body barely feels it


# ---------------------------------------------------------------------------------------------------------------
# posture
# ---------------------------------------------------------------------------------------------------------------
def _gravity(activity: Activity, posture: Posture, placement: Placement, seed: int) -> Array:
    acc = render(timeline([(activity, 30, posture, {})]), placement, seed)
    return np.asarray(acc.mean(axis=0) / np.linalg.norm(acc.mean(axis=0)))


def test_gravity_follows_posture_and_placement() -> None:
    for seed in range(5):
        standing = _gravity(Activity.STANDING, Posture.STANDING, "waist", seed)
        assert standing[1] < -0.9  # the belt clip's y axis points down the trunk
        sitting = _gravity(Activity.RESTING, Posture.SITTING, "waist", seed)
        assert 0.0 < math.degrees(math.acos(float(standing @ sitting))) < 35.0
        lying = _gravity(Activity.SLEEPING, Posture.LYING_BED, "waist", seed)
        assert abs(lying[1]) < 0.45  # trunk horizontal
        walking_wrist = _gravity(Activity.WALKING, Posture.STANDING, "wrist", seed)
        walking_waist = _gravity(Activity.WALKING, Posture.STANDING, "waist", seed)
        assert walking_wrist[0] < -0.5  # the arm hangs: the forearm axis points down
        assert math.degrees(math.acos(float(walking_wrist @ walking_waist))) > 30.0


def test_getting_up_ends_upright() -> None:
    line = timeline([(W.ON_FLOOR, 10, Posture.LYING_FLOOR, {}), (W.GETTING_UP, 15, S, {}), (W.STANDING, 10, S, {})])
    for seed in range(5):
        acc = render(line, "waist", seed)
        start = acc[: 8 * RATE].mean(axis=0)
        end = acc[-8 * RATE :].mean(axis=0)
        assert abs(start[1]) < 0.45, seed
        assert end[1] < -0.9, seed


# ---------------------------------------------------------------------------------------------------------------
# continuity, determinism, memory
# ---------------------------------------------------------------------------------------------------------------
EVERYTHING = timeline(
    [
        (W.SLEEPING, 40, Posture.LYING_BED, {}),
        (W.LYING, 20, Posture.LYING_BED, {}),
        (W.GETTING_UP, 6, S, {}),
        (W.WALKING, 15, S, {}),
        (W.WALKING, 12, S, {}),
        (W.STAIRS, 10, S, {}),
        (W.STANDING, 15, S, {}),
        (W.CLAPPING, 6, S, {}),
        (W.STANDING, 10, S, {}),
        (W.HITTING_TABLE, 5, S, {"strikes": 2}),
        (W.WALKING, 10, S, {}),
        (W.SITTING_DOWN, 4, SIT, {"hard": True}),
        (W.RESTING, 20, SIT, {}),
        (W.FALL, FALL_SEGMENT_S, Posture.LYING_FLOOR, {"kind": FallKind.FROM_SITTING}),
        (W.ON_FLOOR, 20, Posture.LYING_FLOOR, {"moving": True}),
        (W.GETTING_UP, 12, S, {}),
        (W.WALKING, 6, S, {}),
        (W.SITTING_DOWN, 4, SIT, {}),
        (W.RESTING, 10, SIT, {}),
        (W.FALL, FALL_SEGMENT_S, Posture.LYING_FLOOR, {"kind": FallKind.SLIP_BACKWARD}),
        (W.ON_FLOOR, 10, Posture.LYING_FLOOR, {}),
        (W.GETTING_UP, 10, S, {}),
        (W.OUT, 300, Posture.AWAY, {}),
        (W.WALKING, 10, S, {}),
        (W.FALL, FALL_SEGMENT_S, Posture.LYING_FLOOR, {"kind": FallKind.SYNCOPE}),
        (W.ON_FLOOR, 12, Posture.LYING_FLOOR, {}),
    ],
    T0 + 0.013,
)


@pytest.mark.parametrize("placement", ["wrist", "waist"])
def test_window_sizes_do_not_change_the_signal(placement: Placement) -> None:
    n = int((EVERYTHING.end - EVERYTHING.start) * RATE)
    one_go = MotionSynth(EVERYTHING, placement, np.random.default_rng(7)).samples(EVERYTHING.start, n)
    for window in (50, 37, 500):
        synth = MotionSynth(EVERYTHING, placement, np.random.default_rng(7))
        parts = [synth.samples(EVERYTHING.start + i / RATE, min(window, n - i)) for i in range(0, n, window)]
        assert np.allclose(np.vstack(parts), one_go, atol=1e-3), window


@pytest.mark.parametrize("placement", ["wrist", "waist"])
def test_segments_join_without_jumps(placement: Placement) -> None:
    # At 1 kHz a smooth signal barely changes from one sample to the next; a jump in orientation, phase or
    # movement at a segment boundary stands out (0.2-0.6 g when the previous segment is not faded out).
    synth = MotionSynth(EVERYTHING, placement, np.random.default_rng(3), rate_hz=1000.0)
    for segment in EVERYTHING.segments[1:]:
        acc = synth.samples(segment.start - 0.5, 1000)
        steps = np.linalg.norm(np.diff(acc, axis=0), axis=1)
        at = 499  # from the last sample before the boundary to the first one after it
        elsewhere = np.delete(steps, at).max()
        assert steps[at] <= max(0.06, elsewhere), (segment.activity, steps[at], elsewhere)


def test_same_seed_same_signal_other_seed_other_signal() -> None:
    a = render(EVERYTHING, "wrist", 11)
    b = render(EVERYTHING, "wrist", 11)
    c = render(EVERYTHING, "wrist", 12)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, atol=0.05)


def test_memory_holds_two_segments_at_most() -> None:
    line = timeline([(W.STANDING if i % 2 else W.RESTING, 2, S if i % 2 else SIT, {}) for i in range(300)])
    synth = MotionSynth(line, "wrist", np.random.default_rng(0))
    for i in range(600):
        synth.samples(T0 + i, RATE)
        assert len(synth._renderers) <= 2


# ---------------------------------------------------------------------------------------------------------------
# the device
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["wrist", "waist"])
def test_every_batch_satisfies_the_wire_contract(placement: Placement) -> None:
    synth = MotionSynth(EVERYTHING, placement, np.random.default_rng(5))
    device = BraceletAccel("bracelet-1", synth)
    emissions = []
    t = EVERYTHING.start
    while t < EVERYTHING.end:  # windows as the scenario runner asks for them
        emissions += list(device.emissions(t, min(t + 60.0, EVERYTHING.end)))
        t += 60.0
    # one batch a second; the one completed at the very end belongs to the next window
    assert len(emissions) == round(EVERYTHING.end - EVERYTHING.start) - 1
    for k, emission in enumerate(emissions):
        assert emission.kind is TopicKind.DEVICE_ACCEL
        assert emission.device_id == "bracelet-1"
        message = emission.message
        assert isinstance(message, AccelBatch)
        assert message.t0 == pytest.approx(EVERYTHING.start + k)
        assert emission.ts == pytest.approx(message.t0 + 1.0)
        assert len(message.samples_g) == RATE
        assert message.rate_hz == RATE
        assert decode(AccelBatch, encode(message), now=emission.ts) == message


def test_batches_do_not_depend_on_the_callers_windows() -> None:
    def batches(windows: list[float]) -> list[AccelBatch]:
        device = BraceletAccel("b", MotionSynth(EVERYTHING, "wrist", np.random.default_rng(2)))
        out = []
        for t0, t1 in itertools.pairwise(windows):
            out += [e.message for e in device.emissions(t0, t1) if isinstance(e.message, AccelBatch)]
        return out

    start, end = EVERYTHING.start, EVERYTHING.start + 200
    uneven = [start] + [start + x for x in np.cumsum(np.full(60, 3.33)).tolist()] + [end]
    assert batches([start, start + 60, start + 120, start + 180, end]) == batches(uneven)
    assert [m.t0 for m in batches([start, end])] == pytest.approx([start + k for k in range(199)])


def test_samples_are_clipped_and_rounded_for_the_wire() -> None:
    batch = accel_batch(T0, 50.0, np.array([[20.0, -17.5, 0.123456], [0.99999, -0.00004, 1.0]]))
    assert batch.samples_g == ((ACCEL_LIMIT_G, -ACCEL_LIMIT_G, 0.1235), (1.0, -0.0, 1.0))
    with pytest.raises(ValueError, match="whole number"):
        BraceletAccel("b", MotionSynth(EVERYTHING, "wrist", np.random.default_rng(0)), batch_s=0.011)
