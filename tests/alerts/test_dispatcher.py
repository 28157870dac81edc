"""The dispatcher on SQLite and PostgreSQL: every due notification sent and its outcome recorded, retries with a
deterministic backoff, failures shown to staff, bounded concurrency, woken at once by the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy.exc import OperationalError

from alerts.dispatcher import Dispatcher, ExponentialBackoff
from alerts.escalation import EscalationPolicy
from alerts.models import (
    AlertState,
    ChannelName,
    DeliveryError,
    DeliveryStatus,
    Notification,
    QuietHours,
    Recipient,
    RecipientKind,
    Severity,
    Signal,
    SignalAction,
)
from alerts.service import AlertService
from alerts.store import AlertStore, Delivery, open_alert_store
from careloop.clock import Clock, ManualClock, SystemClock
from careloop.messages import AlertStateChange

T0 = 1_790_000_000.0  # 22:13 in Shanghai: the daughter's quiet hours


@dataclass
class People:
    """A directory: two nurses covering the home, a daughter with quiet hours who wants reminders, a bracelet."""

    nurses: list[Recipient] = field(
        default_factory=lambda: [
            Recipient(
                f"nurse-{i}",
                RecipientKind.STAFF,
                f"Nurse {i}",
                role="nurse",
                email=f"n{i}@care.example",
                channels=(ChannelName.LIVE, ChannelName.EMAIL),
                min_severity=Severity.LOW,
            )
            for i in (1, 2)
        ]
    )

    def staff_covering(self, role: str, home_id: str) -> list[Recipient]:
        return self.nurses if role == "grid_staff" else []

    def staff_on_duty(self, role: str, home_id: str, now: float) -> list[Recipient]:
        return []

    def family(self, resident_id: str) -> list[Recipient]:
        quiet = QuietHours("22:00", "07:00", "Asia/Shanghai")
        daughter = Recipient("family:1", RecipientKind.FAMILY, "Mei", email="mei@example.org", quiet_hours=quiet)
        return [daughter]

    def emergency_contacts(self, resident_id: str) -> list[Recipient]:
        return []

    def resident(self, resident_id: str) -> Recipient | None:
        return Recipient(
            "resident:R0001", RecipientKind.RESIDENT, "Wang Wei", device_id="BR0001", channels=(ChannelName.BRACELET,)
        )


Scripted = str | BaseException


class Channel:
    """A notifier that follows a script of outcomes (a receipt, or an exception to raise), then accepts."""

    def __init__(self, channel: ChannelName, *script: Scripted, pause_s: float = 0.0) -> None:
        self.channel = channel
        self.script = list(script)
        self.pause_s = pause_s
        self.sent: list[Notification] = []
        self.tried: list[str] = []
        self.active = 0
        self.peak = 0
        self.arrived = asyncio.Event()
        self.hang = False

    async def send(self, notification: Notification) -> str:
        self.tried.append(notification.notification_id)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.pause_s)
            outcome = self.script.pop(0) if self.script else f"{self.channel.value} accepted"
            if isinstance(outcome, BaseException):
                raise outcome
            self.sent.append(notification)
            self.arrived.set()
            return outcome
        finally:
            self.active -= 1


@pytest.fixture
def store(db_url: str) -> Iterator[AlertStore]:
    with open_alert_store(db_url) as opened:
        yield opened


def service(store: AlertStore, clock: Clock) -> AlertService:
    return AlertService(store, EscalationPolicy.default(), People(), clock, console_url="https://console.example")


def sos(ts: float, source: str = "sos-1") -> Signal:
    return Signal("R0001", "H0001", "sos", SignalAction.RAISE, Severity.HIGH, ts, "sos-button", source)


def battery(ts: float) -> Signal:
    return Signal("R0001", "H0001", "battery_low", SignalAction.RAISE, Severity.REMINDER, ts, "battery", "bat-1")


def by_recipient(deliveries: list[Delivery]) -> dict[tuple[str, str], Delivery]:
    return {(d.notification.recipient.recipient_id, d.notification.channel.value): d for d in deliveries}


def channels(**overrides: Channel) -> dict[ChannelName, Channel]:
    made = {name: Channel(name) for name in ChannelName}
    made.update({ChannelName(k): v for k, v in overrides.items()})
    return made


async def test_due_notifications_are_delivered_with_receipts_and_a_reminder_waits_for_quiet_hours(
    store: AlertStore,
) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    [alarm] = loop.handle_signal(sos(T0))
    [reminder] = loop.handle_signal(battery(T0))
    notifiers = channels()
    dispatcher = Dispatcher(loop, notifiers, clock)
    assert await dispatcher.run_once() == 6  # the alarm: console, 2 nurses, daughter; the reminder: console, bracelet
    assert await dispatcher.run_once() == 0
    alarm_deliveries = by_recipient(loop.deliveries(alarm.alert.alert_id))
    assert {d.status for d in alarm_deliveries.values()} == {DeliveryStatus.DELIVERED}
    assert alarm_deliveries[("nurse-1", "email")].receipt == "email accepted"
    assert alarm_deliveries[("nurse-1", "email")].delivered_ts == T0
    assert alarm_deliveries[("nurse-1", "email")].attempts == 1
    pushed = notifiers[ChannelName.LIVE].sent
    assert sorted(AlertStateChange.model_validate(n.payload).kind for n in pushed) == ["battery_low", "sos"]
    reminder_deliveries = by_recipient(loop.deliveries(reminder.alert.alert_id))
    assert reminder_deliveries[("resident:R0001", "bracelet")].status is DeliveryStatus.DELIVERED
    waiting = reminder_deliveries[("family:1", "email")]
    assert waiting.status is DeliveryStatus.PENDING  # quiet hours: the reminder waits until 07:00
    assert waiting.attempts == 0
    clock.set(waiting.next_attempt_at or 0)
    assert await dispatcher.run_once() == 1
    assert by_recipient(loop.deliveries(reminder.alert.alert_id))[("family:1", "email")].status is (
        DeliveryStatus.DELIVERED
    )


async def test_transient_failures_back_off_deterministically_then_fail_and_show_to_staff(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    [alarm] = loop.handle_signal(sos(T0))
    busy = DeliveryError("451 4.3.0 try again later", transient=True)
    email = Channel(ChannelName.EMAIL, *[busy] * 9)  # three e-mails (two nurses, the daughter), three tries each
    dispatcher = Dispatcher(loop, channels(email=email), clock, max_attempts=3, backoff=ExponentialBackoff(5, 2, 60))

    def nurse() -> Delivery:
        return by_recipient(loop.deliveries(alarm.alert.alert_id))[("nurse-1", "email")]

    await dispatcher.run_once()
    assert (nurse().status, nurse().attempts, nurse().next_attempt_at) == (DeliveryStatus.RETRYING, 1, T0 + 5)
    assert nurse().last_error == "451 4.3.0 try again later"
    clock.advance(4.9)
    assert await dispatcher.run_once() == 0  # not due yet
    clock.advance(0.1)
    await dispatcher.run_once()
    assert (nurse().status, nurse().attempts, nurse().next_attempt_at) == (DeliveryStatus.RETRYING, 2, T0 + 15)
    clock.advance(10)
    await dispatcher.run_once()
    assert nurse().status is DeliveryStatus.FAILED
    assert nurse().last_error == "451 4.3.0 try again later (gave up after 3 attempts)"
    assert nurse().next_attempt_at is None
    failed = {d.notification.recipient.recipient_id for d in loop.failed_deliveries()}
    assert failed == {"nurse-1", "nurse-2", "family:1"}
    audit = [e for e in loop.audit(alert_id=alarm.alert.alert_id) if e.action == "delivery_failed"]
    assert {e.detail["recipient_id"] for e in audit} == failed
    assert all(e.detail["attempts"] == 3 for e in audit)


async def test_a_permanent_failure_fails_at_once(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    [alarm] = loop.handle_signal(sos(T0))
    email = Channel(ChannelName.EMAIL, DeliveryError("550 5.1.1 no such mailbox", transient=False))
    await Dispatcher(loop, channels(email=email), clock).run_once()
    [failed] = loop.failed_deliveries()
    assert failed.notification.alert_id == alarm.alert.alert_id
    assert (failed.attempts, failed.last_error) == (1, "550 5.1.1 no such mailbox")


async def test_an_unexpected_exception_is_a_transient_failure_recorded_with_its_type(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    [alarm] = loop.handle_signal(sos(T0))
    email = Channel(ChannelName.EMAIL, KeyError("smtp_host"))
    await Dispatcher(loop, channels(email=email), clock, backoff=lambda attempt: 7.0).run_once()
    retrying = [d for d in loop.deliveries(alarm.alert.alert_id) if d.status is DeliveryStatus.RETRYING]
    assert [(d.last_error, d.next_attempt_at) for d in retrying] == [("KeyError: 'smtp_host'", T0 + 7)]


async def test_a_gateways_retry_after_is_honoured_when_longer_than_the_backoff(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    loop.handle_signal(sos(T0))
    email = Channel(ChannelName.EMAIL, DeliveryError("HTTP 429", transient=True, retry_after_s=120.0))
    await Dispatcher(loop, channels(email=email), clock).run_once()
    [retrying] = [d for d in store.deliveries() if d.status is DeliveryStatus.RETRYING]
    assert retrying.next_attempt_at == T0 + 120


async def test_a_channel_without_a_notifier_fails_visibly(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    loop.handle_signal(battery(T0))  # a reminder to the bracelet
    notifiers = channels()
    del notifiers[ChannelName.BRACELET]
    await Dispatcher(loop, notifiers, clock).run_once()
    [failed] = loop.failed_deliveries()
    assert failed.last_error == "no notifier for the bracelet channel is configured"


async def test_a_send_that_never_answers_times_out_and_is_retried(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    loop.handle_signal(sos(T0))
    email = Channel(ChannelName.EMAIL)
    email.hang = True
    await Dispatcher(loop, channels(email=email), clock, send_timeout_s=0.05).run_once()
    retrying = [d for d in store.deliveries() if d.status is DeliveryStatus.RETRYING]
    assert len(retrying) == 3
    assert retrying[0].last_error == "no answer from the email channel within 0.05 s"


async def test_each_channel_sends_at_most_its_limit_at_once(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    for i in range(4):
        loop.handle_signal(Signal("R0001", "H0001", f"kind{i}", SignalAction.RAISE, Severity.HIGH, T0, "r", f"s{i}"))
    email = Channel(ChannelName.EMAIL, pause_s=0.01)
    live = Channel(ChannelName.LIVE, pause_s=0.01)
    dispatcher = Dispatcher(loop, channels(email=email, live=live), clock, concurrency={ChannelName.EMAIL: 2})
    assert await dispatcher.run_once() == 16
    assert len(email.sent) == 12
    assert email.peak == 2
    assert live.peak == 1  # a channel not named gets one at a time


async def test_run_sends_at_once_when_woken_and_stops_when_told(store: AlertStore) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    live = Channel(ChannelName.LIVE)
    dispatcher = Dispatcher(loop, channels(live=live), clock, idle_s=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(0.05)  # asleep for an hour: nothing is due
    assert live.sent == []
    await asyncio.to_thread(loop.handle_signal, sos(T0))  # the app's database thread
    dispatcher.wake()
    await asyncio.wait_for(live.arrived.wait(), timeout=10)
    assert [n.state for n in live.sent] == [AlertState.OPEN]
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    dispatcher.wake()  # not running: nothing happens


class IdleOutbox:
    """An outbox with nothing in it, that says when the dispatcher has looked (and gone to sleep)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.looked = asyncio.Event()

    def claim_due(self, now: float, *, limit: int, lease_s: float) -> list[Delivery]:
        return []

    def next_delivery_at(self) -> float | None:
        self.loop.call_soon_threadsafe(self.looked.set)
        return None


@pytest.mark.parametrize("steps", range(8))
async def test_run_stops_when_cancelled_right_after_a_wake_up(steps: int) -> None:
    # The app stops the dispatcher by cancelling it. A cancel that lands while the dispatcher is putting away its
    # wake-up waiters (some loop steps after a wake()) used to be swallowed with theirs: it ran on, and a restart
    # of the alerts service hung. Each case lands the cancel one loop step later.
    outbox = IdleOutbox()
    dispatcher = Dispatcher(outbox, {}, ManualClock(T0), idle_s=3600)  # type: ignore[arg-type]
    task = asyncio.create_task(dispatcher.run(asyncio.Event()))
    await asyncio.wait_for(outbox.looked.wait(), timeout=10)
    for _ in range(3):
        await asyncio.sleep(0)  # into its sleep
    dispatcher.wake()
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the dispatcher did not stop when cancelled"
    assert task.cancelled()


async def test_run_retries_when_the_next_attempt_is_due_without_being_woken(store: AlertStore) -> None:
    clock = SystemClock()
    loop = service(store, clock)
    live = Channel(ChannelName.LIVE, DeliveryError("broker away", transient=True))
    dispatcher = Dispatcher(loop, channels(live=live), clock, backoff=lambda attempt: 0.2, idle_s=3600)
    loop.handle_signal(sos(time.time()))
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await asyncio.wait_for(live.arrived.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    [delivered] = [d for d in store.deliveries() if d.notification.channel is ChannelName.LIVE]
    assert (delivered.status, delivered.attempts, delivered.last_error) == (DeliveryStatus.DELIVERED, 2, "broker away")


def test_backoff_is_exponential_and_capped() -> None:
    backoff = ExponentialBackoff(5, 2, 60)
    assert [backoff(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_a_lease_must_outlast_a_send(store: AlertStore) -> None:
    with pytest.raises(ValueError, match="lease_s"):
        Dispatcher(store, {}, ManualClock(T0), send_timeout_s=60, lease_s=30)
    with pytest.raises(ValueError, match="max_attempts"):
        Dispatcher(store, {}, ManualClock(T0), max_attempts=0)


async def test_run_waits_out_a_database_outage_and_loses_nothing(
    store: AlertStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(T0)
    loop = service(store, clock)
    loop.handle_signal(sos(T0))
    live = Channel(ChannelName.LIVE)
    dispatcher = Dispatcher(loop, channels(live=live), clock, idle_s=3600)
    claim = store.claim_due
    outages = [OperationalError("SELECT ...", {}, Exception("connection refused"))]

    def flaky(now: float, *, limit: int, lease_s: float) -> list[Delivery]:
        if outages:
            raise outages.pop()
        return claim(now, limit=limit, lease_s=lease_s)

    monkeypatch.setattr(store, "claim_due", flaky)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await asyncio.wait_for(live.arrived.wait(), timeout=10)  # tried again after 1 s
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert "the outbox database is unavailable" in caplog.text
    assert {d.status for d in store.deliveries()} == {DeliveryStatus.DELIVERED}
