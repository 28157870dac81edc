"""The uplink: drains the outbox to the central broker at QoS 1, in seq order per home, and relays commands down.

- A message leaves the outbox only after its PUBACK. At most `window` messages are in flight; they are published
  in enqueue order (seq order within a home) on one connection, so the central broker receives them in order.
- When the connection drops, whatever was in flight stays in the outbox and is published again, from the oldest,
  on the next connection: a message may arrive twice (same msg_id, same bytes; the central side deduplicates),
  never not at all. `UplinkStats.resent` counts those second sends.
- Reconnects back off exponentially (capped) with jitter, so a thousand gateways do not all return in one second
  after the central broker restarts. While the uplink is down everything waits in the outbox.
- On each connection it publishes each home's retained availability (`online`) and then, every
  `heartbeat_interval_s`, an EdgeHeartbeat per home (never stored: a stale heartbeat means nothing). A clean stop
  publishes `offline` for every home.
- It subscribes (persistent session) to the DEVICE_COMMAND topics of its homes and relays each command, once
  validated, to the home broker; the central broker's PUBACK is sent only after the home broker's.

Availability when the process dies (kill -9, power cut, the network gone): MQTT gives a connection one last will,
one message on one topic, and all the homes of a process share one connection.
- One home (a real gateway): the will is that home's retained `offline`. Exact: the broker publishes it as soon
  as it sees the connection gone (at once for a closed socket, after 1.5 keepalives for a silent one).
- Many homes (the demo, benchmarks): no will, because one `offline` could speak for only one of them and leave the
  others `online` for ever. Instead each home's retained `online` carries an MQTT 5 message expiry of
  `AVAILABILITY_EXPIRY_BEATS` heartbeat intervals and is published again with every round of heartbeats (same
  `since`, so a time-series writer sees the same point). When the process dies, within that time no home reads
  `online` to anybody who subscribes (the status becomes unknown, not wrong), and subscribers who are connected
  see every home's heartbeats stop. MQTT cannot publish one `offline` per home for a process that is gone; a
  gateway-level status topic that names its homes would need a change of the wire contract.

Both brokers are spoken to in MQTT 5 (receive maximum as flow control, session expiry, no-local subscriptions),
so the demo's embedded amqtt broker (MQTT 3.1.1 only) cannot serve the edge; Mosquitto can.

MQTT client helpers for both brokers live here too (`mqtt_client`, `ack`): the edge's two connections are made the
same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from careloop import messages as m
from careloop.clock import Clock, SystemClock
from careloop.codec import PayloadError, RejectReason, encode
from careloop.contract import SPECS, decode_message
from careloop.mqtt import (
    CONNECTION_ERRORS,
    Backoff,
    ack,
    mqtt_client,
    payload_bytes,
    subscribe_all,
)
from careloop.mqtt import dead_letter as _dead_letter
from careloop.settings import MqttSettings
from careloop.topics import TopicKind, TopicTree
from edge.outbox import AsyncOutbox, HomeBacklog, Outbox, OutboxMessage

log = logging.getLogger(__name__)

SOFTWARE = "careloop-edge 0.1.0"
COMPONENT = "edge"
#: A multi-home process's retained `online` expires after this many heartbeat intervals unless published again.
AVAILABILITY_EXPIRY_BEATS = 3
#: Errors that mean "the connection is gone": reconnect, never crash.
_SHUTDOWN_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, asyncio.CancelledError)


# -- the uplink ---------------------------------------------------------------------------------------------------
@dataclass
class UplinkStats:
    """What the uplink did; `connected` is True only between a CONNACK and the loss of that connection."""

    connected: bool = False
    connects: int = 0
    connection_failures: int = 0
    published: int = 0  # PUBLISH packets sent, resends included
    acked: int = 0  # messages acknowledged by the central broker and removed from the outbox
    resent: int = 0  # messages published again after a connection was lost with them in flight
    resent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=10_000))  # their msg_ids, latest
    heartbeats: int = 0
    commands_relayed: int = 0
    commands_rejected: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class UplinkOptions:
    """Tuning of the uplink."""

    window: int = 32  # messages in flight (published, PUBACK not yet received)
    heartbeat_interval_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_cap_s: float = 30.0
    publish_timeout_s: float = 30.0  # a PUBACK later than this means the connection is dead
    session_expiry_s: int = 7 * 86_400  # commands sent while the edge is away wait this long at the broker


HeartbeatSource = Callable[[str, HomeBacklog | None, float], m.EdgeHeartbeat]
CommandRelay = Callable[[str, bytes], Awaitable[None]]


class Uplink:
    """Drains an outbox to the central broker; `run()` until cancelled (it reconnects by itself)."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox: AsyncOutbox,
        homes: Sequence[str],
        *,
        tree: TopicTree | None = None,
        clock: Clock | None = None,
        client_id: str | None = None,
        options: UplinkOptions | None = None,
        heartbeat: HeartbeatSource | None = None,
        relay: CommandRelay | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not homes:
            raise ValueError("the uplink needs at least one home")
        self.settings = settings
        self.outbox = outbox
        self.homes = list(homes)
        self.tree = tree or TopicTree(settings.topic_root)
        self.clock = clock or SystemClock()
        self.client_id = client_id or settings.client_id or f"edge-{self.homes[0]}"
        self.options = options or UplinkOptions()
        self.heartbeat = heartbeat or self._plain_heartbeat
        self.relay = relay
        self.stats = UplinkStats()
        self._backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_cap_s, rng or random.Random())
        self._wake = asyncio.Event()
        self._unacked: set[int] = set()  # outbox ids published on a connection and not acknowledged there
        self._started = self.clock.now()
        self._connected_event = asyncio.Event()
        self._online_since = self._started  # `since` of the availability published on this connection

    @property
    def single_home(self) -> bool:
        """Whether this uplink serves one home, so that the connection's last will can speak for it."""
        return len(self.homes) == 1

    @property
    def availability_expiry_s(self) -> int | None:
        """How long a multi-home process's retained `online` lasts without being published again (None: one home,
        where the last will says when it is over)."""
        if self.single_home:
            return None
        return max(1, math.ceil(AVAILABILITY_EXPIRY_BEATS * self.options.heartbeat_interval_s))

    def wake(self) -> None:
        """New messages are in the outbox."""
        self._wake.set()

    async def wait_connected(self) -> None:
        """Return once the uplink is connected."""
        await self._connected_event.wait()

    def _plain_heartbeat(self, home_id: str, backlog: HomeBacklog | None, now: float) -> m.EdgeHeartbeat:
        return heartbeat_for(home_id, backlog, now, uptime_s=now - self._started, devices=0, rejected={})

    async def run(self) -> None:
        """Connect, drain, heartbeat, relay; reconnect with backoff whenever the connection is lost."""
        while True:
            try:
                await self._connection()
            except* CONNECTION_ERRORS as group:
                error = group.exceptions[0]
                self.stats.last_error = f"{type(error).__name__}: {error}"
            self._set_connected(False)
            delay = self._backoff.next_delay()
            log.warning("uplink %s: %s; next attempt in %.1f s", self.settings.url, self.stats.last_error, delay)
            await asyncio.sleep(delay)

    def _set_connected(self, connected: bool) -> None:
        self.stats.connected = connected
        if connected:
            self._connected_event.set()
        else:
            self._connected_event.clear()

    async def _connection(self) -> None:
        will = None
        if self.single_home:  # one will per connection: honest only when the connection is one home's
            will = aiomqtt.Will(
                self.tree.edge(TopicKind.EDGE_AVAILABILITY, self.homes[0]),
                encode(m.Availability(online=False)),
                qos=1,
                retain=True,
            )
        client = mqtt_client(
            self.settings,
            client_id=self.client_id,
            clean_start=False,
            session_expiry_s=self.options.session_expiry_s,
            will=will,
            receive_maximum=16,
            max_inflight=self.options.window,
            manual_ack=True,
        )
        try:
            await client.__aenter__()
        except CONNECTION_ERRORS:
            self.stats.connection_failures += 1
            raise
        try:
            self.stats.connects += 1
            self._set_connected(True)
            self._backoff.reset()
            log.info("uplink connected to %s as %s", self.settings.url, self.client_id)
            await self._announce(client, online=True)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._drain(client), name="uplink-drain")
                tasks.create_task(self._heartbeats(client), name="uplink-heartbeat")
                tasks.create_task(self._commands(client), name="uplink-commands")
        except asyncio.CancelledError:
            # Shutting down: say so (the last will fires only on an unclean loss), then disconnect.
            self._set_connected(False)
            try:
                async with asyncio.timeout(2.0):
                    await self._announce(client, online=False)
            except _SHUTDOWN_ERRORS:
                pass
            raise
        finally:
            self._set_connected(False)
            with contextlib.suppress(*CONNECTION_ERRORS):
                await client.__aexit__(None, None, None)

    async def _announce(self, client: aiomqtt.Client, *, online: bool) -> None:
        """Every home's retained availability: `online` since now (expiring, for many homes) or `offline`."""
        now = self.clock.now()
        if online:
            self._online_since = now
        await self._publish_availability(client, online=online, since=now)

    async def _publish_availability(self, client: aiomqtt.Client, *, online: bool, since: float) -> None:
        payload = encode(m.Availability(online=online, since=since))
        properties = None
        expiry = self.availability_expiry_s
        if online and expiry is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry
        for home_id in self.homes:
            topic = self.tree.edge(TopicKind.EDGE_AVAILABILITY, home_id)
            await client.publish(
                topic, payload, qos=1, retain=True, properties=properties, timeout=self.options.publish_timeout_s
            )

    async def _drain(self, client: aiomqtt.Client) -> None:
        window = asyncio.Semaphore(self.options.window)
        cursor = 0  # the last outbox id handed to this connection
        async with asyncio.TaskGroup() as inflight:
            while True:
                self._wake.clear()
                batch: list[OutboxMessage] = await self.outbox.call(
                    Outbox.pending, self.outbox.outbox, after_id=cursor, limit=self.options.window
                )
                if not batch:
                    try:
                        async with asyncio.timeout(1.0):  # a safety net: wake() is the normal path
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
                for message in batch:
                    await window.acquire()
                    cursor = message.id
                    # Tasks start in creation order and publish before their first await: wire order = seq order.
                    inflight.create_task(self._publish(client, message, window), name=f"uplink-{message.msg_id}")

    async def _publish(self, client: aiomqtt.Client, message: OutboxMessage, window: asyncio.Semaphore) -> None:
        if message.id in self._unacked:
            self.stats.resent += 1
            self.stats.resent_ids.append(message.msg_id)
        self._unacked.add(message.id)
        self.stats.published += 1
        await client.publish(message.topic(self.tree), message.payload, qos=1, timeout=self.options.publish_timeout_s)
        await self.outbox.call(Outbox.ack, self.outbox.outbox, [message.id])
        self._unacked.discard(message.id)
        self.stats.acked += 1
        window.release()

    async def _heartbeats(self, client: aiomqtt.Client) -> None:
        announced = True  # the connection has just published every home's `online`
        while True:
            if not announced and self.availability_expiry_s is not None:
                # many homes: publish each one's expiring `online` again before it runs out
                await self._publish_availability(client, online=True, since=self._online_since)
            announced = False
            backlog = await self.outbox.call(Outbox.backlog, self.outbox.outbox)
            now = self.clock.now()
            for home_id in self.homes:
                beat = self.heartbeat(home_id, backlog.get(home_id), now)
                topic = self.tree.edge(TopicKind.EDGE_HEARTBEAT, home_id)
                await client.publish(topic, encode(beat), qos=1, timeout=self.options.publish_timeout_s)
                self.stats.heartbeats += 1
            await asyncio.sleep(self.options.heartbeat_interval_s)

    async def _commands(self, client: aiomqtt.Client) -> None:
        filters = [self.tree.filter(TopicKind.DEVICE_COMMAND, home_id=h) for h in self.homes]
        await subscribe_all(client, filters, timeout_s=self.options.publish_timeout_s)
        async for message in client.messages:
            topic, payload = str(message.topic), payload_bytes(message)
            try:
                parsed, _ = decode_message(self.tree, topic, payload, now=self.clock.now())
                if parsed.kind is not TopicKind.DEVICE_COMMAND or parsed.home_id not in self.homes:
                    raise PayloadError(
                        RejectReason.NOT_ACCEPTED_HERE, f"{topic} is not a command to a home of this edge"
                    )
            except PayloadError as exc:
                self.stats.commands_rejected[exc.reason.value] += 1
                log.warning("command on %s rejected: %s", topic, exc)
                letter = _dead_letter(COMPONENT, topic, payload, exc, self.clock.now())
                await client.publish(
                    self.tree.dead_letter(COMPONENT),
                    encode(letter),
                    qos=SPECS[TopicKind.DEAD_LETTER].qos,
                    timeout=self.options.publish_timeout_s,
                )
            else:
                if self.relay is None:
                    raise RuntimeError("commands arrived but the uplink has no relay to the home broker")
                await self.relay(topic, payload)
                self.stats.commands_relayed += 1
            ack(client, message)


def dead_letter(topic: str, payload: bytes, exc: PayloadError, now: float) -> m.DeadLetter:
    """A message the edge rejected, for operators (see careloop.mqtt.dead_letter)."""
    return _dead_letter(COMPONENT, topic, payload, exc, now)


def heartbeat_for(
    home_id: str,
    backlog: HomeBacklog | None,
    now: float,
    *,
    uptime_s: float,
    devices: int,
    rejected: dict[str, int],
) -> m.EdgeHeartbeat:
    """A home's heartbeat from its outbox backlog and the agent's counters."""
    return m.EdgeHeartbeat(
        ts=now,
        uptime_s=max(0.0, uptime_s),
        devices=devices,
        outbox_depth=backlog.depth if backlog else 0,
        outbox_oldest_ts=backlog.oldest_ts if backlog else None,
        outbox_bytes=backlog.bytes if backlog else 0,
        outbox_evicted={s.value: e.messages for s, e in backlog.evicted.items()} if backlog else {},
        rejected=dict(sorted(rejected.items())[:32]),
        software=SOFTWARE,
    )
