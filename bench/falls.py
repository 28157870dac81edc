"""Fall detector cost: the working tree's `edge/falls.py` against the same file at a baseline revision, in one run.

`careloop eval falls` prints the detector's CPU time per second of signal, but on a shared machine one run of the
same code differs from the next by up to 1.7x. This runs the two detectors side by side instead: both streams every
trial of a dataset as the eval does (a fresh detector per trial, one-second chunks, CPU time of `update()` only,
each recording read from its file just before its trial, which leaves the caches as cold as the eval finds them;
`--warm`: all read into memory first), alternating baseline and working tree for `--rounds` rounds, and prints the
best round of each, their ratio, and whether every trial gave the same detections (an optimisation must not change
what fires). The baseline is `edge/falls.py` as it was at `--baseline` (a git revision), loaded as its own module
with the committed model file.

Run: `.venv/bin/python bench/falls.py [--baseline HEAD~1] [--data ../shared/data/falls] [--rounds 5] [--warm]
[--json]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from careloop.recordings import TRIALS_CSV, read_samples, read_trials
from careloop.testing.falls_data import falls_root
from edge import falls
from edge.eval import find_datasets, run_trial, trial_placement

ROOT = Path(__file__).resolve().parent.parent


def baseline_module(revision: str, workdir: Path) -> ModuleType:
    """`edge/falls.py` at `revision`, imported as the module `falls_baseline` (its model file: the committed one)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:edge/falls.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = workdir / "falls_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("falls_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["falls_baseline"] = module
    spec.loader.exec_module(module)
    # the module looks for its model next to itself: point it, and `read_models`' default (bound at import), here
    setattr(module, "MODEL_PATH", falls.MODEL_PATH)  # noqa: B010
    module.read_models.__defaults__ = (falls.MODEL_PATH,)
    return module


def run_all(module: ModuleType, trials: list[tuple[Any, Any, Any]], cold: bool) -> tuple[float, list[Any]]:
    """CPU seconds of `update()` over every trial, and each trial's detections; `cold`: each trial's recording is
    read from its file just before it runs, as `careloop eval` does (what the reading does to the caches counts)."""
    cpu = 0.0
    found = []
    for info, placement, samples in trials:
        if cold:
            samples = read_samples(info.file)
        outcome = run_trial(module.fall_detector(placement, info.rate_hz), info, samples)
        cpu += outcome.cpu_s
        found.append(outcome.detections)
    return cpu, found


def main() -> None:
    """Parse arguments, run both detectors round by round, print the result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD~1", help="git revision of edge/falls.py to compare with")
    parser.add_argument("--data", type=Path, default=None, help="a dataset folder or a folder of them")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best of each side counts")
    parser.add_argument("--warm", action="store_true", help="recordings read into memory first (not per trial)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    folders = find_datasets(args.data if args.data is not None else falls_root())
    out: dict[str, Any] = {"baseline": args.baseline, "rounds": args.rounds, "warm": args.warm, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        old = baseline_module(args.baseline, Path(tmp))
        for folder in folders:
            trials = [
                (info, trial_placement(info), read_samples(info.file)) for info in read_trials(folder / TRIALS_CSV)
            ]
            signal_s = sum(len(samples) / info.rate_hz for info, _, samples in trials)
            cpu: dict[str, list[float]] = {"baseline": [], "current": []}
            same = True
            for _ in range(args.rounds):
                base_cpu, base_found = run_all(old, trials, cold=not args.warm)
                cur_cpu, cur_found = run_all(falls, trials, cold=not args.warm)
                cpu["baseline"].append(base_cpu * 1e6 / signal_s)
                cpu["current"].append(cur_cpu * 1e6 / signal_s)
                same = same and base_found == cur_found
            best = {side: min(values) for side, values in cpu.items()}
            out["datasets"][folder.name] = {
                "cpu_us_per_signal_s": {side: round(value, 2) for side, value in best.items()},
                "rounds_us_per_signal_s": {side: [round(v, 2) for v in values] for side, values in cpu.items()},
                "ratio": round(best["current"] / best["baseline"], 3),
                "same_detections": same,
            }
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.json:
        print(json.dumps(out))
        return
    print(f"fall detector CPU per second of signal, best of {args.rounds} alternating rounds, vs {args.baseline}")
    for name, result in out["datasets"].items():
        us = result["cpu_us_per_signal_s"]
        print(
            f"  {name}: baseline {us['baseline']:.1f} us, current {us['current']:.1f} us, "
            f"ratio {result['ratio']:.2f}, same detections: {'yes' if result['same_detections'] else 'NO'}"
        )


if __name__ == "__main__":
    main()
