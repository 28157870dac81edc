"""Alembic environment of the alerts migrations; run through `alerts.store.migrate()`, no alembic.ini (see
`careloop.migrations.run_env`). The alerts keep their own version table (`alembic_version_alerts`) and look at
their own tables only, so they can live in the registry's database."""

from __future__ import annotations

from alerts.store import VERSION_TABLE, create_alert_engine, metadata
from careloop.migrations import run_env

run_env(
    metadata,
    version_table=VERSION_TABLE,
    lock_id=0x616C_6572_7473,  # not the registry's: the advisory lock that serialises alerts migrations
    create_engine=create_alert_engine,
    run_through="alerts.store.migrate()",
)
