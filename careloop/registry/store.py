"""Open the registry database, bring its schema up to date, and the few look-ups other components need.

`open_registry(url)` creates the engine (SQLite: foreign keys on, WAL, real transactions) and runs the Alembic
migrations shipped in this package (`alembic upgrade head`, no alembic.ini). The registry keeps its own version
table, so other components can migrate their tables in the same database independently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker

from careloop.migrations import MigrationSet
from careloop.registry.models import Device, HealthProfile, Home, OrgUnit, Resident

MIGRATIONS = "careloop.registry:migrations"
VERSION_TABLE = "alembic_version_registry"


def create_registry_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; on SQLite with foreign keys enforced, WAL journaling and transactions that really begin."""
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite delays BEGIN until the first write, so reads before it (and DDL) would run outside the
    # transaction; take over transaction control instead (the recipe in SQLAlchemy's SQLite dialect docs).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")  # readers do not block the writer; answers 'memory' in memory
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


MIGRATION_SET = MigrationSet(MIGRATIONS, VERSION_TABLE, "registry")
alembic_config = MIGRATION_SET.config
migrate = MIGRATION_SET.migrate
head_revision = MIGRATION_SET.head_revision
current_revision = MIGRATION_SET.current_revision


class Registry:
    """An open registry database: its engine and a session factory. Use as a context manager or call close()."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def session(self) -> Session:
        """A new ORM session (use `with registry.session() as s, s.begin(): ...`)."""
        return self.sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on an exception."""
        with self.sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def open_registry(url: str, *, upgrade: bool = True, **engine_kwargs: Any) -> Registry:
    """Open the registry at a SQLAlchemy URL, first migrating its schema to the newest revision unless told not to."""
    engine = create_registry_engine(url, **engine_kwargs)
    try:
        if upgrade:
            migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return Registry(engine)


# -- look-ups ---------------------------------------------------------------------------------------------------
def resident_by_code(session: Session, code: str) -> Resident | None:
    """The resident with this external id, with their home, health profile and devices loaded."""
    statement = (
        select(Resident)
        .where(Resident.code == code)
        .options(
            joinedload(Resident.home),
            selectinload(Resident.health_profile),
            selectinload(Resident.devices),
            selectinload(Resident.family),
        )
    )
    return session.scalars(statement).one_or_none()


def devices_of_home(session: Session, home_code: str, *, active_only: bool = False) -> list[Device]:
    """The devices installed in a home, by code, each with its resident (if any) loaded."""
    statement = (
        select(Device)
        .join(Device.home)
        .where(Home.code == home_code)
        .options(joinedload(Device.resident))
        .order_by(Device.code)
    )
    if active_only:
        statement = statement.where(Device.active)
    return list(session.scalars(statement))


def device_by_code(session: Session, code: str) -> Device | None:
    """The device with this wire id, with its home and its resident (if any) loaded."""
    statement = select(Device).where(Device.code == code).options(joinedload(Device.home), joinedload(Device.resident))
    return session.scalars(statement).one_or_none()


def health_profile_of(session: Session, resident_code: str) -> HealthProfile | None:
    """The health profile of the resident with this external id (None if either is missing)."""
    statement = select(HealthProfile).join(HealthProfile.resident).where(Resident.code == resident_code)
    return session.scalars(statement).one_or_none()


def org_path(session: Session, org_unit_id: int) -> list[OrgUnit]:
    """An org unit and its ancestors, root first (one recursive query)."""
    chain = select(OrgUnit.id, OrgUnit.parent_id).where(OrgUnit.id == org_unit_id).cte("chain", recursive=True)
    chain = chain.union_all(select(OrgUnit.id, OrgUnit.parent_id).join(chain, OrgUnit.id == chain.c.parent_id))
    units = {unit.id: unit for unit in session.scalars(select(OrgUnit).join(chain, OrgUnit.id == chain.c.id))}
    path: list[OrgUnit] = []
    unit_id: int | None = org_unit_id
    while unit_id is not None and unit_id in units:
        path.append(units[unit_id])
        unit_id = units[unit_id].parent_id
    return path[::-1]
