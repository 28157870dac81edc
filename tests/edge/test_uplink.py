"""The uplink against real Mosquitto brokers: seq order, delete-after-PUBACK, and a 60 s outage of the central broker
while simulated devices keep publishing: every message and event arrives exactly once after dedupe, in order."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from careloop import messages as m
from careloop.codec import encode
from careloop.mqtt import Backoff
from careloop.settings import MqttSettings
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import TopicKind, TopicTree
from edge.models import HomeConfig
from edge.outbox import AsyncOutbox, BatchPolicy, Outbox, Stream, decode_batch, item_json, msg_id_for
from edge.service import EdgeOptions, EdgeService, default_monitor_factory
from edge.uplink import Uplink, UplinkOptions
from simulators.mqtt_sink import MqttSink
from simulators.runner import build, play, stream
from simulators.scenario import anchor_start, load_scenario

WAIT_S = 20.0  # for network events that take milliseconds
OUTAGE_S = 60.0  # the outage: kept at 60 s (this test takes about 75 s)
#: Short batching waits and a short backoff cap keep the test's wall time down; neither is what is tested.
FAST_POLICIES = {
    Stream.VITALS: BatchPolicy(max_wait_s=2.0, max_items=200, max_bytes=256 * 1024),
    Stream.EVENTS: BatchPolicy(max_wait_s=1.0, max_items=50, max_bytes=512 * 1024),
    Stream.HEALTH: BatchPolicy(max_wait_s=2.0, max_items=500, max_bytes=256 * 1024),
}
FAST_UPLINK = UplinkOptions(window=16, heartbeat_interval_s=5.0, backoff_initial_s=0.2, backoff_cap_s=2.0)


async def until(predicate: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "condition") -> None:
    """Wait for a condition that a network event will make true."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - polling state that several tasks change
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass
class Arrival:
    topic: str
    payload: bytes
    connection: int  # which of the recorder's connections it arrived on


@dataclass
class Central:
    """The central side: a persistent-session subscriber to every edge topic that reconnects and records arrivals."""

    broker: Mosquitto
    tree: TopicTree
    client_id: str = "central-recorder"
    arrivals: list[Arrival] = field(default_factory=list)
    connections: int = 0

    async def run(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=properties,
                ) as client:
                    self.connections += 1
                    await client.subscribe(self.tree.edge_uplink_filter(), qos=1)
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.arrivals.append(Arrival(str(message.topic), payload, self.connections))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def on(self, kind: TopicKind) -> list[Arrival]:
        return [a for a in self.arrivals if self.tree.parse(a.topic).kind is kind]

    def batches(self, home_id: str | None = None) -> list[tuple[Arrival, m.UplinkMessage]]:
        """Every batch message received (duplicates included), in arrival order."""
        out = []
        for arrival in self.arrivals:
            parsed = self.tree.parse(arrival.topic)
            if home_id is not None and parsed.home_id != home_id:
                continue
            stream_of = {
                TopicKind.EDGE_VITALS: Stream.VITALS,
                TopicKind.EDGE_EVENTS: Stream.EVENTS,
                TopicKind.EDGE_DEVICE_HEALTH: Stream.HEALTH,
            }
            if parsed.kind in stream_of:
                out.append((arrival, decode_batch(stream_of[parsed.kind], arrival.payload)))
        return out


@contextlib.asynccontextmanager
async def running(coro_fn: Callable[[], object], name: str) -> AsyncIterator[asyncio.Task[object]]:
    task: asyncio.Task[object] = asyncio.create_task(coro_fn(), name=name)  # type: ignore[arg-type]
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- pure ---------------------------------------------------------------------------------------------------------
def test_backoff_doubles_up_to_its_cap_with_jitter_and_starts_over_after_a_success() -> None:
    backoff = Backoff(initial_s=0.5, cap_s=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered: a thousand gateways do not come back in step
    backoff.reset()
    assert backoff.next_delay() <= 0.5


# -- the uplink alone ---------------------------------------------------------------------------------------------
async def test_the_uplink_drains_in_seq_order_and_deletes_a_message_only_after_its_puback(
    mosquitto: Mosquitto, topic_root: str, tmp_path: Path
) -> None:
    tree = TopicTree(topic_root)
    outbox = Outbox(tmp_path / "o.db")
    now = time.time()
    for i in range(120):
        home = "HA" if i % 3 else "HB"
        event = m.SosEvent(event_id=f"sos-{i}", ts=now, device_id="BR-1", pressed_ts=now)
        outbox.enqueue(home, Stream.EVENTS, [item_json(event)], now=now, alarm=True)
    store = AsyncOutbox(outbox)
    central = Central(mosquitto, tree, client_id=f"central-{topic_root}")
    uplink = Uplink(
        MqttSettings(url=mosquitto.url, topic_root=topic_root),
        store,
        ["HA", "HB"],
        client_id=f"edge-{topic_root}",
        options=FAST_UPLINK,
    )
    async with running(central.run, "central"):
        await until(lambda: central.connections == 1)
        async with running(uplink.run, "uplink"):
            await until(lambda: len(central.batches()) == 120)
            await until(lambda: outbox.depth() == 0)
            availability = central.on(TopicKind.EDGE_AVAILABILITY)
            assert {tree.parse(a.topic).home_id for a in availability} == {"HA", "HB"}
            assert all(m.Availability.model_validate_json(a.payload).online for a in availability)
            await until(lambda: len(central.on(TopicKind.EDGE_HEARTBEAT)) >= 2)
    for home in ("HA", "HB"):
        seqs = [b.seq for _, b in central.batches(home)]
        assert seqs == list(range(len(seqs)))
    assert uplink.stats.acked == 120
    assert uplink.stats.resent == 0
    store.close()


def explain_duplicates(
    batches: list[tuple[Arrival, m.UplinkMessage]], resent: set[str]
) -> tuple[Counter[str], list[str]]:
    """Duplicate msg_ids, and those not explained by a resend of the edge or a redelivery by the broker to the
    central subscriber (what it had not seen acknowledged before the broker stopped comes again on the next
    connection)."""
    first: dict[str, Arrival] = {}
    for arrival, batch in batches:
        first.setdefault(batch.msg_id, arrival)
    duplicates = Counter(b.msg_id for _, b in batches) - Counter(first.keys())
    unexplained = [
        msg_id
        for msg_id in duplicates
        if msg_id not in resent and len({a.connection for a, b in batches if b.msg_id == msg_id}) < 2
    ]
    return duplicates, unexplained


async def test_what_was_in_flight_when_the_central_broker_stopped_is_sent_again_and_arrives_once_after_dedupe(
    fresh_mosquitto: Mosquitto, topic_root: str, tmp_path: Path
) -> None:
    tree = TopicTree(topic_root)
    outbox = Outbox(tmp_path / "o.db")
    now = time.time()
    total = 3000
    for i in range(total):
        event = m.PresenceEvent(event_id=f"presence-{i}", ts=now, present=bool(i % 2))
        outbox.enqueue("H1", Stream.EVENTS, [item_json(event)], now=now)
    store = AsyncOutbox(outbox)
    central = Central(fresh_mosquitto, tree, client_id=f"central-{topic_root}")
    uplink = Uplink(
        MqttSettings(url=fresh_mosquitto.url, topic_root=topic_root),
        store,
        ["H1"],
        client_id=f"edge-{topic_root}",
        options=UplinkOptions(window=64, heartbeat_interval_s=60.0, backoff_initial_s=0.2, backoff_cap_s=1.0),
    )
    async with running(central.run, "central"):
        await until(lambda: central.connections == 1)
        async with running(uplink.run, "uplink"):
            await until(lambda: uplink.stats.acked >= 500, what="a good part drained")
            fresh_mosquitto.stop()  # mid-drain: up to 64 messages are in flight
            fresh_mosquitto.start()
            await until(lambda: outbox.depth() == 0, timeout_s=60.0, what="the outbox drained")
            await until(lambda: len({b.msg_id for _, b in central.batches()}) == total, what="everything upstream")
    batches = central.batches()
    unique: list[m.UplinkMessage] = []
    seen: set[str] = set()
    for _, batch in batches:
        if batch.msg_id not in seen:
            seen.add(batch.msg_id)
            unique.append(batch)
    assert [b.seq for b in unique] == list(range(total))  # in order after dedupe
    duplicates, unexplained = explain_duplicates(batches, set(uplink.stats.resent_ids))
    assert unexplained == []
    assert uplink.stats.connects == 2
    print(
        f"\n  stop mid-drain: {len(batches)} received for {total} messages; {sum(duplicates.values())} duplicates, "
        f"{uplink.stats.resent} resends by the edge"
    )
    store.close()


# -- the outage ---------------------------------------------------------------------------------------------------
async def test_a_60_s_outage_of_the_central_broker_loses_nothing_and_keeps_every_event_in_order(
    mosquitto: Mosquitto,
    fresh_mosquitto: Mosquitto,
    topic_root: str,
    tmp_path: Path,
    scenario_home: Callable[..., HomeConfig],
) -> None:
    """Devices (a simulated home, plus a bracelet whose SOS button is pressed every 2 s) publish to the home broker
    for 70 s; 5 s in, the central broker stops for 60 s. Afterwards every message the edge produced has arrived,
    exactly once after dedupe by msg_id, in seq order, and every SOS press is one SOS event, in press order."""
    home_broker, central_broker = mosquitto, fresh_mosquitto
    tree = TopicTree(topic_root)
    scenario = load_scenario("fall-bathroom-night")
    sim_s = OUTAGE_S + 10.0
    speed = scenario.duration / sim_s
    built = build(scenario, seed=3, start=anchor_start(scenario, time.time(), speed))
    home = scenario_home(scenario, built.devices)
    home_id = home.home_id
    service = EdgeService(
        [home],
        home_broker=MqttSettings(url=home_broker.url, topic_root=topic_root),
        uplink=MqttSettings(url=central_broker.url, topic_root=topic_root),
        outbox=Outbox(tmp_path / "outbox.db", policies=FAST_POLICIES),
        monitor_factory=default_monitor_factory(),
        options=EdgeOptions(uplink=FAST_UPLINK),
        client_id=f"edge-{topic_root}",
    )
    central = Central(central_broker, tree, client_id=f"central-{topic_root}")
    presses: list[float] = []
    outbox = service.store.outbox
    depth_during_outage = 0

    async def press_sos(stop: asyncio.Event) -> None:
        topic = tree.device(TopicKind.DEVICE_SOS, home_id, "BTN-1")
        async with aiomqtt.Client(home_broker.host, home_broker.port, identifier=f"btn-{topic_root}") as button:
            while not stop.is_set():
                ts = round(time.time(), 3)
                await button.publish(topic, encode(m.SosPress(ts=ts)), qos=1)
                presses.append(ts)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)

    async def devices() -> None:
        async with MqttSink(home_broker.url, home_id, tree) as sink:
            await play(stream(built), sink, speed=speed, start=built.start)

    async with running(central.run, "central"), running(service.run, "edge"):
        await asyncio.wait_for(service.wait_ready(), WAIT_S)
        await until(lambda: central.connections == 1)
        stop_pressing = asyncio.Event()
        async with running(lambda: press_sos(stop_pressing), "button"):
            sim = asyncio.create_task(devices(), name="devices")
            await until(lambda: len(central.batches()) >= 3, what="batches before the outage")
            before = len(central.batches())
            central_broker.stop()  # graceful: the broker keeps the sessions and what it had accepted
            outage_start = time.monotonic()
            while time.monotonic() - outage_start < OUTAGE_S:
                await asyncio.sleep(1.0)
                depth_during_outage = max(depth_during_outage, outbox.depth())
                assert not sim.done() or sim.exception() is None
            presses_during_outage = sum(1 for p in presses if p >= time.time() - OUTAGE_S)
            central_broker.start()
            await asyncio.wait_for(sim, sim_s + WAIT_S)
            stop_pressing.set()

        def drained() -> bool:
            return outbox.depth() == 0 and outbox.staged_count() == 0

        await until(lambda: service.stats.received >= 10 and drained(), timeout_s=60.0, what="outbox drained")
        await asyncio.sleep(3.0)  # the last ticks and flushes
        await until(drained, timeout_s=30.0)
        next_seq = await service.store.call(Outbox.next_seq, outbox, home_id)
        await until(lambda: len({b.msg_id for _, b in central.batches(home_id)}) == next_seq, timeout_s=30.0)

    # -- what arrived ----------------------------------------------------------------------------------------------
    batches = central.batches(home_id)
    first: dict[str, tuple[Arrival, m.UplinkMessage]] = {}
    for arrival, batch in batches:
        first.setdefault(batch.msg_id, (arrival, batch))
    unique = list(first.values())
    assert [b.msg_id for _, b in unique] == [msg_id_for(home_id, s) for s in range(next_seq)]  # none lost, in order
    for msg_id, (arrival, _) in first.items():
        again = [a for a, b in batches if b.msg_id == msg_id and a is not arrival]
        assert all(a.payload == arrival.payload for a in again)  # a resend is the same bytes
    resent = set(service.uplink.stats.resent_ids)
    duplicates, unexplained = explain_duplicates(batches, resent)
    assert unexplained == []
    events = [e for _, b in unique if isinstance(b, m.EventBatch) for e in b.events]
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids))  # every event exactly once
    sos_presses = [e.pressed_ts for e in events if isinstance(e, m.SosEvent) and e.device_id == "BTN-1"]
    assert sos_presses == presses  # every press, once, in press order
    assert service.stats.rejected == Counter()
    assert service.uplink.stats.connects >= 2
    assert presses_during_outage >= OUTAGE_S / 2 - 2
    assert depth_during_outage > 0
    kinds = Counter(e.kind for e in events)
    print(
        f"\n  outage {OUTAGE_S:.0f} s: {before} batches before it, {next_seq} in all ({len(batches)} received, "
        f"{sum(duplicates.values())} duplicates, of which {len(resent & set(duplicates))} resent by the edge and "
        f"the others redelivered by the broker to the central subscriber); outbox depth up to {depth_during_outage} "
        f"during "
        f"the outage; {len(presses)} SOS presses ({presses_during_outage} during the outage); events {dict(kinds)}; "
        f"uplink {service.uplink.stats.connects} connections, {service.uplink.stats.resent} resends"
    )
