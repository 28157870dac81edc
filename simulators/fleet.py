"""A city-scale fleet: N homes with one bracelet each, every bracelet on its own MQTT connection, in one process.

Device `BR-000042` lives in home `H000042` and logs in as itself, with a password derived from a fleet secret
(`device_password`); `fleet_users` / `fleet_acl` / `write_fleet_credentials` give the broker the matching password
file and an ACL that lets each device publish only below its own topics.

A run has three phases:
1. Ramp: connect every device at a bounded rate (`connect_rate`, at most `connect_concurrency` at once), retrying
   refusals with backoff; a refusal that cannot succeed (bad password) is counted by reason and not retried. Each
   connection sets a retained last will (`online: false`) and publishes `online: true`, retained, once connected.
2. Send: for `duration_s`, the fleet publishes one `VitalsReading` per slot of a `RateSchedule` (a total rate in
   msg/s, default `homes / interval_s`); slot k goes to device k mod N, so each device sends every N / rate
   seconds and the devices' phases are spread evenly over that period. At QoS 1 a message counts as delivered
   only when its PUBACK arrives; each connection has at most `window` messages in flight.
3. Drain and leave: wait up to `drain_timeout_s` for outstanding PUBACKs, then disconnect every device with
   reason "disconnect with will", so the broker publishes each device's `online: false`.

A connection lost during the run is counted (with its reason and the messages it had in flight) and reconnected
with backoff. `Fleet.run()` returns a `FleetSummary`; `FleetSummary.to_dict()` is what `--json` prints.

The MQTT client is `simulators.fleet_mqtt`, a minimal MQTT 5 publisher: see bench/fleet.py for why and by how much.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import math
import random
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from careloop.clock import Clock, SystemClock
from careloop.codec import encode
from careloop.messages import Availability
from careloop.mqtt5 import encode_string
from careloop.topics import DEFAULT_ROOT, TopicKind, TopicTree, check_id
from simulators.fleet_mqtt import (
    ConnectionClosed,
    ConnectRefused,
    PublishCounters,
    PublisherConnection,
    connect_packet,
    describe_error,
)

#: For simulations against a test broker only; give a real one with --secret.
DEFAULT_SECRET = "careloop-fleet-simulation"
MAX_DEVICE_INDEX = 999_999


# -- identities and credentials -------------------------------------------------------------------------------------
def device_id(index: int) -> str:
    """The bracelet of fleet home `index`: 42 -> "BR-000042"."""
    _check_index(index)
    return f"BR-{index:06d}"


def home_id(index: int) -> str:
    """Fleet home `index`: 42 -> "H000042"."""
    _check_index(index)
    return f"H{index:06d}"


def _check_index(index: int) -> None:
    if not 0 <= index <= MAX_DEVICE_INDEX:
        raise ValueError(f"fleet index {index} is outside 0..{MAX_DEVICE_INDEX}")


def device_password(secret: str, device: str) -> str:
    """A device's MQTT password: HMAC-SHA256(secret, device id), hex; the broker and the fleet derive the same."""
    return hmac.new(secret.encode(), device.encode(), hashlib.sha256).hexdigest()


def fleet_users(homes: int, secret: str, *, first_index: int = 1) -> dict[str, str]:
    """{device id: password} for every bracelet of the fleet."""
    return {device_id(i): device_password(secret, device_id(i)) for i in range(first_index, first_index + homes)}


def fleet_acl(topic_root: str = DEFAULT_ROOT, readers: Iterable[str] = ()) -> str:
    """A Mosquitto ACL: each device may publish only below its own device topics (`%u` is the user name).

    `readers` (e.g. an ingest service or a bench subscriber) may read everything under the root.
    """
    root = check_id(topic_root, "topic root")
    lines = [
        "# careloop fleet: a device publishes only below its own topics (user name = device id)",
        f"pattern write {root}/v1/home/+/device/%u/#",
        "# and reads the commands sent to it",
        f"pattern read {root}/v1/home/+/device/%u/command",
    ]
    for reader in readers:
        lines += [f"user {reader}", f"topic read {root}/v1/#"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class CredentialFiles:
    """The files `write_fleet_credentials` wrote."""

    password_file: Path
    acl_file: Path
    users: int


def write_fleet_credentials(
    out_dir: Path,
    homes: int,
    secret: str,
    *,
    topic_root: str = DEFAULT_ROOT,
    first_index: int = 1,
    readers: Mapping[str, str] | None = None,
) -> CredentialFiles:
    """Write a Mosquitto password file (`passwords`) and ACL (`acl`) for the fleet, plus any `readers`."""
    from careloop.broker_auth import mosquitto_password_line

    readers = dict(readers or {})
    users = {**fleet_users(homes, secret, first_index=first_index), **readers}
    out_dir.mkdir(parents=True, exist_ok=True)
    password_file = out_dir / "passwords"
    acl_file = out_dir / "acl"
    password_file.write_text("".join(mosquitto_password_line(u, p) + "\n" for u, p in users.items()))
    password_file.chmod(0o600)
    acl_file.write_text(fleet_acl(topic_root, readers))
    acl_file.chmod(0o600)
    return CredentialFiles(password_file=password_file, acl_file=acl_file, users=len(users))


# -- what the bracelets measure -------------------------------------------------------------------------------------
#: A `VitalsReading` as `careloop.codec.encode` writes it (same keys, same order), formatted directly: about 1 us
#: a message instead of 4 for building and serialising a model. tests/simulators/test_fleet.py decodes every one.
VITALS_FORMAT = b'{"v":1,"ts":%.3f,"hr_bpm":%.1f,"spo2_pct":%.1f,"skin_temp_c":%.2f,"ppg_quality":%.2f,"motion_g":%.3f}'


@dataclass(frozen=True, slots=True)
class VitalsArrays:
    """One tick's readings for a batch of devices (all within the contract's bounds)."""

    hr_bpm: np.ndarray
    spo2_pct: np.ndarray
    skin_temp_c: np.ndarray
    ppg_quality: np.ndarray
    motion_g: np.ndarray


class VitalsGenerator:
    """Per-device baselines with AR(1) noise, vectorised over the devices that send in one tick."""

    def __init__(self, devices: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._rng = rng
        self.hr_base = np.clip(rng.normal(72.0, 9.0, devices), 52.0, 100.0)
        self.spo2_base = np.clip(rng.normal(96.5, 1.3, devices), 92.0, 99.5)
        self.temp_base = np.clip(rng.normal(33.3, 0.7, devices), 31.0, 35.5)
        self.activity_g = rng.gamma(2.0, 0.02, devices)
        self._hr = self.hr_base.copy()
        self._spo2 = self.spo2_base.copy()
        self._temp = self.temp_base.copy()

    def step(self, idx: np.ndarray) -> VitalsArrays:
        """Advance the devices `idx` by one reading each and return their values."""
        rng = self._rng
        n = len(idx)
        hr = self.hr_base[idx] + 0.9 * (self._hr[idx] - self.hr_base[idx]) + rng.normal(0.0, 1.5, n)
        spo2 = self.spo2_base[idx] + 0.8 * (self._spo2[idx] - self.spo2_base[idx]) + rng.normal(0.0, 0.4, n)
        temp = self.temp_base[idx] + 0.95 * (self._temp[idx] - self.temp_base[idx]) + rng.normal(0.0, 0.03, n)
        hr = np.clip(hr, 40.0, 160.0)
        spo2 = np.clip(spo2, 85.0, 100.0)
        temp = np.clip(temp, 28.0, 38.0)
        self._hr[idx] = hr
        self._spo2[idx] = spo2
        self._temp[idx] = temp
        quality = np.clip(rng.beta(8.0, 1.5, n), 0.05, 1.0)
        motion = np.minimum(rng.exponential(self.activity_g[idx]), 4.0)
        return VitalsArrays(hr, spo2, temp, quality, motion)

    def payloads(self, idx: np.ndarray, ts: float) -> list[bytes]:
        """One vitals payload (JSON bytes) per device in `idx`, all stamped `ts`."""
        v = self.step(idx)
        fmt = VITALS_FORMAT
        return [
            fmt % (ts, hr, spo2, temp, quality, motion)
            for hr, spo2, temp, quality, motion in zip(
                v.hr_bpm.tolist(),
                v.spo2_pct.tolist(),
                v.skin_temp_c.tolist(),
                v.ppg_quality.tolist(),
                v.motion_g.tolist(),
                strict=True,
            )
        ]


# -- rate control ---------------------------------------------------------------------------------------------------
class RateSchedule:
    """Send slots at a constant total rate: slot k is due at `start + k / rate`, for `duration_s` seconds.

    `due(now)` hands out the slots that fell due since the last call; read the clock once per tick. A caller that
    fell more than `max_backlog_s` behind loses the oldest slots, counted in `skipped`, instead of bursting to
    catch up: the fleet holds its rate, or says by how much it did not.
    """

    def __init__(self, rate: float, start: float, duration_s: float, *, max_backlog_s: float = 1.0) -> None:
        if rate <= 0 or duration_s <= 0:
            raise ValueError("rate and duration must be positive")
        self.rate = rate
        self.start = start
        self.duration_s = duration_s
        self.total = max(1, math.ceil(rate * duration_s - 1e-9))
        self.next_slot = 0
        self.skipped = 0
        self._max_backlog = max(1, int(rate * max_backlog_s))

    @property
    def done(self) -> bool:
        """Whether every slot has been handed out (or skipped)."""
        return self.next_slot >= self.total

    def due(self, now: float) -> tuple[int, int]:
        """(first slot, count) of the slots due at `now` that were not handed out before."""
        if now < self.start:
            return self.next_slot, 0
        target = min(self.total, math.floor((now - self.start) * self.rate) + 1)
        behind = target - self.next_slot - self._max_backlog
        if behind > 0:
            self.skipped += behind
            self.next_slot += behind
        first = self.next_slot
        count = max(0, target - first)
        self.next_slot = first + count
        return first, count


# -- configuration and results --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What fleet to simulate, against which broker, how fast."""

    homes: int
    host: str = "127.0.0.1"
    port: int = 1883
    secret: str = DEFAULT_SECRET
    topic_root: str = DEFAULT_ROOT
    first_index: int = 1
    interval_s: float = 1.0
    rate: float | None = None  # total msg/s; default homes / interval_s
    duration_s: float = 60.0
    qos: int = 1
    connect_rate: float = 1000.0  # new connections per second
    connect_concurrency: int = 256  # connection attempts at once
    connect_timeout_s: float = 10.0
    max_connect_attempts: int = 5  # per device and outage
    ramp_timeout_s: float | None = None  # default 30 s + twice the time the ramp should take
    window: int = 10  # QoS 1 messages in flight per connection
    keepalive_s: int = 60
    tick_s: float = 0.01
    max_backlog_s: float = 1.0
    drain_timeout_s: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.homes < 1:
            problems.append("homes must be at least 1")
        if self.first_index < 0 or self.first_index + self.homes - 1 > MAX_DEVICE_INDEX:
            problems.append(f"device indices must lie in 0..{MAX_DEVICE_INDEX}")
        if self.interval_s <= 0 or (self.rate is not None and self.rate <= 0) or self.duration_s <= 0:
            problems.append("interval, rate and duration must be positive")
        if self.qos not in (0, 1):
            problems.append("qos must be 0 or 1")
        if self.connect_rate <= 0 or self.connect_concurrency < 1 or self.max_connect_attempts < 1:
            problems.append("connect rate, concurrency and attempts must be positive")
        if not 1 <= self.window <= 65_535:
            problems.append("window must be in 1..65535")
        if not 1 <= self.keepalive_s <= 65_535:
            problems.append("keepalive must be in 1..65535 s")
        if not 0 < self.tick_s <= 1:
            problems.append("tick must be in (0, 1] s")
        if problems:
            raise ValueError("; ".join(problems))
        check_id(self.topic_root, "topic root")

    @property
    def target_rate(self) -> float:
        """The total rate the fleet holds, msg/s."""
        return self.rate if self.rate is not None else self.homes / self.interval_s

    @property
    def ramp_timeout(self) -> float:
        """How long the ramp may take before sending starts with the devices connected by then."""
        if self.ramp_timeout_s is not None:
            return self.ramp_timeout_s
        return 30.0 + 2.0 * self.homes / self.connect_rate


@dataclass(frozen=True, slots=True)
class FleetProgress:
    """A snapshot of a running fleet (what the progress line shows)."""

    elapsed_s: float
    phase: str
    connected: int
    homes: int
    sent: int
    acked: int
    in_flight: int
    errors: int


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """What a fleet run did. At QoS 1: sent = acked + unacked, unacked = in_flight_at_end + lost_in_flight.

    scheduled = sent + skipped_disconnected + skipped_window_full + skipped_behind: every slot of the schedule is
    either a message sent or a counted reason why not.
    """

    homes: int
    qos: int
    target_rate_msg_s: float
    ramp_s: float
    send_s: float
    devices_connected: int
    devices_failed: int
    connect_attempts: int
    connect_failures: dict[str, int]
    scheduled: int
    sent: int
    acked: int
    rejected: dict[str, int]
    unacked: int
    in_flight_at_end: int
    lost_in_flight: int
    unknown_acks: int
    skipped_disconnected: int
    skipped_window_full: int
    skipped_behind: int
    lost_connections: int
    lost_reasons: dict[str, int]
    rate_achieved_msg_s: float
    acked_rate_msg_s: float
    ack_latency_p50_ms: float | None
    ack_latency_p99_ms: float | None
    availability_sent: int
    availability_acked: int

    @property
    def errors(self) -> int:
        """Everything that went wrong: connect failures, rejected or unacknowledged messages, lost connections."""
        return (
            sum(self.connect_failures.values())
            + sum(self.rejected.values())
            + self.unacked
            + self.unknown_acks
            + self.lost_connections
            + self.skipped_window_full
            + self.skipped_behind
            + self.skipped_disconnected
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {**asdict(self), "errors": self.errors}

    def lines(self) -> list[str]:
        """A human-readable summary."""
        out = [
            f"fleet: {self.homes} homes, target {self.target_rate_msg_s:.0f} msg/s at QoS {self.qos}",
            f"  connected      {self.devices_connected}/{self.homes} in {self.ramp_s:.1f} s "
            f"({self.connect_attempts} attempts, {self.devices_failed} devices failed)",
            f"  sent           {self.sent} of {self.scheduled} scheduled in {self.send_s:.1f} s: "
            f"{self.rate_achieved_msg_s:.0f} msg/s",
        ]
        if self.qos == 1:
            p50 = "-" if self.ack_latency_p50_ms is None else f"{self.ack_latency_p50_ms:g}"
            p99 = "-" if self.ack_latency_p99_ms is None else f"{self.ack_latency_p99_ms:g}"
            out += [
                f"  acknowledged   {self.acked} ({self.acked_rate_msg_s:.0f} msg/s), PUBACK latency "
                f"p50 <= {p50} ms, p99 <= {p99} ms",
                f"  unacknowledged {self.unacked} ({self.in_flight_at_end} in flight at the end, "
                f"{self.lost_in_flight} lost with a connection)",
            ]
        out.append(
            f"  not sent       {self.skipped_disconnected} device offline, {self.skipped_window_full} window "
            f"full, {self.skipped_behind} behind schedule"
        )
        if self.connect_failures:
            out.append(f"  connect failures {_counts(self.connect_failures)}")
        if self.rejected:
            out.append(f"  rejected by the broker {_counts(self.rejected)}")
        if self.lost_connections:
            out.append(f"  lost connections {self.lost_connections}: {_counts(self.lost_reasons)}")
        out.append(f"  errors         {self.errors}")
        return out


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# -- the fleet ------------------------------------------------------------------------------------------------------
class Fleet:
    """N bracelets, each on its own MQTT connection, driven by one event loop. Create and run inside the loop."""

    def __init__(self, config: FleetConfig, *, clock: Clock | None = None, progress: TextIO | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.progress_out = progress
        n = config.homes
        tree = TopicTree(config.topic_root)
        indices = range(config.first_index, config.first_index + n)
        self.device_ids = [device_id(i) for i in indices]
        self.home_ids = [home_id(i) for i in indices]
        self._vitals_topics = [
            encode_string(tree.device(TopicKind.DEVICE_VITALS, h, d))
            for h, d in zip(self.home_ids, self.device_ids, strict=True)
        ]
        self._availability_topics = [
            encode_string(tree.device(TopicKind.DEVICE_AVAILABILITY, h, d))
            for h, d in zip(self.home_ids, self.device_ids, strict=True)
        ]
        self._availability_names = [
            tree.device(TopicKind.DEVICE_AVAILABILITY, h, d)
            for h, d in zip(self.home_ids, self.device_ids, strict=True)
        ]
        self._offline_payload = encode(Availability(online=False))
        self.vitals = VitalsGenerator(n, seed=config.seed)
        self.counters = PublishCounters()
        self.availability_counters = PublishCounters()
        self._read_buffer = bytearray(65_536)
        self._rng = random.Random(config.seed)
        # Connection state per device (position 0..n-1).
        self.connections: list[PublisherConnection | None] = [None] * n
        self.connected = 0
        self._attempts = [0] * n
        self._failed: set[int] = set()
        self._queue: collections.deque[int] = collections.deque()
        self._queue_wake: asyncio.Event | None = None
        self._connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._ramp_done: asyncio.Event | None = None
        self._stop_requested = False
        self._stopping = False
        self._phase = "connecting"
        self._started_at = 0.0
        # Counts.
        self.connect_attempts = 0
        self.connect_failures: dict[str, int] = {}
        self.lost_connections = 0
        self.lost_reasons: dict[str, int] = {}
        self.skipped_disconnected = 0
        self.skipped_window_full = 0

    # -- control ------------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """End the send phase early (the fleet still drains, disconnects and returns its summary)."""
        self._stop_requested = True
        if self._ramp_done is not None:
            self._ramp_done.set()

    @property
    def phase(self) -> str:
        """connecting, sending, draining, disconnecting or done."""
        return self._phase

    def drop_connection(self, position: int) -> bool:
        """Drop device `position`'s TCP connection without DISCONNECT (the broker publishes its last will)."""
        conn = self.connections[position]
        if conn is None:
            return False
        conn.abort()
        return True

    def snapshot(self) -> FleetProgress:
        """Where the run is now."""
        c = self.counters
        in_flight = c.sent - c.acked - c.lost_in_flight if self.config.qos == 1 else 0
        errors = (
            sum(self.connect_failures.values())
            + sum(c.rejected.values())
            + self.lost_connections
            + self.skipped_window_full
            + self.skipped_disconnected
        )
        return FleetProgress(
            elapsed_s=time.monotonic() - self._started_at if self._started_at else 0.0,
            phase=self._phase,
            connected=self.connected,
            homes=self.config.homes,
            sent=c.sent,
            acked=c.acked,
            in_flight=in_flight,
            errors=errors,
        )

    # -- the run ------------------------------------------------------------------------------------------------------
    async def run(self) -> FleetSummary:
        """Ramp up, send for the configured duration, drain, disconnect; return what happened."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._queue_wake = asyncio.Event()
        self._ramp_done = asyncio.Event()
        self._started_at = time.monotonic()
        background: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as tg:
                background = [
                    tg.create_task(self._connector(), name="fleet-connector"),
                    tg.create_task(self._keepalive(), name="fleet-keepalive"),
                    tg.create_task(self._progress(), name="fleet-progress"),
                ]
                ramp_start = loop.time()
                self._queue.extend(range(cfg.homes))
                self._queue_wake.set()
                # After the ramp timeout, send with the devices connected by then; the rest keep trying.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ramp_done.wait(), cfg.ramp_timeout)
                ramp_s = loop.time() - ramp_start

                schedule = RateSchedule(cfg.target_rate, loop.time(), cfg.duration_s, max_backlog_s=cfg.max_backlog_s)
                send_s = 0.0
                if self.connected and not self._stop_requested:
                    self._phase = "sending"
                    await self._send(schedule)
                    send_s = loop.time() - schedule.start
                sent_during_send = self.counters.sent
                acked_during_send = self.counters.acked

                self._phase = "draining"
                deadline = loop.time() + cfg.drain_timeout_s
                # Polling a counter: an Event set on every PUBACK would cost more on the hot path.
                while self._in_flight() and loop.time() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                summary = self._summary(schedule, ramp_s, send_s, sent_during_send, acked_during_send)

                self._phase = "disconnecting"
                await self._disconnect_all()
                for task in background:
                    task.cancel()
        finally:
            for task in list(self._tasks):
                task.cancel()
            for conn in self.connections:
                if conn is not None:
                    conn.abort()
        self._phase = "done"
        return summary

    def _in_flight(self) -> int:
        if self.config.qos == 0:
            return 0
        c, a = self.counters, self.availability_counters
        return (c.sent - c.acked - c.lost_in_flight) + (a.sent - a.acked - a.lost_in_flight)

    async def _send(self, schedule: RateSchedule) -> None:
        loop = asyncio.get_running_loop()
        tick = self.config.tick_s
        k = 0
        while not schedule.done and not self._stop_requested:
            first, count = schedule.due(loop.time())
            if count:
                self._send_slots(first, count)
            k += 1
            delay = schedule.start + k * tick - loop.time()
            if delay < 0:  # late: skip the ticks we missed rather than run them back to back
                k = math.ceil((loop.time() - schedule.start) / tick)
                delay = 0.0
            await asyncio.sleep(delay)

    def _send_slots(self, first: int, count: int) -> None:
        n = self.config.homes
        idx = np.arange(first, first + count, dtype=np.int64) % n
        payloads = self.vitals.payloads(idx, self.clock.now())
        conns = self.connections
        topics = self._vitals_topics
        qos = self.config.qos
        disconnected = full = 0
        for i, payload in zip(idx.tolist(), payloads, strict=True):
            conn = conns[i]
            if conn is None:
                disconnected += 1
            elif not conn.publish(topics[i], payload, qos=qos):
                full += 1
        self.skipped_disconnected += disconnected
        self.skipped_window_full += full

    async def _disconnect_all(self) -> None:
        self._stopping = True
        closing = []
        for conn in self.connections:
            if conn is not None:
                conn.disconnect(publish_will=True)
                closing.append(conn.closed)
        if closing:
            await asyncio.wait(closing, timeout=10.0)

    def _summary(
        self, schedule: RateSchedule, ramp_s: float, send_s: float, sent_in_send: int, acked_in_send: int
    ) -> FleetSummary:
        c, a = self.counters, self.availability_counters
        qos1 = self.config.qos == 1
        in_flight = c.sent - c.acked - c.lost_in_flight if qos1 else 0
        return FleetSummary(
            homes=self.config.homes,
            qos=self.config.qos,
            target_rate_msg_s=self.config.target_rate,
            ramp_s=round(ramp_s, 3),
            send_s=round(send_s, 3),
            devices_connected=self.connected,
            devices_failed=len(self._failed),
            connect_attempts=self.connect_attempts,
            connect_failures=dict(self.connect_failures),
            scheduled=schedule.next_slot,
            sent=c.sent,
            acked=c.acked,
            rejected=dict(c.rejected),
            unacked=c.sent - c.acked if qos1 else 0,
            in_flight_at_end=in_flight,
            lost_in_flight=c.lost_in_flight,
            unknown_acks=c.unknown_acks + a.unknown_acks,
            skipped_disconnected=self.skipped_disconnected,
            skipped_window_full=self.skipped_window_full,
            skipped_behind=schedule.skipped,
            lost_connections=self.lost_connections,
            lost_reasons=dict(self.lost_reasons),
            rate_achieved_msg_s=round(sent_in_send / send_s, 1) if send_s else 0.0,
            acked_rate_msg_s=round(acked_in_send / send_s, 1) if send_s and qos1 else 0.0,
            ack_latency_p50_ms=c.latency_quantile_ms(0.5),
            ack_latency_p99_ms=c.latency_quantile_ms(0.99),
            availability_sent=a.sent,
            availability_acked=a.acked,
        )

    # -- connecting ---------------------------------------------------------------------------------------------------
    async def _connector(self) -> None:
        """Start connection attempts from the queue at `connect_rate`, at most `connect_concurrency` at once."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        wake = self._queue_wake
        assert wake is not None
        burst = max(1.0, cfg.connect_rate * 0.05)
        credit = 1.0
        last = loop.time()
        while True:
            if not self._queue:
                wake.clear()
                await wake.wait()
                last = loop.time()
                credit = 1.0
            now = loop.time()
            credit = min(burst, credit + (now - last) * cfg.connect_rate)
            last = now
            n = min(int(credit), len(self._queue), cfg.connect_concurrency - self._connecting)
            for _ in range(max(0, n)):
                position = self._queue.popleft()
                self._connecting += 1
                task = asyncio.create_task(self._attempt(position), name=f"fleet-connect-{position}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            credit -= max(0, n)
            await asyncio.sleep(0.01)

    async def _attempt(self, position: int) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        device = self.device_ids[position]
        self.connect_attempts += 1
        conn = PublisherConnection(
            connect_packet(
                client_id=device,
                username=device,
                password=device_password(cfg.secret, device),
                keepalive_s=cfg.keepalive_s,
                will_topic=self._availability_names[position],
                will_payload=self._offline_payload,
                will_qos=1,
                will_retain=True,
            ),
            counters=self.counters,
            control_counters=self.availability_counters,
            window=cfg.window,
            keepalive_s=cfg.keepalive_s,
            read_buffer=self._read_buffer,
            on_lost=self._lost,
            tag=position,
        )
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                await loop.create_connection(lambda: conn, cfg.host, cfg.port)
                await conn.connack
        except ConnectRefused as exc:
            self._connect_failed(position, exc.reason, retry=exc.retryable)
        except ConnectionClosed as exc:
            self._connect_failed(position, f"closed_before_connack_{exc.reason}", retry=True)
        except TimeoutError:
            conn.connack.cancel()  # nobody waits for it any more
            conn.abort()
            self._connect_failed(position, "connack_timeout", retry=True)
        except OSError as exc:
            self._connect_failed(position, describe_error(exc), retry=True)
        else:
            self._connected(position, conn)
        finally:
            self._connecting -= 1

    def _connected(self, position: int, conn: PublisherConnection) -> None:
        if self._stopping:
            conn.disconnect(publish_will=True)
            return
        self._attempts[position] = 0
        self.connections[position] = conn
        self.connected += 1
        online = encode(Availability(online=True, since=self.clock.now()))
        conn.publish_control(self._availability_topics[position], online, retain=True)
        self._check_ramp()

    def _connect_failed(self, position: int, reason: str, *, retry: bool) -> None:
        self.connect_failures[reason] = self.connect_failures.get(reason, 0) + 1
        self._attempts[position] += 1
        attempts = self._attempts[position]
        if retry and attempts < self.config.max_connect_attempts and not self._stopping:
            self._retry_later(position, attempts)
        else:
            self._failed.add(position)
            self._check_ramp()

    def _retry_later(self, position: int, attempts: int) -> None:
        delay = min(10.0, 0.25 * 2 ** (attempts - 1)) * (0.5 + self._rng.random())
        asyncio.get_running_loop().call_later(delay, self._requeue, position)

    def _requeue(self, position: int) -> None:
        if self._stopping:
            return
        self._queue.append(position)
        if self._queue_wake is not None:
            self._queue_wake.set()

    def _lost(self, conn: PublisherConnection, reason: str) -> None:
        position = conn.tag
        if self.connections[position] is conn:
            self.connections[position] = None
            self.connected -= 1
        self.lost_connections += 1
        self.lost_reasons[reason] = self.lost_reasons.get(reason, 0) + 1
        if not self._stopping:
            self._retry_later(position, 1)

    def _check_ramp(self) -> None:
        if self._ramp_done is not None and self.connected + len(self._failed) >= self.config.homes:
            self._ramp_done.set()

    # -- housekeeping ---------------------------------------------------------------------------------------------
    async def _keepalive(self) -> None:
        """Once a second: PINGREQ on connections idle for half their keepalive; drop those whose PINGRESP is late."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in self.connections:
                if conn is None:
                    continue
                if conn.ping_sent_at is not None and now - conn.ping_sent_at > conn.keepalive_s:
                    conn.disconnect_reason = "ping_timeout"
                    conn.abort()
                elif now - conn.last_write >= conn.keepalive_s / 2:
                    conn.ping(now)

    async def _progress(self) -> None:
        """A progress line on `progress` once a second."""
        out = self.progress_out
        if out is None:
            return
        last_sent = self.counters.sent
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            p = self.snapshot()
            now = time.monotonic()
            rate = (p.sent - last_sent) / (now - last_t) if now > last_t else 0.0
            last_sent, last_t = p.sent, now
            out.write(
                f"[fleet {p.elapsed_s:6.1f}s {p.phase:<11}] connected {p.connected}/{p.homes}  sent {p.sent}  "
                f"acked {p.acked}  in flight {p.in_flight}  {rate:.0f} msg/s  errors {p.errors}\n"
            )
            out.flush()


def run_fleet(config: FleetConfig, *, clock: Clock | None = None, progress: TextIO | None = sys.stderr) -> FleetSummary:
    """Run a fleet to completion in a new event loop (Ctrl-C or SIGTERM ends the send phase early)."""

    async def main() -> FleetSummary:
        fleet = Fleet(config, clock=clock, progress=progress)
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread: no handlers
                loop.add_signal_handler(sig, fleet.stop)
                handled.append(sig)
        try:
            return await fleet.run()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
