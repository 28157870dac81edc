"""Alembic environment of the alerts migrations; run through `alerts.store.migrate()`, no alembic.ini.

`migrate()` passes an open connection in `config.attributes["connection"]`. Without one (the alembic command line
with `-x url=...` or a `sqlalchemy.url` option), an engine is created for the URL. Offline mode (`--sql`) prints
the SQL instead of running it. The alerts keep their own version table (`alembic_version_alerts`) and look at
their own tables only, so they can live in the registry's database.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.pool import NullPool

from alerts.store import VERSION_TABLE, create_alert_engine, metadata

config = context.config
target_metadata = metadata
#: Any number (not the registry's): the PostgreSQL advisory lock that serialises alerts migrations.
_MIGRATION_LOCK_ID = 0x616C_6572_7473


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    # The registry (and other components) may keep their tables in the same database.
    return type_ != "table" or name in target_metadata.tables


def _options() -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "version_table": config.get_main_option("version_table") or VERSION_TABLE,
        "include_name": _include_name,
        "compare_type": True,
    }


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or run through alerts.store.migrate()")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite", **_options())
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True, **_options())
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        engine = create_alert_engine(_url(), poolclass=NullPool)
        try:
            with engine.begin() as connection:
                _run(connection)
        finally:
            engine.dispose()
