"""The local spool: batches of points kept on disk while InfluxDB is down or slow, replayed oldest first.

One SQLite file per ingest process, in WAL mode with `synchronous=FULL`: `append()` returns only after the batch is
committed and the WAL fsynced, so a batch in the spool survives a kill -9 or a power cut, and only then are its
messages acknowledged. Rows are numbered in the order they were appended (`AUTOINCREMENT` never reuses a number),
`oldest()` reads the first, `remove()` deletes it once InfluxDB has stored it. A batch is stored as a JSON list of its
lines (a string field may hold a newline, so the lines are not simply joined). A crash between the InfluxDB write
and the delete replays that batch again, which rewrites the same points (same series and timestamps).

Every SQLite call runs on one dedicated thread (an executor with one worker), never on the event loop: fsyncs take
milliseconds, and one thread keeps the calls in order without locks.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    points INTEGER NOT NULL,
    body BLOB NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One batch read back from the spool."""

    id: int
    lines: list[str]


class Spool:
    """A durable first-in, first-out store of line-protocol batches; `points` and `batches` say what it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.points = 0
        self.batches = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-spool")
        self._db: sqlite3.Connection | None = None

    # -- opening and closing ----------------------------------------------------------------------------------------
    async def open(self) -> Self:
        """Open (or create) the spool file and count what it holds."""
        await self._run(self._open)
        return self

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        points, batches = db.execute("SELECT COALESCE(SUM(points), 0), COUNT(*) FROM spool").fetchone()
        self.points, self.batches = int(points), int(batches)
        self._db = db

    async def close(self) -> None:
        """Close the file and stop the spool's thread."""
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- use --------------------------------------------------------------------------------------------------------
    async def append(self, lines: list[str]) -> int:
        """Store a batch durably (committed, fsynced) and return its number; raises sqlite3.Error or OSError."""
        body = json.dumps(lines, ensure_ascii=False, separators=(",", ":")).encode()
        row_id = await self._run(self._append, len(lines), body)
        self.points += len(lines)
        self.batches += 1
        return row_id

    def _append(self, points: int, body: bytes) -> int:
        cursor = self._conn().execute("INSERT INTO spool (points, body) VALUES (?, ?)", (points, body))
        row_id = cursor.lastrowid
        assert row_id is not None
        return row_id

    async def oldest(self) -> SpooledBatch | None:
        """The batch appended first among those still here, or None when the spool is empty."""
        row = await self._run(lambda: self._conn().execute("SELECT id, body FROM spool ORDER BY id LIMIT 1").fetchone())
        if row is None:
            return None
        row_id, body = row
        return SpooledBatch(id=int(row_id), lines=json.loads(bytes(body)))

    async def remove(self, batch: SpooledBatch) -> None:
        """Delete a replayed batch."""
        deleted = await self._run(self._remove, batch.id)
        if deleted:
            self.points -= len(batch.lines)
            self.batches -= 1

    def _remove(self, row_id: int) -> int:
        return self._conn().execute("DELETE FROM spool WHERE id = ?", (row_id,)).rowcount

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("the spool is not open")
        return self._db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
