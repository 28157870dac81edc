"""The spool: durable, first in first out, and still there after the process is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ingest.spool import Spool


async def test_batches_come_back_oldest_first_and_leave_when_removed(tmp_path: Path) -> None:
    async with Spool(tmp_path / "s.sqlite3") as spool:
        assert await spool.oldest() is None
        await spool.append(["a 1", "b 2"])
        await spool.append(["c 3"])
        assert (spool.points, spool.batches) == (3, 2)
        first = await spool.oldest()
        assert first is not None
        assert first.lines == ["a 1", "b 2"]
        await spool.remove(first)
        second = await spool.oldest()
        assert second is not None
        assert second.lines == ["c 3"]
        await spool.remove(second)
        await spool.remove(second)  # removing twice changes nothing
        assert await spool.oldest() is None
        assert (spool.points, spool.batches) == (0, 0)


async def test_what_was_appended_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "s.sqlite3"
    async with Spool(path) as spool:
        await spool.append(['m,t=1 s="line\nwith a newline" 1', "m f=2 2"])
    async with Spool(path) as again:
        assert (again.points, again.batches) == (2, 1)
        entry = await again.oldest()
        assert entry is not None
        assert entry.lines == ['m,t=1 s="line\nwith a newline" 1', "m f=2 2"]


async def test_appends_are_committed_before_append_returns(tmp_path: Path) -> None:
    """Another connection sees the batch at once: it is in the database file (WAL), not in a buffer."""
    path = tmp_path / "s.sqlite3"
    async with Spool(path) as spool:
        await spool.append(["x 1"])
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT points FROM spool").fetchall() == [(1,)]
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = await Spool(tmp_path / "s.sqlite3").open()
    await spool.close()
    with pytest.raises(RuntimeError):
        await spool.append(["x 1"])
