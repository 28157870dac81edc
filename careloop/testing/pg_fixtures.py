"""Pytest fixtures for SQL databases: a fresh PostgreSQL database per test, and `db_url` over SQLite and PostgreSQL.

Loaded as a plugin by tests/conftest.py. PostgreSQL tests run when `CARELOOP_TEST_PG_URL` names a server
(e.g. `postgresql+psycopg://postgres@127.0.0.1:5432/postgres`) and are skipped, saying so, when it is unset.
When it is set but the server cannot be reached, they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from careloop.testing.postgres import PG_URL_ENV, pg_admin_url, scratch_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, uniquely named PostgreSQL database, dropped after the test."""
    admin_url = pg_admin_url()
    if admin_url is None:
        pytest.skip(f"PostgreSQL tests need {PG_URL_ENV}=postgresql+psycopg://USER@HOST:PORT/postgres")
    with scratch_database(admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file in tmp_path, then (as a second case) a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
