"""Alembic as the components' stores use it: no alembic.ini, one version table per schema, one shared database.

A `MigrationSet` names a package's migration scripts and its version table (the registry and the alerts keep their
tables in the same database, each with its own history); `run_env()` is the whole of such a package's `env.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, text
from sqlalchemy.pool import NullPool


@dataclass(frozen=True, slots=True)
class MigrationSet:
    """One schema's migrations: where the scripts are (`package:folder`), its version table, and its name."""

    script_location: str
    version_table: str
    name: str

    def config(self, connection: Connection | None = None) -> Config:
        """The Alembic configuration (optionally bound to an open connection, which env.py then uses)."""
        config = Config()
        config.set_main_option("script_location", self.script_location)
        config.set_main_option("version_table", self.version_table)
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def migrate(self, engine: Engine, revision: str = "head") -> None:
        """Upgrade to `revision` in one transaction (a no-op when the schema is already there)."""
        with engine.begin() as connection:
            command.upgrade(self.config(connection), revision)

    def head_revision(self) -> str:
        """The newest migration shipped with this version of careloop."""
        head = ScriptDirectory.from_config(self.config()).get_current_head()
        assert head is not None, f"the {self.name} has no migrations"
        return head

    def current_revision(self, engine: Engine) -> str | None:
        """The migration the database is at (None: this schema was never created)."""
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
            return context.get_current_revision()


def run_env(
    metadata: MetaData,
    *,
    version_table: str,
    lock_id: int,
    create_engine: Callable[..., Engine],
    run_through: str,
) -> None:
    """The body of a migrations package's env.py.

    `MigrationSet.migrate()` passes an open connection in `config.attributes["connection"]`. Without one (the
    alembic command line with `-x url=...` or a `sqlalchemy.url` option), an engine is made with `create_engine`.
    Offline mode (`--sql`) prints the SQL instead of running it. Autogenerate looks at `metadata`'s tables only
    (other schemas share the database); on PostgreSQL, migrations started at the same time wait for each other on
    the advisory lock `lock_id`.
    """
    from alembic import context

    config = context.config

    def include_name(name: str | None, type_: str, _parent: Any) -> bool:
        return type_ != "table" or name in metadata.tables

    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": config.get_main_option("version_table") or version_table,
        "include_name": include_name,
        "compare_type": True,
    }

    def url() -> str:
        given = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        if not given:
            raise RuntimeError(f"no database URL: pass -x url=... or run through {run_through}")
        return given

    def run(connection: Connection) -> None:
        context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite", **options)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=url(), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    given = config.attributes.get("connection")
    if given is not None:
        run(given)
        return
    engine = create_engine(url(), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            run(connection)
    finally:
        engine.dispose()
