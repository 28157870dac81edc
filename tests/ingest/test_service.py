"""The ingest service in this process, against a real Mosquitto and influxd: what gets stored, what gets rejected,
when a message is acknowledged, and what happens when InfluxDB goes away for 30 s."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from careloop import messages as m
from careloop.codec import encode
from careloop.contract import SPECS
from careloop.influx import InfluxClient
from careloop.mqtt5 import MqttClient, Received, SessionOptions
from careloop.registry.importer import import_csv
from careloop.registry.store import Registry, open_registry
from careloop.settings import CareloopSettings, InfluxSettings, MqttSettings
from careloop.testing.influxd import Influxd
from careloop.testing.mosquitto import Mosquitto
from careloop.testing.mqtt_publisher import publish_all
from careloop.testing.registry_csv import generate_registry_csv
from careloop.testing.service_fixtures import InfluxTestDatabase
from careloop.topics import TopicKind, TopicTree
from ingest.directory import ResidentDirectory
from ingest.models import IngestConfig
from ingest.points import STORED_KINDS
from ingest.service import IngestService
from ingest.spool import Spool

NOW = time.time()
Readings = Callable[..., list[tuple[str, bytes]]]
Count = Callable[..., int]
Wait = Callable[..., Awaitable[None]]


async def publish(broker: Mosquitto, messages: Any, **options: Any) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    await publish_all(broker.host, broker.port, messages, **options)


class Gate(httpx.AsyncBaseTransport):
    """An HTTP transport to the real InfluxDB that holds every request while closed."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.open.wait()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def running(
    broker: Mosquitto,
    influx: InfluxSettings,
    root: str,
    spool_dir: Path,
    *,
    client_id: str | None = None,
    directory: ResidentDirectory | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    drain: bool = True,
    **config: Any,
) -> AsyncIterator[IngestService]:
    """An IngestService running as a task; stopped gracefully (or, with drain=False, cancelled) at the end."""
    settings = CareloopSettings(mqtt=MqttSettings(url=broker.url, topic_root=root), influx=influx, site_id="test")
    options = IngestConfig(
        **{
            "client_id": client_id or f"{root}-ingest",
            "spool_dir": spool_dir,
            "batch_delay_s": 0.05,
            "replay_interval_s": 0.2,
            "metrics_port": 0,
            **config,
        }
    )
    async with (
        InfluxClient.from_settings(
            influx, max_retries=options.direct_retries, batch_size=options.batch_points, transport=transport
        ) as direct,
        InfluxClient.from_settings(
            influx, max_retries=0, batch_size=options.batch_points, transport=transport
        ) as replay,
        Spool(options.spool_path) as spool,
    ):
        service = IngestService(
            settings, options, influx=direct, replay_influx=replay, spool=spool, directory=directory
        )
        task = asyncio.create_task(service.run())
        async with asyncio.timeout(10):
            await service.wait_subscribed()
        try:
            yield service
        finally:
            if drain:
                service.stop()
                async with asyncio.timeout(30):
                    await task
            else:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task


class DeadLetters:
    """Collects what ingest publishes on its dead-letter topic."""

    def __init__(self) -> None:
        self.letters: list[m.DeadLetter] = []
        self.client: MqttClient | None = None

    def __call__(self, received: list[Received]) -> None:
        self.letters += [m.DeadLetter.model_validate_json(payload) for _, payload, _ in received]
        assert self.client is not None
        self.client.ack([pid for _, _, pid in received])


@asynccontextmanager
async def dead_letters(broker: Mosquitto, root: str) -> AsyncIterator[DeadLetters]:
    inbox = DeadLetters()
    client = MqttClient(SessionOptions(f"{root}-dl", clean_start=True), inbox)
    inbox.client = client
    await client.open(broker.host, broker.port)
    await client.subscribe([TopicTree(root).dead_letter("ingest")])
    try:
        yield inbox
    finally:
        await client.disconnect()


def rows(influxd: Influxd, database: str, measurement: str) -> list[dict[str, Any]]:
    """Every point of a measurement as a column -> value dict."""
    result = influxd.query(f'SELECT * FROM "{measurement}"', db=database)
    series = result["results"][0].get("series", [])
    return [dict(zip(s["columns"], values, strict=True)) for s in series for values in s["values"]]


def example_messages(root: str) -> list[tuple[str, bytes]]:
    """One valid message of every kind ingest stores, on device BR-0001 / home H0001."""
    tree = TopicTree(root)
    out = []
    for kind in STORED_KINDS:
        model = SPECS[kind].model
        data = dict(model.EXAMPLE)
        for key in ("ts", "t0", "since"):
            if key in data:
                data[key] = NOW - 60
        if model is m.Availability:
            data["since"] = NOW - 60
        for item_key in ("readings", "events", "devices"):
            if isinstance(data.get(item_key), list):
                data[item_key] = [
                    {**item, **{k: NOW - 60 for k in ("ts", "impact_ts", "last_seen_ts") if k in item}}
                    for item in data[item_key]
                ]
        topic = tree.device(kind, "H0001", "BR-0001") if kind.is_device_topic else tree.edge(kind, "H0001")
        out.append((topic, json.dumps(data).encode()))
    return out


async def test_every_stored_kind_lands_in_its_measurement(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    influxd: Influxd,
    wait_until: Wait,
) -> None:
    tree = TopicTree(topic_root)
    no_since = (tree.device(TopicKind.DEVICE_AVAILABILITY, "H0001", "BR-0002"), b'{"online":false}')
    async with running(mosquitto, influx_db.settings(), topic_root, tmp_path) as service:
        await publish(mosquitto, [*example_messages(topic_root), no_since])
        await wait_until(lambda: service.current_stats().unacked_messages == 0 and service.stats.received == 15)
    counts = {
        name: len(rows(influxd, influx_db.name, name))
        for name in ("vitals", "activity", "events", "device_health", "location")
    }
    # Battery, wear and availability of one device at one millisecond are one point with all their fields, as are
    # the edge's heartbeat and availability: same series, same time, distinct fields (InfluxDB merges them).
    assert counts == {"vitals": 2, "activity": 2, "events": 3, "device_health": 3, "location": 1}
    health = {(row["source"], row["device"]): row for row in rows(influxd, influx_db.name, "device_health")}
    device = health[("device", "BR-0001")]
    assert (device["battery_pct"], device["charging"], device["worn"], device["online"]) == (64, False, True, False)
    assert health[("edge", None)]["outbox_depth"] == 0
    assert service.stats.skipped == {"no_timestamp": 1}
    assert service.stats.rejected == {}
    result = influxd.query('SHOW TAG VALUES FROM "vitals" WITH KEY IN ("source", "site", "home")', db=influx_db.name)
    values = {tuple(v) for v in result["results"][0]["series"][0]["values"]}
    assert values == {("home", "H0001"), ("site", "test"), ("source", "device"), ("source", "edge")}


async def test_a_message_sent_twice_is_one_point(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    influxd: Influxd,
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    batch = make_readings(topic_root, 300)
    async with running(mosquitto, influx_db.settings(), topic_root, tmp_path) as service:
        await publish(mosquitto, batch)
        await publish(mosquitto, batch[:100])
        await wait_until(lambda: service.stats.written == 400)
    assert count_points(influxd, influx_db.name) == 300


MALFORMED: list[tuple[str, bytes]] = [
    ("bad_json", b'{"v":1,"ts":'),
    ("out_of_range", b'{"ts":%.3f,"hr_bpm":400,"ppg_quality":1}' % (NOW - 60)),
    ("unknown_field", b'{"ts":%.3f,"hr_bpm":70,"ppg_quality":1,"pulse":3}' % (NOW - 60)),
    ("missing_field", b'{"ts":%.3f,"hr_bpm":70}' % (NOW - 60)),
    ("wrong_type", b'{"ts":%.3f,"hr_bpm":"70","ppg_quality":1}' % (NOW - 60)),
    ("timestamp_in_future", b'{"ts":%.3f,"hr_bpm":70,"ppg_quality":1}' % (NOW + 86_400)),
    ("clock_not_set", b'{"ts":1000.0,"hr_bpm":70,"ppg_quality":1}'),
    ("empty", b""),
    ("not_utf8", b'{"ts":\xff}'),
    ("too_large", b"x" * 5000),
]


async def test_malformed_messages_are_counted_dead_lettered_and_never_stored(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    influxd: Influxd,
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    """1,000 malformed messages among 20,000 valid ones; then 20,000 more valid ones still all go in."""
    tree = TopicTree(topic_root)
    valid = make_readings(topic_root, 40_000, devices=200)
    bad = [
        (tree.device(TopicKind.DEVICE_VITALS, "H0001", f"BR-{k % 50:04d}"), payload)
        for k in range(1000)
        for payload in [MALFORMED[k % len(MALFORMED)][1]]
    ]
    # A device id the topic tree does not allow (a dot) still matches the subscription's `+`.
    bad.append((f"{topic_root}/v1/home/H0001/device/BR.0001/vitals", b"{}"))
    mixed = [item for pair in zip(valid[:20_000:20], bad[:1000], strict=True) for item in pair]
    mixed += [v for k, v in enumerate(valid[:20_000]) if k % 20] + bad[1000:]
    async with (
        dead_letters(mosquitto, topic_root) as letters,
        running(mosquitto, influx_db.settings(), topic_root, tmp_path) as service,
    ):
        await publish(mosquitto, mixed)
        await wait_until(lambda: service.stats.written == 20_000 and len(letters.letters) == 1001, what="first half")
        await publish(mosquitto, valid[20_000:])
        await wait_until(lambda: service.stats.written == 40_000, what="second half")
        assert service.current_stats().mqtt_connected
    expected = {reason: 100 for reason, _ in MALFORMED}
    expected["unknown_topic"] = 1
    assert service.stats.rejected == expected
    assert count_points(influxd, influx_db.name) == 40_000
    assert sorted(letter.reason for letter in letters.letters) == sorted(
        reason for reason, count in expected.items() for _ in range(count)
    )
    by_reason = {letter.reason: letter for letter in letters.letters}
    assert base64.b64decode(by_reason["bad_json"].payload_b64) == b'{"v":1,"ts":'
    assert by_reason["too_large"].payload_size == 5000
    assert tree.parse(by_reason["out_of_range"].topic).kind is TopicKind.DEVICE_VITALS
    assert service.stats.dead_letters == {"published": 1001}


async def test_malformed_messages_interleaved_keep_the_rate_of_the_valid_ones(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    influxd: Influxd,
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    """20,000 valid readings drain from the broker at least half as fast with 1,000 malformed ones among them.

    Each round publishes a backlog while ingest is stopped (its session keeps it), starts ingest and times it until
    every valid point is written and every message acknowledged: the service's own rate, not the publisher's.
    Clean and mixed rounds alternate; the best of each is compared. A rejection costs the CPU of several valid
    messages (its reason is worked out and it is dead-lettered), so 5% malformed typically cost 0-30% of the rate;
    the margin is there to catch a rejection that stalls the stream, not the noise of a shared machine, which is
    also why a failing comparison gets more rounds (up to 6 of each) before it counts.
    """
    tree = TopicTree(topic_root)
    valid_per_round, min_rounds, max_rounds = 20_000, 6, 12
    valid = make_readings(topic_root, max_rounds * valid_per_round, devices=200)
    bad = [
        (tree.device(TopicKind.DEVICE_VITALS, "H0001", f"BR-{k % 50:04d}"), MALFORMED[k % len(MALFORMED)][1])
        for k in range(1000)
    ]
    client_id = f"{topic_root}-rate"
    async with running(mosquitto, influx_db.settings(), topic_root, tmp_path, client_id=client_id):
        pass  # the session and its subscriptions now exist: the broker queues for it while ingest is down
    rates: dict[bool, list[float]] = {False: [], True: []}
    rounds = 0
    async with dead_letters(mosquitto, topic_root) as letters:
        while rounds < min_rounds or (rounds < max_rounds and max(rates[True]) < 0.5 * max(rates[False])):
            mixed = rounds % 2 == 1
            chunk = valid[rounds * valid_per_round : (rounds + 1) * valid_per_round]
            rounds += 1
            backlog = [
                item for k, v in enumerate(chunk) for item in ([v, bad[k // 20]] if mixed and k % 20 == 0 else [v])
            ]
            await publish(mosquitto, backlog, connections=1)
            started = time.perf_counter()
            async with running(mosquitto, influx_db.settings(), topic_root, tmp_path, client_id=client_id) as service:
                async with asyncio.timeout(60):
                    while not (  # noqa: ASYNC110 - polls counters the service changes
                        service.stats.received == len(backlog)
                        and service.stats.written + service.stats.replayed == valid_per_round
                        and service.current_stats().unacked_messages == 0
                    ):
                        await asyncio.sleep(0.005)
                rates[mixed].append(valid_per_round / (time.perf_counter() - started))
                assert service.current_stats().mqtt_connected
            assert sum(service.stats.rejected.values()) == (1000 if mixed else 0)
            assert service.stats.redelivered == 0  # each round got only its own backlog, each message once
        await wait_until(lambda: len(letters.letters) == 1000 * (rounds // 2), what="every dead letter")
    assert count_points(influxd, influx_db.name) == rounds * valid_per_round
    assert max(rates[True]) >= 0.5 * max(rates[False]), f"valid readings/s, clean and mixed: {rates}"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A SQLite registry with 4 generated residents: homes H00001.., bracelets BR-R00001.., PIR sensors."""
    data = generate_registry_csv(4, seed=1)
    reg = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    report = import_csv(
        reg.engine, [("residents.csv", data.residents.encode()), ("devices.csv", data.devices.encode())]
    )
    assert report.ok, report.errors
    return reg


async def test_with_a_registry_bracelets_are_tagged_with_their_wearer_and_strangers_are_refused(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    influxd: Influxd,
    registry: Registry,
    wait_until: Wait,
) -> None:
    tree = TopicTree(topic_root)
    reading = b'{"ts":%.3f,"hr_bpm":70,"ppg_quality":1}' % (NOW - 60)
    directory = ResidentDirectory(registry)
    async with (
        dead_letters(mosquitto, topic_root) as letters,
        running(mosquitto, influx_db.settings(), topic_root, tmp_path, directory=directory, registry=True) as svc,
    ):
        await publish(
            mosquitto,
            [
                (tree.device(TopicKind.DEVICE_VITALS, "H00001", "BR-R00001"), reading),
                (
                    tree.device(TopicKind.DEVICE_MOTION, "H00001", "PIR-H00001"),
                    b'{"ts":%.3f,"room":"bedroom","motion":true}' % (NOW - 60),
                ),
                (tree.device(TopicKind.DEVICE_VITALS, "H00002", "BR-R00001"), reading),  # not its home
                (tree.device(TopicKind.DEVICE_VITALS, "H00001", "BR-NOBODY"), reading),  # unknown
            ],
        )
        await wait_until(lambda: svc.current_stats().unacked_messages == 0 and svc.stats.received == 4)
        await wait_until(lambda: len(letters.letters) == 2)
    assert svc.stats.rejected == {"unknown_device": 2}
    result = influxd.query('SELECT "hr_bpm", "resident", "device" FROM "vitals"', db=influx_db.name)
    assert [row[2:] for row in result["results"][0]["series"][0]["values"]] == [["R00001", "BR-R00001"]]
    result = influxd.query('SELECT "motion", "resident", "device" FROM "activity"', db=influx_db.name)
    assert [row[2:] for row in result["results"][0]["series"][0]["values"]] == [[None, "PIR-H00001"]]
    registry.close()


async def test_a_full_queue_pauses_reading_and_loses_nothing(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    influxd: Influxd,
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    gate = Gate()
    gate.open.clear()
    batch = make_readings(topic_root, 3000)
    async with running(
        mosquitto,
        influx_db.settings(),
        topic_root,
        tmp_path,
        transport=gate,
        batch_points=100,
        max_pending_points=500,
        receive_maximum=5000,
    ) as service:
        publishing = asyncio.create_task(publish(mosquitto, batch))
        await wait_until(lambda: service.current_stats().paused, what="reading to pause")
        await asyncio.sleep(0.3)
        stats = service.current_stats()
        assert stats.paused
        assert stats.received < 3000
        assert stats.queue_points <= 500 + stats.received  # bounded: what was read before the pause
        assert stats.unacked_messages == stats.received  # nothing acknowledged before it is durable
        gate.open.set()
        await publishing
        await wait_until(lambda: service.stats.written == 3000)
        await wait_until(lambda: service.current_stats().unacked_messages == 0)
    assert service.stats.pauses >= 1
    assert count_points(influxd, influx_db.name) == 3000


async def test_what_was_not_durable_comes_again_after_a_crash(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    influxd: Influxd,
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    """Messages received but not yet written are not acknowledged: a new process with the session gets them."""
    gate = Gate()
    gate.open.clear()
    batch = make_readings(topic_root, 500)
    client_id = f"{topic_root}-crash"
    async with running(
        mosquitto, influx_db.settings(), topic_root, tmp_path, client_id=client_id, transport=gate, drain=False
    ) as first:
        await publish(mosquitto, batch)
        await wait_until(lambda: first.stats.received == 500)
    assert count_points(influxd, influx_db.name) == 0
    async with running(mosquitto, influx_db.settings(), topic_root, tmp_path, client_id=client_id) as second:
        await wait_until(lambda: second.stats.written == 500)
        assert second.current_stats().redelivered == 500
    assert count_points(influxd, influx_db.name) == 500


async def test_influxd_down_for_30_s_mid_run_loses_nothing(
    mosquitto: Mosquitto,
    fresh_influxd: Influxd,
    topic_root: str,
    tmp_path: Path,
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    fresh_influxd.create_database("outage")
    influx = InfluxSettings(url=fresh_influxd.url, database="outage", timeout_s=2.0)
    batch = make_readings(topic_root, 30_000)
    async with running(mosquitto, influx, topic_root, tmp_path, direct_retries=1) as service:
        await publish(mosquitto, batch[:10_000])
        await wait_until(lambda: service.stats.written == 10_000, what="the first third")
        fresh_influxd.stop()
        stopped = time.monotonic()
        # During the outage the messages keep coming, a slice a second, and keep being acknowledged (spooled).
        sent = 10_000
        while time.monotonic() - stopped < 30:
            await publish(mosquitto, batch[sent : sent + 500])
            sent += 500
            await asyncio.sleep(1.0)
        await wait_until(lambda: service.current_stats().unacked_messages == 0, what="everything spooled")
        during = service.current_stats()
        assert during.spooling
        assert during.spooled == sent - 10_000
        assert during.spool_points == sent - 10_000
        fresh_influxd.start()
        await publish(mosquitto, batch[sent:])
        await wait_until(lambda: count_points(fresh_influxd, "outage") == 30_000, what="every point")
        await wait_until(lambda: not service.current_stats().spooling, what="direct writes again")
    assert service.stats.replayed == service.stats.spooled
    assert service.stats.written + service.stats.replayed == 30_000
    assert service.stats.write_latency["replay"].count > 0


async def test_dead_letters_and_acks_wait_for_each_other(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    make_readings: Readings,
    wait_until: Wait,
) -> None:
    """A batch with a rejected message is acknowledged once the dead letter is, not before."""
    tree = TopicTree(topic_root)
    async with running(mosquitto, influx_db.settings(), topic_root, tmp_path) as service:
        await publish(
            mosquitto, [(tree.device(TopicKind.DEVICE_VITALS, "H1", "BR-1"), b"nope"), *make_readings(topic_root, 10)]
        )
        await wait_until(lambda: service.current_stats().unacked_messages == 0 and service.stats.received == 11)
    assert service.stats.dead_letters == {"published": 1}
    assert service.stats.written == 10


def test_the_examples_cover_every_stored_kind() -> None:
    assert len(example_messages("r")) == len(STORED_KINDS)
    for topic, payload in example_messages("r"):
        kind = TopicTree("r").parse(topic).kind
        SPECS[kind].model.model_validate_json(payload)
        assert encode(SPECS[kind].model.model_validate_json(payload))


async def test_a_batch_holds_at_most_a_quarter_of_the_receive_window(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    topic_root: str,
    tmp_path: Path,
    make_readings: Readings,
    wait_until: Wait,
) -> None:
    """With a window of 40 messages, batches of 10 go out at once, whatever batch_points and batch_delay_s say."""
    async with running(
        mosquitto,
        influx_db.settings(),
        topic_root,
        tmp_path,
        receive_maximum=40,
        batch_points=1000,
        batch_delay_s=60,
    ) as service:
        await publish(mosquitto, make_readings(topic_root, 25))
        await wait_until(lambda: service.stats.written == 20, timeout_s=20, what="two full batches of 10")
        assert service.current_stats().queue_points == 5  # the last five wait for their batch to fill or age
    assert service.stats.written == 25  # stopping writes what was left
