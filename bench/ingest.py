"""Streaming ingest, MQTT -> InfluxDB: careloop ingest against the machine's ceilings and a naive bridge, in one run.

Starts its own Mosquitto (careloop.testing: no queue limit, so nothing is dropped) and influxd (WAL fsynced on every
write), then measures, each case with its own topic root and database:

1. storage ceiling: influxd's raw write rate, from this process, with the lines ingest writes for case 4 already
   serialised (as many points as case 4), posted in batches of 10,000 lines, 4 requests at once, for each of the two
   point shapes of case 4;
2. MQTT ceiling: a bare paho-mqtt subscriber (QoS 1, shared subscription) that only counts, fed by the publisher;
   and the same with ingest's own MQTT client counting and acknowledging (`careloop.mqtt5`, lean client);
3. ingest, one reading per message: `--processes` ingest processes (`python -m ingest`, shared subscription),
   bracelet `VitalsReading`s from 1,000 devices (5 fields a point);
4. ingest, edge batches: edge `VitalsBatch`es of 50 summaries each, as edge/vitals.py fills them (9 fields a
   point: heart rate mean, min, max; SpO2 mean, min; skin temperature; interval; readings kept and dropped), and
   the same with compact summaries (6 fields: the means and the counts). InfluxDB's cost grows with the fields;
5. baseline: a naive bridge (paho, one HTTP request per point), on a smaller run.

The publisher is a separate process (`careloop.testing.mqtt_publisher`): `--connections` MQTT connections publishing
pre-formatted QoS 1 messages as fast as the broker's PUBACKs allow (its receive maximum, 100 per connection). A
case's time runs from the first PUBLISH to the moment every point answers a `count()` query in InfluxDB (asked
once ingest's /health says all are written; for the subscribers: the last message counted); throughput is messages
(points) over that time. Everything shares the 2 cores: publisher, Mosquitto, influxd and ingest. CPU per process
is read from /proc (helpers report their own), in % of one core and in microseconds per point: the second figure
is what other load on the machine does not skew. "Rest of the machine" is the CPU busy meanwhile in anything not
measured (other people's work on the machine, interrupts): when it is high, the case's wall-clock figures are low.

Run: `.venv/bin/python bench/ingest.py [--json] [--processes N] [--messages N] [--batches N]`.
Figures measured on the 2-core development machine are in docs/ingest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path and `bench/ingest.py` would shadow the `ingest` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from careloop.testing.influxd import Influxd
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import TopicKind, TopicTree

CLK_TCK = os.sysconf("SC_CLK_TCK")
DEVICES = 1000
HOMES = 200  # edge batches: 5 devices a home
READINGS_PER_BATCH = 50
BENCH_SITE = "bench"
#: A bracelet reading as the fleet simulator formats it (the contract's field order, ms timestamps).
READING = b'{"v":1,"ts":%.3f,"hr_bpm":%.1f,"spo2_pct":%.1f,"skin_temp_c":%.2f,"ppg_quality":%.2f,"motion_g":%.3f}'
#: An edge's vitals summary as edge/vitals.py fills one in: time and identities, then the values (pre-formatted).
SUMMARY_WHO = [f'"device_id":"BR-{d:06d}","resident_id":"R{d:06d}",' for d in range(HOMES * 5)]
SUMMARY_VALUES = [
    f'"interval_s":60,"hr_bpm":{hr:.1f},"hr_min_bpm":{hr - 4.5:.1f},"hr_max_bpm":{hr + 6.5:.1f},'
    f'"spo2_pct":{96.0 + k % 30 / 10:.1f},"spo2_min_pct":{94.0 + k % 20 / 10:.1f},'
    f'"skin_temp_c":{33.0 + k % 9 / 10:.1f},"n_readings":{55 + k % 5},"n_rejected":{k % 3}}}'
    for k, hr in enumerate(60.0 + n * 0.7 for n in range(97))
]
#: A compact summary: the vital signs of a bracelet reading, over the interval (n_rejected defaults to 0).
COMPACT_VALUES = [
    f'"interval_s":60,"hr_bpm":{hr:.1f},"spo2_pct":{96.0 + k % 30 / 10:.1f},"skin_temp_c":{33.0 + k % 9 / 10:.1f},'
    f'"n_readings":{55 + k % 5}}}'
    for k, hr in enumerate(60.0 + n * 0.7 for n in range(97))
]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_s() -> float:
    """User + system CPU seconds of this process (helpers report their own: /proc is gone once they exit)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the messages ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Workload:
    """What the publisher sends: `count` messages under `root`, readings from `t0` on.

    `kind`: "reading" (a bracelet's VitalsReading), "batch" (an edge VitalsBatch of 50 summaries as edge/vitals.py
    fills them: mean, min and max heart rate, mean and min SpO2, skin temperature, counts: 9 fields a point), or
    "compact" (the same batches with only the means and counts: 6 fields a point).
    """

    kind: str
    count: int
    root: str
    t0: float

    @property
    def points(self) -> int:
        """Points the messages carry."""
        return self.count * (1 if self.kind == "reading" else READINGS_PER_BATCH)

    def topics(self) -> list[str]:
        """The topics: one per device (readings) or per home (batches)."""
        tree = TopicTree(self.root)
        if self.kind == "reading":
            return [tree.device(TopicKind.DEVICE_VITALS, f"H{d:06d}", f"BR-{d:06d}") for d in range(DEVICES)]
        return [tree.edge(TopicKind.EDGE_VITALS, f"H{h:06d}") for h in range(HOMES)]

    def message(self, i: int, topics: list[str]) -> tuple[str, bytes]:
        """Message `i`: a distinct point for every reading (device and millisecond never repeat)."""
        if self.kind == "reading":
            d, k = i % DEVICES, i // DEVICES
            hr = 60.0 + (i * 7 % 600) / 10
            return topics[d], READING % (self.t0 + k * 0.001, hr, 97.0 - (i % 7) * 0.3, 33.2, 0.9, 0.012)
        h, j = i % HOMES, i // HOMES
        values, who = SUMMARY_VALUES if self.kind == "batch" else COMPACT_VALUES, SUMMARY_WHO
        per_device = READINGS_PER_BATCH // 5
        stamps = [f'{{"ts":{self.t0 + (j * per_device + k) * 0.001:.3f},' for k in range(per_device)]
        readings = [
            stamps[r // 5] + who[h * 5 + r % 5] + values[(i + r) % len(values)] for r in range(READINGS_PER_BATCH)
        ]
        payload = '{"v":1,"msg_id":"m%d","seq":%d,"readings":[%s]}' % (i, j, ",".join(readings))  # noqa: UP031
        return topics[h], payload.encode()


# -- the publisher (a separate process) -----------------------------------------------------------------------------
def publisher_main(host: str, port: int, workload: Workload, connections: int) -> None:
    """The publisher process: publish the workload, print one JSON line when every message is acknowledged."""
    from careloop.testing.mqtt_publisher import publish_all

    topics = workload.topics()
    messages = (workload.message(i, topics) for i in range(workload.count))
    cpu_before = own_cpu_s()
    result = asyncio.run(publish_all(host, port, messages, connections=connections, client_id_prefix="bench-pub"))
    cpu_s = own_cpu_s() - cpu_before
    print(json.dumps({"started": result.started, "ended": result.ended, "acked": result.acked, "cpu_s": cpu_s}))


def publish(broker: Mosquitto, workload: Workload, connections: int) -> subprocess.Popen[str]:
    """Start the publisher process (it prints its JSON result when done)."""
    spec = json.dumps({"kind": workload.kind, "count": workload.count, "root": workload.root, "t0": workload.t0})
    return subprocess.Popen(
        [sys.executable, __file__, "--publisher", broker.host, str(broker.port), spec, str(connections)],
        stdout=subprocess.PIPE,
        text=True,
    )


def publisher_result(process: subprocess.Popen[str], timeout_s: float = 600.0) -> dict[str, float]:
    """Wait for the publisher and read its result."""
    out, _ = process.communicate(timeout=timeout_s)
    if process.returncode != 0:
        raise SystemExit(f"publisher failed with status {process.returncode}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# -- subscribers that only count (separate processes) ---------------------------------------------------------------
def paho_counter_main(host: str, port: int, topic_filter: str, expected: int) -> None:
    """Count messages with paho-mqtt (QoS 1, acknowledged by paho after the callback); report the last one's time."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    state = {"count": 0, "last": 0.0, "cpu_s": 0.0}

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        state["count"] += 1
        if state["count"] >= expected:
            state["last"] = time.time()
            state["cpu_s"] = own_cpu_s() - cpu_before
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{os.getpid()}", protocol=paho.MQTTv5)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(host, port, keepalive=60)
    client.subscribe(topic_filter, qos=1)
    client.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("paho counter: no SUBACK")
    cpu_before = own_cpu_s()
    print(json.dumps({"ready": True}), flush=True)
    done.wait()
    print(json.dumps(state), flush=True)
    client.disconnect()
    client.loop_stop()


def lean_counter_main(host: str, port: int, topic_filter: str, expected: int) -> None:
    """Count messages with ingest's MQTT client, acknowledging each read's messages in one write."""
    from careloop.mqtt5 import MqttClient, Received, SessionOptions

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[float] = loop.create_future()
        count = 0
        holder: list[MqttClient] = []

        def on_messages(received: list[Received]) -> None:
            nonlocal count
            count += len(received)
            holder[0].ack([pid for _, _, pid in received])
            if count >= expected and not done.done():
                done.set_result(time.time())

        options = SessionOptions(client_id=f"bench-lean-{os.getpid()}", clean_start=True, receive_maximum=20_000)
        client = MqttClient(options, on_messages)
        holder.append(client)
        await client.open(host, port)
        await client.subscribe([topic_filter])
        cpu_before = own_cpu_s()
        print(json.dumps({"ready": True}), flush=True)
        last = await done
        print(json.dumps({"count": count, "last": last, "cpu_s": own_cpu_s() - cpu_before}), flush=True)
        await client.disconnect()

    asyncio.run(main())


def start_counter(kind: str, broker: Mosquitto, topic_filter: str, expected: int) -> subprocess.Popen[str]:
    """Start a counting subscriber process and wait until it is subscribed."""
    process = subprocess.Popen(
        [sys.executable, __file__, f"--{kind}-counter", broker.host, str(broker.port), topic_filter, str(expected)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if json.loads(process.stdout.readline() or "{}").get("ready") is not True:
        raise SystemExit(f"the {kind} counter did not start")
    return process


# -- the naive bridge (a separate process) --------------------------------------------------------------------------
def naive_bridge_main(host: str, port: int, topic_filter: str, influx_url: str, database: str, root: str) -> None:
    """paho-mqtt in, one HTTP POST per point out: validate, build the point, write it, let paho acknowledge."""
    import httpx
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from careloop.contract import decode_message
    from careloop.influx.lineprotocol import to_line_protocol
    from ingest.points import Origin, points_for

    tree = TopicTree(root)
    http = httpx.Client(base_url=influx_url)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        topic, message = decode_message(tree, msg.topic, msg.payload, now=time.time())
        assert topic.home_id is not None
        origin = Origin(BENCH_SITE, topic.home_id, topic.device_id)
        for point in points_for(topic.kind, message, origin):
            response = http.post(
                "/write", params={"db": database, "precision": "ns"}, content=to_line_protocol(point).encode()
            )
            response.raise_for_status()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-naive-{os.getpid()}", protocol=paho.MQTTv5)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(host, port, keepalive=60)
    client.subscribe(topic_filter, qos=1)
    client.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("naive bridge: no SUBACK")
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    client.disconnect()
    client.loop_stop()


# -- measuring ------------------------------------------------------------------------------------------------------
class Services:
    """The broker and InfluxDB of the run, with CPU accounting of the processes involved."""

    def __init__(self) -> None:
        self.broker = Mosquitto().start()
        self.influxd = Influxd().start()

    def close(self) -> None:
        """Stop both."""
        self.broker.close()
        self.influxd.close()

    def count(self, database: str, measurement: str, field: str) -> int:
        """Points of `measurement` (counted on `field`) in `database`."""
        result = self.influxd.query(f'SELECT count("{field}") FROM "{measurement}"', db=database)
        series = result["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@dataclass(slots=True)
class CpuWindow:
    """CPU seconds used inside a block: by each watched process, by this process, and by the whole machine."""

    used: dict[str, float]
    bench_s: float = 0.0
    machine_s: float = 0.0

    def others_s(self) -> float:
        """What the rest of the machine used meanwhile (other work, interrupts), once `used` is complete."""
        ours = sum(v for v in self.used.values() if v == v)  # NaN: a process that vanished
        return max(0.0, self.machine_s - self.bench_s - ours)


@contextmanager
def cpu_window(pids: dict[str, int]) -> Iterator[CpuWindow]:
    """CPU seconds each process used inside the block (filled in when the block ends)."""
    before = {name: process_cpu_s(pid) for name, pid in pids.items()}
    bench_before, machine_before = own_cpu_s(), machine_busy_s()
    window = CpuWindow(used={})
    yield window
    window.bench_s = own_cpu_s() - bench_before
    window.machine_s = machine_busy_s() - machine_before
    for name, pid in pids.items():
        try:
            window.used[name] = process_cpu_s(pid) - before[name]
        except OSError:
            window.used[name] = float("nan")


def wait_queryable(
    services: Services, database: str, measurement: str, field: str, expected: int, timeout_s: float = 600.0
) -> float:
    """Poll InfluxDB until `expected` points are there; the wall-clock time they were (raises on a timeout)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        n = services.count(database, measurement, field)
        if n >= expected:
            if n > expected:
                raise SystemExit(f"{n} points in {database}.{measurement}, expected {expected}: doubled points")
            return time.time()
        if time.monotonic() > deadline:
            raise SystemExit(f"only {n} of {expected} points in {database}.{measurement} after {timeout_s} s")
        time.sleep(delay)
        delay = min(0.2, delay * 1.5)


def storage_ceiling(services: Services, workload: Workload, points: int, suffix: str = "") -> dict[str, Any]:
    """influxd alone: the lines ingest writes for `workload`, pre-serialised, 10,000 a request, 4 at once."""
    import httpx

    from careloop.contract import decode_message
    from ingest.points import LineEncoder, Origin

    database = f"ceiling{suffix}"
    services.influxd.create_database(database)
    tree = TopicTree(workload.root)
    encoder = LineEncoder()
    topics = workload.topics()
    lines: list[str] = []
    i = 0
    while len(lines) < points:
        topic_name, payload = workload.message(i, topics)
        topic, message = decode_message(tree, topic_name, payload, now=time.time())
        assert topic.home_id is not None
        lines += encoder.lines(topic.kind, message, Origin(BENCH_SITE, topic.home_id))
        i += 1
    lines = lines[:points]
    bodies = ["\n".join(lines[k : k + 10_000]).encode() for k in range(0, len(lines), 10_000)]
    del lines

    async def write_all() -> float:
        queue = list(reversed(bodies))
        async with httpx.AsyncClient(base_url=services.influxd.url, timeout=120) as http:

            async def worker() -> None:
                while queue:
                    body = queue.pop()
                    response = await http.post("/write", params={"db": database, "precision": "ns"}, content=body)
                    response.raise_for_status()

            started = time.time()
            await asyncio.gather(*(worker() for _ in range(4)))
            return started

    with cpu_window({"influxd": services.influxd.pid or 0}) as cpu:
        started = asyncio.run(write_all())
        ended = wait_queryable(services, database, "vitals", "hr_bpm", points)
    services.influxd.drop_database(database)  # no compaction of it running into the next case
    elapsed = ended - started
    return {
        "points": points,
        "seconds": round(elapsed, 3),
        "points_s": round(points / elapsed),
        "cpu_s": cpu.used,
        "others_cpu_s": cpu.others_s(),
    }


def mqtt_ceiling(services: Services, kind: str, workload: Workload, connections: int) -> dict[str, Any]:
    """A subscriber that only counts (`kind`: paho or lean), fed the workload by the publisher process."""
    tree = TopicTree(workload.root)
    topic_filter = TopicTree.shared("bench", tree.filter(TopicKind.DEVICE_VITALS))
    counter = start_counter(kind, services.broker, topic_filter, workload.count)
    with cpu_window({"mosquitto": services.broker.pid or 0}) as cpu:
        publisher = publish(services.broker, workload, connections)
        out, _ = counter.communicate(timeout=600)
        published = publisher_result(publisher)
    counted = json.loads(out.strip().splitlines()[-1])
    cpu.used.update(subscriber=counted["cpu_s"], publisher=published["cpu_s"])
    elapsed = counted["last"] - published["started"]
    return {
        "messages": workload.count,
        "seconds": round(elapsed, 3),
        "messages_s": round(workload.count / elapsed),
        "publish_s": round(published["ended"] - published["started"], 3),
        "cpu_s": cpu.used,
        "others_cpu_s": cpu.others_s(),
    }


class IngestProcesses:
    """`n` ingest processes on one shared subscription, as an operator would run them."""

    def __init__(self, services: Services, n: int, root: str, database: str, extra: list[str]) -> None:
        self.spool_dir = Path(tempfile.mkdtemp(prefix="bench-ingest-spool-"))
        env = dict(
            os.environ,
            CARELOOP_MQTT__URL=services.broker.url,
            CARELOOP_MQTT__TOPIC_ROOT=root,
            CARELOOP_INFLUX__URL=services.influxd.url,
            CARELOOP_INFLUX__DATABASE=database,
            CARELOOP_SITE_ID=BENCH_SITE,
            CARELOOP_LOG_LEVEL="WARNING",
        )
        env.pop("CARELOOP_CONFIG", None)
        from careloop.ports import free_port

        # A free port for each process (its --metrics-port is offset by its --instance).
        self.ports = [free_port("127.0.0.1") for _ in range(n)]
        self.logs = [self.spool_dir / f"ingest-{k}.log" for k in range(n)]
        self.processes: list[subprocess.Popen[bytes]] = []
        for k in range(n):
            with open(self.logs[k], "wb") as log:
                command = [
                    sys.executable,
                    "-m",
                    "ingest",
                    "--instance",
                    str(k),
                    "--client-id-prefix",
                    f"bench-{root}",
                    "--spool-dir",
                    str(self.spool_dir),
                    "--metrics-port",
                    str(self.ports[k] - k),
                    *extra,
                ]
                self.processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        for k in range(n):
            while not self.health(k).get("mqtt_connected"):
                if time.monotonic() > deadline or self.processes[k].poll() is not None:
                    tail = self.logs[k].read_text(errors="replace")[-2000:]
                    self.close()
                    raise SystemExit(f"ingest process {k} did not connect:\n{tail}")
                time.sleep(0.05)

    def health(self, k: int) -> dict[str, Any]:
        """The /health of process `k` ({} while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[k]}/health", timeout=2) as r:
                state: dict[str, Any] = json.loads(r.read())
                return state
        except (OSError, ValueError):
            return {}

    def wait_stored(self, expected: int, timeout_s: float = 600.0) -> None:
        """Poll the processes' /health until they report `expected` points written or replayed.

        Cheap, unlike a count() query: one over a million points costs InfluxDB tens of milliseconds of CPU, and
        polled during the run it would take that from the very thing being measured.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            reports = [self.health(k) for k in range(len(self.processes))]
            if sum(r.get("written", 0) + r.get("replayed", 0) for r in reports) >= expected:
                return
            for k, process in enumerate(self.processes):
                if process.poll() is not None:
                    tail = self.logs[k].read_text(errors="replace")[-2000:]
                    raise SystemExit(f"ingest process {k} exited with status {process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise SystemExit(f"ingest stored fewer than {expected} points in {timeout_s} s: {reports}")
            time.sleep(0.05)

    def close(self) -> list[dict[str, Any]]:
        """Stop every process (SIGTERM: drain and disconnect); their last health reports."""
        reports = [self.health(k) for k in range(len(self.processes))]
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.spool_dir, ignore_errors=True)
        return reports


def ingest_case(
    services: Services, workload: Workload, processes: int, connections: int, extra: list[str]
) -> dict[str, Any]:
    """Run `processes` ingest processes against the workload; time from first PUBLISH to every point queryable."""
    database = f"ingest_{workload.kind}"
    services.influxd.create_database(database)
    fleet = IngestProcesses(services, processes, workload.root, database, extra)
    pids = {"mosquitto": services.broker.pid or 0, "influxd": services.influxd.pid or 0}
    pids.update({f"ingest{k}": p.pid for k, p in enumerate(fleet.processes)})
    try:
        with cpu_window(pids) as cpu:
            publisher = publish(services.broker, workload, connections)
            published = publisher_result(publisher)
            fleet.wait_stored(workload.points)
            ended = wait_queryable(services, database, "vitals", "hr_bpm", workload.points)
    finally:
        reports = fleet.close()
    services.influxd.drop_database(database)
    cpu.used["publisher"] = published["cpu_s"]
    elapsed = ended - published["started"]
    return {
        "processes": processes,
        "messages": workload.count,
        "points": workload.points,
        "seconds": round(elapsed, 3),
        "messages_s": round(workload.count / elapsed),
        "points_s": round(workload.points / elapsed),
        "publish_s": round(published["ended"] - published["started"], 3),
        "rejected": sum(r.get("rejected", 0) for r in reports),
        "spooled": sum(r.get("spooled", 0) for r in reports),
        "cpu_s": cpu.used,
        "others_cpu_s": cpu.others_s(),
        **cpu_bounds(cpu.used, workload.points),
    }


def cpu_bounds(used: dict[str, float], points: int) -> dict[str, int]:
    """The points/s at which the CPU each process spent per point would fill every core of the machine, with
    ingest as measured and with an ingest that cost nothing: what no ingest can beat on this machine."""
    cores = os.cpu_count() or 1
    spent = {name: value for name, value in used.items() if value == value}  # NaN: a process that vanished
    everything = sum(spent.values())
    without_ingest = sum(value for name, value in spent.items() if not name.startswith("ingest"))
    return {
        "cpu_bound_points_s": round(cores * points / everything) if everything else 0,
        "cpu_bound_without_ingest_points_s": round(cores * points / without_ingest) if without_ingest else 0,
    }


def naive_case(services: Services, workload: Workload, connections: int) -> dict[str, Any]:
    """The naive bridge: one HTTP request per point."""
    database = "naive"
    services.influxd.create_database(database)
    tree = TopicTree(workload.root)
    topic_filter = tree.filter(TopicKind.DEVICE_VITALS)
    bridge = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--naive-bridge",
            services.broker.host,
            str(services.broker.port),
            topic_filter,
            services.influxd.url,
            database,
            workload.root,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bridge.stdout is not None
    assert bridge.stdin is not None
    if json.loads(bridge.stdout.readline() or "{}").get("ready") is not True:
        raise SystemExit("the naive bridge did not start")
    try:
        publisher = publish(services.broker, workload, connections)
        published = publisher_result(publisher)
        ended = wait_queryable(services, database, "vitals", "hr_bpm", workload.points)
    finally:
        bridge.stdin.close()
        bridge.wait(30)
    elapsed = ended - published["started"]
    return {
        "messages": workload.count,
        "seconds": round(elapsed, 3),
        "messages_s": round(workload.count / elapsed),
        "points_s": round(workload.points / elapsed),
    }


# -- the run --------------------------------------------------------------------------------------------------------
CASES = (
    "storage_ceiling",
    "storage_ceiling_compact",
    "mqtt_ceiling_paho",
    "mqtt_ceiling_lean",
    "ingest_readings",
    "ingest_batches",
    "ingest_batches_compact",
    "naive",
)


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    """The selected cases (all by default), in one run, against one Mosquitto and one influxd."""
    t0 = time.time() - 3600  # readings an hour old: well inside the contract's 7-day window
    cases = args.cases.split(",") if args.cases else list(CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in os.getloadavg()]},
        "config": {
            "processes": args.processes,
            "connections": args.connections,
            "messages": args.messages,
            "batches": args.batches,
            "ingest_args": args.ingest_args,
        },
    }
    extra = args.ingest_args.split() if args.ingest_args else []
    services = Services()
    try:
        # Each storage ceiling just before the ingest case of the same points, each database dropped after its
        # case: a case never runs while InfluxDB compacts an earlier case's data.
        for shape, suffix in (("batch", ""), ("compact", "_compact")):
            if f"storage_ceiling{suffix}" in cases:
                progress(f"storage ceiling ({shape}): influxd raw writes, 10,000 lines a request, 4 at once")
                results[f"storage_ceiling{suffix}"] = storage_ceiling(
                    services,
                    Workload(shape, args.batches, f"bceil{shape}", t0),
                    args.ceiling_points or args.batches * READINGS_PER_BATCH,
                    suffix,
                )
            if f"ingest_batches{suffix}" in cases:
                progress(f"ingest, edge batches of {READINGS_PER_BATCH} ({shape}), {args.processes} process(es)")
                results[f"ingest_batches{suffix}"] = ingest_case(
                    services,
                    Workload(shape, args.batches, f"b{shape}", t0),
                    args.processes,
                    args.connections,
                    extra,
                )
        if "mqtt_ceiling_paho" in cases:
            progress("MQTT ceiling: paho subscriber that only counts")
            results["mqtt_ceiling_paho"] = mqtt_ceiling(
                services, "paho", Workload("reading", args.messages, "bmqttpaho", t0), args.connections
            )
        if "mqtt_ceiling_lean" in cases:
            progress("MQTT ceiling: ingest's MQTT client that only counts")
            results["mqtt_ceiling_lean"] = mqtt_ceiling(
                services, "lean", Workload("reading", args.messages, "bmqttlean", t0), args.connections
            )
        if "ingest_readings" in cases:
            progress(f"ingest, one reading per message, {args.processes} process(es)")
            results["ingest_readings"] = ingest_case(
                services, Workload("reading", args.messages, "bsingle", t0), args.processes, args.connections, extra
            )
        if "naive" in cases:
            progress("baseline: naive bridge, one HTTP request per point")
            results["naive_bridge"] = naive_case(
                services, Workload("reading", args.naive_messages, "bnaive", t0), args.connections
            )
    finally:
        services.close()
    results["ratios"] = ratios(results)
    return results


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Each ingest case against the ceilings and the baseline measured in the same run (those that were run)."""
    out: dict[str, float] = {}
    pairs = [
        ("readings_vs_mqtt_ceiling_paho", "ingest_readings", "mqtt_ceiling_paho", "messages_s"),
        ("readings_vs_mqtt_ceiling_lean", "ingest_readings", "mqtt_ceiling_lean", "messages_s"),
        ("readings_vs_naive", "ingest_readings", "naive_bridge", "messages_s"),
        ("batches_vs_storage_ceiling", "ingest_batches", "storage_ceiling", "points_s"),
        ("batches_vs_naive", "ingest_batches", "naive_bridge", "points_s"),
        ("compact_batches_vs_storage_ceiling", "ingest_batches_compact", "storage_ceiling_compact", "points_s"),
    ]
    for name, case, reference, unit in pairs:
        if case in r and reference in r:
            out[name] = round(r[case][unit] / r[reference][unit], 2)
    return out


def targets(r: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, for the cases that were run."""
    out = {}
    for suffix, label in (("", "edge batches"), ("_compact", "compact edge batches")):
        if f"ingest_batches{suffix}" in r:
            out[f"{label}: >= 150,000 points/s"] = r[f"ingest_batches{suffix}"]["points_s"] >= 150_000
        ratio = r["ratios"].get(f"{'compact_' if suffix else ''}batches_vs_storage_ceiling")
        if ratio is not None:
            out[f"{label}: >= 50% of the storage ceiling"] = ratio >= 0.5
    if "ingest_readings" in r:
        out["one reading per message: >= 35,000 msg/s"] = r["ingest_readings"]["messages_s"] >= 35_000
    return out


def _cpu(case: dict[str, Any]) -> str:
    """CPU of each process over the case, in % of one core, and per point (what other load does not skew)."""
    seconds, points = case["seconds"], case.get("points") or case.get("messages") or 1
    parts = [
        f"{name} {100 * used / seconds:.0f}% ({1e6 * used / points:.1f} us/point)"
        for name, used in case.get("cpu_s", {}).items()
    ]
    if "others_cpu_s" in case:
        parts.append(f"rest of the machine {100 * case['others_cpu_s'] / seconds:.0f}%")
    return ", ".join(parts)


def print_table(r: dict[str, Any]) -> None:
    """The results for people."""
    print(f"2 cores, everything on them at once, QoS 1; load average before the run {r['machine']['load_before']}")
    for suffix, label in (("", "9 fields"), ("_compact", "6 fields")):
        if f"storage_ceiling{suffix}" in r:
            s = r[f"storage_ceiling{suffix}"]
            title = f"storage ceiling, {label}: influxd raw, 10k lines x4"
            print(f"{title:<52}{s['points_s']:>9,} points/s  ({_cpu(s)})")
    for key, label in (("mqtt_ceiling_paho", "paho"), ("mqtt_ceiling_lean", "ingest.mqtt")):
        if key in r:
            c = r[key]
            title = f"MQTT ceiling: {label} subscriber counting"
            print(f"{title:<52}{c['messages_s']:>9,} msg/s     ({_cpu(c)})")
    if "naive_bridge" in r:
        n = r["naive_bridge"]
        print(f"{'naive bridge: paho, one HTTP request per point':<52}{n['messages_s']:>9,} msg/s")
    for key, label in (
        ("ingest_readings", "one reading per message"),
        ("ingest_batches", "edge batches of 50, 9 fields"),
        ("ingest_batches_compact", "edge batches of 50, 6 fields"),
    ):
        if key in r:
            c = r[key]
            title = f"ingest, {label}, {c['processes']} process(es):"
            print(
                f"{title:<52}{c['messages_s']:>9,} msg/s = {c['points_s']:,} points/s "
                f"({c['points']:,} points in {c['seconds']} s)"
            )
            print(f"    CPU: {_cpu(c)}")
            if c.get("cpu_bound_points_s"):
                print(
                    f"    at these costs per point {r['machine']['cpus']} cores carry at most "
                    f"{c['cpu_bound_points_s']:,} points/s, and {c['cpu_bound_without_ingest_points_s']:,} "
                    "with an ingest that cost nothing"
                )
    if r["ratios"]:
        print("ratios: " + ", ".join(f"{k} {v}" for k, v in r["ratios"].items()))
    print("targets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets(r).items()))


def main() -> None:
    """Parse arguments; run the bench or one of its helper processes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--processes", type=int, default=1, help="ingest processes on the shared subscription")
    parser.add_argument("--connections", type=int, default=20, help="publisher connections")
    parser.add_argument("--messages", type=int, default=400_000, help="messages of one reading")
    parser.add_argument("--batches", type=int, default=30_000, help="edge batches of 50 readings")
    parser.add_argument("--naive-messages", type=int, default=5_000, help="messages for the naive bridge")
    parser.add_argument(
        "--ceiling-points", type=int, default=0, help="points for the storage ceiling (default: as many as the batches)"
    )
    parser.add_argument(
        "--ingest-args", default="", help="extra `careloop ingest` options, e.g. '--batch-points 10000'"
    )
    parser.add_argument("--cases", default="", help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--publisher", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--paho-counter", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--lean-counter", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--naive-bridge", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        host, port, spec, connections = args.publisher
        publisher_main(host, int(port), Workload(**json.loads(spec)), int(connections))
        return
    if args.paho_counter:
        host, port, topic_filter, expected = args.paho_counter
        paho_counter_main(host, int(port), topic_filter, int(expected))
        return
    if args.lean_counter:
        host, port, topic_filter, expected = args.lean_counter
        lean_counter_main(host, int(port), topic_filter, int(expected))
        return
    if args.naive_bridge:
        host, port, topic_filter, url, database, root = args.naive_bridge
        naive_bridge_main(host, int(port), topic_filter, url, database, root)
        return

    def progress(text: str) -> None:
        if not args.json:
            print(f"... {text}", file=sys.stderr, flush=True)

    results = run(args, progress)
    if args.json:
        print(json.dumps({**results, "targets": targets(results)}))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
