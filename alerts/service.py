"""The alert loop as a service: signals and people's actions in, persisted state, audit and outbox out.

Every public call is synchronous and one database transaction, and reads the injected clock once. The pure
lifecycle (``lifecycle.py``) decides; this shell carries out its effects in that transaction: the alert's new
snapshot, the transition and its audit entry, timers set or cancelled, and every notification it causes, written
to the outbox *before* anything is sent (``dispatcher.py`` sends afterwards and records each outcome).

Who is notified comes from the escalation policy and the recipient directory. Each notification has a stable id
(alert id / transition seq / channel / recipient), a plain-words title and body (resident, kind, value, severity,
state, link to the console) and the alarm context. Every published state change also puts one LIVE notification
for the home's console (recipient ``console:<home>``) in the outbox, its payload the wire contract's
``AlertStateChange``; a person's own "live" channel is that console push. Quiet hours hold reminders
(``next_attempt_at`` at the window's end) and never alarms; a reminder still waiting when its alert closes is
SUPPRESSED. A person without the address a channel needs (no e-mail, no phone, no bracelet) gets a FAILED row at
once, so it shows in :meth:`AlertService.failed_deliveries`; when nobody at a level can be reached, the alarm
escalates to the next level at once instead of waiting for a timeout.

The dashboard maps :class:`AlertNotFound` to 404 and :class:`~alerts.lifecycle.InvalidTransition` to 409.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from alerts.escalation import EscalationPolicy, RecipientDirectory, ScopedDirectory, route
from alerts.lifecycle import (
    SYSTEM,
    Acknowledge,
    AlertSnapshot,
    CancelTimer,
    CancelWindowElapsed,
    ConditionCleared,
    EscalationTimeout,
    InvalidTransition,
    LoopEvent,
    Notify,
    PromotionDue,
    PublishChange,
    RecordTransition,
    RepeatTimeout,
    ResidentOk,
    Resolve,
    ScheduleTimer,
    SignalRaised,
    StartHandling,
    TimerKind,
    transition,
)
from alerts.models import (
    AlertState,
    ChannelName,
    DeliveryStatus,
    Notification,
    Outcome,
    Recipient,
    RecipientKind,
    Severity,
    Signal,
    SignalAction,
)
from alerts.notify.preferences import earliest_delivery
from alerts.roster import Preferences
from alerts.store import AlertStore, AuditEntry, Delivery, StoreTransaction, TransitionRecord, notification_id
from careloop.clock import Clock
from careloop.messages import AlertStateChange

#: At most this many timers fire in one call; more due ones fire in the next (``next_due`` says they are due).
MAX_TIMERS_PER_CALL = 1000
#: The longest reason the wire contract carries.
_SHORT_TEXT = 500
#: How long a reminder vibrates the bracelet, ms.
BRACELET_VIBRATE_MS = 400
_BRACELET_TEXT = 160

AlarmContext = Callable[[str, str], Mapping[str, object]]


class AlertNotFound(LookupError):
    """No alert has this id."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"no alert {alert_id!r}")
        self.alert_id = alert_id


@dataclass(slots=True, frozen=True)
class AlertView:
    """An alert as the console shows it."""

    alert_id: str
    resident_id: str
    home_id: str
    kind: str
    rule_id: str
    severity: Severity
    state: AlertState
    count: int
    value: float | None
    unit: str | None
    reason: str
    level: int
    condition_active: bool
    created_ts: float
    updated_ts: float
    acknowledged_by: str | None
    acknowledged_ts: float | None
    handled_by: str | None
    handling_ts: float | None
    resolved_by: str | None
    resolved_ts: float | None
    outcome: Outcome | None
    note: str | None
    closed_ts: float | None
    link: str | None
    detail: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, alert: AlertSnapshot, link: str | None) -> AlertView:
        """The view of a lifecycle snapshot."""
        return cls(
            alert_id=alert.alert_id,
            resident_id=alert.resident_id,
            home_id=alert.home_id,
            kind=alert.kind,
            rule_id=alert.rule_id,
            severity=alert.severity,
            state=alert.state,
            count=alert.count,
            value=alert.value,
            unit=alert.unit,
            reason=alert.reason,
            level=alert.level,
            condition_active=alert.condition_active,
            created_ts=alert.created_ts,
            updated_ts=alert.updated_ts,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_ts=alert.acknowledged_ts,
            handled_by=alert.handled_by,
            handling_ts=alert.handling_ts,
            resolved_by=alert.resolved_by,
            resolved_ts=alert.resolved_ts,
            outcome=alert.outcome,
            note=alert.note,
            closed_ts=alert.closed_ts,
            link=link,
            detail=alert.detail,
        )


@dataclass(slots=True, frozen=True)
class AlertChange:
    """A published change of an alert: what the live topic carries (see :meth:`message`)."""

    alert: AlertView
    previous_state: AlertState | None
    action: str
    actor: str
    reason: str
    ts: float
    #: the outbox row of this change's live push (set once the row is written)
    live_notification_id: str | None = None

    def message(self) -> AlertStateChange:
        """The wire contract's state change (ValidationError only if an id breaks the contract)."""
        return AlertStateChange.model_validate(self.fields())

    def fields(self) -> dict[str, Any]:
        """The AlertStateChange fields, as JSON values."""
        a = self.alert
        return {
            "v": 1,
            "alert_id": a.alert_id,
            "ts": self.ts,
            "home_id": a.home_id,
            "resident_id": a.resident_id,
            "kind": a.kind,
            "severity": a.severity.value,
            "state": a.state.value,
            "previous_state": None if self.previous_state is None else self.previous_state.value,
            "actor": self.actor[:_SHORT_TEXT],
            "reason": self.reason[:_SHORT_TEXT],
            "count": a.count,
            "value": None if a.value is None else float(a.value),
            "outcome": None if a.outcome is None else a.outcome.value,
        }


def console_recipient(home_id: str) -> Recipient:
    """The web console of a home: the recipient of its live state changes."""
    return Recipient(
        recipient_id=f"console:{home_id}",
        kind=RecipientKind.STAFF,
        name=f"console of home {home_id}",
        channels=(ChannelName.LIVE,),
        min_severity=Severity.REMINDER,
    )


def new_alert_id() -> str:
    """A fresh alert id (a wire identifier)."""
    return f"al-{uuid.uuid4().hex[:20]}"


_TIMER_EVENTS: Mapping[TimerKind, Callable[[int], LoopEvent]] = {
    TimerKind.CANCEL_WINDOW: lambda _level: CancelWindowElapsed(),
    TimerKind.PROMOTE: lambda _level: PromotionDue(),
    TimerKind.ESCALATE: EscalationTimeout,
    TimerKind.REPEAT: RepeatTimeout,
}


class AlertService:
    """The persistent reminder -> alarm -> handling loop (see the module docstring)."""

    def __init__(
        self,
        store: AlertStore,
        policy: EscalationPolicy,
        directory: RecipientDirectory,
        clock: Clock,
        *,
        console_url: str | None = None,
        context: AlarmContext | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.directory = directory
        self.clock = clock
        self.console_url = console_url.rstrip("/") if console_url else None
        self.context = context
        self._call = threading.local()  # per call: how long the dispatcher leaves live pushes to the caller

    # -- signals and timers ---------------------------------------------------------------------------------------
    def handle_signal(self, signal: Signal, *, live_lease_s: float = 0.0) -> list[AlertChange]:
        """Apply a rule's signal: open, count, clear or cancel; a signal seen before (its source id) is a no-op.

        ``live_lease_s`` > 0: the caller publishes the returned changes on the live topic itself, at once, and
        calls :meth:`record_live_push`; the dispatcher sends a change's live row only if that lease runs out.
        """
        self._call.live_lease_s = live_lease_s
        try:
            return self._handle_signal(signal)
        finally:
            self._call.live_lease_s = 0.0

    def _handle_signal(self, signal: Signal) -> list[AlertChange]:
        now = self.clock.now()
        for attempt in (1, 2):
            try:
                with self._directory() as directory, self.store.transaction() as tx:
                    if tx.signal_seen(signal):
                        return []
                    alert_id, changes = self._signal(tx, directory, signal, now)
                    tx.mark_signal(signal, alert_id, now)
                return changes
            except IntegrityError:
                # Another process opened the same alert or handled the same signal between our read and our
                # write: once more, and it is a repeat or a no-op.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def fire_due(self, *, live_lease_s: float = 0.0) -> list[AlertChange]:
        """Fire every timer due now (cancel windows, promotions, escalations, repeats), each exactly once
        (``live_lease_s``: as for :meth:`handle_signal`)."""
        self._call.live_lease_s = live_lease_s
        try:
            return self._fire_due()
        finally:
            self._call.live_lease_s = 0.0

    def _fire_due(self) -> list[AlertChange]:
        now = self.clock.now()
        changes: list[AlertChange] = []
        with self._directory() as directory, self.store.transaction() as tx:
            for _ in range(MAX_TIMERS_PER_CALL):
                found = tx.next_due_timer(now)
                if found is None:
                    break
                # The alert first, then its timer: the order every other writer takes, so no deadlock; a timer
                # another process fired or moved meanwhile is gone or no longer due.
                alert = tx.alert(found.alert_id, lock=True)
                timer = tx.lock_timer(found.key)
                if timer is None or timer.due_ts > now:
                    continue
                tx.delete_timer(timer.key)
                if alert is None:
                    continue
                event = _TIMER_EVENTS[timer.kind](timer.level)
                try:
                    _, fired = self._step(tx, directory, alert, event, now)
                except InvalidTransition as exc:
                    # A timer the alert outgrew (the lifecycle cancels them; this is the belt to those braces).
                    detail = {"timer": timer.kind.value, "level": timer.level, "due_ts": timer.due_ts, "why": str(exc)}
                    tx.append_audit(now, SYSTEM, "timer_ignored", alert.alert_id, detail)
                    continue
                changes.extend(fired)
        return changes

    def record_live_push(self, notification_id: str, receipt: str) -> None:
        """The caller published a change's live row itself (see ``live_lease_s``): record it as delivered."""
        self.store.record_delivered(notification_id, receipt, self.clock.now())

    def next_due(self) -> float | None:
        """When the next timer is due (None: no timer)."""
        return self.store.next_due()

    # -- people's actions -------------------------------------------------------------------------------------------
    def acknowledge(self, alert_id: str, actor: str, note: str | None = None) -> AlertView:
        """``actor`` has seen the alert and takes it: escalation and repeats stop."""
        return self._act(alert_id, Acknowledge(actor, note))

    def start_handling(self, alert_id: str, actor: str, note: str | None = None) -> AlertView:
        """``actor`` is going / working on it (acknowledging it too if nobody had)."""
        return self._act(alert_id, StartHandling(actor, note))

    def resolve(self, alert_id: str, actor: str, outcome: Outcome, note: str | None = None) -> AlertView:
        """``actor`` closes the alert with an outcome and an optional note."""
        return self._act(alert_id, Resolve(actor, outcome, note))

    def record_view(self, alert_id: str, actor: str) -> None:
        """``actor`` looked at the alert: a line in the audit log ("who saw")."""
        now = self.clock.now()
        with self.store.transaction() as tx:
            if tx.alert(alert_id) is None:
                raise AlertNotFound(alert_id)
            tx.append_audit(now, actor, "viewed", alert_id, {})

    def set_preferences(self, recipient_id: str, preferences: Preferences) -> None:
        """Store a recipient's channels, quiet hours and minimum severity."""
        self.store.set_preferences(recipient_id, preferences, self.clock.now())

    # -- reading ------------------------------------------------------------------------------------------------------
    def get(self, alert_id: str) -> AlertView:
        """One alert."""
        with self.store.reading() as tx:
            alert = tx.alert(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        return self._view(alert)

    def list_alerts(
        self, *, open_only: bool = False, home_id: str | None = None, resident_id: str | None = None, limit: int = 100
    ) -> list[AlertView]:
        """Alerts, newest first (only open ones, of one home, of one resident)."""
        with self.store.reading() as tx:
            alerts = tx.list_alerts(open_only=open_only, home_id=home_id, resident_id=resident_id, limit=limit)
        return [self._view(a) for a in alerts]

    def history(self, alert_id: str) -> list[TransitionRecord]:
        """An alert's transitions, in order."""
        with self.store.reading() as tx:
            if tx.alert(alert_id) is None:
                raise AlertNotFound(alert_id)
            return tx.transitions(alert_id)

    def audit(self, *, alert_id: str | None = None, since: float | None = None) -> list[AuditEntry]:
        """The audit log in the order it was written (of one alert, from a time)."""
        with self.store.reading() as tx:
            return tx.audit(alert_id=alert_id, since=since)

    def deliveries(self, alert_id: str) -> list[Delivery]:
        """Every notification of an alert and how its delivery stands."""
        return self.store.deliveries(alert_id=alert_id)

    def failed_deliveries(self, *, limit: int = 100) -> list[Delivery]:
        """Notifications given up on (permanent failure or attempts exhausted), for staff to act on."""
        return self.store.deliveries(status=DeliveryStatus.FAILED, limit=limit)

    # -- the shell ----------------------------------------------------------------------------------------------------
    def _act(self, alert_id: str, event: LoopEvent) -> AlertView:
        now = self.clock.now()
        with self._directory() as directory, self.store.transaction() as tx:
            alert = tx.alert(alert_id, lock=True)
            if alert is None:
                raise AlertNotFound(alert_id)
            after, _ = self._step(tx, directory, alert, event, now)
        return self._view(after)

    def _directory(self) -> AbstractContextManager[RecipientDirectory]:
        """The directory for one call: one read for all its questions, when the directory can do that."""
        if isinstance(self.directory, ScopedDirectory):
            return self.directory.scope()
        return contextlib.nullcontext(self.directory)

    def _signal(
        self, tx: StoreTransaction, directory: RecipientDirectory, signal: Signal, now: float
    ) -> tuple[str | None, list[AlertChange]]:
        current = tx.open_alert(signal.resident_id, signal.kind)
        if signal.action is SignalAction.RAISE:
            event = SignalRaised(signal, new_alert_id() if current is None else current.alert_id)
            after, raised = self._step(tx, directory, current, event, now)
            return after.alert_id, raised
        if signal.action is SignalAction.CLEAR:
            if current is None:
                return None, []
            return current.alert_id, self._step(tx, directory, current, ConditionCleared(signal.reason), now)[1]
        # "I'm OK": the alert of this kind, or else whatever of the resident's is still in its cancel window.
        targets = [current] if current is not None else tx.pending_alerts(signal.resident_id)
        changes: list[AlertChange] = []
        for target in targets:
            changes.extend(self._step(tx, directory, target, ResidentOk(f"resident:{signal.resident_id}"), now)[1])
        return (targets[0].alert_id if targets else None), changes

    def _step(
        self,
        tx: StoreTransaction,
        directory: RecipientDirectory,
        alert: AlertSnapshot | None,
        event: LoopEvent,
        now: float,
    ) -> tuple[AlertSnapshot, list[AlertChange]]:
        after, effects = transition(alert, event, now, self.policy)
        tx.save_alert(after, new=alert is None)
        changes: list[AlertChange] = []
        record: RecordTransition | None = None
        reached = True
        for effect in effects:
            if isinstance(effect, RecordTransition):
                record = effect
                tx.add_transition(after, effect, now)
                tx.append_audit(now, effect.actor, effect.action, after.alert_id, _transition_detail(after, effect))
            elif isinstance(effect, ScheduleTimer):
                tx.set_timer(after.alert_id, effect.kind, effect.due, effect.level)
            elif isinstance(effect, CancelTimer):
                tx.cancel_timer(after.alert_id, effect.kind)
            elif isinstance(effect, Notify):
                reached = self._notify(tx, directory, after, effect, now)
            elif isinstance(effect, PublishChange):
                assert record is not None, "the lifecycle records a transition before publishing it"
                change = AlertChange(
                    self._view(after), effect.previous_state, record.action, effect.actor, effect.reason, now
                )
                changes.append(self._publish(tx, after, change))
        if after.state.is_closed:
            tx.suppress_waiting_reminders(after.alert_id, now)
        if (
            not reached
            and after.state is AlertState.OPEN
            and after.severity.is_alarm
            and self.policy.has_next(after.level)
        ):
            # Nobody this level pages can be reached: waiting out the timeout would only delay the next level.
            name = self.policy.level(after.level).name
            skip = EscalationTimeout(after.level, reason=f"nobody to page at level {after.level} ({name})")
            after, more = self._step(tx, directory, after, skip, now)
            changes.extend(more)
        return after, changes

    def _notify(
        self, tx: StoreTransaction, directory: RecipientDirectory, alert: AlertSnapshot, effect: Notify, now: float
    ) -> bool:
        """Put the level's notifications in the outbox; False when nobody the level pages can be reached (the family
        and the bracelet are informed, not paged)."""
        routed = route(
            self.policy,
            directory,
            effect.level,
            resident_id=alert.resident_id,
            home_id=alert.home_id,
            severity=alert.severity,
            now=now,
            repeat=effect.repeat,
        )
        context = self._alarm_context(tx, directory, alert, now) if routed else {}
        resident_name = str(context.get("resident_name", alert.resident_id))
        reached: set[str] = set()
        paged: set[str] = set()
        unreachable: set[str] = set()
        for recipient, is_paged in ((r.recipient, r.paged) for r in routed):
            rid = recipient.recipient_id
            channels = [c for c in recipient.channels if c is not ChannelName.LIVE]
            ok = len(channels) < len(recipient.channels)  # their live channel is the console's push
            for channel in channels:
                notification = self._compose(alert, recipient, channel, effect, resident_name, context, now)
                problem = _unreachable(recipient, channel)
                if problem is None:
                    due = earliest_delivery(recipient, alert.severity, now)
                    tx.add_notification(notification, alert.seq, next_attempt_at=due)
                    ok = True
                    continue
                tx.add_notification(
                    notification, alert.seq, next_attempt_at=None, status=DeliveryStatus.FAILED, last_error=problem
                )
                unreachable.add(rid)
                detail = {
                    "notification_id": notification.notification_id,
                    "channel": channel.value,
                    "recipient_id": rid,
                    "attempts": 0,
                    "error": problem,
                }
                tx.append_audit(now, SYSTEM, "delivery_failed", alert.alert_id, detail)
            if ok:
                reached.add(rid)
                if is_paged:
                    paged.add(rid)
        detail = {
            "level": effect.level,
            "level_name": self.policy.level(effect.level).name,
            "repeat": effect.repeat,
            "recipients": sorted(reached),
            "paged": sorted(paged),
            "unreachable": sorted(unreachable - reached),
            "reason": effect.reason,
        }
        tx.append_audit(now, SYSTEM, "notify" if reached else "nobody_to_notify", alert.alert_id, detail)
        return bool(paged)

    def _compose(
        self,
        alert: AlertSnapshot,
        recipient: Recipient,
        channel: ChannelName,
        effect: Notify,
        resident_name: str,
        context: Mapping[str, object],
        now: float,
    ) -> Notification:
        payload: dict[str, object] = {}
        if channel is ChannelName.BRACELET:
            text = (alert.reason or _words(alert.kind))[:_BRACELET_TEXT]
            payload = {"action": "reminder", "text": text, "vibrate_ms": BRACELET_VIBRATE_MS}
        return self._notification(
            alert, recipient, channel, resident_name, effect.reason, now, effect.level, payload, context
        )

    def _notification(
        self,
        alert: AlertSnapshot,
        recipient: Recipient,
        channel: ChannelName,
        resident_name: str,
        reason: str,
        ts: float,
        level: int,
        payload: Mapping[str, object],
        context: Mapping[str, object] | None = None,
    ) -> Notification:
        """What one recipient is told of an alert on one channel (its id is stable for the alert's version)."""
        link = self._link(alert.alert_id)
        return Notification(
            notification_id=notification_id(alert.alert_id, alert.seq, channel, recipient.recipient_id),
            alert_id=alert.alert_id,
            resident_id=alert.resident_id,
            home_id=alert.home_id,
            kind=alert.kind,
            severity=alert.severity,
            state=alert.state,
            recipient=recipient,
            channel=channel,
            title=_title(alert, resident_name),
            body=_body(alert, resident_name, reason, link),
            created_ts=ts,
            link=link,
            escalation_level=level,
            context=context if context is not None else {},
            payload=payload,
        )

    def _publish(self, tx: StoreTransaction, alert: AlertSnapshot, change: AlertChange) -> AlertChange:
        console = console_recipient(alert.home_id)
        fields = change.fields()
        try:
            payload: dict[str, object] = change.message().model_dump(mode="json")
        except ValidationError:
            # Keep the transition: the live notifier refuses this payload, and the FAILED delivery shows why.
            payload = fields
        notification = self._notification(
            alert, console, ChannelName.LIVE, alert.resident_id, change.reason, change.ts, alert.level, payload
        )
        # With a live lease (handle_signal / fire_due) the caller pushes the change itself right after the commit
        # and records it; the dispatcher sends the row only if that has not happened within the lease.
        lease = getattr(self._call, "live_lease_s", 0.0)
        tx.add_notification(notification, alert.seq, next_attempt_at=change.ts + lease)
        return replace(change, live_notification_id=notification.notification_id)

    def _alarm_context(
        self, tx: StoreTransaction, directory: RecipientDirectory, alert: AlertSnapshot, now: float
    ) -> dict[str, object]:
        extra: Mapping[str, object] = {}
        error: str | None = None
        if self.context is not None:
            try:
                extra = self.context(alert.resident_id, alert.home_id)
            except Exception as exc:  # the page goes out without the context, and says why (audit, context_error)
                error = f"{type(exc).__name__}: {exc}"
        # The registry's name only when the context does not bring one (the context's name wins).
        name: object = alert.resident_id
        if "resident_name" not in extra:
            resident = directory.resident(alert.resident_id)
            if resident is not None:
                name = resident.name
        context: dict[str, object] = {"resident_name": name, "value": alert.value, "unit": alert.unit}
        context.update(extra)
        if error is not None:
            context["context_error"] = error
            tx.append_audit(now, SYSTEM, "context_failed", alert.alert_id, {"error": error})
        return context

    def _link(self, alert_id: str) -> str | None:
        return None if self.console_url is None else f"{self.console_url}/alerts/{alert_id}"

    def _view(self, alert: AlertSnapshot) -> AlertView:
        return AlertView.of(alert, self._link(alert.alert_id))


def _transition_detail(alert: AlertSnapshot, record: RecordTransition) -> dict[str, object]:
    return {
        "seq": alert.seq,
        "from": None if record.previous_state is None else record.previous_state.value,
        "to": alert.state.value,
        "reason": record.reason,
        "note": record.note,
        "severity": alert.severity.value,
        "level": alert.level,
        "count": alert.count,
        "outcome": None if alert.outcome is None else alert.outcome.value,
    }


def _unreachable(recipient: Recipient, channel: ChannelName) -> str | None:
    """Why this recipient cannot get anything over this channel (None: they can)."""
    if channel is ChannelName.EMAIL and not recipient.email:
        return f"{recipient.name} ({recipient.recipient_id}) has no e-mail address"
    if channel is ChannelName.WEBHOOK and not recipient.phone:
        return f"{recipient.name} ({recipient.recipient_id}) has no phone number for the SMS gateway"
    if channel is ChannelName.BRACELET and not recipient.device_id:
        return f"{recipient.name} ({recipient.recipient_id}) has no active bracelet"
    return None


def _words(kind: str) -> str:
    return kind.replace("_", " ")


def _title(alert: AlertSnapshot, resident_name: str) -> str:
    what = "alarm" if alert.severity.is_alarm else "reminder"
    severity = f"{alert.severity.value.upper()} " if alert.severity.is_alarm else ""
    return f"{severity}{what}: {_words(alert.kind)} - {resident_name} ({alert.state.value.replace('_', ' ')})"


def _body(alert: AlertSnapshot, resident_name: str, reason: str, link: str | None) -> str:
    lines = [
        f"{resident_name} (resident {alert.resident_id}, home {alert.home_id}): {_words(alert.kind)}.",
        f"Severity: {alert.severity.value}. State: {alert.state.value.replace('_', ' ')}."
        + (f" Raised {alert.count} times." if alert.count > 1 else ""),
    ]
    if alert.value is not None:
        lines.append(f"Latest value: {alert.value:g}{f' {alert.unit}' if alert.unit else ''}.")
    if alert.reason:
        lines.append(f"Condition: {alert.reason}")
    if reason and reason != alert.reason:
        lines.append(f"Why you are told: {reason}")
    if alert.acknowledged_by:
        lines.append(f"Acknowledged by {alert.acknowledged_by}.")
    if link:
        lines.append(f"Open it in the console: {link}")
    return "\n".join(lines)
