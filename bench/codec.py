"""Wire codec cost: careloop.codec (pydantic-core JSON, one pass) against two-step baselines, in one run.

Baselines: the stdlib `json` module (parse to dicts, then validate the dicts) and `json.dumps(model_dump())`.
Run: `.venv/bin/python bench/codec.py [--json] [--seconds 1]`. Prints microseconds per message and the
ratio baseline / careloop (above 1 means careloop is faster).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from careloop import messages as m
from careloop.codec import decode, encode

NOW = 1_790_000_100.0
CONTEXT = {"now": NOW, "max_future_s": 300.0, "max_age_s": 7 * 86_400.0}


def _per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    """Best of five rounds, each about seconds / 5 long: microseconds per call."""
    n = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > 0.02:
            break
        n *= 2
    per_round = max(1, int(n * (seconds / 5) / 0.02))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        best = min(best, (time.perf_counter() - start) / per_round)
    return best * 1e6


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    accel = m.AccelBatch.model_validate(
        {"t0": NOW, "rate_hz": 50, "samples_g": [[0.01 * i, -0.98, 0.05] for i in range(50)]}
    )
    batch = m.VitalsBatch.model_validate(
        {**m.VitalsBatch.EXAMPLE, "readings": [m.VitalsBatch.EXAMPLE["readings"][0]] * 50}
    )
    cases: list[tuple[str, m.Message]] = [
        ("vitals reading", m.VitalsReading.example()),
        ("accel batch, 50 samples", accel),
        ("edge vitals batch, 50 readings", batch),
    ]
    results: dict[str, dict[str, float]] = {}
    for name, message in cases:
        model = type(message)
        payload = encode(message)
        ours_decode = _per_call_us(lambda: decode(model, payload, now=NOW), args.seconds)  # noqa: B023
        base_decode = _per_call_us(
            lambda: model.model_validate(json.loads(payload), context=CONTEXT),  # noqa: B023
            args.seconds,
        )
        ours_encode = _per_call_us(lambda: encode(message), args.seconds)  # noqa: B023
        base_encode = _per_call_us(
            lambda: json.dumps(message.model_dump(exclude_none=True)).encode(),  # noqa: B023
            args.seconds,
        )
        results[name] = {
            "bytes": len(payload),
            "decode_us": round(ours_decode, 2),
            "baseline_decode_us": round(base_decode, 2),
            "decode_ratio": round(base_decode / ours_decode, 2),
            "encode_us": round(ours_encode, 2),
            "baseline_encode_us": round(base_encode, 2),
            "encode_ratio": round(base_encode / ours_encode, 2),
        }
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"{'message':32} {'bytes':>6} {'decode us':>10} {'json+validate':>14} {'ratio':>6} "
        f"{'encode us':>10} {'json.dumps':>11} {'ratio':>6}"
    )
    for name, r in results.items():
        print(
            f"{name:32} {r['bytes']:>6.0f} {r['decode_us']:>10.2f} {r['baseline_decode_us']:>14.2f} "
            f"{r['decode_ratio']:>6.2f} {r['encode_us']:>10.2f} {r['baseline_encode_us']:>11.2f} "
            f"{r['encode_ratio']:>6.2f}"
        )


if __name__ == "__main__":
    main()
