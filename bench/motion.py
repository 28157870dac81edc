"""Accelerometer synthesis cost: microseconds per 1-s window (50 samples) per activity and placement.

Each activity is rendered as consecutive 30-s segments of it (8 s for falls), window by window as a device asks,
so the cost of building each segment's renderer is included. Baseline, measured in the same run: the least
any synth does per window (sample times, Gaussian noise on a fixed gravity vector). Also the cost of a whole
bracelet batch (synthesis, rounding, AccelBatch validation).
Run: `.venv/bin/python bench/motion.py [--json] [--windows 2000]`. Prints us per window, the ratio to the
baseline, and hours of signal per CPU second.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np

from simulators.motion import FALL_SEGMENT_S, BraceletAccel, MotionSynth, Placement
from simulators.timeline import Activity, FallKind, Posture, Segment, Timeline

T0 = 1_790_000_000.0
RATE = 50.0
POSTURE = {
    Activity.SLEEPING: Posture.LYING_BED,
    Activity.LYING: Posture.LYING_BED,
    Activity.RESTING: Posture.SITTING,
    Activity.SITTING_DOWN: Posture.SITTING,
    Activity.FALL: Posture.LYING_FLOOR,
    Activity.ON_FLOOR: Posture.LYING_FLOOR,
    Activity.OUT: Posture.AWAY,
}
PARAMS: dict[Activity, dict[str, Any]] = {
    Activity.FALL: {"kind": FallKind.TRIP_FORWARD},
    Activity.SITTING_DOWN: {"hard": True},
    Activity.ON_FLOOR: {"moving": True},
}


def _timeline(activity: Activity, seconds: float) -> Timeline:
    length = FALL_SEGMENT_S if activity is Activity.FALL else 30.0
    params = MappingProxyType(PARAMS.get(activity, {}))
    posture = POSTURE.get(activity, Posture.STANDING)
    count = int(seconds / length) + 2
    return Timeline(
        [Segment(T0 + i * length, T0 + (i + 1) * length, activity, "room", posture, params) for i in range(count)]
    )


def _per_window_us(fresh: Callable[[], Callable[[int], Any]], windows: int) -> float:
    """Best of three passes, each over `windows` consecutive windows of a fresh stepper: us per window."""
    best = float("inf")
    for _ in range(3):
        step = fresh()
        start = time.perf_counter()
        for i in range(windows):
            step(i)
        best = min(best, (time.perf_counter() - start) / windows)
    return best * 1e6


def _synth_stepper(line: Timeline, placement: Placement) -> Callable[[], Callable[[int], Any]]:
    def fresh() -> Callable[[int], Any]:
        synth = MotionSynth(line, placement, np.random.default_rng(1))
        return lambda i: synth.samples(T0 + i, 50)

    return fresh


def _device_stepper(line: Timeline) -> Callable[[], Callable[[int], Any]]:
    def fresh() -> Callable[[int], Any]:
        device = BraceletAccel("b", MotionSynth(line, "wrist", np.random.default_rng(1)))
        return lambda i: list(device.emissions(T0 + i, T0 + i + 1))

    return fresh


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--windows", type=int, default=2000, help="1-s windows per measurement")
    args = parser.parse_args()
    windows = args.windows

    rng = np.random.default_rng(0)
    gravity = np.array([0.0, -1.0, 0.0])

    def baseline(i: int) -> Any:
        t = T0 + i + np.arange(50) / RATE
        return gravity + rng.standard_normal((len(t), 3)) * 0.005

    base_us = _per_window_us(lambda: baseline, windows)
    results: dict[str, Any] = {"baseline_us": round(base_us, 2), "activities": {}}
    placements: tuple[Placement, ...] = ("wrist", "waist")
    for activity in Activity:
        for placement in placements:
            us = _per_window_us(_synth_stepper(_timeline(activity, windows), placement), windows)
            results["activities"][f"{activity.value}/{placement}"] = {
                "us_per_window": round(us, 1),
                "ratio_to_baseline": round(us / base_us, 1),
                "hours_per_cpu_s": round(1e6 / us / 3600, 1),
            }
    results["bracelet_batch_us"] = round(
        _per_window_us(_device_stepper(_timeline(Activity.RESTING, windows)), windows), 1
    )
    if args.json:
        print(json.dumps(results))
        return
    print(f"baseline (times + noise on gravity): {base_us:.1f} us per 1-s window")
    print(f"{'activity/placement':28s} {'us/window':>10s} {'x baseline':>11s} {'h per CPU s':>12s}")
    for name, row in results["activities"].items():
        print(
            f"{name:28s} {row['us_per_window']:10.1f} {row['ratio_to_baseline']:11.1f} {row['hours_per_cpu_s']:12.1f}"
        )
    print(f"bracelet batch (resting, wrist, incl. AccelBatch validation): {results['bracelet_batch_us']:.1f} us")


if __name__ == "__main__":
    main()
