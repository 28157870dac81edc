"""Line protocol serialisation: influxdb-client's `Point` against careloop.influx.lineprotocol, same points.

Both build points from the same realistic vitals readings (measurement "vitals", tags site/home/resident/device,
5 float fields, ns timestamps) and serialise them to one `/write` body. Two numbers per serialiser:

- build+serialise: construct the point objects and serialise them (what an ingest loop pays per message);
- serialise only: the points already built;
- batch of dicts: influxdb-client's write-API serialiser (`_BaseWriteApi._serialize`, what `write_api.write()`
  runs before sending) given a list of record dicts, against careloop building and serialising points.

Run: `python bench/line_protocol.py [--points N] [--repeat R] [--json]`. Prints points/s of each and the ratio
careloop / influxdb-client (higher is better for careloop).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from influxdb_client.client._base import _BaseWriteApi
from influxdb_client.client.write.point import Point as _ClientPoint
from influxdb_client.domain.write_precision import WritePrecision

from careloop.influx.lineprotocol import Point, to_line_protocol

# influxdb-client has no type hints; treat its objects as Any here rather than ignore every call.
ClientPoint: Any = _ClientPoint
WriteApi: Any = _BaseWriteApi

Reading = tuple[dict[str, str], dict[str, float], int]


def make_readings(n: int, seed: int = 1) -> list[Reading]:
    """`n` vitals readings from 200 devices in 50 homes of 2 sites, one every 10 s per device."""
    rng = random.Random(seed)
    devices = []
    for i in range(200):
        home = f"home-{i // 4:03d}"
        devices.append(
            {"site": f"site-{i % 2}", "home": home, "resident": f"res-{i // 2:04d}", "device": f"band-{i:04d}"}
        )
    t0 = 1_767_225_600_000_000_000
    readings = []
    for k in range(n):
        tags = devices[k % len(devices)]
        fields = {
            "hr_bpm": round(rng.uniform(50, 120), 1),
            "spo2_pct": round(rng.uniform(88, 100), 1),
            "skin_temp_c": round(rng.uniform(33.0, 37.5), 2),
            "resp_rate_bpm": round(rng.uniform(10, 24), 1),
            "hrv_ms": rng.uniform(10, 90),  # full-precision floats exercise repr()
        }
        readings.append((tags, fields, t0 + (k // len(devices)) * 10_000_000_000 + k))
    return readings


def client_build_and_serialise(readings: list[Reading]) -> bytes:
    """influxdb-client: Point(...).tag(...).field(...).time(...), to_line_protocol(), joined."""
    lines = []
    for tags, fields, t in readings:
        p = ClientPoint("vitals")
        for key, tag in tags.items():
            p.tag(key, tag)
        for key, value in fields.items():
            p.field(key, value)
        p.time(t, WritePrecision.NS)
        lines.append(p.to_line_protocol())
    return "\n".join(lines).encode()


def careloop_build_and_serialise(readings: list[Reading]) -> bytes:
    """careloop: Point(measurement, tags, fields, time_ns), to_line_protocol(), joined."""
    return "\n".join(to_line_protocol(Point("vitals", tags, fields, t)) for tags, fields, t in readings).encode()


def client_points(readings: list[Reading]) -> list[Any]:
    """Pre-built influxdb-client points."""
    out = []
    for tags, fields, t in readings:
        p = ClientPoint("vitals")
        for key, tag in tags.items():
            p.tag(key, tag)
        for key, value in fields.items():
            p.field(key, value)
        out.append(p.time(t, WritePrecision.NS))
    return out


def client_batch_of_dicts(readings: list[Reading]) -> bytes:
    """influxdb-client's write-API serialiser on record dicts, as `write_api.write(record=[...])` runs it."""
    # A private method, called the way WriteApi.write() calls it; only the serialisation is measured.
    api = WriteApi.__new__(WriteApi)
    payload: dict[Any, list[bytes]] = {WritePrecision.NS: []}
    records = [{"measurement": "vitals", "tags": tags, "fields": fields, "time": t} for tags, fields, t in readings]
    api._serialize(records, WritePrecision.NS, payload)
    return b"\n".join(payload[WritePrecision.NS])


def best_rate(fn: Callable[[], bytes], n: int, repeat: int) -> float:
    """Points per second of the fastest of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def run(n: int, repeat: int) -> dict[str, Any]:
    """Measure both serialisers on the same `n` readings; check they produce the same body first."""
    readings = make_readings(n)
    ours = careloop_build_and_serialise(readings)
    theirs = client_build_and_serialise(readings)
    if ours != theirs:
        raise SystemExit("the two serialisers disagree on the benchmark points; fix that before timing")

    built_client = client_points(readings)
    built_ours = [Point("vitals", tags, fields, t) for tags, fields, t in readings]

    def client_serialise_only() -> bytes:
        return "\n".join(p.to_line_protocol() for p in built_client).encode()

    def careloop_serialise_only() -> bytes:
        return "\n".join(to_line_protocol(p) for p in built_ours).encode()

    def client_both() -> bytes:
        return client_build_and_serialise(readings)

    def careloop_both() -> bytes:
        return careloop_build_and_serialise(readings)

    def client_dicts() -> bytes:
        return client_batch_of_dicts(readings)

    if client_dicts() != ours:
        raise SystemExit("influxdb-client's batch serialiser disagrees with careloop on the benchmark points")

    results: dict[str, Any] = {"points": n, "repeat": repeat, "python": sys.version.split()[0]}
    for label, client_fn, ours_fn in (
        ("build_and_serialise", client_both, careloop_both),
        ("serialise_only", client_serialise_only, careloop_serialise_only),
        ("batch_of_dicts", client_dicts, careloop_both),
    ):
        # Two rounds, alternating, so neither serialiser profits from a warmer (or cooler) machine.
        client_rate = ours_rate = 0.0
        for _ in range(2):
            client_rate = max(client_rate, best_rate(client_fn, n, repeat))
            ours_rate = max(ours_rate, best_rate(ours_fn, n, repeat))
        results[label] = {
            "influxdb_client_points_per_s": round(client_rate),
            "careloop_points_per_s": round(ours_rate),
            "ratio": round(ours_rate / client_rate, 2),
        }
    return results


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = run(args.points, args.repeat)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{results['points']} vitals points, best of {results['repeat']} x2, Python {results['python']}")
    for label in ("build_and_serialise", "serialise_only", "batch_of_dicts"):
        r = results[label]
        print(
            f"{label:>20}: influxdb-client {r['influxdb_client_points_per_s']:>10,} points/s   "
            f"careloop {r['careloop_points_per_s']:>10,} points/s   ratio {r['ratio']:.2f}x"
        )


if __name__ == "__main__":
    main()
