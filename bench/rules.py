"""Rule engine cost: RuleEngine.observe() per reading, against a trivial loop over the same readings, in one run.

The alerts service pushes about 10,000 vitals readings a second through observe(); this prints the cost of one
call for the usual case (a raw bracelet reading, nothing near a limit), for edge summaries, for readings while a
condition is raised (the counting path), and for the baseline: a loop that only looks the resident up and keeps
the reading in a bounded deque (about the least any rule engine must do). Each case runs on a fresh engine with
the packaged rules over a stream of distinct, time-ordered readings (a reading seen twice would take the cheap
"already judged" path), best of five rounds.

Run: `.venv/bin/python bench/rules.py [--residents 2000] [--readings 100000] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque
from collections.abc import Callable

from alerts.models import ResidentProfile, VitalsObservation
from alerts.rules import RuleEngine
from alerts.ruleset import load_rules

T0 = 1_790_000_000.0
CONDITIONS = [(), (), (), ("hypertension",), ("atrial_fibrillation",), ("copd",)]


def _profiles(n: int) -> list[ResidentProfile]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        conditions = CONDITIONS[i % len(CONDITIONS)]
        scale = 2 if "copd" in conditions else 1
        out.append(
            ResidentProfile(
                resident_id=f"R{i:05d}",
                home_id=f"H{i:05d}",
                conditions=conditions,
                spo2_scale=scale,
                hr_max_bpm=rng.choice([None, 120.0]),
                timezone="Asia/Shanghai",
            )
        )
    return out


def _stream(
    profiles: list[ResidentProfile], n: int, *, summary: bool, hr: tuple[float, float], spo2: tuple[float, float]
) -> list[tuple[VitalsObservation, ResidentProfile, float]]:
    """`n` readings, round robin over residents, 1 s apart per resident (raw) or 60 s (summaries)."""
    rng = random.Random(2)
    step = 60.0 if summary else 1.0
    out = []
    count = len(profiles)
    for k in range(n):
        p = profiles[k % count]
        t = T0 + (k // count) * step + (k % count) * (step / count)
        obs = VitalsObservation(
            p.resident_id,
            p.home_id,
            "B" + p.resident_id,
            t,
            hr_bpm=float(round(rng.uniform(*hr))),
            spo2_pct=float(round(rng.uniform(*spo2))),
            skin_temp_c=round(rng.uniform(32.0, 34.0), 1),
            ppg_quality=None if summary else round(rng.uniform(0.7, 0.95), 2),
            motion_g=None if summary else round(rng.uniform(0.0, 0.06), 3),
            summary=summary,
        )
        out.append((obs, p, t))
    return out


def _per_call_us(run: Callable[[], float], rounds: int = 5) -> float:
    return min(run() for _ in range(rounds)) * 1e6


def _engine_case(readings: list[tuple[VitalsObservation, ResidentProfile, float]], warm: int) -> float:
    rules = load_rules()

    def run() -> float:
        engine = RuleEngine(rules)
        observe = engine.observe
        for obs, p, now in readings[:warm]:  # every resident seen once: no first-sight costs in the timing
            observe(obs, p, now)
        timed = readings[warm:]
        start = time.perf_counter()
        for obs, p, now in timed:
            observe(obs, p, now)
        return (time.perf_counter() - start) / len(timed)

    return _per_call_us(run)


def _baseline_case(readings: list[tuple[VitalsObservation, ResidentProfile, float]], warm: int) -> float:
    def run() -> float:
        windows: dict[str, deque[float]] = {}
        for obs, _p, _now in readings[:warm]:
            windows[obs.resident_id] = deque(maxlen=64)
        timed = readings[warm:]
        start = time.perf_counter()
        for obs, _p, _now in timed:
            window = windows.get(obs.resident_id)
            if window is not None and obs.hr_bpm is not None:
                window.append(obs.hr_bpm)
        return (time.perf_counter() - start) / len(timed)

    return _per_call_us(run)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=100_000, help="readings per case (and round)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    profiles = _profiles(args.residents)
    warm = args.residents
    n = args.readings + warm
    cases = {
        "raw reading, normal values": _stream(profiles, n, summary=False, hr=(58, 95), spo2=(95, 99)),
        "edge summary, normal values": _stream(profiles, n, summary=True, hr=(58, 95), spo2=(95, 99)),
        "raw reading, tachycardia raised": _stream(profiles, n, summary=False, hr=(136, 150), spo2=(95, 99)),
    }
    baseline = _baseline_case(cases["raw reading, normal values"], warm)
    results: dict[str, float] = {"baseline: dict look-up + bounded deque": baseline}
    for name, readings in cases.items():
        results[f"RuleEngine.observe, {name}"] = _engine_case(readings, warm)
    if args.json:
        print(json.dumps({"us_per_call": results, "residents": args.residents, "readings": args.readings}))
        return
    print(f"{args.residents} residents, {args.readings} readings per case, best of 5 rounds")
    print(f"{'case':<58} {'us/call':>8} {'x baseline':>11} {'calls/s/core':>13}")
    for name, us in results.items():
        print(f"{name:<58} {us:8.2f} {us / baseline:11.1f} {1e6 / us:13,.0f}")


if __name__ == "__main__":
    main()
