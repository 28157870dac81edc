"""SOS to alarm on the live topic, with 10,000 vitals messages a second in the background: p50 and p99.

Starts its own Mosquitto (no queue limit) and runs `careloop alerts run` as its own process on a fresh SQLite
database holding a registry (residents with bracelets, grid staff, a nurse and a doctor on duty who take alarms
at the console), as in production. Two phases, in the same run, with the same kind of probes:

1. idle (the baseline): the alerts service with nothing else to do;
2. loaded: a simulated fleet of bracelets (`careloop simulate fleet`, a separate process, each bracelet on its own
   MQTT connection, one `VitalsReading` per message, QoS 1) publishing `--rate` messages a second (10,000) to the
   central broker, which the alerts service validates and runs through every vitals rule.

A probe publishes one SOS press (QoS 1) for a registered bracelet that has not pressed before, and waits for the alerts
service's `AlertStateChange` for that resident (kind "sos", state "open") on the home's alert topic. Its latency
runs from just before the PUBLISH leaves this process until that message arrives here: broker in, validation,
rule, the transition, its audit entry and its notifications committed to the database, the live push, broker out.
Probes are spread over the phase (`--probes` per phase, at most one in flight).

Everything shares the machine's cores: Mosquitto, the fleet, the alerts service and this prober. The service's
CPU is read from /proc. Prints p50, p95, p99 and max per phase and the loaded/idle ratios; target: loaded
p99 <= 100 ms.

Run: `.venv/bin/python bench/alert_latency.py [--json] [--rate 10000] [--probes 200] [--homes 10000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import aiomqtt

from careloop import messages as m
from careloop.codec import decode, encode
from careloop.mqtt import NO_DELAY
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import TopicKind, TopicTree

ROOT = "bench"
REPO = Path(__file__).resolve().parent.parent
CARELOOP_CMD = [str(Path(sys.executable).with_name("careloop"))]  # the console script beside this Python


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _intake_rate(log: Path, since: float, until: float) -> float | None:
    """Messages a second the alerts service received between two of its stats lines inside [since, until]."""
    points = []
    for line in log.read_text(errors="replace").splitlines():
        if " stats t=" in line:
            fields = dict(part.split("=", 1) for part in line.split(" stats ", 1)[1].split())
            t = float(fields["t"])
            if since <= t <= until:
                points.append((t, int(fields["received"])))
    if len(points) < 2:
        return None
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / (t1 - t0)


def _prepare_database(db_url: str, residents: int) -> list[tuple[str, str, str]]:
    """A registry of `residents` (each with a bracelet), grid staff covering the county, a nurse and a doctor on
    duty (alarms at the console), as the alerts service would find it; returns (home, bracelet, resident) each."""
    import csv
    import io

    from sqlalchemy import select

    from alerts.models import ChannelName
    from alerts.roster import Preferences, Shift
    from alerts.store import open_alert_store
    from careloop.registry.importer import import_csv
    from careloop.registry.models import OrgUnit, Staff, StaffRole
    from careloop.registry.store import open_registry
    from careloop.testing.registry_csv import generate_registry_csv

    data = generate_registry_csv(residents, seed=3)
    with open_registry(db_url) as registry:
        files = [("r.csv", data.residents), ("d.csv", data.devices), ("h.csv", data.health)]
        report = import_csv(registry.engine, [(name, text.encode()) for name, text in files])
        if not report.ok:
            raise SystemExit(f"registry import failed: {report.errors[:3]}")
        with registry.transaction() as session:
            county = session.scalars(select(OrgUnit).where(OrgUnit.parent_id.is_(None))).first()
            assert county is not None
            session.add_all(
                [
                    Staff(code="G0001", name="Grid staff", role=StaffRole.GRID_STAFF, org_unit_id=county.id),
                    Staff(code="N0001", name="Nurse", role=StaffRole.NURSE),
                    Staff(code="D0001", name="Doctor", role=StaffRole.DOCTOR),
                ]
            )
    now = time.time()
    with open_alert_store(db_url) as store:
        store.add_shifts([Shift("N0001", "nurse", "all", now - 3600, now + 86_400),
                          Shift("D0001", "doctor", "all", now - 3600, now + 86_400)])  # fmt: skip
        for code in ("G0001", "N0001", "D0001"):
            store.set_preferences(code, Preferences(channels=(ChannelName.LIVE,)), now)
    bracelets = [
        (row["home_code"], row["device_code"], row["resident_code"])
        for row in csv.DictReader(io.StringIO(data.devices))
        if row["kind"] == "bracelet"
    ]
    return bracelets


async def _probe_phase(
    broker: Mosquitto, tree: TopicTree, bracelets: list[tuple[str, str, str]], spacing_s: float, timeout_s: float
) -> tuple[list[float], int, list[float], list[float]]:
    """Press SOS on fresh bracelets, one at a time: end-to-end latencies (s), how many never showed up, and where
    the time went: until the broker's PUBACK, and until the service stamped the change (its `ts`, wall clock)."""
    latencies: list[float] = []
    pubacks: list[float] = []
    stamped: list[float] = []
    missing = 0
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"bench-prober-{bracelets[0][1]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NO_DELAY,  # as the console's client would; else Nagle holds the SOS up to 40 ms here
    ) as client:
        await client.subscribe(tree.filter(TopicKind.ALERT_STATE), qos=1)
        waiting: dict[str, asyncio.Future[tuple[float, float]]] = {}

        async def listen() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                change = decode(m.AlertStateChange, payload, now=time.time())
                if change.kind == "sos" and change.state == "open":
                    future = waiting.get(change.resident_id)
                    if future is not None and not future.done():
                        future.set_result((time.perf_counter(), change.ts))

        listener = asyncio.create_task(listen())
        try:
            for home, device, resident in bracelets:
                future: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
                waiting[resident] = future
                wall = time.time()
                payload = encode(m.SosPress(ts=wall))
                started = time.perf_counter()
                try:
                    await client.publish(tree.device(TopicKind.DEVICE_SOS, home, device), payload, qos=1)
                    acked = time.perf_counter()
                    arrived, change_ts = await asyncio.wait_for(future, timeout_s)
                    latencies.append(arrived - started)
                    pubacks.append(acked - started)
                    stamped.append(change_ts - wall)
                except (TimeoutError, aiomqtt.MqttError):
                    missing += 1
                await asyncio.sleep(spacing_s)
        finally:
            listener.cancel()
    return latencies, missing, pubacks, stamped


def _summary(latencies: list[float], missing: int, pubacks: list[float], stamped: list[float]) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    if not ms:
        return {"probes": 0, "missing": missing}
    return {
        "puback_p50_ms": round(_percentile([x * 1000 for x in pubacks], 50), 2),
        "puback_p99_ms": round(_percentile([x * 1000 for x in pubacks], 99), 2),
        "changed_p50_ms": round(_percentile([x * 1000 for x in stamped], 50), 2),
        "changed_p99_ms": round(_percentile([x * 1000 for x in stamped], 99), 2),
        "probes": len(ms),
        "missing": missing,
        "p50_ms": round(_percentile(ms, 50), 2),
        "p95_ms": round(_percentile(ms, 95), 2),
        "p99_ms": round(_percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10_000.0, help="background vitals messages per second")
    parser.add_argument("--homes", type=int, default=10_000, help="simulated bracelets (each on its own connection)")
    parser.add_argument("--probes", type=int, default=200, help="SOS presses per phase")
    parser.add_argument("--spacing", type=float, default=0.1, help="seconds between probes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tree = TopicTree(ROOT)
    results: dict[str, Any] = {"rate_target": args.rate, "homes": args.homes}
    with tempfile.TemporaryDirectory(prefix="careloop-alert-bench-") as tmp, Mosquitto() as broker:
        db_url = f"sqlite:///{tmp}/alerts.db"
        bracelets = _prepare_database(db_url, 2 * args.probes)
        env = {
            **os.environ,
            "CARELOOP_MQTT__URL": broker.url,
            "CARELOOP_MQTT__TOPIC_ROOT": ROOT,
            "CARELOOP_DATABASE__URL": db_url,
            "CARELOOP_LOG_LEVEL": "INFO",
        }
        service = subprocess.Popen(
            [*CARELOOP_CMD, "alerts", "run"],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "alerts.log", "wb"),  # noqa: SIM115 - closed with the process
        )
        fleet: subprocess.Popen[bytes] | None = None
        try:
            time.sleep(3.0)  # connect, migrate, subscribe
            if service.poll() is not None:
                raise SystemExit(f"alerts service exited: {(Path(tmp) / 'alerts.log').read_text()[-3000:]}")
            cpu0, t0 = _cpu_s(service.pid), time.perf_counter()
            idle = asyncio.run(_probe_phase(broker, tree, bracelets[: args.probes], args.spacing, 5.0))
            results["idle"] = _summary(*idle)
            results["idle"]["service_cpu_pct"] = round(100 * (_cpu_s(service.pid) - cpu0) / (time.perf_counter() - t0))
            duration = args.probes * (args.spacing + 0.2) + 60
            fleet = subprocess.Popen(
                [*CARELOOP_CMD, "simulate", "fleet", "--homes", str(args.homes), "--rate", str(args.rate),
                 "--duration", str(duration), "--broker", broker.url, "--topic-root", ROOT, "--json", "--quiet",
                 "--first-index", "1"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(args.homes / 1000 + 8)  # the fleet connects at 1,000/s, then sends at full rate
            cpu0, t0 = _cpu_s(service.pid), time.perf_counter()
            wall0 = time.time()
            loaded = asyncio.run(_probe_phase(broker, tree, bracelets[args.probes :], args.spacing, 5.0))
            elapsed = time.perf_counter() - t0
            results["loaded"] = _summary(*loaded)
            results["loaded"]["service_cpu_pct"] = round(100 * (_cpu_s(service.pid) - cpu0) / elapsed)
            # what the service took in per second while the probes ran (it logs its counters every 10 s)
            rate = _intake_rate(Path(tmp) / "alerts.log", wall0, time.time())
            results["loaded"]["service_msg_s"] = None if rate is None else round(rate)
            fleet.send_signal(signal.SIGINT)
            out, _ = fleet.communicate(timeout=120)
            try:
                summary = json.loads(out)
                results["fleet"] = {k: summary.get(k) for k in ("published", "acked", "rate_msg_s", "errors")}
            except ValueError:
                results["fleet"] = {"output": out.decode(errors="replace")[-500:]}
        finally:
            for proc in (fleet, service):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    idle_s, loaded_s = results["idle"], results["loaded"]
    if "p99_ms" in idle_s and "p99_ms" in loaded_s:
        results["ratio_p50_loaded_to_idle"] = round(loaded_s["p50_ms"] / idle_s["p50_ms"], 2)
        results["ratio_p99_loaded_to_idle"] = round(loaded_s["p99_ms"] / idle_s["p99_ms"], 2)
        results["target_p99_ms"] = 100
        results["meets_target"] = loaded_s["p99_ms"] <= 100 and loaded_s["missing"] == 0
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for phase in ("idle", "loaded"):
            s = results[phase]
            print(
                f"{phase:>6}: {s.get('probes', 0)} SOS, missing {s.get('missing')}, p50 {s.get('p50_ms')} ms, "
                f"p95 {s.get('p95_ms')} ms, p99 {s.get('p99_ms')} ms, max {s.get('max_ms')} ms, "
                f"alerts service CPU {s.get('service_cpu_pct')}% of a core, "
                f"broker PUBACK p50/p99 {s.get('puback_p50_ms')}/{s.get('puback_p99_ms')} ms, "
                f"state changed p50/p99 {s.get('changed_p50_ms')}/{s.get('changed_p99_ms')} ms, "
                f"took in {s.get('service_msg_s', '-')} msg/s"
            )
        print(f"fleet: {results.get('fleet')}")
        print(
            f"loaded/idle: p50 x{results.get('ratio_p50_loaded_to_idle')}, "
            f"p99 x{results.get('ratio_p99_loaded_to_idle')}"
            f"; target p99 <= 100 ms: {'met' if results.get('meets_target') else 'NOT met'}"
        )
    return 0 if results.get("meets_target") else 1


if __name__ == "__main__":
    sys.exit(main())
