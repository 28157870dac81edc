"""The alerts process: central broker in, rules, the persistent loop, notifications out.

One MQTT client (MQTT 5, persistent session, manual acknowledgement) receives what SIM bracelets and edge
gateways publish. Its receive queue is a priority queue, so an SOS or a fall never waits behind a backlog of vitals;
the broker's receive maximum bounds it. Each message is validated (a bad one is counted by reason and
dead-lettered), turned into observations, and given to the rule engine; every signal goes to the alert service,
which persists the transition, its audit entry and its notifications in one transaction. Only then is the message
acknowledged, and the dispatcher woken to send what is due (the live state change first of all).

Tasks, in one TaskGroup: the broker link, the ticker (rules that fire on time passing, and the loop's timers:
cancel windows, escalations, repeats), the dispatcher, and the registry refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import logging
import queue
import ssl
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import aiomqtt

from alerts.context import ContextBook
from alerts.directory import ResidentBook, Snapshot, load_snapshot
from alerts.dispatcher import Dispatcher
from alerts.escalation import EscalationPolicy, load_escalation_policy
from alerts.intake import PRIORITY, SUBSCRIBED, intake
from alerts.models import ChannelName, Notifier, Observation, ResidentProfile, Severity, Signal, VitalsObservation
from alerts.notify.bracelet import BraceletNotifier
from alerts.notify.email import EmailNotifier
from alerts.notify.live import LiveNotifier
from alerts.notify.webhook import WebhookNotifier
from alerts.roster import RegistryDirectory
from alerts.rules import RuleEngine
from alerts.ruleset import RuleSet, load_rules
from alerts.service import AlertService
from alerts.store import AlertStore, open_alert_store
from careloop.clock import Clock, SystemClock
from careloop.codec import PayloadError, RejectReason, encode
from careloop.contract import decode_message
from careloop.mqtt import CONNECTION_ERRORS, Backoff, ack, dead_letter, mqtt_client, payload_bytes, subscribe_all
from careloop.mqtt5 import MqttClient, Received, SessionOptions
from careloop.mqtt5 import MqttError as Mqtt5Error
from careloop.registry.store import Registry, open_registry
from careloop.settings import CareloopSettings
from careloop.topics import TopicTree

log = logging.getLogger(__name__)

COMPONENT = "alerts"
URGENT, VITALS = "urgent", "vitals"
LINKS = (URGENT, VITALS)
GC_FULL_EVERY_S = 600.0  # a full garbage collection (~240 ms with 10,000 residents) at most this often
DEFAULT_GC_THRESHOLD2 = gc.get_threshold()[2]
LIVE_LEASE_S = 10.0  # how long the dispatcher leaves a change's live push to the early push
YIELD_EVERY = 50  # vitals messages processed between chances for the urgent link to run (~1 ms)
VITALS_PRIORITY = 2  # topics of this priority (alerts.intake.PRIORITY) go on the vitals link
T = TypeVar("T")


class RuleEngineLike(Protocol):
    """What the app needs of the rule engine (alerts.rules.RuleEngine)."""

    def observe(self, obs: Observation, profile: ResidentProfile, now: float) -> list[Signal]: ...

    def tick(self, now: float) -> list[Signal]: ...


class ServiceLike(Protocol):
    """What the app needs of the alert service (alerts.service.AlertService)."""

    def handle_signal(self, signal: Signal, *, live_lease_s: float = ...) -> Sequence[Any]: ...

    def fire_due(self, *, live_lease_s: float = ...) -> Sequence[Any]: ...

    def next_due(self) -> float | None: ...


class DispatcherLike(Protocol):
    """What the app needs of the dispatcher (alerts.dispatcher.Dispatcher)."""

    def wake(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class AlertsStats:
    """Counters an operator (and the tests) read."""

    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    observations: int = 0
    signals: int = 0
    changes: int = 0
    acked: int = 0
    connects: int = 0
    connected: bool = False
    service_errors: int = 0
    early_pushes: int = 0
    ticks: int = 0  # passes of the ticker (rules on time, the loop's timers); one that stops rising is stuck


def _priority(topic: str) -> int:
    # by the topic's last level: cheaper than parsing, and the tree is checked when the message is decoded
    tail = topic.rsplit("/", 1)[-1]
    if tail in ("sos", "events", "ok"):
        return 0
    if tail == "vitals":
        return 2
    return 1


class PriorityMessageQueue(asyncio.PriorityQueue[aiomqtt.Message]):
    """aiomqtt's receive queue, most urgent topic first, then in arrival order."""

    _counter = itertools.count()

    def _put(self, item: aiomqtt.Message) -> None:
        heapq.heappush(self._queue, (_priority(item.topic.value), next(self._counter), item))  # type: ignore[attr-defined]

    def _get(self) -> aiomqtt.Message:
        return heapq.heappop(self._queue)[2]  # type: ignore[attr-defined,no-any-return]


class PriorityWorker:
    """One database thread that takes the most urgent work first.

    The service's calls are serialised on one thread (one SQLite writer, and transitions of one alert in order).
    With a plain FIFO executor an SOS arriving during an alarm storm (thousands of bracelets going offline at
    once, a technical signal each) would wait behind all of them; here it waits for the call in progress only.
    Within one priority, calls run in the order they were made.
    """

    def __init__(self, name: str = "alerts-db") -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            job()

    async def call(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the worker thread, lower `priority` first; await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting task, which decides
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

        self._queue.put((priority, next(self._seq), job))
        return await future

    def shutdown(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put((1 << 30, next(self._seq), None))
        self._thread.join()


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


#: Database work by urgency: alarms and timers (escalations) first, then lesser signals, then housekeeping.
_SIGNAL_PRIORITY = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2, Severity.REMINDER: 3}
TIMERS_PRIORITY = 0
HOUSEKEEPING_PRIORITY = 5


class _Publisher:
    """The notifiers' handle on the current MQTT connection (a reconnect replaces the client underneath)."""

    def __init__(self) -> None:
        self.client: aiomqtt.Client | None = None

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **kw: Any) -> None:
        client = self.client
        if client is None:
            raise aiomqtt.MqttError("not connected to the central broker")
        await client.publish(topic, payload, qos=qos, retain=retain, **kw)


class AlertsApp:
    """The running alerts service; `run()` until cancelled."""

    def __init__(
        self,
        settings: CareloopSettings,
        *,
        engine: RuleEngineLike,
        service: ServiceLike,
        dispatcher: DispatcherLike,
        book: ResidentBook,
        contexts: ContextBook,
        clock: Clock,
        publisher: _Publisher | None = None,
        load_registry: Callable[[], Snapshot] | None = None,
        registry_refresh_s: float = 60.0,
        tick_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.service = service
        self.dispatcher = dispatcher
        self.book = book
        self.contexts = contexts
        self.clock = clock
        self.publisher = publisher or _Publisher()
        self.load_registry = load_registry
        self.registry_refresh_s = registry_refresh_s
        self.tick_s = tick_s
        self.tree = TopicTree(settings.mqtt.topic_root)
        self.stats = AlertsStats()
        self.ready = asyncio.Event()  # both broker links connected and subscribed
        self._links_up: set[str] = set()
        self._pushes: set[asyncio.Task[None]] = set()
        self.stop = asyncio.Event()
        self._db = PriorityWorker()
        self._timer_wake = asyncio.Event()

    # -- the one place that touches the database from the event loop -----------------------------------------
    async def _db_call(self, fn: Callable[..., T], *args: Any, priority: int = HOUSEKEEPING_PRIORITY) -> T:
        return await self._db.call(priority, fn, *args)

    async def run(self, *, link: bool = True) -> None:
        """Serve until cancelled. With ``link=False`` there is no broker link: the caller receives the messages and
        hands each to :meth:`process`, and sets ``publisher.client`` (the demo, on an MQTT 3.1.1 broker)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                if link:
                    tasks.create_task(self._link(URGENT), name="alerts-link-urgent")
                    tasks.create_task(self._vitals_link(), name="alerts-link-vitals")
                tasks.create_task(self._ticker(), name="alerts-ticker")
                tasks.create_task(self._log_stats(), name="alerts-stats")
                tasks.create_task(self._collect_garbage(), name="alerts-gc")
                tasks.create_task(self.dispatcher.run(self.stop), name="alerts-dispatcher")
                if self.load_registry is not None:
                    tasks.create_task(self._refresh_registry(), name="alerts-registry")
        finally:
            self.stop.set()
            self._db.shutdown()

    # -- signals into the loop ------------------------------------------------------------------------------
    async def _handle_signals(self, signals: Sequence[Signal]) -> int:
        changes = 0
        for signal in signals:
            self.stats.signals += 1
            result = await self._db_call(
                partial(self.service.handle_signal, live_lease_s=LIVE_LEASE_S),
                signal,
                priority=_SIGNAL_PRIORITY.get(signal.severity, 1),
            )
            changes += len(result)
            for change in result:
                self._early_push(change)
        if changes:
            self.stats.changes += changes
            self.dispatcher.wake()
        if signals:
            self._timer_wake.set()  # a new cancel window or escalation may be due sooner than the ticker thinks
        return changes

    def _early_push(self, change: Any) -> None:
        """Publish a committed state change on the live topic at once, without waiting for the dispatcher.

        The change is already in the database with its outbox row, written with a lease of LIVE_LEASE_S: once the
        broker has the push, the row is recorded as delivered; if the push fails or this process dies first, the
        dispatcher sends the row when the lease runs out. Claiming the row through the dispatcher instead would
        put a second database commit and a thread hop between the alarm and the screen.
        """
        if getattr(change, "message", None) is None or self.publisher.client is None:
            return
        task = asyncio.create_task(self._push(change), name="alerts-early-push")
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _push(self, change: Any) -> None:
        message = change.message()
        topic = self.tree.alert_state(message.home_id)
        try:
            await self.publisher.publish(topic, encode(message), qos=1)
        except CONNECTION_ERRORS as exc:  # the outbox row goes out through the dispatcher after its lease
            log.info("early live push of %s failed (%s); the dispatcher delivers it", message.alert_id, exc)
            return
        self.stats.early_pushes += 1
        record = getattr(self.service, "record_live_push", None)
        if record is not None and change.live_notification_id is not None:
            await self._db_call(record, change.live_notification_id, f"PUBACK {topic}", priority=4)

    def _observe(self, observations: Sequence[Observation], now: float) -> list[Signal]:
        signals: list[Signal] = []
        for obs in observations:
            self.stats.observations += 1
            if isinstance(obs, VitalsObservation):
                self.contexts.add_vitals(obs)
            signals.extend(self.engine.observe(obs, self.book.profile(obs.resident_id, obs.home_id), now))
        return signals

    async def process(self, topic: str, payload: bytes) -> list[Signal]:
        """Validate one message and act on it; returns the signals it caused (rejections raise PayloadError)."""
        now = self.clock.now()
        parsed, message = decode_message(self.tree, topic, payload, now=now)
        if parsed.kind not in PRIORITY:
            raise PayloadError(RejectReason.UNKNOWN_TOPIC, f"alerts does not take {parsed.kind.value} messages")
        found = intake(parsed, message, self.book, now)
        for resident, location in found.locations:
            self.contexts.add_location(resident, location)
        signals = self._observe(found.observations, now)
        await self._handle_signals(signals)
        return signals

    # -- the central broker -----------------------------------------------------------------------------------
    # Two connections, each with its own persistent session: "urgent" (SOS, "I'm OK", edge events, device health)
    # and "vitals". The broker sends a client its messages in order, so on one connection an SOS would wait behind
    # every vitals message queued before it whenever the service falls behind (a burst, a restart with a backlog);
    # the priority queue only reorders what has already arrived. On its own connection an SOS waits for no
    # reading. Live pushes and bracelet commands go out on the urgent connection.
    def _filters(self, link: str) -> list[str]:
        urgent = link == URGENT
        return [self.tree.filter(kind) for kind in SUBSCRIBED if (PRIORITY[kind] < VITALS_PRIORITY) == urgent]

    def _mark(self, link: str, up: bool) -> None:
        if up:
            self._links_up.add(link)
        else:
            self._links_up.discard(link)
        self.stats.connected = len(self._links_up) == len(LINKS)
        if self.stats.connected:
            self.ready.set()
        else:
            self.ready.clear()

    async def _link(self, link: str) -> None:
        backoff = Backoff()
        client_id = f"{self.settings.alerts.client_id}-{link}"
        while True:
            try:
                client = mqtt_client(
                    self.settings.mqtt,
                    client_id=client_id,
                    clean_start=False,
                    session_expiry_s=self.settings.mqtt.session_expiry_s,
                    receive_maximum=self.settings.alerts.receive_maximum,
                    manual_ack=True,
                    queue_type=PriorityMessageQueue,
                )
                async with client:
                    self.stats.connects += 1
                    backoff.reset()
                    await subscribe_all(client, self._filters(link))
                    if link == URGENT:
                        self.publisher.client = client
                    log.info("alerts connected to %s as %s", self.settings.mqtt.url, client_id)
                    self._mark(link, True)
                    async for message in client.messages:
                        await self._receive(client, message)
            except* CONNECTION_ERRORS as group:
                log.warning("central broker link %s lost: %s", link, group.exceptions[0])
            finally:
                if link == URGENT:
                    self.publisher.client = None
                self._mark(link, False)
            await asyncio.sleep(backoff.next_delay())

    async def _vitals_link(self) -> None:
        """The vitals connection, on the kernel's lean MQTT 5 client: paho costs ~350 us a message here (its
        Properties objects and callbacks), which caps the service near 2,000 msg/s; this client ~6 us. Messages
        come a socket read at a time; each read's PUBACKs leave together once every message in it is processed.
        """
        mqtt = self.settings.mqtt
        client_id = f"{self.settings.alerts.client_id}-{VITALS}"
        options = SessionOptions(
            client_id=client_id,
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
            keepalive_s=mqtt.keepalive_s,
            clean_start=False,
            session_expiry_s=mqtt.session_expiry_s,
            receive_maximum=self.settings.alerts.receive_maximum,
        )
        ssl_context = ssl.create_default_context(cafile=mqtt.ca_file) if mqtt.tls else None
        backoff = Backoff()
        while True:
            # bounded by the receive maximum: the broker sends no more until we acknowledge
            inbox: asyncio.Queue[list[Received]] = asyncio.Queue()
            client = MqttClient(options, inbox.put_nowait)
            try:
                await client.open(mqtt.host, mqtt.port, ssl_context=ssl_context)
                await client.subscribe(self._filters(VITALS))
                self.stats.connects += 1
                backoff.reset()
                log.info("alerts connected to %s as %s", mqtt.url, client_id)
                self._mark(VITALS, True)
                consumer = asyncio.create_task(self._consume(client, inbox), name="alerts-vitals-consumer")
                try:
                    waiters: set[asyncio.Future[Any]] = {consumer, client.closed}
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    if consumer in done:
                        consumer.result()  # raises what stopped it
                    log.warning("central broker link vitals lost: %s", client.closed.result())
                finally:
                    consumer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await consumer
            except (Mqtt5Error, OSError, TimeoutError) as exc:
                log.warning("central broker link vitals: %s", exc)
            finally:
                client.abort()
                self._mark(VITALS, False)
            await asyncio.sleep(backoff.next_delay())

    async def _consume(self, client: MqttClient, inbox: asyncio.Queue[list[Received]]) -> None:
        while True:
            batch = await inbox.get()
            done: list[int] = []
            for n, (topic_bytes, payload, packet_id) in enumerate(batch):
                if n and not n % YIELD_EVERY:
                    await asyncio.sleep(0)  # a socket read holds hundreds of readings: let an SOS in between
                topic = topic_bytes.decode("utf-8", "replace")
                self.stats.received += 1
                try:
                    await self.process(topic, payload)
                except PayloadError as exc:
                    self.stats.rejected[exc.reason.value] += 1
                    letter = dead_letter(COMPONENT, topic, payload, exc, self.clock.now())
                    await client.publish(self.tree.dead_letter(COMPONENT), encode(letter))
                except Exception:
                    # The database refused: what is not acknowledged comes again after a reconnect; say it.
                    self.stats.service_errors += 1
                    log.exception("could not persist what %s says; it stays unacknowledged and comes again", topic)
                    client.ack(done)
                    client.abort("alert service failed")
                    return
                else:
                    self.stats.accepted += 1
                done.append(packet_id)
            client.ack(done)
            self.stats.acked += len(done)

    async def _receive(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = payload_bytes(message)
        self.stats.received += 1
        try:
            await self.process(topic, payload)
        except PayloadError as exc:
            self.stats.rejected[exc.reason.value] += 1
            letter = dead_letter(COMPONENT, topic, payload, exc, self.clock.now())
            log.info("rejected %s: %s: %s", topic, exc.reason.value, exc.detail)
            await client.publish(self.tree.dead_letter(COMPONENT), encode(letter), qos=1)
        except CONNECTION_ERRORS:
            raise
        except Exception:
            # The database refused (full disk, lost connection): do not acknowledge, so the broker keeps the
            # message and sends it again after we reconnect; say it loudly.
            self.stats.service_errors += 1
            log.exception("could not persist what %s says; it stays unacknowledged and comes again", topic)
            raise aiomqtt.MqttError("alert service failed; reconnecting to have the message again") from None
        else:
            self.stats.accepted += 1
        ack(client, message)
        self.stats.acked += 1

    async def _collect_garbage(self) -> None:
        """Full garbage collections on a schedule instead of whenever the heap has grown by a quarter.

        With 10,000 residents' rule and context state the heap holds ~600,000 objects and a full collection stops
        the process for ~240 ms (measured); CPython runs one each time long-lived objects grow by 25 %, which is
        several times while the state fills up, whenever alarms would be coming in. The young generations are
        still collected as usual; the full one runs here every GC_FULL_EVERY_S.
        """
        gc.set_threshold(*gc.get_threshold()[:2], 1_000_000)
        try:
            while True:
                await asyncio.sleep(GC_FULL_EVERY_S)
                started = time.perf_counter()
                found = gc.collect()
                log.info(
                    "full garbage collection: %d objects freed in %.0f ms",
                    found,
                    1000 * (time.perf_counter() - started),
                )
        finally:
            gc.set_threshold(*gc.get_threshold()[:2], DEFAULT_GC_THRESHOLD2)

    async def _log_stats(self, every_s: float = 10.0) -> None:
        """A line of counters every `every_s` for operators (and the latency bench, which reads the log)."""
        while True:
            await asyncio.sleep(every_s)
            st = self.stats
            log.info(
                "stats t=%.3f received=%d accepted=%d rejected=%d signals=%d changes=%d acked=%d connected=%s",
                time.time(),
                st.received,
                st.accepted,
                sum(st.rejected.values()),
                st.signals,
                st.changes,
                st.acked,
                st.connected,
            )

    # -- time ---------------------------------------------------------------------------------------------------
    def poke(self) -> None:
        """Look at the clock now: timers, time-driven rules and the outbox (tests call this after advancing a manual
        clock; a reminder held for quiet hours becomes due by the clock alone, so the dispatcher must look too)."""
        self._timer_wake.set()
        self.dispatcher.wake()

    async def _ticker(self) -> None:
        while True:
            # Cleared before the pass, not after it: a wake-up that comes during the pass (a new cancel window, a
            # poke) runs another pass at once instead of being lost until the next tick.
            self._timer_wake.clear()
            now = self.clock.now()
            await self._handle_signals(self.engine.tick(now))
            changes = await self._db_call(
                partial(self.service.fire_due, live_lease_s=LIVE_LEASE_S), priority=TIMERS_PRIORITY
            )
            for change in changes:
                self._early_push(change)
            if changes:
                self.stats.changes += len(changes)
                self.dispatcher.wake()
            due = await self._db_call(self.service.next_due)
            self.stats.ticks += 1
            wait = self.tick_s if due is None else max(0.0, min(self.tick_s, due - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout=wait)

    async def _refresh_registry(self) -> None:
        assert self.load_registry is not None
        while True:
            await asyncio.sleep(self.registry_refresh_s)
            try:
                self.book.replace(await self._db_call(self.load_registry))
            except Exception:  # the registry is down: keep the last good snapshot, and say so
                log.exception("registry refresh failed; keeping the snapshot from before")


async def run_until(app: AlertsApp, stop: Awaitable[Any]) -> None:
    """Run the app until `stop` completes (a signal handler's future, a test's event)."""
    task = asyncio.create_task(app.run(), name="alerts")
    try:
        await stop
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- assembling the service from settings --------------------------------------------------------------------------
@dataclass
class AlertsRuntime:
    """Everything `careloop alerts run` starts, built from settings; `close()` releases the databases."""

    app: AlertsApp
    service: AlertService
    store: AlertStore
    registry: Registry
    notifiers: dict[ChannelName, Notifier]

    def close(self) -> None:
        """Close the databases (after the app stopped)."""
        self.store.close()
        self.registry.close()


def build_runtime(
    settings: CareloopSettings,
    *,
    clock: Clock | None = None,
    rules: RuleSet | None = None,
    policy: EscalationPolicy | None = None,
    notifiers: Mapping[ChannelName, Notifier] | None = None,
    tick_s: float = 1.0,
) -> AlertsRuntime:
    """The alerts service on the settings' database and broker; extra or replacement notifiers may be given."""
    clock = clock or SystemClock()
    rules = rules or load_rules(settings.alerts.rules_file)
    policy = policy or load_escalation_policy(settings.alerts.escalation_file)
    registry = open_registry(settings.database.url)
    store = open_alert_store(settings.database.url)
    book = ResidentBook(load_snapshot(registry))
    contexts = ContextBook(book)
    engine = RuleEngine(rules, profile_of=lambda resident: book.snapshot.profiles.get(resident))
    now = clock.now()
    for profile in book.snapshot.profiles.values():  # so tick-driven rules (no data, medication) know everyone
        engine.update_profile(profile, now)
    directory = RegistryDirectory(registry, shifts=store, preferences=store)
    service = AlertService(
        store,
        policy,
        directory,
        clock,
        console_url=settings.alerts.console_url,
        context=lambda resident, home: contexts.context(resident, home, clock.now()),
    )
    publisher = _Publisher()
    tree = TopicTree(settings.mqtt.topic_root)
    senders: dict[ChannelName, Notifier] = {
        ChannelName.LIVE: LiveNotifier(publisher, tree),  # type: ignore[arg-type]
        ChannelName.BRACELET: BraceletNotifier(publisher, tree),  # type: ignore[arg-type]
    }
    a = settings.alerts
    if a.smtp_host:
        senders[ChannelName.EMAIL] = EmailNotifier(
            a.smtp_host,
            a.smtp_port,
            a.smtp_sender,
            username=a.smtp_username,
            password=a.smtp_password.get_secret_value() if a.smtp_password else None,
            starttls=a.smtp_starttls,
            console_url=a.console_url,
        )
    if a.webhook_url and a.webhook_secret:
        senders[ChannelName.WEBHOOK] = WebhookNotifier(a.webhook_url, a.webhook_secret.get_secret_value().encode())
    senders.update(notifiers or {})
    dispatcher = Dispatcher(service, senders, clock)
    app = AlertsApp(
        settings,
        engine=engine,
        service=service,
        dispatcher=dispatcher,
        book=book,
        contexts=contexts,
        clock=clock,
        publisher=publisher,
        load_registry=lambda: load_snapshot(registry),
        tick_s=tick_s,
    )
    return AlertsRuntime(app, service, store, registry, senders)
