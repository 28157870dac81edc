"""The city-scale fleet against a real Mosquitto with per-device passwords and the fleet ACL (small fleets)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from click.testing import CliRunner

from careloop.clock import ManualClock
from careloop.codec import encode
from careloop.contract import SPECS, decode_message
from careloop.messages import Availability, VitalsReading
from careloop.mqtt5 import encode_string
from careloop.testing.mosquitto import Mosquitto
from careloop.testing.service_fixtures import _launch
from careloop.topics import TopicKind, TopicTree
from simulators.fleet import (
    VITALS_FORMAT,
    Fleet,
    FleetConfig,
    FleetSummary,
    RateSchedule,
    VitalsGenerator,
    device_id,
    device_password,
    fleet_acl,
    fleet_users,
    home_id,
    write_fleet_credentials,
)
from simulators.fleet_cli import fleet, fleet_credentials
from simulators.fleet_mqtt import PublishCounters, PublisherConnection, connect_packet

WAIT_S = 10.0  # for a network event that should take milliseconds
SECRET = "test-fleet-secret"
ROOT = "fleettest"
DEVICES = 200  # the broker knows devices 1..200
READER, READER_PASSWORD = "monitor", "monitor-pw"
NOW = 1_790_000_000.0


# -- identities, credentials ----------------------------------------------------------------------------------------
def test_identities_are_deterministic_from_the_index() -> None:
    assert (device_id(42), home_id(42)) == ("BR-000042", "H000042")
    assert device_password(SECRET, "BR-000042") == device_password(SECRET, "BR-000042")
    assert device_password(SECRET, "BR-000042") != device_password(SECRET, "BR-000043")
    assert device_password(SECRET, "BR-000042") != device_password("other", "BR-000042")
    assert list(fleet_users(3, SECRET, first_index=7)) == ["BR-000007", "BR-000008", "BR-000009"]
    with pytest.raises(ValueError, match="outside"):
        device_id(1_000_000)


def test_acl_binds_each_device_to_its_own_topics() -> None:
    acl = fleet_acl("careloop", readers=["ingest"])
    assert "pattern write careloop/v1/home/+/device/%u/#" in acl.splitlines()
    assert "user ingest\ntopic read careloop/v1/#" in acl


def test_credentials_files_verify_as_mosquitto_does(tmp_path: Path) -> None:
    files = write_fleet_credentials(tmp_path, 5, SECRET, topic_root=ROOT, readers={READER: READER_PASSWORD})
    assert files.users == 6
    lines = dict(line.split(":", 1) for line in files.password_file.read_text().splitlines())
    assert list(lines) == [*(device_id(i) for i in range(1, 6)), READER]
    for user, password in [(device_id(3), device_password(SECRET, device_id(3))), (READER, READER_PASSWORD)]:
        _, kind, iterations, salt, digest = lines[user].split("$")
        assert kind == "7"  # PBKDF2-SHA512, as mosquitto_passwd writes
        expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
        assert base64.b64decode(digest) == expected
    assert files.acl_file.read_text() == fleet_acl(ROOT, [READER])
    assert files.password_file.stat().st_mode & 0o777 == 0o600


# -- vitals ---------------------------------------------------------------------------------------------------------
def test_every_generated_reading_satisfies_the_contract() -> None:
    generator = VitalsGenerator(500, seed=3)
    tree = TopicTree(ROOT)
    topic = tree.device(TopicKind.DEVICE_VITALS, home_id(1), device_id(1))
    idx = np.arange(500)
    readings = []
    for tick in range(40):
        for payload in generator.payloads(idx, NOW + tick):
            _, message = decode_message(tree, topic, payload, now=NOW + tick)
            assert isinstance(message, VitalsReading)
            readings.append(message)
    assert {r.ts for r in readings} == {NOW + t for t in range(40)}
    hr = np.array([r.hr_bpm for r in readings])
    assert 60 < hr.mean() < 85  # plausible adults at rest


def test_each_device_keeps_its_own_baseline() -> None:
    generator = VitalsGenerator(50, seed=1)
    idx = np.arange(50)
    mean_hr = np.mean([generator.step(idx).hr_bpm for _ in range(300)], axis=0)
    assert np.abs(mean_hr - generator.hr_base).max() < 3.0
    assert np.ptp(generator.hr_base) > 10.0  # and the baselines differ between devices


def test_formatted_payload_equals_the_codec_encoding_of_the_same_values() -> None:
    reading = VitalsReading(
        ts=NOW + 0.125, hr_bpm=71.5, spo2_pct=97.5, skin_temp_c=33.25, ppg_quality=0.75, motion_g=0.125
    )
    formatted = VITALS_FORMAT % (NOW + 0.125, 71.5, 97.5, 33.25, 0.75, 0.125)
    assert json.loads(formatted) == json.loads(encode(reading))
    assert list(json.loads(formatted)) == list(json.loads(encode(reading)))


# -- rate control (pure, with a manual clock) -----------------------------------------------------------------------
@pytest.mark.parametrize("rate", [7.0, 1234.0, 10_000.0])
def test_schedule_hands_out_rate_times_tick_slots_per_tick(rate: float) -> None:
    start, tick = 1000.0, 0.01
    clock = ManualClock(start)
    schedule = RateSchedule(rate, start, duration_s=3.0)
    per_tick = []
    handed = 0
    while not schedule.done:
        first, count = schedule.due(clock.now())
        assert first == handed  # no slot twice, none left out
        handed += count
        per_tick.append(count)
        # So far: the rate times the elapsed time, plus the slot at the start, give or take float rounding.
        assert abs(handed - (rate * (clock.now() - start) + 1)) <= 1.0
        clock.set(start + len(per_tick) * tick)
    assert handed == schedule.total == math.ceil(rate * 3.0)
    assert schedule.skipped == 0
    # Every tick but the first carries rate x tick slots, rounded down or up (one more either way at a float edge).
    assert all(math.floor(rate * tick) - 1 <= n <= math.ceil(rate * tick) + 1 for n in per_tick[1:])
    assert sum(per_tick[1:]) / len(per_tick[1:]) == pytest.approx(rate * tick, rel=0.01)


def test_schedule_with_irregular_ticks_still_totals_rate_times_duration() -> None:
    clock = ManualClock(0.0)
    schedule = RateSchedule(500.0, 0.0, duration_s=10.0)
    rng = random.Random(4)
    handed = 0
    while not schedule.done:
        now = clock.now()
        handed += schedule.due(now)[1]
        # At every tick, the slots handed out so far are the rate times the elapsed time (plus the one at t = 0).
        assert handed == min(5000, math.floor(500.0 * now) + 1)
        clock.advance(rng.uniform(0.0, 0.05))
    assert handed == 5000


def test_schedule_skips_what_it_fell_behind_by_and_says_so() -> None:
    clock = ManualClock(0.0)
    schedule = RateSchedule(100.0, 0.0, duration_s=10.0, max_backlog_s=0.5)
    assert schedule.due(clock.now()) == (0, 1)
    clock.advance(3.0)  # the caller stalled for 3 s
    first, count = schedule.due(clock.now())
    assert count == 50  # half a second of backlog, no more
    assert schedule.skipped == 301 - 1 - 50
    assert first == 1 + schedule.skipped
    clock.advance(7.0)
    schedule.due(clock.now())
    assert schedule.done
    assert schedule.next_slot == schedule.total == 1000  # handed out + skipped = every slot


# -- the fleet against Mosquitto ------------------------------------------------------------------------------------
@pytest.fixture
def fleet_broker() -> Iterator[Mosquitto]:
    """A broker that knows devices 1..200 of the test fleet (and one reader), with the fleet ACL."""
    users = {**fleet_users(DEVICES, SECRET), READER: READER_PASSWORD}
    yield from _launch(lambda: Mosquitto(users=users, acl=fleet_acl(ROOT, [READER]), allow_anonymous=False))


@dataclass
class Recorder:
    """Every message the monitor received, in order."""

    messages: list[aiomqtt.Message] = field(default_factory=list)

    def on(self, kind: TopicKind) -> list[aiomqtt.Message]:
        """The messages on topics of `kind`."""
        tree = TopicTree(ROOT)
        return [m for m in self.messages if tree.parse(str(m.topic)).kind is kind]


@asynccontextmanager
async def monitor(broker: Mosquitto) -> AsyncIterator[Recorder]:
    """Subscribes to every device topic of the fleet as the reader and records what arrives."""
    recorder = Recorder()
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"m-{uuid.uuid4().hex[:8]}",
        username=READER,
        password=READER_PASSWORD,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(TopicTree(ROOT).home_devices_filter(), qos=1)

        async def record() -> None:
            async for message in client.messages:
                recorder.messages.append(message)

        task = asyncio.create_task(record())
        try:
            yield recorder
        finally:
            task.cancel()


async def eventually(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Until `condition()` holds (polled), or a timeout."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the fleet exposes counters, not events
            await asyncio.sleep(0.01)


def config(broker: Mosquitto, **overrides: object) -> FleetConfig:
    """A small, quick fleet for `broker`."""
    values: dict[str, object] = {
        "homes": 50,
        "host": broker.host,
        "port": broker.port,
        "secret": SECRET,
        "topic_root": ROOT,
        "duration_s": 2.0,
        "connect_rate": 2000.0,
        "drain_timeout_s": 5.0,
        **overrides,
    }
    return FleetConfig(**values)  # type: ignore[arg-type]


def assert_adds_up(summary: FleetSummary) -> None:
    """The summary's own identities."""
    assert summary.sent == summary.acked + summary.unacked
    assert summary.unacked == summary.in_flight_at_end + summary.lost_in_flight
    assert summary.scheduled == (
        summary.sent + summary.skipped_disconnected + summary.skipped_window_full + summary.skipped_behind
    )


async def test_fleet_publishes_valid_vitals_at_the_configured_rate(fleet_broker: Mosquitto) -> None:
    homes, rate, duration = 100, 200.0, 2.0
    progress = io.StringIO()
    async with monitor(fleet_broker) as seen:
        fleet_run = Fleet(config(fleet_broker, homes=homes, rate=rate, duration_s=duration), progress=progress)
        summary = await fleet_run.run()
        await eventually(lambda: len(seen.on(TopicKind.DEVICE_VITALS)) >= summary.acked)
        await eventually(lambda: len(seen.on(TopicKind.DEVICE_AVAILABILITY)) >= 2 * homes)

    assert_adds_up(summary)
    # Rate control, from counts: every slot of rate x duration was sent, and each device had its equal share.
    assert summary.scheduled == summary.sent == summary.acked == int(rate * duration)
    assert (summary.unacked, summary.errors, summary.devices_connected) == (0, 0, homes)
    vitals = seen.on(TopicKind.DEVICE_VITALS)
    assert len(vitals) == summary.sent
    per_device = Counter(str(m.topic).split("/")[-2] for m in vitals)
    assert set(per_device.values()) == {int(rate * duration / homes)}
    assert set(per_device) == {device_id(i) for i in range(1, homes + 1)}

    tree = TopicTree(ROOT)
    now = time.time()
    for message in seen.messages:
        assert isinstance(message.payload, bytes)
        topic, decoded = decode_message(tree, str(message.topic), message.payload, now=now)
        assert message.qos == SPECS[topic.kind].qos == 1
        if topic.kind is TopicKind.DEVICE_VITALS:
            assert topic.home_id is not None
            assert topic.device_id is not None
            assert topic.home_id[1:] == topic.device_id[3:]  # BR-000042 lives in H000042
            assert isinstance(decoded, VitalsReading)
            assert now - 60 < decoded.ts <= now
    # Each device said it was online, then (disconnecting with its will) that it was offline.
    states: dict[str, list[bool]] = {}
    for message in seen.on(TopicKind.DEVICE_AVAILABILITY):
        assert isinstance(message.payload, bytes)
        states.setdefault(str(message.topic), []).append(Availability.model_validate_json(message.payload).online)
    assert len(states) == homes
    assert all(history == [True, False] for history in states.values())
    assert summary.availability_sent == summary.availability_acked == homes
    assert "connected 100/100" in progress.getvalue()


async def test_wrong_secret_is_reported_as_connect_failures_with_their_reason(fleet_broker: Mosquitto) -> None:
    summary = await Fleet(config(fleet_broker, homes=20, secret="not-the-secret")).run()
    assert summary.devices_connected == 0
    assert summary.devices_failed == 20
    # Mosquitto 2.0 refuses a wrong password with "not authorized"; no retry can fix that.
    assert summary.connect_failures in ({"not_authorized": 20}, {"bad_username_or_password": 20})
    assert (summary.sent, summary.send_s) == (0, 0.0)
    assert summary.errors == 20


async def test_one_device_with_a_bad_password_fails_and_the_others_send() -> None:
    users = {**fleet_users(10, SECRET), READER: READER_PASSWORD}
    users[device_id(4)] = "a-password-the-device-does-not-have"
    with Mosquitto(users=users, acl=fleet_acl(ROOT, [READER]), allow_anonymous=False) as broker:
        summary = await Fleet(config(broker, homes=10, rate=20.0, duration_s=1.0)).run()
    assert_adds_up(summary)
    assert summary.devices_connected == 9
    assert summary.devices_failed == 1
    assert sum(summary.connect_failures.values()) == 1
    assert summary.skipped_disconnected == 2  # device 4's two slots, counted and not sent
    assert summary.sent == summary.acked == 18


async def test_unknown_devices_and_an_unreachable_broker_are_counted_not_hung() -> None:
    with Mosquitto(users={READER: READER_PASSWORD}, allow_anonymous=False) as broker:
        port = broker.port
        summary = await Fleet(config(broker, homes=5, max_connect_attempts=1)).run()
    assert summary.devices_failed == 5
    closed = await Fleet(
        FleetConfig(homes=3, port=port, max_connect_attempts=2, duration_s=1.0, connect_rate=1000.0)
    ).run()
    assert closed.connect_failures == {"econnrefused": 6}  # two attempts each, with backoff between
    assert closed.devices_failed == 3


async def test_acl_stops_a_device_publishing_as_another(fleet_broker: Mosquitto) -> None:
    tree = TopicTree(ROOT)
    me, other = device_id(1), device_id(2)
    counters = PublishCounters()
    async with monitor(fleet_broker) as seen:
        for forge in (True, False):
            conn = PublisherConnection(
                connect_packet(client_id=me, username=me, password=device_password(SECRET, me), keepalive_s=30),
                counters=counters,
            )
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: conn, fleet_broker.host, fleet_broker.port)  # noqa: B023
            await asyncio.wait_for(conn.connack, WAIT_S)
            target = other if forge else me
            topic = tree.device(TopicKind.DEVICE_VITALS, home_id(2 if forge else 1), target)
            conn.publish(encode_string(topic), encode(VitalsReading.example()))
            await eventually(lambda: counters.acked == (1 if forge else 2))  # noqa: B023 - awaited here
            conn.disconnect()
        await eventually(lambda: len(seen.messages) >= 1)
    assert counters.rejected == {"not_authorized": 1}
    assert [str(m.topic) for m in seen.messages] == [tree.device(TopicKind.DEVICE_VITALS, home_id(1), me)]


async def test_dropped_connection_fires_the_last_will_and_the_device_comes_back(fleet_broker: Mosquitto) -> None:
    tree = TopicTree(ROOT)
    victim = 4
    availability = tree.device(TopicKind.DEVICE_AVAILABILITY, home_id(victim + 1), device_id(victim + 1))
    async with monitor(fleet_broker) as seen:
        fleet_run = Fleet(config(fleet_broker, homes=10, duration_s=60.0))
        task = asyncio.create_task(fleet_run.run())

        def history() -> list[bool]:
            return [
                Availability.model_validate_json(m.payload).online
                for m in seen.messages
                if str(m.topic) == availability
            ]

        await eventually(lambda: fleet_run.phase == "sending" and history() == [True])
        assert fleet_run.drop_connection(victim)
        await eventually(lambda: history() == [True, False])  # the broker published the will
        await eventually(lambda: history() == [True, False, True])  # reconnected, online again
        fleet_run.stop()
        summary = await asyncio.wait_for(task, WAIT_S)
    assert_adds_up(summary)
    assert summary.lost_connections == 1
    assert summary.lost_reasons == {"aborted": 1}
    assert summary.devices_connected == 10
    assert summary.connect_attempts == 11


async def test_qos_0_fleet_counts_sent_without_acknowledgements(fleet_broker: Mosquitto) -> None:
    summary = await Fleet(config(fleet_broker, homes=20, rate=40.0, duration_s=1.0, qos=0)).run()
    assert (summary.sent, summary.acked, summary.unacked) == (40, 0, 0)
    assert summary.errors == 0


async def test_a_quiet_device_keeps_its_connection_with_pings(fleet_broker: Mosquitto) -> None:
    # Two messages 10 s apart, keepalive 2 s: Mosquitto drops a client silent for 3 s (it looks every few
    # seconds; without pings this one is gone after about 6 s) unless it pings.
    summary = await Fleet(config(fleet_broker, homes=1, rate=0.1, duration_s=10.5, keepalive_s=2)).run()
    assert (summary.sent, summary.acked) == (2, 2)
    assert summary.lost_connections == 0


async def test_timestamps_come_from_the_injected_clock(fleet_broker: Mosquitto) -> None:
    clock = ManualClock(NOW)
    async with monitor(fleet_broker) as seen:
        summary = await Fleet(config(fleet_broker, homes=5, rate=10.0, duration_s=1.0), clock=clock).run()
        await eventually(lambda: len(seen.on(TopicKind.DEVICE_VITALS)) >= summary.acked)
    stamps = {VitalsReading.model_validate_json(m.payload).ts for m in seen.on(TopicKind.DEVICE_VITALS)}
    assert stamps == {NOW}


# -- the commands -----------------------------------------------------------------------------------------------
def test_fleet_credentials_command_writes_the_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        fleet_credentials,
        ["--homes", "3", "--secret", SECRET, "--out", str(tmp_path), "--reader", f"{READER}:{READER_PASSWORD}"],
    )
    assert result.exit_code == 0, result.output
    assert "password_file" in result.output
    assert len((tmp_path / "passwords").read_text().splitlines()) == 4
    assert "pattern write careloop/v1/home/+/device/%u/#" in (tmp_path / "acl").read_text()
    bad = CliRunner().invoke(fleet_credentials, ["--homes", "3", "--out", str(tmp_path), "--reader", "nopassword"])
    assert bad.exit_code == 2


def test_fleet_command_prints_the_summary_and_fails_on_errors(fleet_broker: Mosquitto) -> None:
    args = ["--homes", "10", "--rate", "20", "--duration", "1", "--broker", fleet_broker.url, "--topic-root", ROOT]
    result = CliRunner().invoke(fleet, [*args, "--secret", SECRET, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["sent"], summary["acked"], summary["errors"]) == (20, 20, 0)

    wrong = CliRunner().invoke(fleet, [*args, "--secret", "wrong", "--quiet"])
    assert wrong.exit_code == 1
    assert "connect failures" in wrong.output

    tls = CliRunner().invoke(fleet, ["--broker", "mqtts://127.0.0.1:8883"])
    assert tls.exit_code == 2
    assert "mqtt://" in tls.output
