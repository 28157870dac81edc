"""Scratch PostgreSQL databases for tests and benchmarks, on a server named by `CARELOOP_TEST_PG_URL`.

The URL names a server and a role that may create databases, e.g.
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`; each scratch database gets a unique name and is dropped
(with any connections still open to it) when the context ends. No pytest here, so `bench/` can use it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

PG_URL_ENV = "CARELOOP_TEST_PG_URL"


def pg_admin_url() -> str | None:
    """The PostgreSQL server to create scratch databases on (`$CARELOOP_TEST_PG_URL`), or None if unset."""
    return os.environ.get(PG_URL_ENV) or None


@contextmanager
def scratch_database(admin_url: str, prefix: str = "careloop_test") -> Iterator[str]:
    """Create a uniquely named database, yield its URL (password included), and drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                # WITH (FORCE) (PostgreSQL 13+) also ends sessions a test left open.
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
