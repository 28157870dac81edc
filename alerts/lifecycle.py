"""The reminder -> alarm -> handling loop as a pure, table-driven state machine.

``transition(alert, event, now)`` returns the alert's next snapshot and the effects the shell (``service.py``)
carries out in one database transaction: record the transition (actor, time, reason), schedule or cancel a timer,
notify an escalation level, publish the state change on the live topic. Nothing here reads a clock, a database
or the network; an event the current state does not accept raises :class:`InvalidTransition`.

The table (``_TABLE``), by state:

- *(none)*: a raised signal opens an alert: PENDING with a cancel-window timer when the signal has a window
  (falls), else OPEN, notifying level 0 and arming the escalation (alarms) or the promotion (reminders).
- PENDING: "I'm OK" -> CANCELLED (nobody was paged; an OK that arrives while the alarm is still pending counts,
  even a moment after the window, since no one has been paged yet); the window elapsing -> OPEN and level 0
  notified.
- OPEN: escalation timeout -> the next level notified; repeat timer -> the same level paged again; a reminder
  whose promotion is due (unanswered, condition still there) -> an alarm of its ``promote_to`` severity.
- PENDING / OPEN / ACKNOWLEDGED / IN_HANDLING: a repeated signal counts (count, latest value; a worse severity is
  kept, and worsens a reminder into an alarm); a cleared condition is recorded and closes only a reminder nobody
  has taken (an alarm a person has not acknowledged is never closed by its condition clearing); acknowledge,
  start handling and resolve (with an :class:`~alerts.models.Outcome`) are a person's actions.
- RESOLVED / CANCELLED: closed; every event is invalid (a new signal opens a new alert).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from alerts.escalation import EscalationPolicy
from alerts.models import AlertState, Outcome, Severity, Signal, SignalAction

#: The actor of what the loop does by itself (timers, rules).
SYSTEM = "system"
#: The severity a reminder is promoted to when its signal names none.
DEFAULT_PROMOTE_TO = Severity.MEDIUM


class TimerKind(enum.StrEnum):
    """What a persisted timer does when it is due; at most one of each kind per alert."""

    CANCEL_WINDOW = "cancel_window"  # a PENDING alarm's "I'm OK" window ends
    PROMOTE = "promote"  # an unanswered reminder becomes an alarm
    ESCALATE = "escalate"  # nobody acknowledged: the next level is notified
    REPEAT = "repeat"  # nobody acknowledged yet: the same level is paged again


@dataclass(slots=True, frozen=True)
class AlertSnapshot:
    """An alert as the loop knows it; ``seq`` counts its recorded transitions (1 after it opened)."""

    alert_id: str
    resident_id: str
    home_id: str
    kind: str
    rule_id: str
    severity: Severity
    state: AlertState
    created_ts: float
    updated_ts: float
    count: int = 1
    value: float | None = None
    unit: str | None = None
    reason: str = ""
    detail: Mapping[str, object] = field(default_factory=dict)
    level: int = 0  # the escalation level notified last
    seq: int = 0
    condition_active: bool = True  # False once a rule said the condition cleared (until it is raised again)
    cancel_window_s: float = 0.0
    promote_after_s: float | None = None
    promote_to: Severity | None = None
    escalate_at: float | None = None  # when the current level's escalation timer is due (None: not armed)
    acknowledged_by: str | None = None
    acknowledged_ts: float | None = None
    handled_by: str | None = None
    handling_ts: float | None = None
    resolved_by: str | None = None
    resolved_ts: float | None = None
    outcome: Outcome | None = None
    note: str | None = None  # the last note a person left
    closed_ts: float | None = None


# -- events ------------------------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class SignalRaised:
    """A rule says the condition holds: opens an alert (with ``alert_id``) or counts a repeat on the open one."""

    signal: Signal
    alert_id: str = ""


@dataclass(slots=True, frozen=True)
class ConditionCleared:
    """A rule says the condition no longer holds."""

    reason: str = ""


@dataclass(slots=True, frozen=True)
class ResidentOk:
    """The resident pressed "I'm OK"."""

    actor: str = "resident"


@dataclass(slots=True, frozen=True)
class CancelWindowElapsed:
    """A PENDING alarm's cancel window ended without "I'm OK"."""


@dataclass(slots=True, frozen=True)
class Acknowledge:
    """A person has seen the alert and takes it."""

    actor: str
    note: str | None = None


@dataclass(slots=True, frozen=True)
class StartHandling:
    """A person is going / working on it (implies acknowledging)."""

    actor: str
    note: str | None = None


@dataclass(slots=True, frozen=True)
class Resolve:
    """A person closes the alert with an outcome."""

    actor: str
    outcome: Outcome
    note: str | None = None


@dataclass(slots=True, frozen=True)
class EscalationTimeout:
    """Nobody acknowledged at ``level`` in time (or nobody could be notified there): notify the next level."""

    level: int
    reason: str | None = None


@dataclass(slots=True, frozen=True)
class RepeatTimeout:
    """Time to page ``level`` again: nobody has acknowledged yet."""

    level: int


@dataclass(slots=True, frozen=True)
class PromotionDue:
    """An unanswered reminder's ``promote_after_s`` has passed."""


LoopEvent = (
    SignalRaised
    | ConditionCleared
    | ResidentOk
    | CancelWindowElapsed
    | Acknowledge
    | StartHandling
    | Resolve
    | EscalationTimeout
    | RepeatTimeout
    | PromotionDue
)


# -- effects -----------------------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class RecordTransition:
    """Persist this transition (the new snapshot's ``seq``) with who, why and the state it came from."""

    action: str
    actor: str
    reason: str
    previous_state: AlertState | None
    note: str | None = None


@dataclass(slots=True, frozen=True)
class ScheduleTimer:
    """Set (or move) the alert's timer of this kind to ``due``; ``level`` is the escalation level it belongs to."""

    kind: TimerKind
    due: float
    level: int = 0


@dataclass(slots=True, frozen=True)
class CancelTimer:
    """Remove the alert's timer of this kind, if any."""

    kind: TimerKind


@dataclass(slots=True, frozen=True)
class Notify:
    """Notify everyone at escalation ``level``; a ``repeat`` pages only the audiences that are paged."""

    level: int
    reason: str
    repeat: bool = False


@dataclass(slots=True, frozen=True)
class PublishChange:
    """Tell the live topic (consoles) the alert changed."""

    previous_state: AlertState | None
    actor: str
    reason: str


Effect = RecordTransition | ScheduleTimer | CancelTimer | Notify | PublishChange


class InvalidTransition(Exception):
    """The alert's state does not accept the event (or its guard failed); ``state`` is None for no alert yet."""

    def __init__(self, state: AlertState | None, event: LoopEvent, detail: str = "") -> None:
        self.state = state
        self.event = event
        self.detail = detail
        where = state.value if state is not None else "no alert"
        super().__init__(f"{type(event).__name__} is not allowed in state {where}" + (f": {detail}" if detail else ""))


# -- the machine -------------------------------------------------------------------------------------------------
Step = tuple[AlertSnapshot, list[Effect]]
_Handler = Callable[[AlertSnapshot, Any, float, EscalationPolicy], Step]

_ALERT_TIMERS = (TimerKind.CANCEL_WINDOW, TimerKind.PROMOTE, TimerKind.ESCALATE, TimerKind.REPEAT)
_LIVE = (AlertState.PENDING, AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.IN_HANDLING)


def transition(
    alert: AlertSnapshot | None, event: LoopEvent, now: float, policy: EscalationPolicy | None = None
) -> Step:
    """The alert after ``event`` at ``now``, and the effects to carry out; InvalidTransition for an undefined move.

    ``policy`` gives the escalation timeouts and repeat intervals (the default policy when None).
    """
    policy = policy if policy is not None else _DEFAULT_POLICY
    if alert is None:
        if not isinstance(event, SignalRaised):
            raise InvalidTransition(None, event, "there is no alert yet")
        return _open(event, now, policy)
    handler = _TABLE.get((alert.state, type(event)))
    if handler is None:
        raise InvalidTransition(alert.state, event)
    return handler(alert, event, now, policy)


def allowed_events(state: AlertState) -> frozenset[type[Any]]:
    """The event types a state accepts (guards may still refuse one)."""
    return frozenset(event for s, event in _TABLE if s is state)


def _record(
    alert: AlertSnapshot,
    now: float,
    action: str,
    actor: str,
    reason: str,
    previous: AlertState | None,
    note: str | None = None,
    *,
    publish: bool = True,
) -> tuple[AlertSnapshot, list[Effect]]:
    """The alert one transition further, with the record (and the live publication) of that transition."""
    alert = replace(alert, seq=alert.seq + 1, updated_ts=now)
    effects: list[Effect] = [RecordTransition(action, actor, reason, previous, note)]
    if publish:
        effects.append(PublishChange(previous, actor, reason))
    return alert, effects


def _with(step: tuple[AlertSnapshot, list[Effect]], *more: Effect) -> Step:
    # Publication goes last: a console hears of a change after its notifications are queued.
    alert, effects = step
    published = [e for e in effects if isinstance(e, PublishChange)]
    return alert, [e for e in effects if not isinstance(e, PublishChange)] + list(more) + published


def _arm(alert: AlertSnapshot, now: float, policy: EscalationPolicy, *, keep_earlier: bool = False) -> Step:
    """Start the clocks of an OPEN alert at its level: escalation and repeat (alarms), or promotion (reminders)."""
    effects: list[Effect] = []
    if not alert.severity.is_alarm:
        if alert.promote_after_s is not None:
            effects.append(ScheduleTimer(TimerKind.PROMOTE, now + alert.promote_after_s, alert.level))
        return replace(alert, escalate_at=None), effects
    timeout = policy.escalate_after(alert.severity, alert.level)
    escalate_at = None if timeout is None else now + timeout
    if keep_earlier and alert.escalate_at is not None and escalate_at is not None:
        escalate_at = min(escalate_at, alert.escalate_at)
    if escalate_at is None:
        effects.append(CancelTimer(TimerKind.ESCALATE))
    else:
        effects.append(ScheduleTimer(TimerKind.ESCALATE, escalate_at, alert.level))
    alert = replace(alert, escalate_at=escalate_at)
    effects.extend(_repeat_timer(alert, now, policy))
    return alert, effects


def _repeat_timer(alert: AlertSnapshot, now: float, policy: EscalationPolicy) -> list[Effect]:
    # A repeat due at or after the escalation would page a level that is about to be left: the escalation re-arms.
    every = policy.repeat_every(alert.severity, alert.level)
    if every is None or (alert.escalate_at is not None and now + every >= alert.escalate_at):
        return [CancelTimer(TimerKind.REPEAT)]
    return [ScheduleTimer(TimerKind.REPEAT, now + every, alert.level)]


def _disarm(*kinds: TimerKind) -> list[Effect]:
    return [CancelTimer(kind) for kind in kinds]


def _open(event: SignalRaised, now: float, policy: EscalationPolicy) -> Step:
    signal = event.signal
    if signal.action is not SignalAction.RAISE:
        raise InvalidTransition(None, event, f"a {signal.action.value} signal does not open an alert")
    if not event.alert_id:
        raise InvalidTransition(None, event, "a new alert needs an alert_id")
    reason = signal.reason or f"{signal.kind} raised by rule {signal.rule_id}"
    pending = signal.cancel_window_s > 0
    alert = AlertSnapshot(
        alert_id=event.alert_id,
        resident_id=signal.resident_id,
        home_id=signal.home_id,
        kind=signal.kind,
        rule_id=signal.rule_id,
        severity=signal.severity,
        state=AlertState.PENDING if pending else AlertState.OPEN,
        created_ts=now,
        updated_ts=now,
        value=signal.value,
        unit=signal.unit,
        reason=reason,
        detail=dict(signal.detail),
        cancel_window_s=signal.cancel_window_s,
        promote_after_s=signal.promote_after_s,
        promote_to=signal.promote_to,
    )
    step = _record(alert, now, "raise", SYSTEM, reason, None)
    if pending:
        # The window runs from the event (a signal may arrive a little late), never from before it.
        due = min(now, signal.ts) + signal.cancel_window_s
        return _with(step, ScheduleTimer(TimerKind.CANCEL_WINDOW, due))
    alert, timers = _arm(step[0], now, policy)
    return _with((alert, step[1]), *timers, Notify(0, reason))


def _repeat(alert: AlertSnapshot, event: SignalRaised, now: float, policy: EscalationPolicy) -> Step:
    signal = event.signal
    if signal.action is not SignalAction.RAISE:
        raise InvalidTransition(alert.state, event, f"a {signal.action.value} signal is not a repeat")
    severity = max(alert.severity, signal.severity, key=lambda s: s.rank)
    returned = not alert.condition_active
    counted = replace(
        alert,
        count=alert.count + 1,
        value=signal.value if signal.value is not None else alert.value,
        unit=signal.unit if signal.value is not None else alert.unit,
        updated_ts=now,
        condition_active=True,
        severity=severity,
    )
    if severity is alert.severity:
        if not returned:
            return counted, []  # a repeat: count and latest value, nothing to tell anyone
        return _record(counted, now, "raise", SYSTEM, "the condition holds again", alert.state)
    reason = f"worsened from {alert.severity.value} to {severity.value}" + (
        f": {signal.reason}" if signal.reason else ""
    )
    step = _record(counted, now, "worsen", SYSTEM, reason, alert.state)
    if alert.state is not AlertState.OPEN:
        return step  # pending: the window decides; taken: the person who has it sees the change
    if not alert.severity.is_alarm:  # an unanswered reminder worsened into an alarm: page level 0
        promoted, timers = _arm(replace(step[0], level=0), now, policy)
        return _with((promoted, step[1]), CancelTimer(TimerKind.PROMOTE), *timers, Notify(0, reason))
    rearmed, timers = _arm(step[0], now, policy, keep_earlier=True)
    return _with((rearmed, step[1]), *timers, Notify(alert.level, reason))


def _cleared(alert: AlertSnapshot, event: ConditionCleared, now: float, policy: EscalationPolicy) -> Step:
    reason = event.reason or "the condition cleared"
    if not alert.severity.is_alarm and alert.state in (AlertState.PENDING, AlertState.OPEN):
        closed = replace(alert, condition_active=False, state=AlertState.CANCELLED, closed_ts=now, escalate_at=None)
        return _with(_record(closed, now, "clear", SYSTEM, reason, alert.state), *_disarm(*_ALERT_TIMERS))
    if not alert.condition_active:
        return alert, []  # cleared twice: nothing new
    # An alarm stays until a person closes it; the record shows the condition went away.
    return _record(replace(alert, condition_active=False), now, "clear", SYSTEM, reason, alert.state)


def _cancel_pending(alert: AlertSnapshot, event: ResidentOk, now: float, policy: EscalationPolicy) -> Step:
    closed = replace(alert, state=AlertState.CANCELLED, closed_ts=now, escalate_at=None)
    reason = f'the resident pressed "I\'m OK" within the {alert.cancel_window_s:g} s cancel window'
    return _with(_record(closed, now, "resident_ok", event.actor, reason, alert.state), *_disarm(*_ALERT_TIMERS))


def _ok_noted(alert: AlertSnapshot, event: ResidentOk, now: float, policy: EscalationPolicy) -> Step:
    reason = 'the resident pressed "I\'m OK"; the alert stays until a person resolves it'
    return _record(alert, now, "resident_ok", event.actor, reason, alert.state)


def _window_elapsed(alert: AlertSnapshot, event: CancelWindowElapsed, now: float, policy: EscalationPolicy) -> Step:
    reason = f'no "I\'m OK" within {alert.cancel_window_s:g} s'
    step = _record(replace(alert, state=AlertState.OPEN), now, "cancel_window_elapsed", SYSTEM, reason, alert.state)
    opened, timers = _arm(step[0], now, policy)
    return _with((opened, step[1]), *timers, Notify(0, reason))


def _person(event: Acknowledge | StartHandling | Resolve, alert: AlertSnapshot) -> str:
    actor = event.actor.strip()
    if not actor:
        raise InvalidTransition(alert.state, event, "a person's action needs the actor")
    return actor


def _acknowledge(alert: AlertSnapshot, event: Acknowledge, now: float, policy: EscalationPolicy) -> Step:
    actor = _person(event, alert)
    taken = replace(
        alert,
        state=AlertState.ACKNOWLEDGED,
        acknowledged_by=actor,
        acknowledged_ts=now,
        note=event.note if event.note is not None else alert.note,
        escalate_at=None,
    )
    step = _record(taken, now, "acknowledge", actor, f"acknowledged by {actor}", alert.state, event.note)
    return _with(step, *_disarm(*_ALERT_TIMERS))


def _start_handling(alert: AlertSnapshot, event: StartHandling, now: float, policy: EscalationPolicy) -> Step:
    actor = _person(event, alert)
    handling = replace(
        alert,
        state=AlertState.IN_HANDLING,
        acknowledged_by=alert.acknowledged_by or actor,
        acknowledged_ts=alert.acknowledged_ts if alert.acknowledged_ts is not None else now,
        handled_by=actor,
        handling_ts=now,
        note=event.note if event.note is not None else alert.note,
        escalate_at=None,
    )
    reason = f"{actor} is handling it" if alert.handled_by is None else f"{actor} took over from {alert.handled_by}"
    step = _record(handling, now, "start_handling", actor, reason, alert.state, event.note)
    return _with(step, *_disarm(*_ALERT_TIMERS))


def _resolve(alert: AlertSnapshot, event: Resolve, now: float, policy: EscalationPolicy) -> Step:
    actor = _person(event, alert)
    if not isinstance(event.outcome, Outcome):
        raise InvalidTransition(alert.state, event, f"an outcome is required (one of {', '.join(Outcome)})")
    resolved = replace(
        alert,
        state=AlertState.RESOLVED,
        acknowledged_by=alert.acknowledged_by or actor,
        acknowledged_ts=alert.acknowledged_ts if alert.acknowledged_ts is not None else now,
        resolved_by=actor,
        resolved_ts=now,
        outcome=event.outcome,
        note=event.note if event.note is not None else alert.note,
        closed_ts=now,
        escalate_at=None,
    )
    reason = f"resolved by {actor}: {event.outcome.value.replace('_', ' ')}"
    step = _record(resolved, now, "resolve", actor, reason, alert.state, event.note)
    return _with(step, *_disarm(*_ALERT_TIMERS))


def _escalate(alert: AlertSnapshot, event: EscalationTimeout, now: float, policy: EscalationPolicy) -> Step:
    if event.level != alert.level:
        raise InvalidTransition(alert.state, event, f"the alert is at level {alert.level}, not {event.level}")
    if not alert.severity.is_alarm:
        raise InvalidTransition(alert.state, event, "reminders are promoted, not escalated")
    if not policy.has_next(alert.level):
        raise InvalidTransition(alert.state, event, f"level {alert.level} is the last escalation level")
    nxt = alert.level + 1
    reason = event.reason
    if reason is None:
        waited = policy.escalate_after(alert.severity, alert.level)
        reason = f"nobody acknowledged at level {alert.level} within {waited or 0:g} s"
    reason = f"{reason}: escalated to level {nxt} ({policy.level(nxt).name})"
    step = _record(replace(alert, level=nxt), now, "escalate", SYSTEM, reason, alert.state)
    escalated, timers = _arm(step[0], now, policy)
    return _with((escalated, step[1]), *timers, Notify(nxt, reason))


def _renotify(alert: AlertSnapshot, event: RepeatTimeout, now: float, policy: EscalationPolicy) -> Step:
    if event.level != alert.level:
        raise InvalidTransition(alert.state, event, f"the alert is at level {alert.level}, not {event.level}")
    if policy.repeat_every(alert.severity, alert.level) is None:
        raise InvalidTransition(alert.state, event, f"level {alert.level} is not repeated for {alert.severity.value}")
    reason = f"not acknowledged yet: level {alert.level} ({policy.level(alert.level).name}) paged again"
    step = _record(alert, now, "repeat_notify", SYSTEM, reason, alert.state, publish=False)
    return _with(step, *_repeat_timer(step[0], now, policy), Notify(alert.level, reason, repeat=True))


def _promote(alert: AlertSnapshot, event: PromotionDue, now: float, policy: EscalationPolicy) -> Step:
    if alert.severity.is_alarm:
        raise InvalidTransition(alert.state, event, "only a reminder is promoted")
    if alert.promote_after_s is None:
        raise InvalidTransition(alert.state, event, "this reminder is not promoted")
    if not alert.condition_active:
        raise InvalidTransition(alert.state, event, "the condition has cleared")
    severity = alert.promote_to if alert.promote_to is not None and alert.promote_to.is_alarm else DEFAULT_PROMOTE_TO
    reason = (
        f"reminder unanswered for {alert.promote_after_s:g} s and the condition persists: now a {severity.value} alarm"
    )
    step = _record(replace(alert, severity=severity, level=0), now, "promote", SYSTEM, reason, alert.state)
    promoted, timers = _arm(step[0], now, policy)
    return _with((promoted, step[1]), CancelTimer(TimerKind.PROMOTE), *timers, Notify(0, reason))


_TABLE: dict[tuple[AlertState, type[Any]], _Handler] = {
    **{(state, SignalRaised): _repeat for state in _LIVE},
    **{(state, ConditionCleared): _cleared for state in _LIVE},
    (AlertState.PENDING, ResidentOk): _cancel_pending,
    **{(state, ResidentOk): _ok_noted for state in _LIVE if state is not AlertState.PENDING},
    (AlertState.PENDING, CancelWindowElapsed): _window_elapsed,
    (AlertState.PENDING, Acknowledge): _acknowledge,
    (AlertState.OPEN, Acknowledge): _acknowledge,
    **{(state, StartHandling): _start_handling for state in _LIVE},
    **{(state, Resolve): _resolve for state in _LIVE},
    (AlertState.OPEN, EscalationTimeout): _escalate,
    (AlertState.OPEN, RepeatTimeout): _renotify,
    (AlertState.OPEN, PromotionDue): _promote,
}

_DEFAULT_POLICY = EscalationPolicy.default()
