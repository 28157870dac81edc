"""The edge service against real Mosquitto brokers: malformed device messages rejected with reasons (and the agent
goes on), two homes in one process kept apart, commands relayed down, and a kill -9 of the agent mid-stream after
which nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from careloop import messages as m
from careloop.clock import ManualClock
from careloop.codec import encode
from careloop.settings import MqttSettings
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import TopicKind, TopicTree
from edge.cli import edge as edge_cli
from edge.models import HomeConfig
from edge.outbox import BatchPolicy, Outbox, Stream, decode_batch, msg_id_for
from edge.service import EdgeOptions, EdgeService, default_monitor_factory
from edge.uplink import UplinkOptions
from simulators.emission import Emission
from simulators.mqtt_sink import MqttSink
from simulators.runner import build, play, stream
from simulators.scenario import anchor_start, load_scenario

WAIT_S = 20.0
FAST_POLICIES = {
    Stream.VITALS: BatchPolicy(max_wait_s=1.0, max_items=200, max_bytes=256 * 1024),
    Stream.EVENTS: BatchPolicy(max_wait_s=0.5, max_items=50, max_bytes=512 * 1024),
    Stream.HEALTH: BatchPolicy(max_wait_s=1.0, max_items=500, max_bytes=256 * 1024),
}
FAST = EdgeOptions(
    uplink=UplinkOptions(window=16, heartbeat_interval_s=0.5, backoff_initial_s=0.2, backoff_cap_s=2.0),
)
_STREAMS = {TopicKind.EDGE_VITALS: Stream.VITALS, TopicKind.EDGE_EVENTS: Stream.EVENTS}
_STREAMS[TopicKind.EDGE_DEVICE_HEALTH] = Stream.HEALTH


async def until(predicate: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "condition") -> None:
    """Wait for a condition that a network event will make true."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - polling state that several tasks change
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass
class Recorder:
    """A persistent-session subscriber that reconnects and records (topic, payload) in arrival order."""

    broker: Mosquitto
    topic_filter: str
    client_id: str
    arrivals: list[tuple[str, bytes]] = field(default_factory=list)
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
                    await client.subscribe(self.topic_filter, qos=1)
                    self.connections += 1
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.arrivals.append((str(message.topic), payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def batches(self, tree: TopicTree, home_id: str) -> list[m.UplinkMessage]:
        """The home's batch messages, deduplicated by msg_id (first arrival kept), in arrival order."""
        seen: dict[str, m.UplinkMessage] = {}
        for topic, payload in self.arrivals:
            parsed = tree.parse(topic)
            if parsed.home_id == home_id and parsed.kind in _STREAMS:
                batch = decode_batch(_STREAMS[parsed.kind], payload)
                seen.setdefault(batch.msg_id, batch)
        return list(seen.values())

    def events(self, tree: TopicTree, home_id: str) -> list[Any]:
        return [e for b in self.batches(tree, home_id) if isinstance(b, m.EventBatch) for e in b.events]

    def on(self, tree: TopicTree, kind: TopicKind, home_id: str | None = None) -> list[bytes]:
        out = []
        for topic, payload in self.arrivals:
            parsed = tree.parse(topic)
            if parsed.kind is kind and (home_id is None or parsed.home_id == home_id):
                out.append(payload)
        return out


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, Any], name: str) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def device(broker: Mosquitto, client_id: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        yield client


def service_for(
    homes: list[HomeConfig],
    broker: Mosquitto,
    root: str,
    tmp_path: Path,
    options: EdgeOptions = FAST,
    clock: ManualClock | None = None,
) -> EdgeService:
    """An in-process edge on the shared broker: `root` for the home side, `root` + "u" for the uplink."""
    return EdgeService(
        homes,
        home_broker=MqttSettings(url=broker.url, topic_root=root),
        uplink=MqttSettings(url=broker.url, topic_root=root + "u"),
        outbox=Outbox(tmp_path / "outbox.db", policies=FAST_POLICIES),
        monitor_factory=default_monitor_factory(),
        options=options,
        client_id=f"edge-{root}",
        clock=clock,
    )


# -- malformed device messages ------------------------------------------------------------------------------------
async def test_malformed_device_messages_are_rejected_counted_and_dead_lettered_and_the_agent_goes_on(
    mosquitto: Mosquitto, topic_root: str, tmp_path: Path
) -> None:
    home, up = TopicTree(topic_root), TopicTree(topic_root + "u")
    service = service_for([HomeConfig(home_id="H1")], mosquitto, topic_root, tmp_path)
    letters = Recorder(mosquitto, home.dead_letter("edge"), f"dl-{topic_root}")
    central = Recorder(mosquitto, up.edge_uplink_filter(), f"central-{topic_root}")
    now = time.time()
    vitals = home.device(TopicKind.DEVICE_VITALS, "H1", "BR-1")
    bad = [
        (vitals, b"", "empty"),
        (vitals, b"\xff\xfe{\x00", "not_utf8"),
        (vitals, json.dumps({"v": 1, "ts": now, "hr_bpm": 400, "ppg_quality": 0.9}).encode(), "out_of_range"),
        (f"{topic_root}/v1/home/H1/device/BR-1/temperature", b'{"v":1,"celsius":21}', "unknown_topic"),
        (vitals, json.dumps({"v": 1, "ts": now, "hr_bpm": 70, "ppg_quality": 0.9, "x": "a" * 5000}).encode(), None),
        (home.device(TopicKind.DEVICE_SOS, "H1", "BR-1"), b"{not json", "bad_json"),
        (home.device(TopicKind.DEVICE_GPS, "H1", "BR-1"), b'{"v":1,"ts":1,"lat":0,"lon":0,"accuracy_m":5}', None),
    ]
    expected = Counter(["empty", "not_utf8", "out_of_range", "unknown_topic", "too_large", "bad_json"])
    expected["clock_not_set"] += 1
    async with running(letters.run(), "letters"), running(central.run(), "central"):
        await until(lambda: letters.connections == 1 and central.connections == 1)
        async with running(service.run(), "edge"):
            await asyncio.wait_for(service.wait_ready(), WAIT_S)
            async with device(mosquitto, f"dev-{topic_root}") as dev:
                for topic, payload, _ in bad:
                    await dev.publish(topic, payload, qos=1)
                await dev.publish(home.device(TopicKind.DEVICE_SOS, "H1", "BR-1"), encode(m.SosPress(ts=now)), qos=1)
            await until(lambda: any(e.kind == "sos" for e in central.events(up, "H1")), what="the SOS upstream")
            await until(lambda: len(letters.arrivals) == len(bad), what="every dead letter")

            def beat_shows_rejections() -> bool:
                beats = [m.EdgeHeartbeat.model_validate_json(p) for p in central.on(up, TopicKind.EDGE_HEARTBEAT)]
                return bool(beats) and beats[-1].rejected == dict(expected)

            await until(beat_shows_rejections, what="the heartbeat's rejected counts")
    assert service.stats.rejected == expected
    assert service.stats.rejected_by_home["H1"] == expected
    assert service.stats.accepted == 1
    dead = [m.DeadLetter.model_validate_json(p) for _, p in letters.arrivals]
    assert Counter(d.reason for d in dead) == expected
    assert all(d.component == "edge" for d in dead)
    by_reason = {d.reason: d for d in dead}
    assert "hr_bpm" in by_reason["out_of_range"].detail
    assert by_reason["too_large"].payload_size > 4096
    assert by_reason["unknown_topic"].topic.endswith("/temperature")
    (sos,) = [e for e in central.events(up, "H1") if e.kind == "sos"]
    assert sos.device_id == "BR-1"


# -- two homes in one process -------------------------------------------------------------------------------------
async def test_two_homes_in_one_process_keep_their_streams_apart(
    mosquitto: Mosquitto, topic_root: str, tmp_path: Path
) -> None:
    home, up = TopicTree(topic_root), TopicTree(topic_root + "u")
    homes = [HomeConfig(home_id="H1", vitals_interval_s=1.0), HomeConfig(home_id="H2", vitals_interval_s=1.0)]
    options = EdgeOptions(all_homes=True, uplink=FAST.uplink)
    service = service_for(homes, mosquitto, topic_root, tmp_path, options)
    central = Recorder(mosquitto, up.edge_uplink_filter(), f"central-{topic_root}")
    now = time.time()
    async with running(central.run(), "central"):
        await until(lambda: central.connections == 1)
        async with running(service.run(), "edge"):
            await asyncio.wait_for(service.wait_ready(), WAIT_S)
            async with device(mosquitto, f"dev-{topic_root}") as dev:
                for home_id, bracelet, hr in (("H1", "BR-1", 61.0), ("H2", "BR-2", 92.0)):
                    for i in range(6):
                        reading = m.VitalsReading(ts=now - 10 + i, hr_bpm=hr, spo2_pct=97.0, ppg_quality=0.95)
                        await dev.publish(home.device(TopicKind.DEVICE_VITALS, home_id, bracelet), encode(reading))
                    sos = encode(m.SosPress(ts=now))
                    await dev.publish(home.device(TopicKind.DEVICE_SOS, home_id, bracelet), sos, qos=1)
                stranger = home.device(TopicKind.DEVICE_SOS, "H3", "BR-3")
                await dev.publish(stranger, encode(m.SosPress(ts=now)), qos=1)

            def both_arrived() -> bool:
                return all(
                    any(isinstance(b, m.VitalsBatch) for b in central.batches(up, h))
                    and any(e.kind == "sos" for e in central.events(up, h))
                    for h in ("H1", "H2")
                )

            await until(both_arrived, what="vitals and SOS of both homes")
            await until(lambda: service.stats.rejected["unknown_device"] == 1)
    for home_id, bracelet, hr in (("H1", "BR-1", 61.0), ("H2", "BR-2", 92.0)):
        batches = central.batches(up, home_id)
        assert [b.seq for b in batches] == list(range(len(batches)))  # each home has its own seq
        assert all(b.msg_id.startswith(home_id + "-") for b in batches)
        readings = [r for b in batches if isinstance(b, m.VitalsBatch) for r in b.readings]
        assert {r.device_id for r in readings} == {bracelet}
        assert all(r.hr_bpm == hr for r in readings if r.hr_bpm is not None)
        events = central.events(up, home_id)
        assert {e.device_id for e in events if e.device_id} == {bracelet}
        healths = [d for b in batches if isinstance(b, m.DeviceHealthBatch) for d in b.devices]
        assert {d.device_id for d in healths} <= {bracelet}
    assert central.batches(up, "H3") == []
    assert service.stats.rejected == Counter({"unknown_device": 1})


# -- commands -----------------------------------------------------------------------------------------------------
async def test_a_command_from_the_central_side_reaches_the_device_and_a_bad_one_is_dead_lettered(
    mosquitto: Mosquitto, topic_root: str, tmp_path: Path
) -> None:
    home, up = TopicTree(topic_root), TopicTree(topic_root + "u")
    service = service_for([HomeConfig(home_id="H1")], mosquitto, topic_root, tmp_path)
    bracelet = Recorder(mosquitto, home.device(TopicKind.DEVICE_COMMAND, "H1", "BR-1"), f"br-{topic_root}")
    letters = Recorder(mosquitto, up.dead_letter("edge"), f"dl-{topic_root}")
    command = m.BraceletCommand(
        command_id="cmd-1", ts=time.time(), action="reminder", text="Time for your tablets", vibrate_ms=300
    )
    async with running(bracelet.run(), "bracelet"), running(letters.run(), "letters"):
        await until(lambda: bracelet.connections == 1 and letters.connections == 1)
        async with running(service.run(), "edge"):
            await asyncio.wait_for(service.wait_ready(), WAIT_S)
            await service.uplink.wait_connected()
            await asyncio.sleep(0.3)  # the uplink's subscription follows its connection
            async with device(mosquitto, f"central-{topic_root}") as central:
                target = up.device(TopicKind.DEVICE_COMMAND, "H1", "BR-1")
                await central.publish(target, b'{"v":1,"command_id":"cmd-2","action":"reminder"}', qos=1)
                await central.publish(target, encode(command), qos=1)
            await until(lambda: len(bracelet.arrivals) == 1, what="the command at the bracelet")
            await until(lambda: len(letters.arrivals) == 1, what="the bad command's dead letter")
    assert m.BraceletCommand.model_validate_json(bracelet.arrivals[0][1]) == command
    assert service.uplink.stats.commands_relayed == 1
    assert service.uplink.stats.commands_rejected == Counter({"missing_field": 1})
    assert service.stats.commands_seen == 0  # the edge does not hear its own relayed command (no-local)


# -- restart: replay and redelivery -------------------------------------------------------------------------------
@pytest.mark.parametrize("replay", [True, False])
async def test_a_restart_rebuilds_the_detectors_from_the_journal_and_a_redelivery_is_processed_once(
    mosquitto: Mosquitto, topic_root: str, tmp_path: Path, replay: bool
) -> None:
    """Six readings of a vitals minute reach the agent, which then stops (its detectors' memory goes with it); the
    next agent on the same outbox gets five more of that minute and one identical to an earlier one (what a
    redelivery looks like). With the journal's replay the minute's summary counts all eleven readings, once."""
    home, up = TopicTree(topic_root), TopicTree(topic_root + "u")
    config = HomeConfig(home_id="H1", vitals_interval_s=60.0)
    t = math.floor(time.time() / 60) * 60 - 600 + 30.0  # half-way through a minute ten minutes ago
    clock = ManualClock(t)
    options = EdgeOptions(replay=replay, uplink=FAST.uplink)
    central = Recorder(mosquitto, up.edge_uplink_filter(), f"central-{topic_root}")
    topic = home.device(TopicKind.DEVICE_VITALS, "H1", "BR-1")

    def reading(ts: float) -> bytes:
        return encode(m.VitalsReading(ts=ts, hr_bpm=60.0 + (ts % 60) / 5, spo2_pct=97.0, ppg_quality=0.95))

    async with running(central.run(), "central"):
        await until(lambda: central.connections == 1)
        first = service_for([config], mosquitto, topic_root, tmp_path, options, clock)
        async with running(first.run(), "edge-1"), device(mosquitto, f"dev-{topic_root}") as dev:
            await asyncio.wait_for(first.wait_ready(), WAIT_S)
            for ts in range(-25, 5, 5):
                await dev.publish(topic, reading(t + ts), qos=1)
            await until(lambda: first.stats.accepted == 6, what="the first six readings")
        second = service_for([config], mosquitto, topic_root, tmp_path, options, clock)
        async with running(second.run(), "edge-2"), device(mosquitto, f"dev-{topic_root}") as dev:
            await asyncio.wait_for(second.wait_ready(), WAIT_S)
            for ts in range(5, 30, 5):
                await dev.publish(topic, reading(t + ts), qos=1)
            await dev.publish(topic, reading(t - 25), qos=1)  # byte for byte the first reading again
            await until(lambda: second.stats.received == 6, what="the next six messages")
            clock.set(t + 40)
            await dev.publish(topic, reading(t + 35), qos=1)  # the next minute: this one closes

            def summarised() -> list[m.VitalsSummary]:
                return [
                    r
                    for b in central.batches(up, "H1")
                    if isinstance(b, m.VitalsBatch)
                    for r in b.readings
                    if r.ts == t + 30
                ]

            async with asyncio.timeout(WAIT_S):
                while not summarised():  # time passes: the batcher's wait runs on the injected clock
                    clock.advance(0.5)
                    await asyncio.sleep(0.05)
    (summary,) = summarised()
    assert second.stats.duplicates == 1
    if replay:
        assert second.stats.replayed == 6
        assert summary.n_readings == 11
    else:
        assert summary.n_readings == 5  # what the journal's replay saves from being lost


async def test_messages_processed_but_not_acknowledged_come_again_and_are_not_processed_twice(
    mosquitto: Mosquitto, topic_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent commits five SOS presses and dies before their PUBACKs leave (no acks at all, here); the home
    broker delivers them again to the next agent, which recognises them and only acknowledges them."""
    home, up = TopicTree(topic_root), TopicTree(topic_root + "u")
    config = HomeConfig(home_id="H1")
    central = Recorder(mosquitto, up.edge_uplink_filter(), f"central-{topic_root}")
    now = time.time()
    async with running(central.run(), "central"):
        await until(lambda: central.connections == 1)
        first = service_for([config], mosquitto, topic_root, tmp_path)
        with monkeypatch.context() as patch:
            patch.setattr("edge.service.ack", lambda client, message: None)
            async with running(first.run(), "edge-1"), device(mosquitto, f"dev-{topic_root}") as dev:
                await asyncio.wait_for(first.wait_ready(), WAIT_S)
                for i in range(5):
                    press = encode(m.SosPress(ts=now + i))
                    await dev.publish(home.device(TopicKind.DEVICE_SOS, "H1", "BR-1"), press, qos=1)
                await until(lambda: len(central.events(up, "H1")) == 5, what="five SOS events upstream")
        second = service_for([config], mosquitto, topic_root, tmp_path)
        async with running(second.run(), "edge-2"):
            await asyncio.wait_for(second.wait_ready(), WAIT_S)
            await until(lambda: second.stats.received == 5, what="the five presses delivered again")
            await asyncio.sleep(0.5)  # anything a second processing would have sent
    assert second.stats.duplicates == 5
    assert second.stats.accepted == 0
    assert [e.pressed_ts for e in central.events(up, "H1")] == [now + i for i in range(5)]


@pytest.mark.parametrize("replay", [True, False])
async def test_an_agent_restarted_a_second_after_an_impact_still_reports_the_fall(
    mosquitto: Mosquitto,
    topic_root: str,
    tmp_path: Path,
    scenario_home: Callable[..., HomeConfig],
    replay: bool,
) -> None:
    """The bracelet's accelerometer around a fall; the agent stops one second after the impact, before its fall
    detector has decided, and the next agent gets the rest. The journal's replay gives the new detector the
    seconds before the impact, so the fall is reported; without it the fall is lost."""
    home, up = TopicTree(topic_root), TopicTree(topic_root + "u")
    scenario = load_scenario("fall-then-ok")
    start = math.floor(time.time()) - 1000.0
    built = build(scenario, seed=1, start=start)
    config = scenario_home(scenario, built.devices)
    (impact,) = [f.ts for f in built.ground_truth if f.what == "fall"]
    accel = [e for e in stream(built) if e.kind is TopicKind.DEVICE_ACCEL and impact - 30 <= e.ts <= impact + 50]
    before, after = [e for e in accel if e.ts < impact + 1], [e for e in accel if e.ts >= impact + 1]
    clock = ManualClock(impact + 60)
    options = EdgeOptions(replay=replay, uplink=FAST.uplink)
    central = Recorder(mosquitto, up.edge_uplink_filter(), f"central-{topic_root}")

    async def feed(service: EdgeService, emissions: list[Emission]) -> None:
        async with running(service.run(), "edge"), device(mosquitto, f"dev-{topic_root}") as dev:
            await asyncio.wait_for(service.wait_ready(), WAIT_S)
            for e in emissions:
                assert e.message is not None
                await dev.publish(home.device(TopicKind.DEVICE_ACCEL, config.home_id, e.device_id), encode(e.message))
            await until(lambda: service.stats.accepted == len(emissions), what="every batch processed")
            await until(lambda: service.store.outbox.depth() == 0, what="the outbox drained")

    async with running(central.run(), "central"):
        await until(lambda: central.connections == 1)
        await feed(service_for([config], mosquitto, topic_root, tmp_path, options, clock), before)
        await feed(service_for([config], mosquitto, topic_root, tmp_path, options, clock), after)
    falls = [e for e in central.events(up, config.home_id) if e.kind == "fall"]
    if replay:
        (fall,) = falls
        assert abs(fall.impact_ts - impact) < 2.0
    else:
        assert falls == []  # the detector that started after the impact never saw it


# -- kill -9 ------------------------------------------------------------------------------------------------------
def agent_command(homes_file: Path, home_broker: Mosquitto, uplink: Mosquitto, outbox: Path, root: str) -> list[str]:
    """`careloop edge run ...` in a fresh interpreter of this environment."""
    return [
        sys.executable,
        "-c",
        "from careloop.cli import main; main()",
        "edge",
        "run",
        "--homes",
        str(homes_file),
        "--home-broker",
        home_broker.url,
        "--uplink",
        uplink.url,
        "--outbox",
        str(outbox),
        "--topic-root",
        root,
        "--client-id",
        f"edge-{root}",
        "--max-batch-wait-s",
        "1",
        "--heartbeat-s",
        "1",
        "--log-level",
        "INFO",
    ]


def start_agent(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def interval_index(ts: float, interval_s: float) -> int:
    return math.floor(ts / interval_s)


async def test_kill_9_of_the_agent_mid_stream_loses_nothing(
    mosquitto: Mosquitto,
    fresh_mosquitto: Mosquitto,
    topic_root: str,
    tmp_path: Path,
    scenario_home: Callable[..., HomeConfig],
) -> None:
    """A simulated home and an SOS button publish for about 12 s; the agent (a `careloop edge run` process) is
    killed with SIGKILL 4 s in and started again 2 s later. Every SOS press arrives as one SOS event, the "I'm OK"
    press as one OK event, every minute that had vitals readings has its summary upstream, every message the
    outbox ever held arrives (deduplicated by msg_id) in seq order."""
    home_broker, central_broker = mosquitto, fresh_mosquitto
    tree = TopicTree(topic_root)
    scenario = load_scenario("fall-then-ok")
    speed = scenario.duration / 12.0
    built = build(scenario, seed=1, start=anchor_start(scenario, time.time(), speed))  # a seed the detector catches
    home = scenario_home(scenario, built.devices)
    home_id = home.home_id
    homes_file = tmp_path / "homes.json"
    homes_file.write_text(json.dumps([home.model_dump(mode="json")]))
    outbox_path = tmp_path / "outbox.db"
    command = agent_command(homes_file, home_broker, central_broker, outbox_path, topic_root)
    log = tmp_path / "agent.log"
    emissions: list[Emission] = list(stream(built))
    presses: list[float] = []
    central = Recorder(central_broker, tree.edge_uplink_filter(), f"central-{topic_root}")

    async def press_sos(stop: asyncio.Event) -> None:
        topic = tree.device(TopicKind.DEVICE_SOS, home_id, "BTN-1")
        async with device(home_broker, f"btn-{topic_root}") as button:
            while not stop.is_set():
                ts = round(time.time(), 3)
                await button.publish(topic, encode(m.SosPress(ts=ts)), qos=1)
                presses.append(ts)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    async def devices() -> None:
        async with MqttSink(home_broker.url, home_id, tree) as sink:
            await play(emissions, sink, speed=speed, start=built.start)

    agent = start_agent(command, log)
    try:
        async with running(central.run(), "central"):

            def online() -> bool:
                states = [m.Availability.model_validate_json(p) for p in central.on(tree, TopicKind.EDGE_AVAILABILITY)]
                return bool(states) and states[-1].online

            await until(online, what="the agent online")
            stop = asyncio.Event()
            async with running(press_sos(stop), "button"):
                sim = asyncio.create_task(devices(), name="devices")
                await asyncio.sleep(4.0)
                await until(lambda: len(central.batches(tree, home_id)) >= 2, what="batches before the kill")
                assert agent.poll() is None, log.read_text()
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait()
                killed_after = len(central.batches(tree, home_id))
                await asyncio.sleep(2.0)  # devices go on publishing; the home broker keeps it for the session
                agent = start_agent(command, log)
                await asyncio.wait_for(sim, 60.0)
                stop.set()
            vitals_minutes = {
                interval_index(e.message.ts, home.vitals_interval_s)
                for e in emissions
                if isinstance(e.message, m.VitalsReading)
            }

            def everything_upstream() -> bool:
                events = central.events(tree, home_id)
                sos = [e.pressed_ts for e in events if e.kind == "sos" and e.device_id == "BTN-1"]
                summaries = {
                    interval_index(r.ts, home.vitals_interval_s) - 1
                    for b in central.batches(tree, home_id)
                    if isinstance(b, m.VitalsBatch)
                    for r in b.readings
                }
                return len(sos) >= len(presses) and vitals_minutes <= summaries

            await until(everything_upstream, timeout_s=90.0, what="every SOS press and vitals minute upstream")

            def drained() -> bool:
                with Outbox(outbox_path, readonly=True) as box:
                    return box.depth() == 0 and box.staged_count() == 0

            await until(drained, timeout_s=30.0, what="the outbox drained")
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0, log.read_text()[-3000:]
            with Outbox(outbox_path, readonly=True) as box:
                next_seq = box.next_seq(home_id)
            await until(lambda: len(central.batches(tree, home_id)) == next_seq, what="every message upstream")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    batches = central.batches(tree, home_id)
    assert [b.msg_id for b in batches] == [msg_id_for(home_id, s) for s in range(next_seq)]
    events = [e for b in batches if isinstance(b, m.EventBatch) for e in b.events]
    assert len({e.event_id for e in events}) == len(events)  # no event twice
    sos = [e.pressed_ts for e in events if e.kind == "sos" and e.device_id == "BTN-1"]
    assert sos == presses
    assert [e.kind for e in events if e.device_id == scenario.bracelet_id and e.kind in ("sos", "ok")] == ["ok"]
    # The fall (2 min in: 2.4 s of wall time, shortly before the kill) is upstream once, whether it went out
    # before the kill or the fusion still held it (the replay rebuilds what the killed agent held in memory).
    (fall,) = [e for e in events if e.kind == "fall"]
    assert abs(fall.impact_ts - (built.start + 120.0)) < 10.0
    fall_seq = next(b.seq for b in batches if isinstance(b, m.EventBatch) and fall in b.events)
    agent_log = log.read_text()
    replay_line = next(line for line in agent_log.splitlines() if "journaled device messages" in line)
    final = json.loads(agent_log.strip().splitlines()[-2].split("edge stats: ", 1)[1])
    assert final["rejected"] == {}
    print(
        f"\n  kill -9 after {killed_after} batches; {next_seq} batches in all, {len(presses)} SOS presses, "
        f"{len(vitals_minutes)} vitals minutes, events {dict(Counter(e.kind for e in events))} (the fall in "
        f"batch {fall_seq}, {'before' if fall_seq < killed_after else 'after'} the kill); restarted agent: "
        f"{replay_line.split(': ', 1)[-1]}; {final['duplicates']} redeliveries recognised, "
        f"{final['received']} messages received, {final['uplink']['resent']} resends upstream"
    )


# -- availability when the agent dies ----------------------------------------------------------------------------
async def retained_availability(broker: Mosquitto, tree: TopicTree) -> dict[str, tuple[bool, int | None]]:
    """What a subscriber arriving now is told of each home's edge: (online, message expiry in s) per home."""
    found: dict[str, tuple[bool, int | None]] = {}
    async with device(broker, f"look-{time.monotonic_ns()}") as client:
        await client.subscribe(tree.filter(TopicKind.EDGE_AVAILABILITY), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):  # retained messages come right after the SUBACK
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    expiry = getattr(message.properties, "MessageExpiryInterval", None)
                    home = tree.parse(str(message.topic)).home_id
                    assert home is not None
                    found[home] = (m.Availability.model_validate_json(payload).online, expiry)
    return found


async def wait_availability(
    broker: Mosquitto, tree: TopicTree, check: Callable[[dict[str, tuple[bool, int | None]]], bool], what: str
) -> dict[str, tuple[bool, int | None]]:
    """Look at the retained availability until `check` holds (within WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        seen = await retained_availability(broker, tree)
        if check(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; retained availability: {seen}")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("homes", [["HA"], ["HA", "HB", "HC"]], ids=["one-home", "three-homes"])
async def test_after_a_kill_9_no_home_is_left_online_and_a_clean_stop_says_offline_for_each(
    mosquitto: Mosquitto, topic_root: str, tmp_path: Path, homes: list[str]
) -> None:
    """A `careloop edge run` process (heartbeats every 2 s) is killed with SIGKILL. Serving one home, its last
    will says `offline` at once. Serving three, the one will a connection has cannot speak for all of them, so no
    home must still read `online` a few heartbeats later (and none reads `offline` as if the will were its own).
    Started again and stopped cleanly, it says `offline` for every home."""
    tree = TopicTree(topic_root)
    homes_file = tmp_path / "homes.json"
    homes_file.write_text(json.dumps([HomeConfig(home_id=h).model_dump(mode="json") for h in homes]))
    command = agent_command(homes_file, mosquitto, mosquitto, tmp_path / "outbox.db", topic_root)
    command[command.index("--heartbeat-s") + 1] = "2"  # a margin for a busy machine: `online` lasts 6 s
    log = tmp_path / "agent.log"
    every = set(homes)

    def all_online(seen: dict[str, tuple[bool, int | None]]) -> bool:
        return {h for h, (online, _) in seen.items() if online} == every

    agent = start_agent(command, log)
    try:
        seen = await wait_availability(mosquitto, tree, all_online, "every home online")
        expiries = [expiry for _, expiry in seen.values()]
        if len(homes) == 1:
            assert expiries == [None]  # the last will covers it
        else:  # three heartbeats, renewed with each round (the broker hands on what is left of it)
            assert all(expiry is not None and 1 <= expiry <= 6 for expiry in expiries), expiries
        await asyncio.sleep(7.0)  # longer than the expiry: renewed, not lapsed, while the agent runs
        assert all_online(await retained_availability(mosquitto, tree)), log.read_text()[-3000:]
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        if len(homes) == 1:
            await wait_availability(mosquitto, tree, lambda s: s == {"HA": (False, None)}, "the last will")
        else:
            await wait_availability(mosquitto, tree, lambda s: s == {}, "every home's online to expire")
        agent = start_agent(command, log)
        await wait_availability(mosquitto, tree, all_online, "every home online again")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    after_stop = await retained_availability(mosquitto, tree)
    assert after_stop == dict.fromkeys(homes, (False, None))


# -- the CLI ------------------------------------------------------------------------------------------------------
def test_edge_status_shows_depth_oldest_and_evictions(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    now = time.time()
    item = m.SosEvent(event_id="sos-1", ts=now, device_id="BR-1", pressed_ts=now)
    with Outbox(path, max_bytes=600) as box:
        from edge.outbox import item_json

        box.enqueue("H1", Stream.EVENTS, [item_json(item)], now=now, alarm=True)
        reading = m.VitalsSummary(ts=now, device_id="BR-1", interval_s=60.0, hr_bpm=70.0, n_readings=3)
        for _ in range(5):
            box.enqueue("H1", Stream.VITALS, [item_json(reading)], now=now)
    result = CliRunner().invoke(edge_cli, ["status", "--outbox", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["homes"]["H1"]["next_seq"] == 6
    assert data["evicted"]["vitals"] >= 1
    assert data["homes"]["H1"]["depth"] == 6 - data["evicted"]["vitals"]
    text = CliRunner().invoke(edge_cli, ["status", "--outbox", str(path)])
    assert text.exit_code == 0
    assert "evicted by the size bound: vitals" in text.output


def test_edge_run_refuses_a_bad_homes_file(tmp_path: Path) -> None:
    homes = tmp_path / "homes.toml"
    homes.write_text('[[homes]]\nhome_id = "H1"\nvitals_interval_s = -5\n')
    result = CliRunner().invoke(edge_cli, ["run", "--homes", str(homes), "--uplink", "mqtt://127.0.0.1:1"])
    assert result.exit_code != 0
    assert "vitals_interval_s" in result.output


@pytest.mark.parametrize("args", [[], ["--home", "bad home"]])
def test_edge_run_needs_a_valid_home(args: list[str]) -> None:
    result = CliRunner().invoke(edge_cli, ["run", *args, "--uplink", "mqtt://127.0.0.1:1"])
    assert result.exit_code != 0
