"""The alerts store on SQLite and PostgreSQL: schema and migrations, the guards the database itself enforces,
timers, the outbox, preferences and shifts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, inspect, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from alerts.lifecycle import AlertSnapshot, RecordTransition, TimerKind
from alerts.models import (
    AlertState,
    ChannelName,
    DeliveryStatus,
    Notification,
    Outcome,
    QuietHours,
    Recipient,
    RecipientKind,
    Severity,
    Signal,
    SignalAction,
)
from alerts.roster import Preferences, Shift
from alerts.store import (
    VERSION_TABLE,
    AlertStore,
    alembic_config,
    audit_table,
    current_revision,
    head_revision,
    metadata,
    notification_id,
    open_alert_store,
)
from careloop.registry.store import VERSION_TABLE as REGISTRY_VERSION_TABLE
from careloop.registry.store import open_registry

T0 = 1_790_000_000.0


@pytest.fixture
def store(db_url: str) -> Iterator[AlertStore]:
    with open_alert_store(db_url) as opened:
        yield opened


def alert(alert_id: str = "al-1", kind: str = "fall", state: AlertState = AlertState.OPEN) -> AlertSnapshot:
    return AlertSnapshot(
        alert_id=alert_id,
        resident_id="R0001",
        home_id="H0001",
        kind=kind,
        rule_id="fall-edge",
        severity=Severity.HIGH,
        state=state,
        created_ts=T0,
        updated_ts=T0,
        value=0.93,
        detail={"room": "bathroom", "when": object()},  # what JSON cannot hold is kept as text
        seq=1,
    )


def notification(alert_id: str, recipient: Recipient, channel: ChannelName, severity: Severity) -> Notification:
    return Notification(
        notification_id=notification_id(alert_id, 1, channel, recipient.recipient_id),
        alert_id=alert_id,
        resident_id="R0001",
        home_id="H0001",
        kind="fall",
        severity=severity,
        state=AlertState.OPEN,
        recipient=recipient,
        channel=channel,
        title="HIGH alarm: fall",
        body="Wang Wei fell",
        created_ts=T0,
        link="https://console.example/alerts/al-1",
        context={"allergies": ["penicillin"]},
        payload={"state": "open"},
    )


DAUGHTER = Recipient(
    "family:7",
    RecipientKind.FAMILY,
    "Mei",
    role="daughter",
    email="mei@example.org",
    quiet_hours=QuietHours("22:00", "07:00", "Asia/Shanghai"),
)


# -- schema ---------------------------------------------------------------------------------------------------------
def _include(name: str | None, type_: str, _parent: object) -> bool:
    return type_ != "table" or name in metadata.tables


def test_the_migrations_build_exactly_the_stores_schema_beside_the_registry(db_url: str) -> None:
    with open_registry(db_url) as registry, open_alert_store(db_url) as store:
        assert current_revision(store.engine) == head_revision() == "0001"
        with store.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True, "include_name": _include}
            )
            assert compare_metadata(context, metadata) == []
        tables = set(inspect(registry.engine).get_table_names())
    assert {*metadata.tables, VERSION_TABLE, REGISTRY_VERSION_TABLE} <= tables
    with open_alert_store(db_url) as again:  # at head already: nothing to do
        assert current_revision(again.engine) == "0001"


def test_downgrade_to_base_and_upgrade_again(store: AlertStore) -> None:
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(store.engine).get_table_names()) <= {VERSION_TABLE}
    with store.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
    assert current_revision(store.engine) == head_revision()


# -- what the database refuses --------------------------------------------------------------------------------------
def test_the_audit_log_refuses_updates_and_deletes(store: AlertStore) -> None:
    with store.transaction() as tx:
        tx.append_audit(T0, "nurse-1", "viewed", "al-1", {"where": "console"})
    for statement in (
        update(audit_table).values(actor="someone else"),
        delete(audit_table),
    ):
        with pytest.raises(DBAPIError, match="append-only"), store.transaction() as tx:
            tx.connection.execute(statement)
    if store.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), store.transaction() as tx:
            tx.connection.execute(text("TRUNCATE alert_audit"))
    with store.reading() as tx:
        [entry] = tx.audit()
    assert (entry.actor, entry.action, entry.alert_id, entry.detail) == (
        "nurse-1",
        "viewed",
        "al-1",
        {"where": "console"},
    )


def test_one_open_alert_per_resident_and_kind(store: AlertStore) -> None:
    with store.transaction() as tx:
        tx.save_alert(alert("al-1"), new=True)
        tx.save_alert(alert("al-2", kind="sos"), new=True)  # another kind: fine
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.save_alert(alert("al-3"), new=True)
    with store.transaction() as tx:
        resolved = replace(alert("al-1"), state=AlertState.RESOLVED, outcome=Outcome.FALSE_ALARM, closed_ts=T0 + 9)
        tx.save_alert(resolved, new=False)
        tx.save_alert(alert("al-3"), new=True)  # the first is closed: a new one may open
    with store.reading() as tx:
        current = tx.open_alert("R0001", "fall")
        assert current is not None
        assert current.alert_id == "al-3"
        assert current.detail["room"] == "bathroom"
        assert isinstance(current.detail["when"], str)
        assert [a.alert_id for a in tx.list_alerts(open_only=True)] == ["al-3", "al-2"]
        loaded = tx.alert("al-1")
        assert loaded is not None
        assert loaded == replace(resolved, detail=loaded.detail)  # every field round-trips


def test_an_outcome_only_with_resolved(store: AlertStore) -> None:
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.save_alert(replace(alert(), outcome=Outcome.OTHER), new=True)


def test_transitions_are_kept_in_order(store: AlertStore) -> None:
    snapshot = alert()
    with store.transaction() as tx:
        tx.save_alert(snapshot, new=True)
        tx.add_transition(snapshot, RecordTransition("raise", "system", "fell", None), T0)
        acked = replace(snapshot, state=AlertState.ACKNOWLEDGED, seq=2)
        tx.save_alert(acked, new=False)
        tx.add_transition(acked, RecordTransition("acknowledge", "nurse-1", "ack", AlertState.OPEN, "coming"), T0 + 9)
    with store.reading() as tx:
        records = tx.transitions("al-1")
    assert [(r.seq, r.action, r.actor, r.previous_state, r.state, r.note) for r in records] == [
        (1, "raise", "system", None, AlertState.OPEN, None),
        (2, "acknowledge", "nurse-1", AlertState.OPEN, AlertState.ACKNOWLEDGED, "coming"),
    ]
    with pytest.raises(IntegrityError), store.transaction() as tx:  # the same transition twice
        tx.add_transition(acked, RecordTransition("acknowledge", "nurse-1", "ack", AlertState.OPEN), T0 + 9)


# -- timers ---------------------------------------------------------------------------------------------------------
def test_a_timer_is_moved_never_duplicated_and_fires_in_due_order(store: AlertStore) -> None:
    with store.transaction() as tx:
        tx.save_alert(alert("al-1"), new=True)
        tx.save_alert(alert("al-2", kind="sos"), new=True)
        tx.set_timer("al-1", TimerKind.ESCALATE, T0 + 120, 0)
        tx.set_timer("al-1", TimerKind.ESCALATE, T0 + 240, 1)  # moved
        tx.set_timer("al-1", TimerKind.REPEAT, T0 + 60, 0)
        tx.set_timer("al-2", TimerKind.CANCEL_WINDOW, T0 + 30, 0)
    assert store.next_due() == T0 + 30
    with store.transaction() as tx:
        assert [(t.alert_id, t.kind, t.level, t.due_ts) for t in tx.timers("al-1")] == [
            ("al-1", TimerKind.REPEAT, 0, T0 + 60),
            ("al-1", TimerKind.ESCALATE, 1, T0 + 240),
        ]
        assert tx.next_due_timer(T0 + 29) is None
        first = tx.next_due_timer(T0 + 100)
        assert first is not None
        assert (first.alert_id, first.kind) == ("al-2", TimerKind.CANCEL_WINDOW)
        tx.delete_timer(first.key)
        second = tx.next_due_timer(T0 + 100)
        assert second is not None
        assert second.kind is TimerKind.REPEAT
        tx.cancel_timer("al-1", TimerKind.REPEAT)
        assert tx.next_due_timer(T0 + 100) is None
    assert store.next_due() == T0 + 240


# -- the outbox -----------------------------------------------------------------------------------------------------
def test_the_outbox_claims_due_notifications_and_records_every_outcome(store: AlertStore) -> None:
    nurse = Recipient("nurse-1", RecipientKind.STAFF, "Li Na", email="li@care.example", channels=(ChannelName.EMAIL,))
    email = notification("al-1", nurse, ChannelName.EMAIL, Severity.HIGH)
    sms = notification("al-1", replace(nurse, recipient_id="nurse-2"), ChannelName.WEBHOOK, Severity.HIGH)
    later = notification("al-1", DAUGHTER, ChannelName.EMAIL, Severity.REMINDER)
    with store.transaction() as tx:
        tx.save_alert(alert(), new=True)
        tx.add_notification(email, 1, next_attempt_at=T0)
        tx.add_notification(sms, 1, next_attempt_at=T0)
        tx.add_notification(later, 1, next_attempt_at=T0 + 3600)
    assert store.next_delivery_at() == T0
    claimed = store.claim_due(T0, limit=10, lease_s=60)
    assert [d.notification for d in claimed] == [email, sms]  # the whole notification, recipient included
    assert [d.attempts for d in claimed] == [1, 1]
    assert store.claim_due(T0 + 1, limit=10, lease_s=60) == []  # leased
    store.record_delivered(email.notification_id, "250 2.0.0 queued", T0 + 1)
    store.record_retry(sms.notification_id, "HTTP 503", T0 + 31, T0 + 1)
    assert store.next_delivery_at() == T0 + 31
    [retry] = store.claim_due(T0 + 31, limit=10, lease_s=60)
    assert retry.attempts == 2
    store.record_failed(sms.notification_id, "HTTP 400 bad number", T0 + 32)
    by_id = {d.notification.notification_id: d for d in store.deliveries(alert_id="al-1")}
    assert by_id[email.notification_id].status is DeliveryStatus.DELIVERED
    assert by_id[email.notification_id].receipt == "250 2.0.0 queued"
    assert by_id[email.notification_id].delivered_ts == T0 + 1
    assert by_id[sms.notification_id].status is DeliveryStatus.FAILED
    assert by_id[sms.notification_id].last_error == "HTTP 400 bad number"
    assert by_id[later.notification_id].notification.recipient.quiet_hours == DAUGHTER.quiet_hours
    assert [d.notification.notification_id for d in store.deliveries(status=DeliveryStatus.FAILED)] == [
        sms.notification_id
    ]
    with store.reading() as tx:
        [failed] = tx.audit(alert_id="al-1")
    assert failed.action == "delivery_failed"
    assert failed.detail["recipient_id"] == "nurse-2"
    assert failed.detail["attempts"] == 2
    with store.transaction() as tx:
        assert tx.suppress_waiting_reminders("al-1", T0 + 40) == 1
    assert {d.status for d in store.deliveries(alert_id="al-1")} == {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.SUPPRESSED,
    }
    assert store.next_delivery_at() is None


def test_a_notification_is_stored_once(store: AlertStore) -> None:
    n = notification("al-1", DAUGHTER, ChannelName.EMAIL, Severity.HIGH)
    with store.transaction() as tx:
        tx.save_alert(alert(), new=True)
        tx.add_notification(n, 1, next_attempt_at=T0)
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.add_notification(n, 1, next_attempt_at=T0)


# -- signals, preferences, shifts -----------------------------------------------------------------------------------
def test_a_handled_signal_is_remembered(store: AlertStore) -> None:
    signal = Signal("R0001", "H0001", "fall", SignalAction.RAISE, Severity.HIGH, T0, "fall-edge", "ev-1")
    with store.transaction() as tx:
        assert not tx.signal_seen(signal)
        tx.mark_signal(signal, "al-1", T0)
    with store.transaction() as tx:
        assert tx.signal_seen(signal)
        assert not tx.signal_seen(replace(signal, action=SignalAction.CANCEL))
    with pytest.raises(IntegrityError), store.transaction() as tx:
        tx.mark_signal(signal, "al-1", T0)


def test_preferences_are_stored_and_replaced(store: AlertStore) -> None:
    prefs = Preferences(
        channels=(ChannelName.EMAIL, ChannelName.WEBHOOK),
        quiet_hours=QuietHours("22:00", "07:00", "Asia/Shanghai"),
        min_severity=Severity.REMINDER,
    )
    store.set_preferences("family:7", prefs, T0)
    assert store.preferences(["family:7", "family:8"]) == {"family:7": prefs}
    store.set_preferences("family:7", Preferences(min_severity=Severity.HIGH), T0 + 1)
    assert store.preferences(["family:7"]) == {"family:7": Preferences(min_severity=Severity.HIGH)}
    assert store.preferences([]) == {}


def test_shifts_are_added_once_and_found_by_role_and_time(store: AlertStore) -> None:
    day = Shift("doc-1", "doctor", "all", T0, T0 + 8 * 3600)
    night = Shift("doc-2", "doctor", "12", T0 + 8 * 3600, T0 + 16 * 3600)
    nurse = Shift("nurse-1", "nurse", "12", T0, T0 + 8 * 3600)
    assert store.add_shifts([day, night, nurse]) == 3
    assert store.add_shifts([day]) == 0
    assert store.shifts_at("doctor", T0 + 3600) == [day]
    assert store.shifts_at("doctor", T0 + 8 * 3600) == [night]  # a shift ends where the next begins
    assert store.shifts_at("nurse", T0 + 9 * 3600) == []
    assert store.shifts(ending_after=T0 + 9 * 3600) == [night]


def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(ValueError, match="not an in-memory database"):
        open_alert_store("sqlite://")
    with pytest.raises(ValueError, match="not an in-memory database"):
        open_alert_store("sqlite:///:memory:")
