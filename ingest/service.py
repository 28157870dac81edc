"""The ingest service: MQTT 5 shared subscription in, InfluxDB out, nothing lost and nothing doubled.

Flow, all on one event loop:

1. `careloop.mqtt5.MqttClient` reads PUBLISH packets of a persistent session (clean start off) on a shared
   subscription, and hands them over a list per socket read (`_on_messages`).
2. Each message is validated against the wire contract (pydantic-core, one pass) and turned into lines of line
   protocol (`ingest.points`), appended to the open batch with its packet id. A batch is sealed when it holds
   `batch_points` points, or a quarter of `receive_maximum` messages, or its first message is `batch_delay_s` old.
3. `write_concurrency` writer tasks store sealed batches: straight to InfluxDB (`careloop.influx.InfluxClient`), or,
   while InfluxDB is down or slow, to the local spool (`ingest.spool`). The replay task writes the spool back to
   InfluxDB oldest first, and when it is empty new batches go to InfluxDB directly again.
4. When a batch is durable and its dead letters are acknowledged, the PUBACKs of its messages go out, batches in the
   order they were received (`ingest.batches.AckQueue`). A message is never acknowledged before its points are
   durable, so a crash at any moment loses nothing: the broker sends the unacknowledged messages again, and a
   message sent again rewrites the same points (same series and timestamp).

Bounded memory: when the points held in memory reach `max_pending_points`, reading from the socket stops until they
fall to half; the broker sends at most `receive_maximum` unacknowledged messages in any case. Nothing is dropped.

Rejected messages (they break the contract, their topic is not one ingest stores, or with a registry configured,
their device is unknown) are not written: each is counted by reason and published to `deadletter/ingest` with the
reason and the payload, and acknowledged once the broker has the dead letter.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from careloop import messages as m
from careloop.clock import Clock, SystemClock
from careloop.codec import DEFAULT_MAX_AGE_S, DEFAULT_MAX_FUTURE_S, PayloadError, RejectReason, encode
from careloop.contract import SPECS, decode_message
from careloop.influx import InfluxClient, InfluxError, InfluxWriteError
from careloop.mqtt5 import ConnectRefused, MqttClient, MqttError, Received, SessionOptions, SubscribeRefused
from careloop.settings import CareloopSettings
from careloop.topics import Topic, TopicError, TopicKind, TopicTree
from ingest.batches import AckQueue, Batch, Deferred
from ingest.directory import ResidentDirectory
from ingest.metrics import IngestStats
from ingest.models import IngestConfig
from ingest.points import STORED_KINDS, LineEncoder, NoTimestamp, Origin
from ingest.spool import Spool

log = logging.getLogger(__name__)

COMPONENT = "ingest"
#: DeadLetter.payload_b64 holds at most 90,000 characters: 67,500 bytes of payload.
DEAD_LETTER_PAYLOAD_BYTES = 67_500
#: Route cache size (one entry per topic seen); cleared when full.
ROUTE_CACHE_LIMIT = 200_000


@dataclass(slots=True)
class _Route:
    """What to do with messages on one topic, decided once per topic."""

    topic: Topic | None
    model: type[m.Message] | None = None
    max_bytes: int = 0
    origin: Origin | None = None
    #: The vitals series prefix of a bracelet topic: the hot path skips the generic conversion.
    series: str | None = None
    #: Every message on the topic is rejected for this (unknown topic, a kind ingest does not store, unknown device).
    reject: PayloadError | None = None
    #: The device's wearer is not cached yet: validate now, convert after a registry look-up.
    deferred: bool = False
    #: An edge vitals topic: the batched hot path.
    summaries: bool = False
    #: The model's `validate_json` (None when every message on the topic is rejected).
    validate: Callable[..., Any] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.model is not None and self.reject is None:
            self.validate = self.model.__pydantic_validator__.validate_json


class IngestService:
    """One ingest process. `await run()` until cancelled; `stop()` ends it gracefully (drain, then disconnect)."""

    def __init__(
        self,
        settings: CareloopSettings,
        config: IngestConfig,
        *,
        influx: InfluxClient,
        replay_influx: InfluxClient,
        spool: Spool,
        directory: ResidentDirectory | None = None,
        clock: Clock | None = None,
        stats: IngestStats | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.stats = stats or IngestStats()
        self._influx = influx
        self._replay_influx = replay_influx
        self._spool = spool
        self._directory = directory
        self._clock: Clock = clock or SystemClock()
        self._tree = TopicTree(settings.mqtt.topic_root)
        self._encoder = LineEncoder()
        self._filters = [TopicTree.shared(config.group, self._tree.filter(kind)) for kind in STORED_KINDS]
        self._dead_letter_topic = self._tree.dead_letter(COMPONENT)
        self._context: dict[str, float] = {
            "now": 0.0,
            "max_future_s": DEFAULT_MAX_FUTURE_S,
            "max_age_s": DEFAULT_MAX_AGE_S,
        }
        self._routes: dict[bytes, _Route] = {}
        # A batch holds at most a quarter of the broker's window of unacknowledged messages, so that the broker keeps
        # sending while up to three batches are being written (one reading a message: the cap; edge batches: points).
        self._max_batch_messages = max(1, config.receive_maximum // 4)
        self._session = 0
        self._client: MqttClient | None = None
        self._batch: Batch | None = None
        self._acks = AckQueue()
        self._ready: deque[Batch] = deque()
        self._ready_wake = asyncio.Event()
        self._replay_wake = asyncio.Event()
        self._queued = 0  # points of sealed batches not yet finished
        self._unacked = 0  # messages in batches not yet finished
        self._spooling = False
        self._spool_appending = 0
        self._stopping = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals_logged = 0
        self._redelivered = 0  # by connections closed before the current one

    # -- running --------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, subscribe and ingest until `stop()` (then drain and disconnect) or cancellation."""
        if self._directory is not None:
            await self._directory.refresh()
            log.info("registry: %d devices", self._directory.size)
        if self._spool.batches:
            log.warning("the spool holds %d points from before: replaying them first", self._spool.points)
            self._set_spooling(True)
        self.stats.spool_points = self._spool.points
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._mqtt_loop(), name="ingest-mqtt")]
            tasks += [
                group.create_task(self._writer(), name=f"ingest-writer-{n}")
                for n in range(self.config.write_concurrency)
            ]
            tasks.append(group.create_task(self._replayer(), name="ingest-replay"))
            if self._directory is not None:
                tasks.append(group.create_task(self._refresh_registry(), name="ingest-registry"))
            await self._stopping.wait()
            await self._drain()
            for task in tasks:
                task.cancel()
        for task in list(self._tasks):
            task.cancel()

    def stop(self) -> None:
        """End `run()`: stop reading, store and acknowledge what is in memory (up to `drain_timeout_s`), disconnect."""
        self._stopping.set()

    async def wait_subscribed(self) -> None:
        """Return once the first subscription is in place (for tests and the bench)."""
        await self._subscribed.wait()

    def current_stats(self) -> IngestStats:
        """The stats with the gauges brought up to date."""
        s = self.stats
        s.queue_points = self._queued + (len(self._batch.lines) if self._batch is not None else 0)
        s.unacked_messages = self._unacked
        s.spool_points = self._spool.points
        s.spooling = self._spooling
        client = self._client
        s.paused = client is not None and client.paused
        s.redelivered = self._redelivered + (client.redelivered if client is not None else 0)
        return s

    async def _drain(self) -> None:
        client = self._client
        if client is not None:
            client.pause_reading()
        if self._batch is not None:
            self._seal(self._batch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout_s
        while len(self._acks) and loop.time() < deadline:  # noqa: ASYNC110 - polls a count the writers change
            await asyncio.sleep(0.01)
        if len(self._acks):
            log.warning("stopping with %d messages unacknowledged: the broker will send them again", self._unacked)
        if self._client is not None:
            await self._client.disconnect()

    # -- MQTT -----------------------------------------------------------------------------------------------------
    async def _mqtt_loop(self) -> None:
        mqtt = self.settings.mqtt
        options = SessionOptions(
            client_id=self.config.client_id,
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
            keepalive_s=mqtt.keepalive_s,
            clean_start=False,
            session_expiry_s=mqtt.session_expiry_s,
            receive_maximum=self.config.receive_maximum,
        )
        ssl_context = ssl.create_default_context(cafile=mqtt.ca_file) if mqtt.tls else None
        delay = 0.1
        while not self._stopping.is_set():
            self._session += 1
            client = MqttClient(options, partial(self._on_messages, self._session))
            self._client = client
            try:
                try:
                    connack = await client.open(mqtt.host, mqtt.port, ssl_context=ssl_context)
                    await client.subscribe(self._filters)
                except SubscribeRefused:
                    self.stats.count(self.stats.connects, "subscribe_refused")
                    raise  # a broker without shared subscriptions, or a bad filter: retrying will not help
                except (ConnectRefused, MqttError, OSError, TimeoutError) as exc:
                    reason = exc.reason if isinstance(exc, ConnectRefused) else type(exc).__name__.lower()
                    self.stats.count(self.stats.connects, reason)
                    log.warning("MQTT %s:%d: %s; retrying in %.1f s", mqtt.host, mqtt.port, exc, delay)
                    client.abort()
                    await asyncio.sleep(delay)
                    delay = min(10.0, delay * 2)
                    continue
                delay = 0.1
                self.stats.count(self.stats.connects, "ok")
                self.stats.mqtt_connected = True
                log.info(
                    "MQTT connected to %s:%d as %s (session %s), subscribed to %d filters in group %r",
                    mqtt.host,
                    mqtt.port,
                    options.client_id,
                    "resumed" if connack.session_present else "new",
                    len(self._filters),
                    self.config.group,
                )
                if self._pending_points() >= self.config.max_pending_points:
                    client.pause_reading()
                self._subscribed.set()
                reason = await client.closed
            finally:
                # Cancelled (shutdown) or lost: the connection goes without acknowledging anything more.
                client.abort()
                self.stats.mqtt_connected = False
            self._redelivered += client.redelivered
            if self._batch is not None:
                self._seal(self._batch)  # still written; its messages come again and are acknowledged then
            if not self._stopping.is_set():
                log.warning("MQTT connection lost (%s); reconnecting", reason)
                await asyncio.sleep(delay)

    def _on_messages(self, session: int, received: list[Received]) -> None:
        """Validate, convert and batch what one socket read brought (the hot path)."""
        batch = self._batch
        if batch is None or batch.session != session:
            batch = self._open_batch(session)
        context = self._context
        context["now"] = self._clock.now()
        routes = self._routes
        encoder = self._encoder
        limit = self.config.batch_points
        max_messages = self._max_batch_messages
        pids = batch.pids
        lines = batch.lines
        for topic, payload, pid in received:
            pids.append(pid)
            route = routes.get(topic) or self._route(topic)
            validate = route.validate
            if validate is None or len(payload) > route.max_bytes:
                self._reject(batch, topic, payload, route)
                continue
            try:
                # The model's own validator, without model_validate_json's Python wrapper: the same call, 0.2 us less.
                message = validate(payload, context=context)
            except ValidationError:
                self._reject(batch, topic, payload, route)
                continue
            if route.series is not None:
                lines.append(encoder.reading_line(route.series, message))
            elif route.summaries:
                lines += encoder.summary_lines(route.origin, message)  # type: ignore[arg-type]
            elif route.deferred:
                t = route.topic
                assert t is not None
                assert t.home_id is not None
                assert t.device_id is not None
                batch.deferred.append(Deferred(topic, payload, t.kind, t.home_id, t.device_id, message))
            else:
                assert route.topic is not None
                assert route.origin is not None
                try:
                    lines += encoder.lines(route.topic.kind, message, route.origin)
                except NoTimestamp:
                    self.stats.count(self.stats.skipped, "no_timestamp")
            if len(lines) >= limit or len(pids) >= max_messages:
                batch = self._open_batch(session)
                pids = batch.pids
                lines = batch.lines
        self.stats.received += len(received)
        self._unacked += len(received)
        client = self._client
        if client is not None and self._pending_points() >= self.config.max_pending_points and not client.paused:
            client.pause_reading()
            self.stats.pauses += 1

    def _pending_points(self) -> int:
        return self._queued + (len(self._batch.lines) if self._batch is not None else 0)

    def _route(self, topic_bytes: bytes) -> _Route:
        """Decide, once per topic, how its messages are handled; cached unless it depends on a registry look-up."""
        text = topic_bytes.decode("utf-8", "replace")
        cache = True
        try:
            topic = self._tree.parse(text)
        except TopicError as exc:
            route = _Route(None, reject=PayloadError(RejectReason.UNKNOWN_TOPIC, str(exc)))
        else:
            route = self._route_for(topic)
            cache = not route.deferred and not (
                route.reject is not None and route.reject.reason is RejectReason.UNKNOWN_DEVICE
            )
        if cache:
            if len(self._routes) >= ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[topic_bytes] = route
        return route

    def _route_for(self, topic: Topic) -> _Route:
        kind = topic.kind
        if kind not in STORED_KINDS:
            error = PayloadError(RejectReason.NOT_ACCEPTED_HERE, f"ingest does not store {kind.name} topics")
            return _Route(topic, reject=error)
        spec = SPECS[kind]
        assert topic.home_id is not None
        site = self.settings.site_id
        if not kind.is_device_topic:
            summaries = kind is TopicKind.EDGE_VITALS
            return _Route(topic, spec.model, spec.max_bytes, Origin(site, topic.home_id), summaries=summaries)
        device = topic.device_id
        assert device is not None
        resident = None
        if self._directory is not None:
            entry = self._directory.get(device)
            if entry is None:
                if self._directory.is_unknown(device):
                    return _Route(topic, reject=_unknown_device(device))
                return _Route(topic, spec.model, spec.max_bytes, deferred=True)
            if entry.home != topic.home_id:
                return _Route(topic, reject=_unknown_device(device, entry.home, topic.home_id))
            resident = entry.resident
        origin = Origin(site, topic.home_id, device, resident)
        series = self._encoder.reading_series(origin) if kind is TopicKind.DEVICE_VITALS else None
        return _Route(topic, spec.model, spec.max_bytes, origin, series)

    # -- batches --------------------------------------------------------------------------------------------------
    def _open_batch(self, session: int) -> Batch:
        if self._batch is not None:
            self._seal(self._batch)
        loop = asyncio.get_running_loop()
        batch = Batch(session=session)
        batch.timer = loop.call_later(self.config.batch_delay_s, self._seal_if_open, batch)
        self._acks.add(batch)
        self._batch = batch
        return batch

    def _seal_if_open(self, batch: Batch) -> None:
        if self._batch is batch:
            self._seal(batch)

    def _seal(self, batch: Batch) -> None:
        if self._batch is batch:
            self._batch = None
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        batch.counted = len(batch.lines)
        self._queued += batch.counted
        self._ready.append(batch)
        self._ready_wake.set()

    def _part_done(self, batch: Batch) -> None:
        """One thing the batch waited for is done; acknowledge every batch that is now finished, in order."""
        batch.waiting -= 1
        if batch.waiting:
            return
        released = self._acks.release()
        if not released:
            return
        client = self._client
        acks: list[int] = []
        for done in released:
            self._queued -= done.counted
            self._unacked -= len(done.pids)
            # Packet ids belong to their connection: after a reconnect the broker sends those messages again.
            if done.session == self._session:
                acks += done.pids
        if client is not None and acks:
            client.ack(acks)
        if (
            client is not None
            and client.paused
            and not self._stopping.is_set()
            and self._pending_points() <= self.config.max_pending_points // 2
        ):
            client.resume_reading()

    async def _writer(self) -> None:
        while True:
            while not self._ready:
                self._ready_wake.clear()
                await self._ready_wake.wait()
            batch = self._ready.popleft()
            await self._store(batch)
            self._part_done(batch)

    async def _store(self, batch: Batch) -> None:
        """Make the batch's points durable: in InfluxDB, or else in the spool. Returns only when they are."""
        if batch.deferred:
            await self._resolve_deferred(batch)
        lines = batch.lines
        if not lines:
            return
        loop = asyncio.get_running_loop()
        while True:
            if not self._spooling:
                started = loop.time()
                try:
                    await self._influx.write(lines)
                except InfluxWriteError as exc:
                    if exc.status == 400:  # some lines refused; every other line was stored
                        self.stats.written += self._refused(exc, len(lines), batch)
                        return
                    self._start_spooling(exc)
                except InfluxError as exc:
                    self._start_spooling(exc)
                else:
                    self.stats.write_latency["direct"].observe(loop.time() - started)
                    self.stats.written += len(lines)
                    return
            self._spool_appending += 1
            try:
                await self._spool.append(lines)
            except (OSError, sqlite3.Error) as exc:
                log.error("cannot spool %d points (%s); retrying (reading pauses when memory fills)", len(lines), exc)
                await asyncio.sleep(1.0)
                continue
            finally:
                self._spool_appending -= 1
            self.stats.spooled += len(lines)
            self._replay_wake.set()
            return

    def _start_spooling(self, exc: Exception) -> None:
        if not self._spooling:
            log.warning("InfluxDB unavailable (%s): spooling to %s until it is back", exc, self._spool.path)
            self._set_spooling(True)

    def _set_spooling(self, on: bool) -> None:
        self._spooling = on
        self.stats.spooling = on
        if on:
            self._replay_wake.set()

    def _refused(self, exc: InfluxWriteError, total: int, batch: Batch | None) -> int:
        """InfluxDB refused some lines (400): count them and dead-letter each; returns how many it stored."""
        refused = len(exc.rejected) + exc.unidentified
        self.stats.refused_points += refused
        if self._refusals_logged < 10:
            self._refusals_logged += 1
            log.error("InfluxDB refused %d of %d points: %s", refused, total, exc.message)
        for line in exc.rejected:
            self._dead_letter(batch, "influxdb", line.line.encode(), "influx_refused", line.reason)
        return max(0, total - refused)

    async def _resolve_deferred(self, batch: Batch) -> None:
        """Tag (or reject) the messages whose devices were not in the registry cache when they arrived."""
        directory = self._directory
        assert directory is not None
        delay = 0.5
        while True:
            try:
                await directory.resolve(d.device for d in batch.deferred)
                break
            except SQLAlchemyError as exc:
                log.error("registry look-up failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
        site = self.settings.site_id
        for d in batch.deferred:
            self._routes.pop(d.topic, None)
            entry = directory.get(d.device)
            if entry is None or entry.home != d.home:
                error = _unknown_device(d.device, entry.home if entry else None, d.home)
                self._reject(batch, d.topic, d.payload, _Route(None, reject=error))
                continue
            origin = Origin(site, d.home, d.device, entry.resident)
            try:
                batch.lines += self._encoder.lines(d.kind, d.message, origin)
            except NoTimestamp:
                self.stats.count(self.stats.skipped, "no_timestamp")
        batch.deferred.clear()

    # -- the spool ------------------------------------------------------------------------------------------------
    async def _replayer(self) -> None:
        """While spooling: write the spool to InfluxDB oldest first; when it is empty, go back to direct writes."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._spooling:
                self._replay_wake.clear()
                await self._replay_wake.wait()
                continue
            try:
                entry = await self._spool.oldest()
            except (OSError, sqlite3.Error) as exc:
                log.error("cannot read the spool (%s); retrying", exc)
                await asyncio.sleep(self.config.replay_interval_s)
                continue
            if entry is None:
                if self._spool_appending == 0:
                    log.info("spool replayed: writing to InfluxDB directly again")
                    self._set_spooling(False)
                else:
                    await asyncio.sleep(0.01)
                continue
            started = loop.time()
            try:
                await self._replay_influx.write(entry.lines)
            except InfluxWriteError as exc:
                if exc.status != 400:
                    await asyncio.sleep(self.config.replay_interval_s)
                    continue
                self.stats.replayed += self._refused(exc, len(entry.lines), None)
            except InfluxError:
                await asyncio.sleep(self.config.replay_interval_s)
                continue
            else:
                self.stats.write_latency["replay"].observe(loop.time() - started)
                self.stats.replayed += len(entry.lines)
            try:
                await self._spool.remove(entry)
            except (OSError, sqlite3.Error) as exc:
                log.error("cannot remove a replayed batch from the spool (%s); it will be written again", exc)
                await asyncio.sleep(self.config.replay_interval_s)

    # -- rejection ------------------------------------------------------------------------------------------------
    def _reject(self, batch: Batch, topic: bytes, payload: bytes, route: _Route) -> None:
        error = route.reject
        if error is None:
            try:
                decode_message(self._tree, topic.decode("utf-8", "replace"), payload, now=self._context["now"])
            except PayloadError as exc:
                error = exc
            else:  # the fast path refused what the contract accepts: a bug here, not in the message
                raise AssertionError(f"message on {topic!r} rejected by ingest but valid by the contract")
        self.stats.count(self.stats.rejected, error.reason.value)
        self._dead_letter(batch, topic.decode("utf-8", "replace"), payload, error.reason.value, error.detail)

    def _dead_letter(self, batch: Batch | None, topic: str, payload: bytes, reason: str, detail: str) -> None:
        if not self.config.dead_letters:
            return
        letter = m.DeadLetter(
            ts=self._clock.now(),
            component=COMPONENT,
            topic=topic[:1024],
            reason=reason,
            detail=detail[:2000],
            payload_b64=base64.b64encode(payload[:DEAD_LETTER_PAYLOAD_BYTES]).decode(),
            payload_size=len(payload),
        )
        if batch is not None:
            batch.waiting += 1
        task = asyncio.get_running_loop().create_task(self._publish_dead_letter(batch, encode(letter)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_dead_letter(self, batch: Batch | None, payload: bytes) -> None:
        client = self._client
        try:
            if client is None:
                raise MqttError("not connected")
            code = await client.publish(self._dead_letter_topic, payload)
        except MqttError:
            result = "failed"  # the connection went: the rejected message comes again, and so does its letter
        else:
            result = "published" if code < 0x80 else "refused"
            if code >= 0x80:
                log.error("the broker refused a dead letter on %s (reason 0x%02x)", self._dead_letter_topic, code)
        self.stats.count(self.stats.dead_letters, result)
        if batch is not None:
            self._part_done(batch)

    # -- the registry ---------------------------------------------------------------------------------------------
    async def _refresh_registry(self) -> None:
        directory = self._directory
        assert directory is not None
        while True:
            await asyncio.sleep(directory.refresh_s)
            try:
                await directory.refresh()
            except SQLAlchemyError as exc:
                log.error("registry reload failed (%s); keeping the cached devices", exc)
                continue
            self._routes.clear()


def _unknown_device(
    device: str | None, registered_home: str | None = None, topic_home: str | None = None
) -> PayloadError:
    if registered_home is not None:
        detail = f"device {device!r} belongs to home {registered_home!r} in the registry, not {topic_home!r}"
    else:
        detail = f"device {device!r} is not in the registry"
    return PayloadError(RejectReason.UNKNOWN_DEVICE, detail)
