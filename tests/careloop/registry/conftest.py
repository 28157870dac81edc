"""Fixtures for the registry tests: an open registry on each database `db_url` yields."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from careloop.registry.store import Registry, open_registry


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    """A migrated, empty registry (SQLite file, then PostgreSQL when configured)."""
    with open_registry(db_url) as opened:
        yield opened
