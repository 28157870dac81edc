"""Alembic environment of the registry migrations; run through `careloop.registry.store.migrate()`, no alembic.ini
(see `careloop.migrations.run_env`)."""

from __future__ import annotations

from careloop.migrations import run_env
from careloop.registry.models import Base
from careloop.registry.store import VERSION_TABLE, create_registry_engine

run_env(
    Base.metadata,
    version_table=VERSION_TABLE,
    lock_id=0x6361_7265_6C6F,  # any number: the PostgreSQL advisory lock that serialises registry migrations
    create_engine=create_registry_engine,
    run_through="careloop.registry.store.migrate()",
)
