"""City-scale fleet: careloop's fleet (one minimal MQTT 5 connection per bracelet) against aiomqtt, in one run.

Starts its own Mosquitto with the fleet's per-device password file and ACL, and a subscriber in a separate process
(paho-mqtt, QoS 1, `<root>/v1/home/+/device/+/vitals`) that counts what arrives, so "sent" is checked against
"received". Then runs, in this process:
1. `simulators.fleet.Fleet`: N bracelets, each on its own connection, at the target rate for `--duration` s;
2. the baseline: the same schedule and payloads with one `aiomqtt.Client` per bracelet (a publish is a task
   awaiting its PUBACK), the straightforward asyncio way, for `--baseline-duration` s.
For each it prints msg/s sent and PUBACKed over the send phase, messages received by the subscriber, and the CPU
used during the send phase by this process, by Mosquitto and by the subscriber (in % of one core), and the ratios.

Run: `.venv/bin/python bench/fleet.py [--homes 10000] [--rate 10000] [--duration 60] [--json]`
(`--baseline-homes`, `--baseline-duration`, `--no-baseline`; `--profile DIR` writes a cProfile of each run).

Measured on the 2-core development machine (Mosquitto 2.0.11, Python 3.11, other work competing: load ~1.5-2),
10,000 bracelets at 10,000 msg/s, QoS 1:
- careloop fleet, 60 s: 600,000 sent, 600,000 PUBACKed, 600,000 received; 9,998 msg/s, nothing behind schedule.
  CPU in the send phase: the fleet 14 % of one core (14 us a message, half of it in the kernel), Mosquitto 21 %,
  the paho subscriber 39 %. At 40,000 msg/s (10,000 bracelets, 4 a second each) it still holds the rate: fleet
  55 %, Mosquitto 66 %.
- aiomqtt baseline, 20 s: 3,000-6,000 publish calls a second, 1,300-2,900 PUBACKs a second, a whole core busy
  (160-250 us a message); it falls behind and the schedule skips a third to half of the slots.
Where the fleet's time goes (cProfile, 210,000 messages): `socket.send` about 10 us a message (the loopback TCP
stack, receiver side included), the rest of `PublisherConnection.publish` 2.5 us, reading and counting a PUBACK
2.5 us (`recv_into` 1.5 us), formatting the vitals JSON 0.8 us and the numpy step 1 us (per tick of ~100 messages);
the loop is otherwise idle in `epoll.poll`. aiomqtt's goes to asyncio bookkeeping: per message a task, futures,
about 13 event-loop handles (writer registration through `call_soon_threadsafe`, timers), a paho
`MQTTMessageInfo` with its `threading.Condition`, `Properties`, and paho's logging checks; plus each client's
once-a-second housekeeping task (10,000 wake-ups a second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from careloop.codec import encode
from careloop.messages import Availability
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import TopicKind, TopicTree
from simulators.fleet import (
    Fleet,
    FleetConfig,
    RateSchedule,
    VitalsGenerator,
    device_password,
    fleet_acl,
    fleet_users,
)

ROOT = "careloop"
SECRET = "bench-fleet-secret"
READER, READER_PASSWORD = "bench-reader", "bench-reader-password"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- CPU accounting -------------------------------------------------------------------------------------------------
def process_cpu_s(pid: int | None) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid` (this process when None)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime, usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@dataclass(slots=True)
class CpuWindow:
    """CPU seconds (user, system) used by each watched process between `start()` and `stop()`."""

    pids: dict[str, int | None]
    started: dict[str, tuple[float, float]] | None = None
    t0: float = 0.0
    used: dict[str, tuple[float, float]] | None = None
    wall_s: float = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self.t0 = time.monotonic()
        self.started = {name: process_cpu_s(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        """Take the second reading."""
        assert self.started is not None
        self.wall_s = time.monotonic() - self.t0
        self.used = {}
        for name, pid in self.pids.items():
            user, system = process_cpu_s(pid)
            user0, system0 = self.started[name]
            self.used[name] = (user - user0, system - system0)

    def percent(self) -> dict[str, dict[str, float]]:
        """CPU used per process over the window, in % of one core: total, user, system."""
        assert self.used is not None
        return {
            name: {
                "total": round(100 * (user + system) / self.wall_s, 1),
                "user": round(100 * user / self.wall_s, 1),
                "system": round(100 * system / self.wall_s, 1),
            }
            for name, (user, system) in self.used.items()
        }


async def watch_send_phase(phase: Callable[[], str], window: CpuWindow) -> None:
    """Start the CPU window when the run enters its send phase, stop it when it leaves (polled at 50 Hz)."""
    while phase() != "sending":  # noqa: ASYNC110 - the fleets expose their phase, not an event
        await asyncio.sleep(0.02)
    window.start()
    while phase() == "sending":  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    window.stop()


# -- the subscriber (a separate process) ----------------------------------------------------------------------------
def subscriber_main(host: str, port: int) -> None:
    """Count vitals messages; answer `count`, `report` (and reset) and `quit` on stdin, one JSON line each."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from careloop.contract import decode_message

    tree = TopicTree(ROOT)
    lock = threading.Lock()
    state: dict[str, Any] = {"per_topic": {}, "total": 0, "invalid": 0, "checked": 0}
    ready = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with lock:
            per_topic = state["per_topic"]
            topic = msg.topic
            per_topic[topic] = per_topic.get(topic, 0) + 1
            state["total"] += 1
            check = state["total"] % 1000 == 1
        if check:  # validate a sample against the contract: every message would cost the subscriber too much
            try:
                decode_message(tree, topic, msg.payload, now=time.time())
            except ValueError:
                with lock:
                    state["invalid"] += 1
            with lock:
                state["checked"] += 1

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-subscriber", protocol=paho.MQTTv5, reconnect_on_failure=False
    )
    client.username_pw_set(READER, READER_PASSWORD)
    client.max_inflight_messages_set(100)
    client.on_message = on_message
    client.on_subscribe = lambda *args: ready.set()
    client.connect(host, port, keepalive=60)
    client.subscribe(tree.filter(TopicKind.DEVICE_VITALS), qos=1)
    client.loop_start()
    if not ready.wait(10):
        raise SystemExit("subscriber: no SUBACK")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        with lock:
            per_topic = state["per_topic"]
            counts = list(per_topic.values())
            answer: dict[str, Any] = {"received": state["total"]}
            if command == "report":
                answer.update(
                    devices=len(counts),
                    min_per_device=min(counts, default=0),
                    max_per_device=max(counts, default=0),
                    checked=state["checked"],
                    invalid=state["invalid"],
                )
                state.update(per_topic={}, total=0, invalid=0, checked=0)
        print(json.dumps(answer), flush=True)
        if command == "quit":
            break
    client.disconnect()
    client.loop_stop()


class Subscriber:
    """The subscriber process, driven over its stdin / stdout."""

    def __init__(self, broker: Mosquitto) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--subscriber", broker.host, str(broker.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._read().get("ready") is not True:
            raise SystemExit("the subscriber did not start")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the subscriber exited with status {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        """Send a command, return its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def wait_for(self, expected: int, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until `expected` messages arrived (or the count stops moving for 3 s); report and reset."""
        deadline = time.monotonic() + timeout_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            received = self.ask("count")["received"]
            if received >= expected:
                break
            if received != last:
                last, last_change = received, time.monotonic()
            elif time.monotonic() - last_change > 3.0:
                break
            time.sleep(0.2)
        return self.ask("report")

    def close(self) -> None:
        """Stop the process."""
        with contextlib.suppress(Exception):
            self.ask("quit")
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- the baseline: one aiomqtt client per bracelet ------------------------------------------------------------------
class AiomqttFleet:
    """The same fleet the straightforward way: an `aiomqtt.Client` per device, a task per publish."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.phase = "connecting"
        self.sent = self.acked = self.errors = 0
        self.connect_failures = 0
        self.send_s = 0.0
        self.ramp_s = 0.0

    async def run(self) -> dict[str, Any]:
        """Connect everyone, send for the duration, wait for the PUBACKs, disconnect."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        tree = TopicTree(cfg.topic_root)
        n = cfg.homes
        ids = [(f"H{i:06d}", f"BR-{i:06d}") for i in range(cfg.first_index, cfg.first_index + n)]
        vitals_topics = [tree.device(TopicKind.DEVICE_VITALS, h, d) for h, d in ids]
        offline = encode(Availability(online=False))
        clients: list[aiomqtt.Client | None] = [None] * n
        limit = asyncio.Semaphore(cfg.connect_concurrency)

        async def connect(position: int) -> None:
            home, device = ids[position]
            availability = tree.device(TopicKind.DEVICE_AVAILABILITY, home, device)
            client = aiomqtt.Client(
                cfg.host,
                cfg.port,
                identifier=device,
                username=device,
                password=device_password(cfg.secret, device),
                protocol=aiomqtt.ProtocolVersion.V5,
                will=aiomqtt.Will(availability, offline, qos=1, retain=True),
                keepalive=cfg.keepalive_s,
                max_inflight_messages=cfg.window,
            )
            async with limit:
                try:
                    await client.__aenter__()
                except aiomqtt.MqttError:
                    self.connect_failures += 1
                    return
            clients[position] = client
            await client.publish(availability, encode(Availability(online=True, since=time.time())), qos=1, retain=True)

        ramp_start = loop.time()
        await asyncio.gather(*(connect(p) for p in range(n)))
        self.ramp_s = loop.time() - ramp_start

        vitals = VitalsGenerator(n, seed=cfg.seed)
        pending: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            if task.cancelled() or task.exception() is not None:
                self.errors += 1
            else:
                self.acked += 1

        schedule = RateSchedule(cfg.target_rate, loop.time(), cfg.duration_s, max_backlog_s=cfg.max_backlog_s)
        self.phase = "sending"
        k = 0
        while not schedule.done:
            first, count = schedule.due(loop.time())
            if count:
                idx = np.arange(first, first + count, dtype=np.int64) % n
                for i, payload in zip(idx.tolist(), vitals.payloads(idx, time.time()), strict=True):
                    client = clients[i]
                    if client is None:
                        continue
                    task = asyncio.create_task(client.publish(vitals_topics[i], payload, qos=cfg.qos))
                    pending.add(task)
                    task.add_done_callback(done)
                    self.sent += 1
            k += 1
            await asyncio.sleep(max(0.0, schedule.start + k * cfg.tick_s - loop.time()))
        self.send_s = loop.time() - schedule.start
        acked_in_send = self.acked
        self.phase = "draining"
        if pending:
            await asyncio.wait(set(pending), timeout=cfg.drain_timeout_s)
        self.phase = "disconnecting"

        async def leave(client: aiomqtt.Client) -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

        await asyncio.gather(*(leave(c) for c in clients if c is not None))
        return {
            "homes": n,
            "connected": sum(c is not None for c in clients),
            "connect_failures": self.connect_failures,
            "ramp_s": round(self.ramp_s, 2),
            "send_s": round(self.send_s, 2),
            "scheduled": schedule.next_slot,
            "sent": self.sent,
            "acked": self.acked,
            "errors": self.errors,
            "skipped_behind": schedule.skipped,
            "rate_achieved_msg_s": round(self.sent / self.send_s, 1),
            "acked_rate_msg_s": round(acked_in_send / self.send_s, 1),
        }


# -- running both ---------------------------------------------------------------------------------------------------
def measure(
    name: str,
    run: Callable[[], Awaitable[dict[str, Any]]],
    phase: Callable[[], str],
    broker: Mosquitto,
    subscriber: Subscriber,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Run one fleet, with the CPU window over its send phase and the subscriber's count after it."""
    window = CpuWindow({"fleet": None, "mosquitto": broker.pid, "subscriber": subscriber.process.pid})

    async def main() -> dict[str, Any]:
        watcher = asyncio.create_task(watch_send_phase(phase, window))
        result = await run()
        await watcher
        return result

    print(f"--- {name}", file=sys.stderr)
    profiler = cProfile.Profile() if profile_dir is not None else None
    if profiler is not None:
        profiler.enable()
    result = asyncio.run(main())
    if profiler is not None:
        profiler.disable()
        assert profile_dir is not None
        profile_dir.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile_dir / f"{name.split()[0]}.prof")
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    delivered = subscriber.wait_for(result["acked"] if result["acked"] else result["sent"])
    cpu_s = {name: user + system for name, (user, system) in (window.used or {}).items()}
    return {
        **result,
        "received": delivered["received"],
        "received_devices": delivered["devices"],
        "received_min_max_per_device": [delivered["min_per_device"], delivered["max_per_device"]],
        "validated_sample": delivered["checked"],
        "invalid_in_sample": delivered["invalid"],
        "cpu_pct_of_core": window.percent(),
        # CPU in the send phase over the messages sent in it (the phase's rate times its length).
        "cpu_us_per_msg": {
            proc: round(1e6 * s / max(1.0, result["rate_achieved_msg_s"] * window.wall_s), 1)
            for proc, s in cpu_s.items()
        },
    }


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--homes", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=None, help="total msg/s (default: one per home per second)")
    parser.add_argument("--duration", type=float, default=60.0, help="send phase of the fleet, s")
    parser.add_argument("--baseline-homes", type=int, default=None, help="default: --homes")
    parser.add_argument("--baseline-duration", type=float, default=20.0, help="send phase of the baseline, s")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--connect-rate", type=float, default=2000.0)
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR", help="cProfile each run into DIR/<run>.prof"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--subscriber", nargs=2, metavar=("HOST", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        subscriber_main(args.subscriber[0], int(args.subscriber[1]))
        return

    homes = args.homes
    baseline_homes = args.baseline_homes or homes
    users = fleet_users(max(homes, baseline_homes), SECRET)
    users[READER] = READER_PASSWORD
    progress = None if args.json else sys.stderr
    results: dict[str, Any] = {
        "homes": homes,
        "target_rate_msg_s": args.rate or float(homes),
        "cpus": os.cpu_count(),
        "loadavg_before": round(os.getloadavg()[0], 2),
    }
    with Mosquitto(users=users, acl=fleet_acl(ROOT, readers=[READER]), allow_anonymous=False) as broker:
        subscriber = Subscriber(broker)
        try:
            config = FleetConfig(
                homes=homes,
                host=broker.host,
                port=broker.port,
                secret=SECRET,
                topic_root=ROOT,
                rate=args.rate,
                duration_s=args.duration,
                connect_rate=args.connect_rate,
            )
            holder: dict[str, Fleet] = {}

            async def run_careloop() -> dict[str, Any]:
                fleet = holder["fleet"] = Fleet(config, progress=progress)
                return (await fleet.run()).to_dict()

            results["careloop"] = measure(
                "careloop fleet",
                run_careloop,
                lambda: holder["fleet"].phase if "fleet" in holder else "connecting",
                broker,
                subscriber,
                args.profile,
            )
            if not args.no_baseline:
                baseline_config = FleetConfig(
                    homes=baseline_homes,
                    host=broker.host,
                    port=broker.port,
                    secret=SECRET,
                    topic_root=ROOT,
                    rate=(args.rate or homes) * baseline_homes / homes,
                    duration_s=args.baseline_duration,
                    connect_rate=args.connect_rate,
                )
                baseline = AiomqttFleet(baseline_config)
                results["aiomqtt"] = measure(
                    "aiomqtt baseline", baseline.run, lambda: baseline.phase, broker, subscriber, args.profile
                )
        finally:
            subscriber.close()
    results["loadavg_after"] = round(os.getloadavg()[0], 2)
    if "aiomqtt" in results:
        ours, theirs = results["careloop"], results["aiomqtt"]
        results["ratios"] = {
            "acked_rate": round(ours["acked_rate_msg_s"] / max(theirs["acked_rate_msg_s"], 1e-9), 2),
            "fleet_cpu_per_msg": round(
                theirs["cpu_us_per_msg"]["fleet"] / max(ours["cpu_us_per_msg"]["fleet"], 1e-9), 2
            ),
        }
    if args.json:
        print(json.dumps(results))
        return
    print_table(results)


def _cpu(run: dict[str, Any], process: str) -> str:
    pct = run["cpu_pct_of_core"][process]
    return f"{pct['total']:.0f} ({pct['user']:.0f}u+{pct['system']:.0f}s)"


def print_table(results: dict[str, Any]) -> None:
    """The human-readable report."""
    runs = [name for name in ("careloop", "aiomqtt") if name in results]
    print(
        f"{results['homes']} homes, target {results['target_rate_msg_s']:.0f} msg/s; {results['cpus']} CPUs, "
        f"load average {results['loadavg_before']} before, {results['loadavg_after']} after (other work competes)"
    )
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("homes (connections)", lambda r: f"{r.get('devices_connected', r.get('connected'))}/{r['homes']}"),
        ("connect ramp, s", lambda r: f"{r['ramp_s']:.1f}"),
        ("send phase, s", lambda r: f"{r['send_s']:.1f}"),
        ("scheduled", lambda r: f"{r['scheduled']}"),
        ("sent", lambda r: f"{r['sent']}"),
        ("PUBACKed", lambda r: f"{r['acked']}"),
        ("received by subscriber", lambda r: f"{r['received']}"),
        ("sent msg/s", lambda r: f"{r['rate_achieved_msg_s']:.0f}"),
        ("PUBACKed msg/s", lambda r: f"{r['acked_rate_msg_s']:.0f}"),
        ("behind schedule (skipped)", lambda r: f"{r['skipped_behind']}"),
        ("errors", lambda r: f"{r['errors']}"),
        ("CPU fleet process, % core", lambda r: _cpu(r, "fleet")),
        ("CPU mosquitto, % core", lambda r: _cpu(r, "mosquitto")),
        ("CPU subscriber, % core", lambda r: _cpu(r, "subscriber")),
        ("fleet CPU us/msg", lambda r: f"{r['cpu_us_per_msg']['fleet']:.1f}"),
        ("mosquitto CPU us/msg", lambda r: f"{r['cpu_us_per_msg']['mosquitto']:.1f}"),
    ]
    print(f"{'':28}" + "".join(f"{name:>16}" for name in runs))
    for label, cell in rows:
        print(f"{label:28}" + "".join(f"{cell(results[name]):>16}" for name in runs))
    if "ratios" in results:
        r = results["ratios"]
        print(
            f"ratios careloop / aiomqtt: PUBACKed msg/s x{r['acked_rate']}, "
            f"fleet CPU per message x{r['fleet_cpu_per_msg']} less"
        )


if __name__ == "__main__":
    main()
