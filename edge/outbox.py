"""The edge's durable store-and-forward outbox: one SQLite file in WAL mode, written by one thread.

What it holds:
- `outbox`: ready-to-send uplink messages. Each has its home's next `seq` (assigned here, persisted, rising by one
  per message) and `msg_id = f"{home}-{seq:012d}"`. The batch message (VitalsBatch, EventBatch, DeviceHealthBatch)
  is encoded once, when it is enqueued, so a retry after an outage or a restart resends identical bytes: the
  central side deduplicates by msg_id. A message leaves the table only when the uplink has its PUBACK.
- `staged`: the batcher. What the detectors produce (vitals summaries, events, device health) is staged item by
  item in the same transaction as the device message that produced it; a stream of a home becomes one outbox
  message when it has waited `max_wait_s`, holds `max_items` or `max_bytes`, or carries an alarm (an alarm event
  takes every staged event of its home with it at once, so events stay in detection order and nothing waits).
- `journal`: the device messages accepted lately (raw bytes and a digest), for two things. The digest recognises
  a message the home broker delivers again because its PUBACK never left (we ack after the commit; a kill in
  between means redelivery). The bytes let a restarted agent replay the last minutes into fresh detectors, so the
  state they had in memory (a vitals interval half full, the seconds before an impact) is not lost with a kill -9.
- `produced`: keys of the items produced lately (event ids, vitals and health report keys), so a replay does not
  send again what was already produced.
- `evictions`: what the size bound removed, per home and stream; never silent (a warning is logged, the heartbeat
  and `careloop edge status` show it).

Durability: WAL with `synchronous=NORMAL`, and `FULL` for a transaction that carries an alarm. A commit in WAL
mode is a write into the WAL file; with NORMAL it is not fsynced, so it is in the operating system's page cache
when we PUBACK the device: a kill -9 of the agent loses nothing (the kernel still writes the page), but a power
cut may lose the transactions since the last checkpoint or fsync. With FULL the WAL is fsynced at commit, which
costs a disk flush (about 0.25 ms on an SSD, several ms on an SD card) per transaction. Vitals and health are
frequent and a few seconds of them after a power cut are an acceptable loss (the devices of a home without power
are mostly offline too); a fall or an SOS is rare and must not be lost, so an alarm's transaction is FULL, which
also makes everything written before it durable.

Bounded disk: the payload bytes of the outbox (plus a fixed per-row overhead) are kept under `max_bytes`. When a
commit goes over, messages are evicted lowest priority first (vitals, then device health, then non-alarm events),
oldest first within a priority; a message carrying an alarm is never evicted, even if alarms alone exceed the
bound (then the outbox grows, and says so). Items staged in the batcher and the journal are bounded by their own
limits (the batch policies; the journal's horizon and row count).

The class is synchronous and not thread-safe: the service runs every call in one worker thread (`AsyncOutbox`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from careloop import messages as m
from careloop.contract import SPECS
from careloop.topics import TopicKind, TopicTree
from edge.models import Outputs

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
#: Default bound of the outbox (payload bytes plus ROW_OVERHEAD_BYTES per message). A home produces about 1.5 MB
#: a day (see tests/edge/test_outbox.py::test_a_day_of_a_home_fits_the_default_bound), so this holds weeks of one
#: gateway's traffic, or a day of about 150 homes in a multi-home process (give those a larger bound).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: What a row costs beyond its payload (ids, index entries, page slack), counted against the bound.
ROW_OVERHEAD_BYTES = 96
#: Device messages kept for replay after a restart: long enough to rebuild a vitals interval and a fall window.
DEFAULT_JOURNAL_KEEP_S = 180.0
#: Digests kept at least, for recognising redeliveries (more than any receive window of the home connection).
DEFAULT_JOURNAL_KEEP_ROWS = 2000
#: msg_id = "<home>-<seq:012d>" must fit an identifier (64 characters): longer home ids are cut (still unique per
#: home, which is what msg_id promises).
_MSG_ID_HOME_CHARS = 64 - 13


class Stream(StrEnum):
    """An uplink stream the outbox carries: one batch message model and one topic per stream."""

    VITALS = "vitals"
    EVENTS = "events"
    HEALTH = "health"

    @property
    def topic_kind(self) -> TopicKind:
        """The edge -> central topic of this stream."""
        return _TOPIC_KIND[self]

    @property
    def items_field(self) -> str:
        """The field of the batch message that holds the items."""
        return _ITEMS_FIELD[self]


_TOPIC_KIND = {
    Stream.VITALS: TopicKind.EDGE_VITALS,
    Stream.EVENTS: TopicKind.EDGE_EVENTS,
    Stream.HEALTH: TopicKind.EDGE_DEVICE_HEALTH,
}
_ITEMS_FIELD = {Stream.VITALS: "readings", Stream.EVENTS: "events", Stream.HEALTH: "devices"}
_MODEL: dict[Stream, type[m.UplinkMessage]] = {
    Stream.VITALS: m.VitalsBatch,
    Stream.EVENTS: m.EventBatch,
    Stream.HEALTH: m.DeviceHealthBatch,
}


class Priority(IntEnum):
    """Upstream priority: what eviction keeps longest. Heartbeats are never stored (a stale one means nothing)."""

    HEARTBEAT = 0
    VITALS = 1
    HEALTH = 2
    EVENT = 3
    ALARM = 4


_STREAM_PRIORITY = {Stream.VITALS: Priority.VITALS, Stream.HEALTH: Priority.HEALTH, Stream.EVENTS: Priority.EVENT}

#: Event kinds that page somebody: sent at once (no batching delay) and never evicted.
ALARM_EVENT_KINDS = frozenset({"fall", "sos", "ok", "bed_exit", "night_wandering", "geofence_exit", "inactivity"})


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a stream's staged items become one message: after `max_wait_s`, or at `max_items` or `max_bytes`."""

    max_wait_s: float
    max_items: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_wait_s < 0 or not 1 <= self.max_items <= m.MAX_BATCH_ITEMS or self.max_bytes < 1:
            raise ValueError(f"invalid batch policy {self}")


#: Vitals wait at most 30 s (a summary comes every 60 s; the central SpO2 rule has 150 s from onset to alert),
#: non-alarm events 5 s, device health 60 s. Batches stay well under the contract's 1 MiB per message.
DEFAULT_POLICIES: Mapping[Stream, BatchPolicy] = {
    Stream.VITALS: BatchPolicy(max_wait_s=30.0, max_items=200, max_bytes=256 * 1024),
    Stream.EVENTS: BatchPolicy(max_wait_s=5.0, max_items=50, max_bytes=512 * 1024),
    Stream.HEALTH: BatchPolicy(max_wait_s=60.0, max_items=500, max_bytes=256 * 1024),
}


@dataclass(frozen=True, slots=True)
class StagedItem:
    """One item for the batcher: its JSON, an idempotency key (event id, report key), and whether it is an alarm."""

    home_id: str
    stream: Stream
    key: str
    body: bytes
    alarm: bool = False


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """An accepted device message, as received."""

    home_id: str
    topic: str
    payload: bytes
    received_ts: float

    @property
    def digest(self) -> bytes:
        """What recognises a redelivery of the same message."""
        return message_digest(self.topic, self.payload)


def message_digest(topic: str, payload: bytes) -> bytes:
    """A 16-byte digest of topic and payload (a redelivered message has the same one)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(topic.encode())
    h.update(b"\x00")
    h.update(payload)
    return h.digest()


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A ready-to-send uplink message."""

    id: int  # global enqueue order; within a home it follows seq
    home_id: str
    seq: int
    msg_id: str
    stream: Stream
    priority: Priority
    alarm: bool
    n_items: int
    payload: bytes
    created_ts: float

    def topic(self, tree: TopicTree) -> str:
        """Where it is published."""
        return tree.edge(self.stream.topic_kind, self.home_id)


@dataclass(frozen=True, slots=True)
class Eviction:
    """Messages removed by the size bound for one home and stream, with their items and bytes."""

    messages: int = 0
    items: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class HomeBacklog:
    """One home's part of the outbox."""

    depth: int
    oldest_ts: float | None
    bytes: int
    staged: int
    next_seq: int
    evicted: Mapping[Stream, Eviction] = field(default_factory=dict)


@dataclass(slots=True)
class CommitResult:
    """What one commit did."""

    enqueued: list[str] = field(default_factory=list)  # msg_ids
    evicted: int = 0  # messages evicted by the bound
    over_bound: bool = False  # only alarms were left and the outbox is still over its bound


def item_json(item: m.Frozen) -> bytes:
    """An item's JSON, as `codec.encode` writes a message (fields left at None are omitted)."""
    return type(item).__pydantic_serializer__.to_json(item, exclude_none=True)


def is_alarm(event: m.Frozen) -> bool:
    """Whether an event pages somebody (sent at once, never evicted)."""
    return getattr(event, "kind", None) in ALARM_EVENT_KINDS


def staged_items(home_id: str, outputs: Outputs) -> list[StagedItem]:
    """What one result of the detectors stages. Keys say which items a replay must not send again: an event by
    its id, a vitals summary by its device and interval end (one summary per interval upstream, even if a replay
    composes it differently), a health report by its content."""
    items = []
    for event in outputs.events:
        items.append(StagedItem(home_id, Stream.EVENTS, "e:" + event.event_id, item_json(event), is_alarm(event)))
    for summary in outputs.vitals:
        items.append(StagedItem(home_id, Stream.VITALS, f"v:{summary.device_id}:{summary.ts!r}", item_json(summary)))
    for report in outputs.health:
        body = item_json(report)
        items.append(StagedItem(home_id, Stream.HEALTH, "h:" + hashlib.blake2b(body, digest_size=12).hexdigest(), body))
    return items


def msg_id_for(home_id: str, seq: int) -> str:
    """The message id of a home's seq: stable across retries and restarts."""
    return f"{home_id[:_MSG_ID_HOME_CHARS]}-{seq:012d}"


def assemble_batch(stream: Stream, msg_id: str, seq: int, bodies: Sequence[bytes]) -> bytes:
    """The JSON of a batch message, from items already serialised (byte for byte what `codec.encode` writes)."""
    head = b'{"v":1,"msg_id":"%s","seq":%d,"%s":[' % (msg_id.encode(), seq, stream.items_field.encode())
    return head + b",".join(bodies) + b"]}"


def decode_batch(stream: Stream, payload: bytes) -> m.UplinkMessage:
    """Parse a batch this outbox wrote (for tests and `edge status`)."""
    return _MODEL[stream].model_validate_json(payload)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS home_seq (home_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the uplink's cursor relies on ids only rising
    home_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    priority INTEGER NOT NULL,
    alarm INTEGER NOT NULL,
    n_items INTEGER NOT NULL,
    payload BLOB NOT NULL,
    created_ts REAL NOT NULL,
    UNIQUE (home_id, seq)
);
CREATE INDEX IF NOT EXISTS outbox_victims ON outbox (alarm, priority, id);
CREATE INDEX IF NOT EXISTS outbox_home ON outbox (home_id, id);
CREATE TABLE IF NOT EXISTS staged (
    id INTEGER PRIMARY KEY,
    home_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    alarm INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS staged_stream ON staged (home_id, stream, id);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    home_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB,
    digest BLOB NOT NULL UNIQUE,
    received_ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_home ON journal (home_id, id);
CREATE TABLE IF NOT EXISTS produced (
    home_id TEXT NOT NULL,
    key TEXT NOT NULL,
    produced_ts REAL NOT NULL,
    PRIMARY KEY (home_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS produced_age ON produced (produced_ts);
CREATE TABLE IF NOT EXISTS evictions (
    home_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    messages INTEGER NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (home_id, stream)
) WITHOUT ROWID;
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be used (another schema version, a corrupt file)."""


class Outbox:
    """The durable outbox; see the module docstring. Open with `Outbox(path)` or `with Outbox(path) as outbox:`."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        policies: Mapping[Stream, BatchPolicy] = DEFAULT_POLICIES,
        journal_keep_s: float = DEFAULT_JOURNAL_KEEP_S,
        journal_keep_rows: int = DEFAULT_JOURNAL_KEEP_ROWS,
        journal_payloads: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.policies = dict(policies)
        self.journal_keep_s = journal_keep_s
        self.journal_keep_rows = journal_keep_rows
        self.journal_payloads = journal_payloads
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            self._init_schema()
        self._bytes = self._count_bytes()
        self._normal_sync = True

    # -- set-up -------------------------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"{self.path}: cannot use WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA journal_size_limit = 16777216")  # the WAL shrinks back to 16 MiB after a burst
        self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); executescript commits by itself
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise OutboxError(f"{self.path}: outbox schema {row[0]}, this agent reads {SCHEMA_VERSION}")

    def _count_bytes(self) -> int:
        try:
            total, rows = self._db.execute("SELECT coalesce(sum(length(payload)), 0), count(*) FROM outbox").fetchone()
        except sqlite3.OperationalError as exc:
            raise OutboxError(f"{self.path}: not an outbox ({exc})") from None
        return int(total) + ROW_OVERHEAD_BYTES * int(rows)

    def close(self) -> None:
        """Close the file (a clean close also checkpoints the WAL into the database)."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    class _Tx:
        def __init__(self, outbox: Outbox, durable: bool) -> None:
            self.outbox = outbox
            self.durable = durable

        def __enter__(self) -> None:
            db = self.outbox._db
            if self.durable:
                db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
            db = self.outbox._db
            try:
                if exc_type is None:
                    db.execute("COMMIT")
                else:
                    db.execute("ROLLBACK")
                    self.outbox._bytes = self.outbox._count_bytes()
            finally:
                if self.durable:
                    db.execute("PRAGMA synchronous = NORMAL")

    def _transaction(self, durable: bool = False) -> Outbox._Tx:
        return Outbox._Tx(self, durable)

    # -- writing ------------------------------------------------------------------------------------------------
    def enqueue(self, home_id: str, stream: Stream, bodies: Sequence[bytes], *, now: float, alarm: bool = False) -> str:
        """Enqueue one batch message of already serialised items at once (no staging); returns its msg_id."""
        result = CommitResult()
        with self._transaction(durable=alarm):
            msg_id = self._insert_message(home_id, stream, bodies, alarm=alarm, now=now)
            result.enqueued.append(msg_id)
            self._evict(result)
        return msg_id

    def commit(
        self,
        *,
        now: float,
        journal: Sequence[JournalEntry] = (),
        items: Sequence[StagedItem] = (),
    ) -> CommitResult:
        """In one transaction: journal the device messages, stage the items they produced, turn alarms and full
        batches into outbox messages, and keep the bound. When this returns, all of it survives a kill -9."""
        result = CommitResult()
        alarm = any(item.alarm for item in items)
        with self._transaction(durable=alarm):
            db = self._db
            if journal:
                db.executemany(
                    "INSERT OR IGNORE INTO journal (home_id, topic, payload, digest, received_ts) VALUES (?,?,?,?,?)",
                    [
                        (j.home_id, j.topic, j.payload if self.journal_payloads else None, j.digest, j.received_ts)
                        for j in journal
                    ],
                )
            if items:
                db.executemany(
                    "INSERT OR IGNORE INTO produced (home_id, key, produced_ts) VALUES (?,?,?)",
                    [(i.home_id, i.key, now) for i in items],
                )
                db.executemany(
                    "INSERT INTO staged (home_id, stream, alarm, body, created_ts) VALUES (?,?,?,?,?)",
                    [(i.home_id, i.stream.value, int(i.alarm), i.body, now) for i in items],
                )
                touched = {(i.home_id, i.stream) for i in items}
                for home_id, stream in sorted(touched):
                    self._flush_stream(home_id, stream, now, result, force=False)
            self._evict(result)
        return result

    def flush_due(self, now: float, *, force: bool = False) -> CommitResult:
        """Turn every staged stream that has waited its `max_wait_s` (or all of them, with force) into messages."""
        result = CommitResult()
        due = []
        for home_id, stream_name, first_ts in self._db.execute(
            "SELECT home_id, stream, min(created_ts) FROM staged GROUP BY home_id, stream ORDER BY home_id, stream"
        ):
            stream = Stream(stream_name)
            if force or now - first_ts >= self.policies[stream].max_wait_s:
                due.append((home_id, stream))
        if not due:
            return result
        with self._transaction():
            for home_id, stream in due:
                self._flush_stream(home_id, stream, now, result, force=True)
            self._evict(result)
        return result

    def _flush_stream(self, home_id: str, stream: Stream, now: float, result: CommitResult, *, force: bool) -> None:
        """Staged items of one stream -> messages: everything if forced or an alarm is staged, else full batches."""
        policy = self.policies[stream]
        rows = self._db.execute(
            "SELECT id, alarm, body, created_ts FROM staged WHERE home_id = ? AND stream = ? ORDER BY id",
            (home_id, stream.value),
        ).fetchall()
        if not rows:
            return
        has_alarm = any(alarm for _, alarm, _, _ in rows)
        due = force or has_alarm or now - rows[0][3] >= policy.max_wait_s
        batch: list[tuple[int, int, bytes]] = []
        size = 0
        for row_id, alarm, body, _ in rows:
            if batch and (len(batch) >= policy.max_items or size + len(body) > policy.max_bytes):
                self._emit(home_id, stream, batch, now, result)
                batch, size = [], 0
            batch.append((row_id, alarm, body))
            size += len(body)
        if batch and (due or len(batch) >= policy.max_items or size >= policy.max_bytes):
            self._emit(home_id, stream, batch, now, result)

    def _emit(
        self, home_id: str, stream: Stream, batch: list[tuple[int, int, bytes]], now: float, result: CommitResult
    ) -> None:
        alarm = any(a for _, a, _ in batch)
        msg_id = self._insert_message(home_id, stream, [b for _, _, b in batch], alarm=alarm, now=now)
        self._db.executemany("DELETE FROM staged WHERE id = ?", [(row_id,) for row_id, _, _ in batch])
        result.enqueued.append(msg_id)

    def _insert_message(self, home_id: str, stream: Stream, bodies: Sequence[bytes], *, alarm: bool, now: float) -> str:
        if not bodies:
            raise ValueError("a batch message needs at least one item")
        if len(bodies) > m.MAX_BATCH_ITEMS:
            raise ValueError(f"{len(bodies)} items in one message; the contract allows {m.MAX_BATCH_ITEMS}")
        row = self._db.execute("SELECT next_seq FROM home_seq WHERE home_id = ?", (home_id,)).fetchone()
        seq = 0 if row is None else int(row[0])
        self._db.execute(
            "INSERT INTO home_seq (home_id, next_seq) VALUES (?, ?) "
            "ON CONFLICT (home_id) DO UPDATE SET next_seq = excluded.next_seq",
            (home_id, seq + 1),
        )
        msg_id = msg_id_for(home_id, seq)
        payload = assemble_batch(stream, msg_id, seq, bodies)
        limit = SPECS[stream.topic_kind].max_bytes
        if len(payload) > limit:
            raise ValueError(f"{stream.value} batch of {len(payload)} bytes exceeds the contract's {limit}")
        priority = Priority.ALARM if alarm else _STREAM_PRIORITY[stream]
        self._db.execute(
            "INSERT INTO outbox (home_id, seq, msg_id, stream, priority, alarm, n_items, payload, created_ts) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (home_id, seq, msg_id, stream.value, int(priority), int(alarm), len(bodies), payload, now),
        )
        self._bytes += len(payload) + ROW_OVERHEAD_BYTES
        return msg_id

    def _evict(self, result: CommitResult) -> None:
        """Keep the bound: delete non-alarm messages, lowest priority and oldest first; count what goes."""
        if self._bytes <= self.max_bytes:
            return
        evicted: dict[tuple[str, str], list[int]] = {}
        while self._bytes > self.max_bytes:
            victims = self._db.execute(
                "SELECT id, home_id, stream, n_items, length(payload) FROM outbox WHERE alarm = 0 "
                "ORDER BY priority, id LIMIT 256"
            ).fetchall()
            if not victims:
                result.over_bound = True
                break
            for row_id, home_id, stream, n_items, size in victims:
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                self._bytes -= size + ROW_OVERHEAD_BYTES
                tally = evicted.setdefault((home_id, stream), [0, 0, 0])
                tally[0] += 1
                tally[1] += n_items
                tally[2] += size
                result.evicted += 1
                if self._bytes <= self.max_bytes:
                    break
        for (home_id, stream), (n, items, size) in evicted.items():
            self._db.execute(
                "INSERT INTO evictions (home_id, stream, messages, items, bytes) VALUES (?,?,?,?,?) "
                "ON CONFLICT (home_id, stream) DO UPDATE SET messages = messages + excluded.messages, "
                "items = items + excluded.items, bytes = bytes + excluded.bytes",
                (home_id, stream, n, items, size),
            )
            log.warning(
                "outbox over its bound of %d bytes: evicted %d %s messages (%d items, %d bytes) of home %s",
                self.max_bytes,
                n,
                stream,
                items,
                size,
                home_id,
            )
        if result.over_bound:
            log.warning(
                "outbox holds %d bytes of alarms only, over its bound of %d: alarms are never evicted",
                self._bytes,
                self.max_bytes,
            )

    def ack(self, ids: Iterable[int]) -> int:
        """Forget messages the central broker acknowledged; returns how many were still there."""
        rows = [(i,) for i in ids]
        if not rows:
            return 0
        with self._transaction():
            gone = 0
            for (row_id,) in rows:
                size = self._db.execute("SELECT length(payload) FROM outbox WHERE id = ?", (row_id,)).fetchone()
                if size is not None:
                    self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                    self._bytes -= int(size[0]) + ROW_OVERHEAD_BYTES
                    gone += 1
        return gone

    def prune(self, now: float) -> None:
        """Drop journal rows and produced keys older than the replay horizon (keeping the newest digests)."""
        with self._transaction():
            newest = self._db.execute("SELECT max(id), max(received_ts) FROM journal").fetchone()
            if newest[0] is not None:
                self._db.execute(
                    "DELETE FROM journal WHERE id <= ? AND received_ts < ?",
                    (newest[0] - self.journal_keep_rows, newest[1] - self.journal_keep_s),
                )
            self._db.execute("DELETE FROM produced WHERE produced_ts < ?", (now - 2 * self.journal_keep_s,))

    # -- reading ------------------------------------------------------------------------------------------------
    def pending(self, home_id: str | None = None, *, after_id: int = 0, limit: int = 100) -> list[OutboxMessage]:
        """Messages waiting for the uplink, in enqueue order (which is seq order within each home)."""
        sql = (
            "SELECT id, home_id, seq, msg_id, stream, priority, alarm, n_items, payload, created_ts FROM outbox "
            "WHERE id > ?"
        )
        args: tuple[Any, ...] = (after_id,)
        if home_id is not None:
            sql += " AND home_id = ?"
            args += (home_id,)
        sql += " ORDER BY id LIMIT ?"
        return [
            OutboxMessage(
                id=r[0],
                home_id=r[1],
                seq=r[2],
                msg_id=r[3],
                stream=Stream(r[4]),
                priority=Priority(r[5]),
                alarm=bool(r[6]),
                n_items=r[7],
                payload=bytes(r[8]),
                created_ts=r[9],
            )
            for r in self._db.execute(sql, (*args, limit))
        ]

    def depth(self, home_id: str | None = None) -> int:
        """Messages waiting for the uplink."""
        if home_id is None:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM outbox WHERE home_id = ?", (home_id,)).fetchone()[0])

    def oldest_ts(self, home_id: str | None = None) -> float | None:
        """When the oldest waiting message was enqueued."""
        if home_id is None:
            row = self._db.execute("SELECT min(created_ts) FROM outbox").fetchone()
        else:
            row = self._db.execute("SELECT min(created_ts) FROM outbox WHERE home_id = ?", (home_id,)).fetchone()
        return None if row[0] is None else float(row[0])

    def size_bytes(self) -> int:
        """What counts against the bound: payload bytes plus ROW_OVERHEAD_BYTES per message."""
        return self._bytes

    def file_bytes(self) -> int:
        """The database and WAL files' size on disk."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def staged_count(self, home_id: str | None = None) -> int:
        """Items waiting in the batcher."""
        if home_id is None:
            return int(self._db.execute("SELECT count(*) FROM staged").fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM staged WHERE home_id = ?", (home_id,)).fetchone()[0])

    def next_seq(self, home_id: str) -> int:
        """The seq the home's next message will get (= how many messages the home has ever enqueued)."""
        row = self._db.execute("SELECT next_seq FROM home_seq WHERE home_id = ?", (home_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def evictions(self, home_id: str | None = None) -> dict[Stream, Eviction]:
        """What the bound has removed since the outbox was created, per stream (of one home or all)."""
        sql = "SELECT stream, sum(messages), sum(items), sum(bytes) FROM evictions"
        args: tuple[str, ...] = ()
        if home_id is not None:
            sql += " WHERE home_id = ?"
            args = (home_id,)
        sql += " GROUP BY stream"
        return {Stream(s): Eviction(int(n), int(i), int(b)) for s, n, i, b in self._db.execute(sql, args)}

    def backlog(self) -> dict[str, HomeBacklog]:
        """Every home's depth, oldest message, bytes, staged items, next seq and evictions."""
        homes: dict[str, dict[str, Any]] = {}
        for home_id, next_seq in self._db.execute("SELECT home_id, next_seq FROM home_seq"):
            homes[home_id] = {"depth": 0, "oldest_ts": None, "bytes": 0, "staged": 0, "next_seq": next_seq}
        blank = {"depth": 0, "oldest_ts": None, "bytes": 0, "staged": 0, "next_seq": 0}
        for home_id, n, oldest, size in self._db.execute(
            "SELECT home_id, count(*), min(created_ts), sum(length(payload)) FROM outbox GROUP BY home_id"
        ):
            homes.setdefault(home_id, dict(blank)).update(depth=n, oldest_ts=oldest, bytes=size)
        for home_id, n in self._db.execute("SELECT home_id, count(*) FROM staged GROUP BY home_id"):
            homes.setdefault(home_id, dict(blank))["staged"] = n
        evicted: dict[str, dict[Stream, Eviction]] = {}
        for home_id, stream, n, items, size in self._db.execute(
            "SELECT home_id, stream, messages, items, bytes FROM evictions"
        ):
            evicted.setdefault(home_id, {})[Stream(stream)] = Eviction(n, items, size)
            homes.setdefault(home_id, dict(blank))
        return {h: HomeBacklog(**v, evicted=evicted.get(h, {})) for h, v in sorted(homes.items())}

    def recent_digests(self, limit: int) -> list[bytes]:
        """The digests of the last `limit` journaled device messages, oldest first."""
        rows = self._db.execute("SELECT digest FROM journal ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [bytes(r[0]) for r in reversed(rows)]

    def replay_entries(self, home_id: str | None = None) -> list[JournalEntry]:
        """Journaled device messages within the replay horizon (of the newest one), in arrival order."""
        newest = self._db.execute("SELECT max(received_ts) FROM journal").fetchone()[0]
        if newest is None:
            return []
        sql = "SELECT home_id, topic, payload, received_ts FROM journal WHERE payload IS NOT NULL AND received_ts >= ?"
        args: tuple[Any, ...] = (newest - self.journal_keep_s,)
        if home_id is not None:
            sql += " AND home_id = ?"
            args += (home_id,)
        return [JournalEntry(h, t, bytes(p), ts) for h, t, p, ts in self._db.execute(sql + " ORDER BY id", args)]

    def already_produced(self, home_id: str, keys: Iterable[str]) -> set[str]:
        """Which of these item keys were produced before (within twice the replay horizon)."""
        found = set()
        for key in keys:
            if self._db.execute("SELECT 1 FROM produced WHERE home_id = ? AND key = ?", (home_id, key)).fetchone():
                found.add(key)
        return found


class AsyncOutbox:
    """Runs an Outbox's calls in one worker thread, so the event loop never waits on SQLite or an fsync."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-outbox")

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` (an Outbox method) in the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Wait for the calls in progress, then close the outbox."""
        self._executor.shutdown(wait=True)
        self.outbox.close()
