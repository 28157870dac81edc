"""The edge agent's async shell: home broker in, detectors, durable outbox, uplink out. One process, one or many homes.

Flow of a device message:
1. The home-broker client (MQTT 5, persistent session: a stable client id, clean_start False, a session expiry)
   receives it. Acks are manual: the broker sends at most `receive_maximum` messages we have not acknowledged,
   which bounds what waits in memory and slows the devices' broker rather than dropping anything.
2. The processor decodes it with the wire contract, with the injected clock as `now`. A malformed message is
   rejected with its reason: counted per home and reason (shown in the heartbeat and `EdgeService.stats`),
   published as a DeadLetter on the home broker's `deadletter/edge`, acknowledged, and the agent goes on.
3. A valid message goes to its home's HomeMonitor (`on_message(topic, message, now)`); the monitor's tick runs
   about once a second through the same queue, so the detectors are only ever touched by one task.
4. What they produce is staged in the outbox (see edge/outbox.py: batched per home and stream, alarms at once),
   and the raw message is journaled, in one SQLite transaction for a group of messages; only when it is committed
   are the messages' PUBACKs sent. A kill -9 after the commit and before the PUBACK means a redelivery, which the
   journal's digest recognises (counted in `duplicates`, not processed twice).
5. The uplink (edge/uplink.py) drains the outbox to the central broker.

After a restart the journal's last minutes are replayed into fresh monitors, so the state they held in memory
(half an interval of vitals, the seconds around an impact) is rebuilt; what the replay produces that was already
produced before (same event id, same report) is not staged again.

Multi-home: the same code with more HomeConfigs; `all_homes` subscribes with one `+` filter instead of one per home.
The homes share one uplink connection, so what the central side learns when the process dies differs: one home's
`offline` by last will, or, for many homes, their retained `online` expiring (see edge/uplink.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiomqtt

from careloop import messages as m
from careloop.clock import Clock, SystemClock
from careloop.codec import PayloadError, RejectReason, encode
from careloop.contract import SPECS, decode_message
from careloop.mqtt import CONNECTION_ERRORS, Backoff, ack, mqtt_client, payload_bytes, subscribe_all
from careloop.settings import MqttSettings
from careloop.topics import Topic, TopicKind, TopicTree
from edge.models import HomeConfig, Outputs
from edge.outbox import (
    AsyncOutbox,
    HomeBacklog,
    JournalEntry,
    Outbox,
    StagedItem,
    message_digest,
    staged_items,
)
from edge.uplink import Uplink, UplinkOptions, dead_letter, heartbeat_for

log = logging.getLogger(__name__)

#: A reason of our own for a valid message a detector failed on (a bug): counted and dead-lettered, not fatal.
MONITOR_ERROR = "monitor_error"


class HomeMonitorLike(Protocol):
    """The pure per-home detectors (edge.monitor.HomeMonitor)."""

    def on_message(self, topic: Topic, message: m.Message, now: float) -> Outputs:
        """Take one valid device message; return what it produced."""
        ...

    def tick(self, now: float) -> Outputs:
        """Let time pass; return what timers produced."""
        ...


MonitorFactory = Callable[[HomeConfig], HomeMonitorLike]


def default_monitor_factory() -> MonitorFactory:
    """HomeMonitor from edge.monitor, with the accelerometer fall detector from edge.falls (at any sample rate)."""
    from edge.falls import fall_detector
    from edge.monitor import HomeMonitor

    def build(config: HomeConfig) -> HomeMonitorLike:
        monitor: HomeMonitorLike = HomeMonitor(config, fall_detector)
        return monitor

    return build


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """Tuning of the edge service."""

    all_homes: bool = False  # subscribe to every home's devices with one `+` filter (multi-home mode)
    receive_maximum: int = 64  # device messages the home broker may send before we acknowledge
    queue_size: int = 256  # work items (messages, ticks) waiting for the processor
    group_max: int = 64  # messages committed in one transaction
    tick_interval_s: float = 1.0
    flush_interval_s: float = 1.0
    prune_interval_s: float = 60.0
    status_log_interval_s: float = 300.0
    session_expiry_s: int = 7 * 86_400  # what devices publish while the agent is away waits this long
    replay: bool = True
    uplink: UplinkOptions = field(default_factory=UplinkOptions)


@dataclass
class EdgeStats:
    """What the service did since it started."""

    received: int = 0  # device messages delivered by the home broker
    accepted: int = 0  # valid and processed
    duplicates: int = 0  # redeliveries of messages already processed (recognised by digest), acknowledged only
    rejected: Counter[str] = field(default_factory=Counter)  # per reason, all homes
    rejected_by_home: dict[str, Counter[str]] = field(default_factory=dict)
    dead_letters: int = 0
    commands_seen: int = 0  # messages on command topics of the home broker (addressed to devices, not to us)
    staged_items: int = 0
    replayed: int = 0
    replay_new_items: int = 0
    replay_known_items: int = 0
    home_connects: int = 0
    home_connected: bool = False

    def reject(self, home_id: str | None, reason: str) -> None:
        """Count one rejected message (per home only for the homes served: a topic's home id is untrusted)."""
        self.rejected[reason] += 1
        if home_id is not None and home_id in self.rejected_by_home:
            self.rejected_by_home[home_id][reason] += 1


@dataclass(frozen=True, slots=True)
class _Delivery:
    client: aiomqtt.Client
    generation: int
    message: aiomqtt.Message


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


class _Rejected(Exception):
    def __init__(self, home_id: str | None, error: PayloadError | None, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.home_id = home_id
        self.error = error
        self.reason = reason
        self.detail = detail


class EdgeService:
    """The edge agent for one or many homes; `await run()` until cancelled."""

    def __init__(
        self,
        homes: Sequence[HomeConfig],
        *,
        home_broker: MqttSettings,
        uplink: MqttSettings,
        outbox: Outbox,
        clock: Clock | None = None,
        monitor_factory: MonitorFactory | None = None,
        options: EdgeOptions | None = None,
        client_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not homes:
            raise ValueError("the edge needs at least one home")
        ids = [h.home_id for h in homes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a home is configured twice: {sorted(h for h, n in Counter(ids).items() if n > 1)}")
        self.homes = {h.home_id: h for h in homes}
        self.home_settings = home_broker
        self.home_tree = TopicTree(home_broker.topic_root)
        self.uplink_tree = TopicTree(uplink.topic_root)
        self.clock = clock or SystemClock()
        self.options = options or EdgeOptions()
        self.client_id = client_id or home_broker.client_id or f"edge-{ids[0]}"
        factory = monitor_factory or default_monitor_factory()
        self._factory = factory
        self.monitors: dict[str, HomeMonitorLike] = {h: factory(c) for h, c in self.homes.items()}
        self.stats = EdgeStats(rejected_by_home={h: Counter() for h in self.homes})
        self.store = AsyncOutbox(outbox)
        self.started = self.clock.now()
        self.uplink = Uplink(
            uplink,
            self.store,
            ids,
            tree=self.uplink_tree,
            clock=self.clock,
            client_id=uplink.client_id or f"{self.client_id}-uplink",  # the two brokers may be one (the demo)
            options=self.options.uplink,
            heartbeat=self._heartbeat,
            relay=self.relay_command,
            rng=rng,
        )
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[_Delivery | _Tick] = asyncio.Queue(maxsize=self.options.queue_size)
        self._generation = 0
        self._home_client: aiomqtt.Client | None = None
        self._home_ready = asyncio.Event()
        window = 4 * self.options.receive_maximum + self.options.group_max
        self._recent: deque[bytes] = deque(maxlen=window)
        self._recent_set: set[bytes] = set()
        self._ready = asyncio.Event()

    # -- running ------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Replay the journal, then serve: home broker, processor, ticks, batch flushes, uplink."""
        try:
            await self._restore()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.uplink.run(), name="uplink")
                tasks.create_task(self._home_link(), name="home-broker")
                tasks.create_task(self._process(), name="processor")
                tasks.create_task(self._ticker(), name="ticker")
                tasks.create_task(self._housekeeping(), name="batch-flush")
                self._ready.set()
        finally:
            log.info("edge stats: %s", json.dumps(self.summary(), sort_keys=True))
            await asyncio.shield(asyncio.to_thread(self.store.close))

    async def wait_ready(self) -> None:
        """Return once the service has replayed its journal and is connected to the home broker."""
        await self._ready.wait()
        await self._home_ready.wait()

    async def _restore(self) -> None:
        """Recognise redeliveries of what was processed before, and rebuild the detectors' state from the journal."""
        store = self.store
        for digest in await store.call(Outbox.recent_digests, store.outbox, self._recent.maxlen or 0):
            self._remember(digest)
        if not self.options.replay:
            return
        entries: list[JournalEntry] = await store.call(Outbox.replay_entries, store.outbox)
        produced: dict[str, list[StagedItem]] = {}
        last_tick: dict[str, float] = {}
        for entry in entries:
            monitor = self.monitors.get(entry.home_id)
            if monitor is None:
                continue  # a home no longer configured
            try:
                # The ticks between the messages, as they ran then (about once a second of receive time): the
                # detectors' timers (an interval closing, a fusion hold expiring) act as they did before.
                if entry.received_ts - last_tick.get(entry.home_id, -math.inf) >= self.options.tick_interval_s:
                    last_tick[entry.home_id] = entry.received_ts
                    ticked = monitor.tick(entry.received_ts)
                    produced.setdefault(entry.home_id, []).extend(staged_items(entry.home_id, ticked))
                parsed, message = decode_message(self.home_tree, entry.topic, entry.payload, now=entry.received_ts)
                outputs = monitor.on_message(parsed, message, entry.received_ts)
            except Exception:  # a journaled message was valid once; a failure here must not stop the agent
                log.exception("replay of %s failed; going on without it", entry.topic)
                continue
            self.stats.replayed += 1
            produced.setdefault(entry.home_id, []).extend(staged_items(entry.home_id, outputs))
        fresh: list[StagedItem] = []
        for home_id, items in produced.items():
            known = await store.call(Outbox.already_produced, store.outbox, home_id, [i.key for i in items])
            fresh += [i for i in items if i.key not in known]
            self.stats.replay_known_items += sum(1 for i in items if i.key in known)
        self.stats.replay_new_items += len(fresh)
        if fresh:
            await store.call(Outbox.commit, store.outbox, now=self.clock.now(), items=fresh)
            self.uplink.wake()
        if entries:
            log.info(
                "replayed %d journaled device messages: %d items already produced, %d new",
                self.stats.replayed,
                self.stats.replay_known_items,
                len(fresh),
            )

    def _remember(self, digest: bytes) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(digest)
        self._recent_set.add(digest)

    # -- the home broker ----------------------------------------------------------------------------------------
    def _filters(self) -> list[str]:
        if self.options.all_homes:
            return [self.home_tree.home_devices_filter()]
        return [self.home_tree.home_devices_filter(h) for h in self.homes]

    async def _home_link(self) -> None:
        """Stay connected to the home broker and feed the processor (the queue's bound slows the broker down)."""
        backoff = Backoff(self.options.uplink.backoff_initial_s, self.options.uplink.backoff_cap_s, self._rng)
        while True:
            try:
                client = mqtt_client(
                    self.home_settings,
                    client_id=self.client_id,
                    clean_start=False,
                    session_expiry_s=self.options.session_expiry_s,
                    receive_maximum=self.options.receive_maximum,
                    manual_ack=True,
                )
                async with client:
                    self._generation += 1
                    generation = self._generation
                    self._home_client = client
                    self.stats.home_connects += 1
                    self.stats.home_connected = True
                    backoff.reset()
                    log.info("connected to the home broker %s as %s", self.home_settings.url, self.client_id)
                    await subscribe_all(client, self._filters())
                    self._home_ready.set()
                    async for message in client.messages:
                        await self._queue.put(_Delivery(client, generation, message))
            except* CONNECTION_ERRORS as group:
                error: BaseException = group.exceptions[0]
            else:
                error = ConnectionError("the home broker ended the session")
            finally:
                self._home_client = None
                self._home_ready.clear()
                self.stats.home_connected = False
            delay = backoff.next_delay()
            log.warning("home broker %s: %s; next attempt in %.1f s", self.home_settings.url, error, delay)
            await asyncio.sleep(delay)

    async def _publish_home(self, topic: str, payload: bytes) -> None:
        """Publish on the home broker at QoS 1, waiting for a connection if there is none."""
        while True:
            await self._home_ready.wait()
            client = self._home_client
            if client is None:
                continue
            try:
                await client.publish(topic, payload, qos=1)
                return
            except CONNECTION_ERRORS as exc:
                log.warning("publish to the home broker failed (%s); retrying when connected", exc)
                await asyncio.sleep(0.5)

    async def relay_command(self, uplink_topic: str, payload: bytes) -> None:
        """Pass a validated command from the central broker to the device, on the home broker."""
        topic = self.home_tree.build_parsed(self.uplink_tree.parse(uplink_topic))
        await self._publish_home(topic, payload)

    # -- processing ---------------------------------------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.options.tick_interval_s)
            await self._queue.put(_Tick())

    async def _housekeeping(self) -> None:
        store = self.store
        last_prune = last_status = self.clock.now()
        while True:
            await asyncio.sleep(self.options.flush_interval_s)
            now = self.clock.now()
            result = await store.call(Outbox.flush_due, store.outbox, now)
            if result.enqueued:
                self.uplink.wake()
            if now - last_prune >= self.options.prune_interval_s:
                await store.call(Outbox.prune, store.outbox, now)
                last_prune = now
            if now - last_status >= self.options.status_log_interval_s:
                log.info("edge stats: %s", json.dumps(self.summary(), sort_keys=True))
                last_status = now

    async def _process(self) -> None:
        """Take groups of work from the queue; each group is one transaction, then its acknowledgements."""
        while True:
            group = [await self._queue.get()]
            while len(group) < self.options.group_max and not self._queue.empty():
                group.append(self._queue.get_nowait())
            await self._process_group(group)

    async def _process_group(self, group: list[_Delivery | _Tick]) -> None:
        now = self.clock.now()  # once per group
        journal: list[JournalEntry] = []
        items: list[StagedItem] = []
        letters: list[tuple[_Delivery, m.DeadLetter]] = []
        deliveries: list[_Delivery] = []
        ticked = False
        for work in group:
            if isinstance(work, _Tick):
                if not ticked:  # ticks queued behind a backlog: one is enough
                    ticked = True
                    items += self._tick(now)
                continue
            deliveries.append(work)
            self.stats.received += 1
            topic, payload = str(work.message.topic), payload_bytes(work.message)
            digest = message_digest(topic, payload)
            if digest in self._recent_set:
                self.stats.duplicates += 1
                continue
            try:
                home_id, produced = self._handle(topic, payload, now)
            except _Rejected as rejected:
                self.stats.reject(rejected.home_id, rejected.reason)
                error = rejected.error or PayloadError(RejectReason.INVALID_VALUE, rejected.detail)
                letter = dead_letter(topic, payload, error, now)
                if rejected.error is None:
                    letter = letter.model_copy(update={"reason": rejected.reason})
                letters.append((work, letter))
                log.info("rejected %s: %s: %s", topic, rejected.reason, rejected.detail)
                continue
            if home_id is None:
                continue  # a command addressed to a device: not ours to process
            self.stats.accepted += 1
            self._remember(digest)
            journal.append(JournalEntry(home_id, topic, payload, now))
            items += produced
        if journal or items:
            result = await self.store.call(Outbox.commit, self.store.outbox, now=now, journal=journal, items=items)
            self.stats.staged_items += len(items)
            if result.enqueued:
                self.uplink.wake()
        for delivery, letter in letters:
            await self._send_dead_letter(delivery, letter)
        for delivery in deliveries:
            if delivery.generation == self._generation and delivery.client is self._home_client:
                ack(delivery.client, delivery.message)
            # else: that connection is gone; the broker will deliver the message again and the digest knows it

    def _handle(self, topic: str, payload: bytes, now: float) -> tuple[str | None, list[StagedItem]]:
        """Validate and route one device message; raises _Rejected with the reason."""
        try:
            parsed, message = decode_message(self.home_tree, topic, payload, now=now)
        except PayloadError as exc:
            home_id = _home_of(topic, self.home_tree)
            raise _Rejected(home_id, exc, exc.reason.value, exc.detail) from None
        if parsed.kind is TopicKind.DEVICE_COMMAND:
            self.stats.commands_seen += 1
            return None, []
        if not parsed.kind.is_device_topic or parsed.home_id is None or parsed.device_id is None:
            error = PayloadError(RejectReason.NOT_ACCEPTED_HERE, f"{parsed.kind.name} is not a device topic")
            raise _Rejected(parsed.home_id, error, error.reason.value, error.detail)
        monitor = self.monitors.get(parsed.home_id)
        if monitor is None:
            error = PayloadError(RejectReason.UNKNOWN_DEVICE, f"home {parsed.home_id} is not served by this edge")
            raise _Rejected(parsed.home_id, error, error.reason.value, error.detail)
        # A device the configuration does not list is the monitor's call (it adopts it by its stream, counted).
        try:
            outputs = monitor.on_message(parsed, message, now)
        except Exception as exc:  # a detector bug: visible (log, count, dead letter), never a crash loop
            log.exception("the monitor of %s failed on %s", parsed.home_id, topic)
            raise _Rejected(parsed.home_id, None, MONITOR_ERROR, f"{type(exc).__name__}: {exc}"[:2000]) from None
        return parsed.home_id, staged_items(parsed.home_id, outputs)

    def _tick(self, now: float) -> list[StagedItem]:
        items: list[StagedItem] = []
        for home_id, monitor in self.monitors.items():
            try:
                outputs = monitor.tick(now)
            except Exception:  # one home's bug must not stop the others' timers
                log.exception("the monitor of %s failed on tick", home_id)
                self.stats.reject(home_id, MONITOR_ERROR)
                continue
            if outputs:
                items += staged_items(home_id, outputs)
        return items

    async def _send_dead_letter(self, delivery: _Delivery, letter: m.DeadLetter) -> None:
        client = self._home_client
        if client is None or delivery.client is not client:
            return  # the connection is gone: the message comes again and is dead-lettered then
        try:
            await client.publish(
                self.home_tree.dead_letter("edge"), encode(letter), qos=SPECS[TopicKind.DEAD_LETTER].qos
            )
            self.stats.dead_letters += 1
        except CONNECTION_ERRORS as exc:
            log.warning("dead letter for %s not published (%s); the message will come again", letter.topic, exc)

    # -- status -------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, object]:
        """The counters an operator wants in one line: traffic, rejections, duplicates, replay, the detectors'
        own drops (each monitor's `stats`, when it has them), and the uplink's."""
        s, u = self.stats, self.uplink.stats
        dropped: Counter[str] = Counter()
        for monitor in self.monitors.values():
            dropped.update(getattr(monitor, "stats", None) or {})
        return {
            "received": s.received,
            "accepted": s.accepted,
            "duplicates": s.duplicates,
            "rejected": dict(s.rejected),
            "dead_letters": s.dead_letters,
            "staged_items": s.staged_items,
            "replayed": s.replayed,
            "replay_new_items": s.replay_new_items,
            "monitors": dict(dropped),
            "uplink": {
                "connected": u.connected,
                "connects": u.connects,
                "published": u.published,
                "acked": u.acked,
                "resent": u.resent,
                "commands_relayed": u.commands_relayed,
                "commands_rejected": dict(u.commands_rejected),
            },
        }

    def _heartbeat(self, home_id: str, backlog: HomeBacklog | None, now: float) -> m.EdgeHeartbeat:
        config = self.homes[home_id]
        return heartbeat_for(
            home_id,
            backlog,
            now,
            uptime_s=now - self.started,
            devices=len(config.devices),
            rejected=dict(self.stats.rejected_by_home.get(home_id, {})),
        )


def _home_of(topic: str, tree: TopicTree) -> str | None:
    """The home id in a topic that did not parse, if it has one where homes go."""
    prefix = f"{tree.root}/v1/home/"
    if topic.startswith(prefix):
        home = topic[len(prefix) :].split("/", 1)[0]
        return home or None
    return None
