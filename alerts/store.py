"""The loop's persistent state, SQLite by default and PostgreSQL by URL (SQLAlchemy 2 Core, Alembic migrations).

Tables (all named ``alert*``, so they can share the registry's database; their own Alembic version table):

- ``alerts``: one row per alert, the lifecycle's snapshot. A partial unique index allows one *open* alert per
  (resident, kind), on both databases.
- ``alert_transitions``: every recorded transition (seq, time, action, actor, states, reason, note, outcome).
- ``alert_audit``: the append-only log of who did or saw what. The store has no call that changes or deletes
  an entry, and database triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL).
- ``alert_timers``: cancel windows, promotions, escalations, repeats; the key (alert id + kind) is the primary
  key, so a timer is set or moved, never duplicated, and firing one deletes it in the same transaction as the
  transition it causes.
- ``alert_notifications``: the outbox. One row per notification (channel, recipient, status, attempts,
  next_attempt_at, last_error, receipt), written in the transaction of the transition that caused it; the
  dispatcher sends afterwards and records the outcome.
- ``alert_signals``: the signals already handled (by source id), so a redelivered signal is a no-op.
- ``alert_preferences``: per recipient, channels, quiet hours, minimum severity.
- ``alert_shifts``: the on-duty roster.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: the loop and the dispatcher write from two
threads, and a deferred transaction that reads and then writes would fail with "database is locked" instead of
waiting its turn. On PostgreSQL an alert is locked ``FOR UPDATE`` before its timers (every writer takes that
order, so none deadlocks) and due notifications are claimed ``FOR UPDATE SKIP LOCKED``, so two service processes
never fire a timer or send a notification twice.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    SmallInteger,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url

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
)
from alerts.roster import Preferences, Shift
from careloop.migrations import MigrationSet
from careloop.registry.models import NAMING_CONVENTION

MIGRATIONS = "alerts:migrations"
VERSION_TABLE = "alembic_version_alerts"
#: Execution option of a connection that only reads: a deferred BEGIN on SQLite, so it does not queue for the lock.
READ_ONLY = "alerts_read_only"

_ID = 64  # alert ids, resident / home codes, kinds
_WHO = 200  # actors, recipient ids
_ENUM = 20
_Json = JSON().with_variant(JSONB(), "postgresql")
_BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite's rowid alias must be INTEGER

metadata = MetaData(naming_convention=NAMING_CONVENTION)

_OPEN = (AlertState.PENDING, AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.IN_HANDLING)
_CLOSED_SQL = "state NOT IN ('resolved', 'cancelled')"


def _one_of(column: str, values: Collection[str], *, nullable: bool = False) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    condition = f"{column} IN ({listed})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=f"{column}_valid")


alerts_table = Table(
    "alerts",
    metadata,
    Column("id", String(_ID), primary_key=True),
    Column("resident_id", String(_ID), nullable=False),
    Column("home_id", String(_ID), nullable=False),
    Column("kind", String(_ID), nullable=False),
    Column("rule_id", String(_WHO), nullable=False),
    Column("severity", String(_ENUM), nullable=False),
    Column("state", String(_ENUM), nullable=False),
    Column("created_ts", Double, nullable=False),
    Column("updated_ts", Double, nullable=False),
    Column("count", Integer, nullable=False),
    Column("value", Double),
    Column("unit", String(_ENUM)),
    Column("reason", Text, nullable=False),
    Column("detail", _Json, nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("condition_active", Boolean, nullable=False),
    Column("cancel_window_s", Double, nullable=False),
    Column("promote_after_s", Double),
    Column("promote_to", String(_ENUM)),
    Column("escalate_at", Double),
    Column("acknowledged_by", String(_WHO)),
    Column("acknowledged_ts", Double),
    Column("handled_by", String(_WHO)),
    Column("handling_ts", Double),
    Column("resolved_by", String(_WHO)),
    Column("resolved_ts", Double),
    Column("outcome", String(_ENUM)),
    Column("note", Text),
    Column("closed_ts", Double),
    _one_of("severity", [s.value for s in Severity]),
    _one_of("state", [s.value for s in AlertState]),
    _one_of("promote_to", [s.value for s in Severity], nullable=True),
    _one_of("outcome", [o.value for o in Outcome], nullable=True),
    CheckConstraint("count >= 1", name="count_positive"),
    CheckConstraint("level >= 0", name="level_not_negative"),
    CheckConstraint("(state = 'resolved') = (outcome IS NOT NULL)", name="outcome_iff_resolved"),
    # One open alert per resident and kind: repeats update it instead of opening another.
    Index(
        "uq_alerts_open_resident_kind",
        "resident_id",
        "kind",
        unique=True,
        sqlite_where=text(_CLOSED_SQL),
        postgresql_where=text(_CLOSED_SQL),
    ),
    Index("ix_alerts_home_id_created_ts", "home_id", "created_ts"),
    Index("ix_alerts_resident_id_created_ts", "resident_id", "created_ts"),
    Index("ix_alerts_created_ts", "created_ts"),
)

transitions_table = Table(
    "alert_transitions",
    metadata,
    Column("alert_id", String(_ID), ForeignKey("alerts.id", ondelete="RESTRICT"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("ts", Double, nullable=False),
    Column("action", String(40), nullable=False),
    Column("actor", String(_WHO), nullable=False),
    Column("previous_state", String(_ENUM)),
    Column("state", String(_ENUM), nullable=False),
    Column("severity", String(_ENUM), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("value", Double),
    Column("reason", Text, nullable=False),
    Column("note", Text),
    Column("outcome", String(_ENUM)),
    _one_of("state", [s.value for s in AlertState]),
    _one_of("previous_state", [s.value for s in AlertState], nullable=True),
)

audit_table = Table(
    "alert_audit",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("actor", String(_WHO), nullable=False),
    Column("action", String(40), nullable=False),
    Column("alert_id", String(_ID)),
    Column("detail", _Json, nullable=False),
    Index("ix_alert_audit_alert_id_id", "alert_id", "id"),
    Index("ix_alert_audit_ts", "ts"),
)

timers_table = Table(
    "alert_timers",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("alert_id", String(_ID), ForeignKey("alerts.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("kind", String(_ENUM), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("due_ts", Double, nullable=False, index=True),
    _one_of("kind", [k.value for k in TimerKind]),
)

notifications_table = Table(
    "alert_notifications",
    metadata,
    Column("id", String(400), primary_key=True),
    Column("alert_id", String(_ID), ForeignKey("alerts.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("recipient_id", String(_WHO), nullable=False),
    Column("recipient", _Json, nullable=False),
    Column("channel", String(_ENUM), nullable=False),
    Column("resident_id", String(_ID), nullable=False),
    Column("home_id", String(_ID), nullable=False),
    Column("kind", String(_ID), nullable=False),
    Column("severity", String(_ENUM), nullable=False),
    Column("state", String(_ENUM), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("link", Text),
    Column("context", _Json, nullable=False),
    Column("payload", _Json, nullable=False),
    Column("created_ts", Double, nullable=False),
    Column("status", String(_ENUM), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Double),
    Column("last_error", Text),
    Column("receipt", Text),
    Column("delivered_ts", Double),
    Column("updated_ts", Double, nullable=False),
    _one_of("channel", [c.value for c in ChannelName]),
    _one_of("status", [s.value for s in DeliveryStatus]),
    CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    Index("ix_alert_notifications_status_next_attempt_at", "status", "next_attempt_at"),
)

signals_table = Table(
    "alert_signals",
    metadata,
    Column("source_id", String(_WHO), primary_key=True),
    Column("resident_id", String(_ID), primary_key=True),
    Column("kind", String(_ID), primary_key=True),
    Column("action", String(_ENUM), primary_key=True),
    Column("alert_id", String(_ID)),
    Column("ts", Double, nullable=False),
)

preferences_table = Table(
    "alert_preferences",
    metadata,
    Column("recipient_id", String(_WHO), primary_key=True),
    Column("channels", _Json),
    Column("quiet_start", String(5)),
    Column("quiet_end", String(5)),
    Column("quiet_timezone", String(64)),
    Column("min_severity", String(_ENUM)),
    Column("language", String(16)),
    Column("updated_ts", Double, nullable=False),
    _one_of("min_severity", [s.value for s in Severity], nullable=True),
    CheckConstraint("(quiet_start IS NULL) = (quiet_end IS NULL)", name="quiet_start_and_end"),
)

shifts_table = Table(
    "alert_shifts",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("staff_code", String(_ID), nullable=False),
    Column("role", String(_ENUM), nullable=False),
    Column("scope", String(_ID), nullable=False),
    Column("start_ts", Double, nullable=False),
    Column("end_ts", Double, nullable=False),
    CheckConstraint("end_ts > start_ts", name="ends_after_start"),
    Index("uq_alert_shifts_staff_code_role_scope_start_ts", "staff_code", "role", "scope", "start_ts", unique=True),
    Index("ix_alert_shifts_role_end_ts", "role", "end_ts"),
)


# -- what the store hands out ---------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class TransitionRecord:
    """One recorded transition of an alert."""

    alert_id: str
    seq: int
    ts: float
    action: str
    actor: str
    previous_state: AlertState | None
    state: AlertState
    severity: Severity
    level: int
    count: int
    value: float | None
    reason: str
    note: str | None
    outcome: Outcome | None


@dataclass(slots=True, frozen=True)
class AuditEntry:
    """One line of the append-only audit log: who did or saw what, when, about which alert."""

    entry_id: int
    ts: float
    actor: str
    action: str
    alert_id: str | None
    detail: Mapping[str, object]


@dataclass(slots=True, frozen=True)
class Timer:
    """A persisted timer."""

    key: str
    alert_id: str
    kind: TimerKind
    level: int
    due_ts: float


@dataclass(slots=True, frozen=True)
class Delivery:
    """A notification in the outbox and how its delivery stands."""

    notification: Notification
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    receipt: str | None
    delivered_ts: float | None
    updated_ts: float


def timer_key(alert_id: str, kind: TimerKind) -> str:
    """The unique key of an alert's timer of one kind."""
    return f"{alert_id}:{kind.value}"


def notification_id(alert_id: str, seq: int, channel: ChannelName, recipient_id: str) -> str:
    """The stable id of the notification a transition sends one recipient over one channel."""
    return f"{alert_id}/{seq}/{channel.value}/{recipient_id}"


# -- engine and migrations ------------------------------------------------------------------------------------------
def create_alert_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; on SQLite with foreign keys, WAL, a busy timeout and BEGIN IMMEDIATE for writers;
    JSON columns take what the store serialized as it is.

    An in-memory SQLite database is refused: each thread would get its own empty database.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("the alerts store needs a SQLite file or PostgreSQL, not an in-memory database")
    engine = create_engine(url, json_serializer=_serialize_json, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling would start transactions late; take it over (SQLAlchemy's recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 30000")  # wait for the other writer instead of failing
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


MIGRATION_SET = MigrationSet(MIGRATIONS, VERSION_TABLE, "alerts store")
alembic_config = MIGRATION_SET.config
migrate = MIGRATION_SET.migrate
head_revision = MIGRATION_SET.head_revision
current_revision = MIGRATION_SET.current_revision


def open_alert_store(url: str, *, upgrade: bool = True, **engine_kwargs: Any) -> AlertStore:
    """Open the alerts store at a SQLAlchemy URL, migrating its tables to the newest revision unless told not to."""
    engine = create_alert_engine(url, **engine_kwargs)
    try:
        if upgrade:
            migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return AlertStore(engine)


# -- row <-> value ----------------------------------------------------------------------------------------------------
class _JsonText(str):
    """A JSON document serialized by :func:`_json`: the engine's serializer stores it as it is."""

    __slots__ = ()


def _json(value: Mapping[str, object]) -> _JsonText:
    # Whatever a caller put in a mapping is stored; what JSON cannot hold is kept as its text, never refused.
    # Serialized here, once: a context stored with each notification of a level is not serialized per row.
    return _JsonText(json.dumps(dict(value), default=str, allow_nan=False))


def _serialize_json(value: Any) -> str:
    """The engine's JSON serializer: what :func:`_json` serialized as it is, anything else as ``json.dumps``."""
    if isinstance(value, _JsonText):
        return str(value)
    return json.dumps(value)


def recipient_to_json(recipient: Recipient) -> dict[str, Any]:
    """A recipient as stored beside its notification (as it was when the notification was made)."""
    quiet = recipient.quiet_hours
    return {
        "recipient_id": recipient.recipient_id,
        "kind": recipient.kind.value,
        "name": recipient.name,
        "role": recipient.role,
        "email": recipient.email,
        "phone": recipient.phone,
        "device_id": recipient.device_id,
        "channels": [c.value for c in recipient.channels],
        "quiet_hours": None if quiet is None else {"start": quiet.start, "end": quiet.end, "timezone": quiet.timezone},
        "min_severity": recipient.min_severity.value,
        "language": recipient.language,
    }


def recipient_from_json(data: Mapping[str, Any]) -> Recipient:
    """The recipient :func:`recipient_to_json` stored."""
    quiet = data.get("quiet_hours")
    return Recipient(
        recipient_id=data["recipient_id"],
        kind=RecipientKind(data["kind"]),
        name=data["name"],
        role=data.get("role"),
        email=data.get("email"),
        phone=data.get("phone"),
        device_id=data.get("device_id"),
        channels=tuple(ChannelName(c) for c in data.get("channels", ())),
        quiet_hours=None if quiet is None else QuietHours(quiet["start"], quiet["end"], quiet["timezone"]),
        min_severity=Severity(data.get("min_severity", Severity.REMINDER.value)),
        language=data.get("language", "en"),
    )


def _alert_values(alert: AlertSnapshot, *, id_key: str = "id") -> dict[str, Any]:
    return {
        id_key: alert.alert_id,
        "resident_id": alert.resident_id,
        "home_id": alert.home_id,
        "kind": alert.kind,
        "rule_id": alert.rule_id,
        "severity": alert.severity.value,
        "state": alert.state.value,
        "created_ts": alert.created_ts,
        "updated_ts": alert.updated_ts,
        "count": alert.count,
        "value": alert.value,
        "unit": alert.unit,
        "reason": alert.reason,
        "detail": _json(alert.detail),
        "level": alert.level,
        "seq": alert.seq,
        "condition_active": alert.condition_active,
        "cancel_window_s": alert.cancel_window_s,
        "promote_after_s": alert.promote_after_s,
        "promote_to": None if alert.promote_to is None else alert.promote_to.value,
        "escalate_at": alert.escalate_at,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_ts": alert.acknowledged_ts,
        "handled_by": alert.handled_by,
        "handling_ts": alert.handling_ts,
        "resolved_by": alert.resolved_by,
        "resolved_ts": alert.resolved_ts,
        "outcome": None if alert.outcome is None else alert.outcome.value,
        "note": alert.note,
        "closed_ts": alert.closed_ts,
    }


def _alert(row: Row[Any]) -> AlertSnapshot:
    m = row._mapping
    return AlertSnapshot(
        alert_id=m["id"],
        resident_id=m["resident_id"],
        home_id=m["home_id"],
        kind=m["kind"],
        rule_id=m["rule_id"],
        severity=Severity(m["severity"]),
        state=AlertState(m["state"]),
        created_ts=m["created_ts"],
        updated_ts=m["updated_ts"],
        count=m["count"],
        value=m["value"],
        unit=m["unit"],
        reason=m["reason"],
        detail=m["detail"],
        level=m["level"],
        seq=m["seq"],
        condition_active=bool(m["condition_active"]),
        cancel_window_s=m["cancel_window_s"],
        promote_after_s=m["promote_after_s"],
        promote_to=None if m["promote_to"] is None else Severity(m["promote_to"]),
        escalate_at=m["escalate_at"],
        acknowledged_by=m["acknowledged_by"],
        acknowledged_ts=m["acknowledged_ts"],
        handled_by=m["handled_by"],
        handling_ts=m["handling_ts"],
        resolved_by=m["resolved_by"],
        resolved_ts=m["resolved_ts"],
        outcome=None if m["outcome"] is None else Outcome(m["outcome"]),
        note=m["note"],
        closed_ts=m["closed_ts"],
    )


def _transition(row: Row[Any]) -> TransitionRecord:
    m = row._mapping
    return TransitionRecord(
        alert_id=m["alert_id"],
        seq=m["seq"],
        ts=m["ts"],
        action=m["action"],
        actor=m["actor"],
        previous_state=None if m["previous_state"] is None else AlertState(m["previous_state"]),
        state=AlertState(m["state"]),
        severity=Severity(m["severity"]),
        level=m["level"],
        count=m["count"],
        value=m["value"],
        reason=m["reason"],
        note=m["note"],
        outcome=None if m["outcome"] is None else Outcome(m["outcome"]),
    )


def _audit(row: Row[Any]) -> AuditEntry:
    m = row._mapping
    return AuditEntry(m["id"], m["ts"], m["actor"], m["action"], m["alert_id"], m["detail"])


def _timer(row: Row[Any]) -> Timer:
    m = row._mapping
    return Timer(m["key"], m["alert_id"], TimerKind(m["kind"]), m["level"], m["due_ts"])


def _delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    notification = Notification(
        notification_id=m["id"],
        alert_id=m["alert_id"],
        resident_id=m["resident_id"],
        home_id=m["home_id"],
        kind=m["kind"],
        severity=Severity(m["severity"]),
        state=AlertState(m["state"]),
        recipient=recipient_from_json(m["recipient"]),
        channel=ChannelName(m["channel"]),
        title=m["title"],
        body=m["body"],
        created_ts=m["created_ts"],
        link=m["link"],
        escalation_level=m["level"],
        context=m["context"],
        payload=m["payload"],
    )
    return Delivery(
        notification=notification,
        status=DeliveryStatus(m["status"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
        receipt=m["receipt"],
        delivered_ts=m["delivered_ts"],
        updated_ts=m["updated_ts"],
    )


def _preferences(row: Row[Any]) -> Preferences:
    m = row._mapping
    quiet = None
    if m["quiet_start"] is not None:
        quiet = QuietHours(m["quiet_start"], m["quiet_end"], m["quiet_timezone"] or "UTC")
    return Preferences(
        channels=None if m["channels"] is None else tuple(ChannelName(c) for c in m["channels"]),
        quiet_hours=quiet,
        min_severity=None if m["min_severity"] is None else Severity(m["min_severity"]),
        language=m["language"],
    )


_WAITING = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)


# -- statements built once --------------------------------------------------------------------------------------------
# Building a statement per call (``insert(t).values(...)``) costs more CPU than SQLite takes to run it; these are
# built at import and compiled once per engine, and the values go in as parameters (a list of them: executemany).
def _where_equal(table: Table, *columns: str) -> list[Any]:
    return [table.c[name] == bindparam(name) for name in columns]


_SIGNAL_SEEN = select(signals_table.c.source_id).where(
    *_where_equal(signals_table, "source_id", "resident_id", "kind", "action")
)
_OPEN_ALERT = select(alerts_table).where(
    *_where_equal(alerts_table, "resident_id", "kind"), alerts_table.c.state.in_([s.value for s in _OPEN])
)
_PENDING_ALERTS = (
    select(alerts_table)
    .where(alerts_table.c.resident_id == bindparam("resident_id"), alerts_table.c.state == AlertState.PENDING.value)
    .order_by(alerts_table.c.created_ts, alerts_table.c.id)
)
_ALERT = select(alerts_table).where(alerts_table.c.id == bindparam("alert_id"))
_INSERT_ALERT = insert(alerts_table)
# The SET clause is the parameters' column names (every column but the id); "alert_id_" names the row.
_UPDATE_ALERT = update(alerts_table).where(alerts_table.c.id == bindparam("alert_id_"))
_INSERT_TRANSITION = insert(transitions_table)
_INSERT_AUDIT = insert(audit_table)
_INSERT_SIGNAL = insert(signals_table)
_INSERT_NOTIFICATION = insert(notifications_table)
_NEXT_DUE_TIMER = (
    select(timers_table)
    .where(timers_table.c.due_ts <= bindparam("now"))
    .order_by(timers_table.c.due_ts, timers_table.c.key)
    .limit(1)
)
_TIMER = select(timers_table).where(timers_table.c.key == bindparam("key"))
# Their FOR UPDATE forms, for PostgreSQL (SQLite has one writer at a time anyway).
_LOCKED = {statement: statement.with_for_update() for statement in (_OPEN_ALERT, _PENDING_ALERTS, _ALERT, _TIMER)}
_DELETE_TIMERS = delete(timers_table).where(timers_table.c.key.in_(bindparam("keys", expanding=True)))


def _timer_upsert(dialect_insert: Any) -> Any:
    statement = dialect_insert(timers_table)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[timers_table.c.key], set_={"due_ts": excluded.due_ts, "level": excluded.level}
    )


#: Set a timer or move it, in one statement (the alert id and kind are part of the key, so they never change).
_UPSERT_TIMER = {"sqlite": _timer_upsert(sqlite_insert), "postgresql": _timer_upsert(postgresql_insert)}
_PREFERENCES = select(preferences_table).where(preferences_table.c.recipient_id.in_(bindparam("ids", expanding=True)))
_SHIFTS_AT = (
    select(shifts_table)
    .where(
        shifts_table.c.role == bindparam("role"),
        shifts_table.c.start_ts <= bindparam("now"),
        shifts_table.c.end_ts > bindparam("now"),
    )
    .order_by(shifts_table.c.staff_code, shifts_table.c.start_ts)
)
_SUPPRESS_REMINDERS = (
    update(notifications_table)
    .where(
        notifications_table.c.alert_id == bindparam("alert_id_"),
        notifications_table.c.status.in_(_WAITING),
        notifications_table.c.severity == Severity.REMINDER.value,
        notifications_table.c.channel != ChannelName.LIVE.value,
    )
    .values(
        status=DeliveryStatus.SUPPRESSED.value,
        next_attempt_at=None,
        last_error="the alert closed before the reminder went out",
        updated_ts=bindparam("now"),
    )
)


# The dispatcher's.
_n = notifications_table
_DUE = (
    select(_n)
    .where(_n.c.status.in_(_WAITING), _n.c.next_attempt_at <= bindparam("now"))
    .order_by(_n.c.next_attempt_at, _n.c.created_ts, _n.c.id)
    .limit(bindparam("limit"))
)
_DUE_LOCKED = _DUE.with_for_update(skip_locked=True)
_CLAIM = (
    update(_n)
    .where(_n.c.id.in_(bindparam("ids", expanding=True)))
    .values(attempts=_n.c.attempts + 1, next_attempt_at=bindparam("next_attempt_at_"), updated_ts=bindparam("now_"))
)
_DELIVERED = (
    update(_n)
    .where(_n.c.id == bindparam("id_"))
    .values(
        status=DeliveryStatus.DELIVERED.value,
        receipt=bindparam("receipt_"),
        delivered_ts=bindparam("now_"),
        next_attempt_at=None,
        updated_ts=bindparam("now_"),
    )
)
_RETRY = (
    update(_n)
    .where(_n.c.id == bindparam("id_"))
    .values(
        status=DeliveryStatus.RETRYING.value,
        last_error=bindparam("error_"),
        next_attempt_at=bindparam("next_attempt_at_"),
        updated_ts=bindparam("now_"),
    )
)
_FAILED = (
    update(_n)
    .where(_n.c.id == bindparam("id_"))
    .values(
        status=DeliveryStatus.FAILED.value,
        last_error=bindparam("error_"),
        next_attempt_at=None,
        updated_ts=bindparam("now_"),
    )
)
_FAILED_ROW = select(_n.c.alert_id, _n.c.channel, _n.c.recipient_id, _n.c.attempts).where(_n.c.id == bindparam("id_"))


# -- one transaction ------------------------------------------------------------------------------------------------
class StoreTransaction:
    """What the loop reads and writes inside one database transaction (see :meth:`AlertStore.transaction`).

    Writes are queued and sent in batches (one executemany per table, the last snapshot of an alert, the last
    setting of a timer) before the next read, before :attr:`connection` is handed out, and at commit; so what
    this transaction reads includes what it wrote, and a write that breaks a constraint raises by the commit at
    the latest, rolling the whole transaction back as before.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._locks = connection.dialect.name == "postgresql"
        self._upsert_timer = _UPSERT_TIMER[connection.dialect.name]
        # alert id -> (whether it is new, its latest snapshot); timer key -> row to set, or None to delete it
        self._alerts: dict[str, tuple[bool, AlertSnapshot]] = {}
        self._transitions: list[dict[str, Any]] = []
        self._timers: dict[str, dict[str, Any] | None] = {}
        self._notifications: list[dict[str, Any]] = []
        self._audit: list[dict[str, Any]] = []
        self._signals: list[dict[str, Any]] = []
        # mapping id -> (the mapping, its JSON text): one context is stored with every notification of a level
        self._json_forms: dict[int, tuple[Mapping[str, object], _JsonText]] = {}

    @property
    def connection(self) -> Connection:
        """The transaction's connection, every queued write sent (for statements of the caller's own)."""
        self.flush()
        return self._connection

    def flush(self) -> None:
        """Send the queued writes: alerts (updates, then new ones: a closed alert makes room for a new open one),
        then what refers to them (transitions, timers, notifications), the audit log in order, handled signals."""
        c = self._connection
        if self._alerts:
            alerts, self._alerts = self._alerts, {}
            updates = [_alert_values(a, id_key="alert_id_") for new, a in alerts.values() if not new]
            inserts = [_alert_values(a) for new, a in alerts.values() if new]
            if updates:
                c.execute(_UPDATE_ALERT, updates)
            if inserts:
                c.execute(_INSERT_ALERT, inserts)
        if self._transitions:
            c.execute(_INSERT_TRANSITION, self._transitions)
            self._transitions = []
        if self._timers:
            self._flush_timers()
        if self._notifications:
            c.execute(_INSERT_NOTIFICATION, self._notifications)
            self._notifications = []
        if self._audit:
            c.execute(_INSERT_AUDIT, self._audit)
            self._audit = []
        if self._signals:
            c.execute(_INSERT_SIGNAL, self._signals)
            self._signals = []

    def _flush_timers(self) -> None:
        timers, self._timers = self._timers, {}
        gone = [key for key, row in timers.items() if row is None]
        rows = [row for row in timers.values() if row is not None]
        if gone:
            self._connection.execute(_DELETE_TIMERS, {"keys": gone})
        if rows:
            self._connection.execute(self._upsert_timer, rows)

    def _read(self, statement: Any, params: Mapping[str, Any], *, lock: bool = False) -> Any:
        self.flush()
        return self._connection.execute(_LOCKED[statement] if lock and self._locks else statement, params)

    def _json(self, value: Mapping[str, object]) -> _JsonText:
        known = self._json_forms.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        form = _json(value)
        self._json_forms[id(value)] = (value, form)  # the mapping is kept, so its id is not reused meanwhile
        return form

    # signals
    def signal_seen(self, signal: Signal) -> bool:
        """Whether this signal (source id, resident, kind, action) was handled before."""
        params = {
            "source_id": signal.source_id,
            "resident_id": signal.resident_id,
            "kind": signal.kind,
            "action": signal.action.value,
        }
        return self._read(_SIGNAL_SEEN, params).first() is not None

    def mark_signal(self, signal: Signal, alert_id: str | None, now: float) -> None:
        """Remember a handled signal (a concurrent duplicate fails on the primary key and is retried as a no-op)."""
        self._signals.append(
            {
                "source_id": signal.source_id,
                "resident_id": signal.resident_id,
                "kind": signal.kind,
                "action": signal.action.value,
                "alert_id": alert_id,
                "ts": now,
            }
        )

    # alerts
    def open_alert(self, resident_id: str, kind: str) -> AlertSnapshot | None:
        """The open alert of a resident and kind, locked for this transaction."""
        row = self._read(_OPEN_ALERT, {"resident_id": resident_id, "kind": kind}, lock=True).first()
        return None if row is None else _alert(row)

    def pending_alerts(self, resident_id: str) -> list[AlertSnapshot]:
        """The resident's alerts still in their cancel window, locked, oldest first."""
        return [_alert(row) for row in self._read(_PENDING_ALERTS, {"resident_id": resident_id}, lock=True)]

    def alert(self, alert_id: str, *, lock: bool = False) -> AlertSnapshot | None:
        """One alert by id (locked for this transaction when asked)."""
        row = self._read(_ALERT, {"alert_id": alert_id}, lock=lock).first()
        return None if row is None else _alert(row)

    def save_alert(self, alert: AlertSnapshot, *, new: bool) -> None:
        """Insert a new alert or overwrite the stored snapshot of an existing one."""
        queued = self._alerts.get(alert.alert_id)
        if new and queued is not None:
            self.flush()  # the same alert inserted twice: let the second insert fail as it always did
            queued = None
        self._alerts[alert.alert_id] = (new if queued is None else queued[0], alert)

    def add_transition(self, alert: AlertSnapshot, record: RecordTransition, now: float) -> None:
        """Store the transition that made ``alert`` (its ``seq``)."""
        self._transitions.append(
            {
                "alert_id": alert.alert_id,
                "seq": alert.seq,
                "ts": now,
                "action": record.action,
                "actor": record.actor,
                "previous_state": None if record.previous_state is None else record.previous_state.value,
                "state": alert.state.value,
                "severity": alert.severity.value,
                "level": alert.level,
                "count": alert.count,
                "value": alert.value,
                "reason": record.reason,
                "note": record.note,
                "outcome": None if alert.outcome is None else alert.outcome.value,
            }
        )

    def append_audit(
        self, ts: float, actor: str, action: str, alert_id: str | None, detail: Mapping[str, object] | None = None
    ) -> None:
        """Add a line to the audit log (the only write the log allows)."""
        self._audit.append(
            {"ts": ts, "actor": actor, "action": action, "alert_id": alert_id, "detail": _json(detail or {})}
        )

    # timers
    def set_timer(self, alert_id: str, kind: TimerKind, due: float, level: int) -> None:
        """Set the alert's timer of this kind (moving it if it exists)."""
        key = timer_key(alert_id, kind)
        self._timers[key] = {"key": key, "alert_id": alert_id, "kind": kind.value, "level": level, "due_ts": due}

    def cancel_timer(self, alert_id: str, kind: TimerKind) -> None:
        """Remove the alert's timer of this kind, if any."""
        self._timers[timer_key(alert_id, kind)] = None

    def next_due_timer(self, now: float) -> Timer | None:
        """The earliest timer due at ``now`` (not locked: lock its alert, then :meth:`lock_timer`)."""
        row = self._read(_NEXT_DUE_TIMER, {"now": now}).first()
        return None if row is None else _timer(row)

    def lock_timer(self, key: str) -> Timer | None:
        """A timer by key, locked for this transaction (None: another process fired it)."""
        row = self._read(_TIMER, {"key": key}, lock=True).first()
        return None if row is None else _timer(row)

    def delete_timer(self, key: str) -> None:
        """Remove a timer that fired."""
        self._timers[key] = None

    def timers(self, alert_id: str | None = None) -> list[Timer]:
        """The pending timers (of one alert), earliest first."""
        statement = select(timers_table).order_by(timers_table.c.due_ts, timers_table.c.key)
        if alert_id is not None:
            statement = statement.where(timers_table.c.alert_id == alert_id)
        return [_timer(row) for row in self.connection.execute(statement)]

    # the outbox
    def add_notification(
        self,
        notification: Notification,
        seq: int,
        *,
        next_attempt_at: float | None,
        status: DeliveryStatus = DeliveryStatus.PENDING,
        last_error: str | None = None,
    ) -> None:
        """Put one notification in the outbox."""
        n = notification
        self._notifications.append(
            {
                "id": n.notification_id,
                "alert_id": n.alert_id,
                "seq": seq,
                "recipient_id": n.recipient.recipient_id,
                "recipient": recipient_to_json(n.recipient),
                "channel": n.channel.value,
                "resident_id": n.resident_id,
                "home_id": n.home_id,
                "kind": n.kind,
                "severity": n.severity.value,
                "state": n.state.value,
                "level": n.escalation_level,
                "title": n.title,
                "body": n.body,
                "link": n.link,
                "context": self._json(n.context),
                "payload": self._json(n.payload),
                "created_ts": n.created_ts,
                "status": status.value,
                "attempts": 0,
                "next_attempt_at": next_attempt_at,
                "last_error": last_error,
                "receipt": None,
                "delivered_ts": None,
                "updated_ts": n.created_ts,
            }
        )

    def suppress_waiting_reminders(self, alert_id: str, now: float) -> int:
        """Mark the alert's reminders still waiting to go out (quiet hours) SUPPRESSED; how many."""
        self.flush()
        result = self._connection.execute(_SUPPRESS_REMINDERS, {"alert_id_": alert_id, "now": now})
        return result.rowcount

    # reading
    def list_alerts(
        self, *, open_only: bool = False, home_id: str | None = None, resident_id: str | None = None, limit: int = 100
    ) -> list[AlertSnapshot]:
        """Alerts, newest first."""
        t = alerts_table
        statement = select(t).order_by(t.c.created_ts.desc(), t.c.id.desc()).limit(limit)
        if open_only:
            statement = statement.where(t.c.state.in_(_OPEN))
        if home_id is not None:
            statement = statement.where(t.c.home_id == home_id)
        if resident_id is not None:
            statement = statement.where(t.c.resident_id == resident_id)
        return [_alert(row) for row in self.connection.execute(statement)]

    def transitions(self, alert_id: str) -> list[TransitionRecord]:
        """An alert's recorded transitions, in order."""
        t = transitions_table
        statement = select(t).where(t.c.alert_id == alert_id).order_by(t.c.seq)
        return [_transition(row) for row in self.connection.execute(statement)]

    def audit(self, *, alert_id: str | None = None, since: float | None = None) -> list[AuditEntry]:
        """Audit entries in the order they were written (of one alert, from a time)."""
        t = audit_table
        statement = select(t).order_by(t.c.id)
        if alert_id is not None:
            statement = statement.where(t.c.alert_id == alert_id)
        if since is not None:
            statement = statement.where(t.c.ts >= since)
        return [_audit(row) for row in self.connection.execute(statement)]

    def deliveries(
        self, *, alert_id: str | None = None, status: DeliveryStatus | None = None, limit: int | None = None
    ) -> list[Delivery]:
        """Outbox rows in the order they were created (of one alert, in one status)."""
        t = notifications_table
        statement = select(t).order_by(t.c.created_ts, t.c.seq, t.c.id)
        if alert_id is not None:
            statement = statement.where(t.c.alert_id == alert_id)
        if status is not None:
            statement = statement.where(t.c.status == status.value)
        if limit is not None:
            statement = statement.limit(limit)
        return [_delivery(row) for row in self.connection.execute(statement)]


# -- the store ------------------------------------------------------------------------------------------------------
class AlertStore:
    """The open alerts database: transactions for the loop, and one-call helpers for the dispatcher and the roster."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite has one writer at a time anyway: writers of this process queue here, not holding a pooled
        # connection each while they wait (a writer may need a second connection to read, e.g. preferences).
        self._writer = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        # Each thread's open write transaction: the recipient directory reads preferences and shifts in it.
        self._open = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """A read-write transaction: committed when the block ends, rolled back when it raises."""
        with self._writer, self.engine.begin() as connection:
            tx = StoreTransaction(connection)
            outer, self._open.tx = getattr(self._open, "tx", None), tx
            try:
                yield tx
                tx.flush()
            finally:
                self._open.tx = outer

    @contextmanager
    def reading(self) -> Iterator[StoreTransaction]:
        """A read-only transaction (on SQLite it does not wait for writers)."""
        with self.engine.connect() as connection:
            connection = connection.execution_options(**{READ_ONLY: True})
            with connection.begin():
                tx = StoreTransaction(connection)
                yield tx
                tx.flush()

    @contextmanager
    def _roster_reading(self) -> Iterator[Connection]:
        """Where to read preferences and shifts: in this thread's open write transaction when there is one (the
        loop asks for them in the middle of a transition: no second connection and transaction), else in a
        read-only transaction. Nothing is queued for those tables, so nothing needs sending first."""
        open_tx: StoreTransaction | None = getattr(self._open, "tx", None)
        if open_tx is not None:
            yield open_tx._connection
            return
        with self.reading() as tx:
            yield tx._connection

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # timers
    def next_due(self) -> float | None:
        """When the earliest timer is due (None: no timer)."""
        with self.reading() as tx:
            due: float | None = tx.connection.execute(select(func.min(timers_table.c.due_ts))).scalar()
            return due

    # the outbox, for the dispatcher
    def claim_due(self, now: float, *, limit: int, lease_s: float) -> list[Delivery]:
        """Take up to ``limit`` notifications due at ``now`` for sending: one attempt more each, and their next
        attempt moved ``lease_s`` ahead, so a sender that dies mid-send has them sent again after the lease."""
        with self.transaction() as tx:
            connection = tx.connection
            statement = _DUE_LOCKED if connection.dialect.name == "postgresql" else _DUE
            rows = list(connection.execute(statement, {"now": now, "limit": limit}))
            if not rows:
                return []
            next_attempt_at = now + lease_s
            ids = [row._mapping["id"] for row in rows]
            connection.execute(_CLAIM, {"ids": ids, "next_attempt_at_": next_attempt_at, "now_": now})
        # What the update wrote, without reading every row (and its JSON) again: the rows are this transaction's
        # (locked on PostgreSQL, the only writer on SQLite) from the select to the commit.
        return [
            replace(
                _delivery(row), attempts=row._mapping["attempts"] + 1, next_attempt_at=next_attempt_at, updated_ts=now
            )
            for row in rows
        ]

    def record_delivered(self, notification_id: str, receipt: str, now: float) -> None:
        """The channel accepted the notification."""
        with self.transaction() as tx:
            tx.connection.execute(_DELIVERED, {"id_": notification_id, "receipt_": receipt, "now_": now})

    def record_retry(self, notification_id: str, error: str, next_attempt_at: float, now: float) -> None:
        """A transient failure: try again at ``next_attempt_at``."""
        params = {"id_": notification_id, "error_": error, "next_attempt_at_": next_attempt_at, "now_": now}
        with self.transaction() as tx:
            tx.connection.execute(_RETRY, params)

    def record_failed(self, notification_id: str, error: str, now: float) -> None:
        """Given up: the notification is FAILED (shown to staff) and the audit log says so."""
        with self.transaction() as tx:
            tx.connection.execute(_FAILED, {"id_": notification_id, "error_": error, "now_": now})
            row = tx.connection.execute(_FAILED_ROW, {"id_": notification_id}).first()
            if row is not None:
                tx.append_audit(
                    now,
                    "system",
                    "delivery_failed",
                    row.alert_id,
                    {
                        "notification_id": notification_id,
                        "channel": row.channel,
                        "recipient_id": row.recipient_id,
                        "attempts": row.attempts,
                        "error": error,
                    },
                )

    def next_delivery_at(self) -> float | None:
        """When the earliest waiting notification is due (None: nothing waits)."""
        t = notifications_table
        with self.reading() as tx:
            due: float | None = tx.connection.execute(
                select(func.min(t.c.next_attempt_at)).where(t.c.status.in_(_WAITING))
            ).scalar()
            return due

    def deliveries(
        self, *, alert_id: str | None = None, status: DeliveryStatus | None = None, limit: int | None = None
    ) -> list[Delivery]:
        """Outbox rows in the order they were created (of one alert, in one status)."""
        with self.reading() as tx:
            return tx.deliveries(alert_id=alert_id, status=status, limit=limit)

    # preferences
    def preferences(self, recipient_ids: Collection[str]) -> dict[str, Preferences]:
        """The stored preferences of these recipients."""
        if not recipient_ids:
            return {}
        with self._roster_reading() as connection:
            rows = connection.execute(_PREFERENCES, {"ids": list(recipient_ids)})
            return {row._mapping["recipient_id"]: _preferences(row) for row in rows}

    def set_preferences(self, recipient_id: str, preferences: Preferences, now: float) -> None:
        """Store (replace) a recipient's preferences."""
        quiet = preferences.quiet_hours
        values = {
            "channels": None if preferences.channels is None else [c.value for c in preferences.channels],
            "quiet_start": None if quiet is None else quiet.start,
            "quiet_end": None if quiet is None else quiet.end,
            "quiet_timezone": None if quiet is None else quiet.timezone,
            "min_severity": None if preferences.min_severity is None else preferences.min_severity.value,
            "language": preferences.language,
            "updated_ts": now,
        }
        t = preferences_table
        with self.transaction() as tx:
            changed = tx.connection.execute(update(t).where(t.c.recipient_id == recipient_id).values(values))
            if changed.rowcount == 0:
                tx.connection.execute(insert(t).values(recipient_id=recipient_id, **values))

    # the roster
    def add_shifts(self, shifts: Sequence[Shift]) -> int:
        """Add shifts (one transaction); shifts already stored (same person, role, scope, start) are kept as they
        are. Returns how many were new."""
        t = shifts_table
        added = 0
        with self.transaction() as tx:
            for shift in shifts:
                exists = tx.connection.execute(
                    select(t.c.id).where(
                        t.c.staff_code == shift.staff_code,
                        t.c.role == shift.role,
                        t.c.scope == shift.scope,
                        t.c.start_ts == shift.start_ts,
                    )
                ).first()
                if exists is None:
                    tx.connection.execute(
                        insert(t).values(
                            staff_code=shift.staff_code,
                            role=shift.role,
                            scope=shift.scope,
                            start_ts=shift.start_ts,
                            end_ts=shift.end_ts,
                        )
                    )
                    added += 1
        return added

    def shifts_at(self, role: str, now: float) -> list[Shift]:
        """The shifts of ``role`` running at ``now``, whatever their scope."""
        with self._roster_reading() as connection:
            return [_shift(row) for row in connection.execute(_SHIFTS_AT, {"role": role, "now": now})]

    def shifts(self, *, ending_after: float | None = None) -> list[Shift]:
        """Every stored shift (those ending after a time), by start."""
        t = shifts_table
        statement = select(t).order_by(t.c.start_ts, t.c.staff_code)
        if ending_after is not None:
            statement = statement.where(t.c.end_ts > ending_after)
        with self.reading() as tx:
            return [_shift(row) for row in tx.connection.execute(statement)]


def _shift(row: Row[Any]) -> Shift:
    m = row._mapping
    return Shift(m["staff_code"], m["role"], m["scope"], m["start_ts"], m["end_ts"])
