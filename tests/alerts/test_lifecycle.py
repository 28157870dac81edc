"""The loop's state machine: every move of the issue's loop, the guards, and random event sequences."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.escalation import EscalationPolicy
from alerts.lifecycle import (
    Acknowledge,
    AlertSnapshot,
    CancelTimer,
    CancelWindowElapsed,
    ConditionCleared,
    Effect,
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
    allowed_events,
    transition,
)
from alerts.models import AlertState, Outcome, Severity, Signal, SignalAction

T0 = 1_790_000_000.0
POLICY = EscalationPolicy.default()


def signal(
    kind: str = "fall",
    severity: Severity = Severity.HIGH,
    *,
    ts: float = T0,
    value: float | None = None,
    window: float = 0.0,
    promote_after_s: float | None = None,
    promote_to: Severity | None = None,
    action: SignalAction = SignalAction.RAISE,
) -> Signal:
    return Signal(
        resident_id="R0001",
        home_id="H0001",
        kind=kind,
        action=action,
        severity=severity,
        ts=ts,
        rule_id=f"rule-{kind}",
        source_id=f"src-{ts}",
        value=value,
        cancel_window_s=window,
        promote_after_s=promote_after_s,
        promote_to=promote_to,
    )


def raised(sig: Signal, now: float = T0) -> tuple[AlertSnapshot, list[Effect]]:
    return transition(None, SignalRaised(sig, "al-1"), now, POLICY)


def kinds(effects: list[Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


def notified(effects: list[Effect]) -> list[Notify]:
    return [e for e in effects if isinstance(e, Notify)]


def timers(effects: list[Effect]) -> dict[TimerKind, float]:
    return {e.kind: e.due for e in effects if isinstance(e, ScheduleTimer)}


def cancelled(effects: list[Effect]) -> set[TimerKind]:
    return {e.kind for e in effects if isinstance(e, CancelTimer)}


# -- the fall loop --------------------------------------------------------------------------------------------------
def test_a_fall_waits_in_its_cancel_window_without_paging_anyone() -> None:
    alert, effects = raised(signal(window=30.0))
    assert alert.state is AlertState.PENDING
    assert alert.seq == 1
    assert alert.count == 1
    assert timers(effects) == {TimerKind.CANCEL_WINDOW: T0 + 30}
    assert notified(effects) == []
    record = effects[0]
    assert isinstance(record, RecordTransition)
    assert record.previous_state is None
    assert record.actor == "system"
    assert isinstance(effects[-1], PublishChange)  # the console sees the pending fall


def test_the_window_runs_from_the_fall_when_its_signal_arrives_late() -> None:
    _, effects = raised(signal(window=30.0, ts=T0 - 4), now=T0)
    assert timers(effects) == {TimerKind.CANCEL_WINDOW: T0 + 26}


def test_im_ok_in_the_window_cancels_without_a_page() -> None:
    alert, _ = raised(signal(window=30.0))
    alert, effects = transition(alert, ResidentOk("resident:R0001"), T0 + 10, POLICY)
    assert alert.state is AlertState.CANCELLED
    assert alert.closed_ts == T0 + 10
    assert notified(effects) == []
    assert TimerKind.CANCEL_WINDOW in cancelled(effects)
    assert isinstance(effects[0], RecordTransition)
    assert effects[0].actor == "resident:R0001"


def test_no_ok_in_the_window_opens_the_alarm_notifies_level_0_and_arms_escalation() -> None:
    alert, _ = raised(signal(window=30.0))
    alert, effects = transition(alert, CancelWindowElapsed(), T0 + 30, POLICY)
    assert alert.state is AlertState.OPEN
    assert alert.level == 0
    assert notified(effects) == [Notify(0, 'no "I\'m OK" within 30 s')]
    # high: escalate after 2 min, page level 0 again after 1 min
    assert timers(effects) == {TimerKind.ESCALATE: T0 + 150, TimerKind.REPEAT: T0 + 90}
    assert alert.escalate_at == T0 + 150
    assert kinds(effects)[0] == "RecordTransition"
    assert kinds(effects)[-1] == "PublishChange"


def test_sos_pages_at_once() -> None:
    alert, effects = raised(signal("sos"))
    assert alert.state is AlertState.OPEN
    assert [n.level for n in notified(effects)] == [0]


def test_escalation_walks_the_levels_and_stops_at_the_last() -> None:
    alert, _ = raised(signal("sos"))
    for level in (1, 2, 3):
        now = T0 + 120 * level
        alert, effects = transition(alert, EscalationTimeout(level - 1), now, POLICY)
        assert alert.level == level
        assert alert.state is AlertState.OPEN
        assert [n.level for n in notified(effects)] == [level]
        assert f"escalated to level {level}" in notified(effects)[0].reason
    assert TimerKind.ESCALATE in cancelled(effects)
    assert TimerKind.ESCALATE not in timers(effects)
    with pytest.raises(InvalidTransition, match="last escalation level"):
        transition(alert, EscalationTimeout(3), T0 + 600, POLICY)


def test_a_stale_escalation_timer_is_refused() -> None:
    alert, _ = raised(signal("sos"))
    alert, _ = transition(alert, EscalationTimeout(0), T0 + 120, POLICY)
    with pytest.raises(InvalidTransition, match="at level 1, not 0") as caught:
        transition(alert, EscalationTimeout(0), T0 + 121, POLICY)
    assert caught.value.state is AlertState.OPEN
    assert caught.value.event == EscalationTimeout(0)


def test_repeat_pages_the_same_level_until_acknowledged_never_after_the_escalation() -> None:
    policy = EscalationPolicy.from_mapping({"timeout_s": {"high": 200}, "repeat_s": {"high": 60}})
    alert, effects = transition(None, SignalRaised(signal("sos"), "al-1"), T0, policy)
    assert timers(effects)[TimerKind.REPEAT] == T0 + 60
    alert, effects = transition(alert, RepeatTimeout(0), T0 + 60, policy)
    assert notified(effects) == [Notify(0, notified(effects)[0].reason, repeat=True)]
    assert not any(isinstance(e, PublishChange) for e in effects)  # not a state change
    assert timers(effects) == {TimerKind.REPEAT: T0 + 120}
    alert, effects = transition(alert, RepeatTimeout(0), T0 + 120, policy)
    alert, effects = transition(alert, RepeatTimeout(0), T0 + 180, policy)
    assert timers(effects) == {}
    assert TimerKind.REPEAT in cancelled(effects)
    alert, _ = transition(alert, Acknowledge("nurse-1"), T0 + 190, POLICY)
    with pytest.raises(InvalidTransition):
        transition(alert, RepeatTimeout(0), T0 + 240, policy)


def test_acknowledge_handle_resolve_with_actor_note_and_outcome() -> None:
    alert, _ = raised(signal("sos"))
    alert, effects = transition(alert, Acknowledge("doc-1", "on my way"), T0 + 50, POLICY)
    assert alert.state is AlertState.ACKNOWLEDGED
    assert alert.acknowledged_by == "doc-1"
    assert alert.note == "on my way"
    assert cancelled(effects) >= {TimerKind.ESCALATE, TimerKind.REPEAT}
    assert alert.escalate_at is None
    with pytest.raises(InvalidTransition):
        transition(alert, Acknowledge("nurse-2"), T0 + 51, POLICY)
    alert, effects = transition(alert, StartHandling("grid-1", "going now"), T0 + 60, POLICY)
    assert alert.state is AlertState.IN_HANDLING
    assert alert.handled_by == "grid-1"
    assert alert.acknowledged_by == "doc-1"
    alert, effects = transition(alert, Resolve("grid-1", Outcome.HANDLED_AT_HOME, "helped up"), T0 + 900, POLICY)
    assert alert.state is AlertState.RESOLVED
    assert alert.outcome is Outcome.HANDLED_AT_HOME
    assert alert.resolved_by == "grid-1"
    assert alert.closed_ts == T0 + 900
    assert alert.note == "helped up"
    record = effects[0]
    assert isinstance(record, RecordTransition)
    assert record.note == "helped up"
    assert record.reason == "resolved by grid-1: handled at home"
    assert alert.seq == 4


def test_resolve_needs_an_outcome_and_actions_need_an_actor() -> None:
    alert, _ = raised(signal("sos"))
    with pytest.raises(InvalidTransition, match="outcome is required"):
        transition(alert, Resolve("nurse-1", "fine"), T0 + 5, POLICY)  # type: ignore[arg-type]
    with pytest.raises(InvalidTransition, match="needs the actor"):
        transition(alert, Acknowledge("  "), T0 + 5, POLICY)


def test_start_handling_straight_from_open_acknowledges_too() -> None:
    alert, _ = raised(signal("sos"))
    alert, _ = transition(alert, StartHandling("nurse-1"), T0 + 5, POLICY)
    assert alert.acknowledged_by == "nurse-1"
    assert alert.acknowledged_ts == T0 + 5


# -- repeats and clearing ---------------------------------------------------------------------------------------------
def test_repeats_count_and_keep_the_latest_value_without_telling_anyone() -> None:
    alert, _ = raised(signal("hr_high", Severity.MEDIUM, value=131.0))
    for i in range(1, 600):
        alert, effects = transition(alert, SignalRaised(signal("hr_high", Severity.MEDIUM, value=131.0 + i)), T0 + i)
        assert effects == []
    assert alert.count == 600
    assert alert.value == 730.0
    assert alert.seq == 1


def test_a_worse_repeat_raises_the_severity_repages_and_brings_the_escalation_forward() -> None:
    alert, effects = raised(signal("hr_high", Severity.MEDIUM))
    assert timers(effects)[TimerKind.ESCALATE] == T0 + 600
    alert, effects = transition(alert, SignalRaised(signal("hr_high", Severity.HIGH)), T0 + 60, POLICY)
    assert alert.severity is Severity.HIGH
    assert alert.count == 2
    assert [n.level for n in notified(effects)] == [0]
    assert timers(effects)[TimerKind.ESCALATE] == T0 + 180
    alert, effects = transition(alert, SignalRaised(signal("hr_high", Severity.LOW)), T0 + 70, POLICY)
    assert alert.severity is Severity.HIGH
    assert effects == []


def test_a_clearing_condition_never_closes_an_unacknowledged_alarm() -> None:
    alert, _ = raised(signal("hr_high", Severity.HIGH))
    alert, effects = transition(alert, ConditionCleared("hr back to 88"), T0 + 30, POLICY)
    assert alert.state is AlertState.OPEN
    assert not alert.condition_active
    assert kinds(effects) == ["RecordTransition", "PublishChange"]
    alert, effects = transition(alert, ConditionCleared(), T0 + 31, POLICY)
    assert effects == []
    alert, effects = transition(alert, SignalRaised(signal("hr_high", Severity.HIGH)), T0 + 40, POLICY)
    assert alert.condition_active
    assert isinstance(effects[0], RecordTransition)


def test_a_clearing_condition_closes_a_reminder_nobody_has_to_take() -> None:
    alert, _ = raised(signal("battery_low", Severity.REMINDER))
    alert, effects = transition(alert, ConditionCleared("charging"), T0 + 300, POLICY)
    assert alert.state is AlertState.CANCELLED
    assert {TimerKind.PROMOTE, TimerKind.ESCALATE, TimerKind.REPEAT} <= cancelled(effects)


def test_a_taken_reminder_stays_when_its_condition_clears() -> None:
    alert, _ = raised(signal("battery_low", Severity.REMINDER))
    alert, _ = transition(alert, Acknowledge("nurse-1"), T0 + 10, POLICY)
    alert, _ = transition(alert, ConditionCleared(), T0 + 20, POLICY)
    assert alert.state is AlertState.ACKNOWLEDGED


def test_im_ok_after_the_window_is_recorded_but_does_not_close_the_alarm() -> None:
    alert, _ = raised(signal(window=30.0))
    alert, _ = transition(alert, CancelWindowElapsed(), T0 + 30, POLICY)
    alert, effects = transition(alert, ResidentOk(), T0 + 40, POLICY)
    assert alert.state is AlertState.OPEN
    assert notified(effects) == []
    assert isinstance(effects[0], RecordTransition)
    assert effects[0].action == "resident_ok"


# -- reminders ------------------------------------------------------------------------------------------------------
def test_an_unanswered_reminder_whose_condition_persists_becomes_an_alarm() -> None:
    sig = signal("hr_high_30min", Severity.REMINDER, promote_after_s=1800.0, promote_to=Severity.HIGH)
    alert, effects = raised(sig)
    assert timers(effects) == {TimerKind.PROMOTE: T0 + 1800}
    assert [n.level for n in notified(effects)] == [0]
    with pytest.raises(InvalidTransition, match="promoted, not escalated"):
        transition(alert, EscalationTimeout(0), T0 + 120, POLICY)
    alert, effects = transition(alert, PromotionDue(), T0 + 1800, POLICY)
    assert alert.severity is Severity.HIGH
    assert alert.state is AlertState.OPEN
    assert [n.level for n in notified(effects)] == [0]
    assert timers(effects)[TimerKind.ESCALATE] == T0 + 1920
    record = effects[0]
    assert isinstance(record, RecordTransition)
    assert record.action == "promote"


def test_a_worsening_reminder_is_promoted_at_once() -> None:
    alert, _ = raised(signal("hr_high_30min", Severity.REMINDER, promote_after_s=1800.0))
    alert, effects = transition(alert, SignalRaised(signal("hr_high_30min", Severity.MEDIUM)), T0 + 60, POLICY)
    assert alert.severity is Severity.MEDIUM
    assert alert.count == 2
    assert TimerKind.PROMOTE in cancelled(effects)
    assert TimerKind.ESCALATE in timers(effects)
    assert [n.level for n in notified(effects)] == [0]


def test_a_reminder_whose_condition_cleared_is_not_promoted() -> None:
    alert, _ = raised(signal("steps_low", Severity.REMINDER, promote_after_s=600.0))
    acknowledged, _ = transition(alert, Acknowledge("nurse-1"), T0 + 1, POLICY)
    with pytest.raises(InvalidTransition):
        transition(acknowledged, PromotionDue(), T0 + 600, POLICY)
    with pytest.raises(InvalidTransition, match="cleared"):
        transition(replace(alert, condition_active=False), PromotionDue(), T0 + 600, POLICY)


# -- the table ------------------------------------------------------------------------------------------------------
def test_closed_states_accept_nothing_and_only_a_raise_opens_an_alert() -> None:
    assert allowed_events(AlertState.RESOLVED) == frozenset()
    assert allowed_events(AlertState.CANCELLED) == frozenset()
    with pytest.raises(InvalidTransition, match="no alert") as caught:
        transition(None, Acknowledge("nurse-1"), T0)
    assert caught.value.state is None
    with pytest.raises(InvalidTransition, match="does not open"):
        transition(None, SignalRaised(signal(action=SignalAction.CLEAR), "al-1"), T0)


# -- property tests -------------------------------------------------------------------------------------------------
_severities = st.sampled_from(list(Severity))
_actors = st.sampled_from(["nurse-1", "doc-1", "grid-1"])
_events: st.SearchStrategy[LoopEvent] = st.one_of(
    st.builds(
        lambda sev, value, window, promote: SignalRaised(
            signal("fall", sev, value=value, window=window, promote_after_s=promote), "al-x"
        ),
        _severities,
        st.none() | st.floats(0, 300, allow_nan=False),
        st.sampled_from([0.0, 30.0]),
        st.none() | st.just(600.0),
    ),
    st.builds(ConditionCleared),
    st.builds(ResidentOk),
    st.just(CancelWindowElapsed()),
    st.builds(Acknowledge, _actors, st.none() | st.just("note")),
    st.builds(StartHandling, _actors, st.none() | st.just("going")),
    st.builds(Resolve, _actors, st.sampled_from(list(Outcome))),
    st.builds(EscalationTimeout, st.integers(0, 4)),
    st.builds(RepeatTimeout, st.integers(0, 4)),
    st.just(PromotionDue()),
)


@settings(max_examples=400, deadline=None)
@given(
    first=st.builds(
        lambda sev, window, promote: signal("fall", sev, window=window, promote_after_s=promote),
        _severities,
        st.sampled_from([0.0, 30.0]),
        st.none() | st.just(600.0),
    ),
    steps=st.lists(st.tuples(_events, st.floats(0, 400, allow_nan=False)), max_size=40),
)
def test_random_event_sequences_keep_the_alert_consistent(first: Signal, steps: list[tuple[LoopEvent, float]]) -> None:
    alert, effects = transition(None, SignalRaised(first, "al-1"), T0, POLICY)
    now = T0
    for event, dt in steps:
        now += dt
        before = alert
        refused: InvalidTransition | None = None
        try:
            alert, effects = transition(alert, event, now, POLICY)
        except InvalidTransition as exc:
            refused = exc
        if refused is not None:  # refused: the alert is unchanged, and the refusal says why
            assert refused.state is before.state
            assert refused.event is event
            assert before.state.is_closed or type(event) not in allowed_events(before.state) or refused.detail
            continue
        assert not before.state.is_closed, "a closed alert took an action"
        assert alert.state in AlertState
        assert alert.count >= before.count
        assert alert.seq >= before.seq
        assert alert.severity.rank >= before.severity.rank
        assert alert.alert_id == before.alert_id == "al-1"
        records = [e for e in effects if isinstance(e, RecordTransition)]
        assert len(records) == alert.seq - before.seq <= 1
        if records:
            assert records[0].previous_state is before.state
        _check_invariants(alert, effects)


def _check_invariants(alert: AlertSnapshot, effects: list[Effect]) -> None:
    assert (alert.state is AlertState.RESOLVED) == (alert.outcome is not None)
    assert alert.state.is_closed == (alert.closed_ts is not None)
    if alert.state in (AlertState.ACKNOWLEDGED, AlertState.IN_HANDLING, AlertState.RESOLVED):
        assert alert.acknowledged_by is not None
    if alert.state is AlertState.IN_HANDLING:
        assert alert.handled_by is not None
    if alert.state.is_closed:
        assert timers(effects) == {}
        assert notified(effects) == []
        assert cancelled(effects) == set(TimerKind)
    if alert.state is not AlertState.OPEN:
        assert alert.escalate_at is None
    for notify in notified(effects):
        assert notify.level == alert.level
    for effect in effects:
        if isinstance(effect, ScheduleTimer) and effect.kind in (TimerKind.ESCALATE, TimerKind.REPEAT):
            assert alert.severity.is_alarm
            assert effect.level == alert.level
        if isinstance(effect, ScheduleTimer) and effect.kind is TimerKind.REPEAT:
            assert alert.updated_ts < effect.due
            assert alert.escalate_at is None or effect.due < alert.escalate_at
