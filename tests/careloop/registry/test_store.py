"""Opening and migrating the registry, and the look-ups other components use."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from careloop.registry.models import (
    Base,
    Device,
    DeviceKind,
    HealthProfile,
    Home,
    OrgLevel,
    OrgUnit,
    Placement,
    Resident,
    Sex,
)
from careloop.registry.store import (
    VERSION_TABLE,
    Registry,
    alembic_config,
    create_registry_engine,
    current_revision,
    device_by_code,
    devices_of_home,
    head_revision,
    health_profile_of,
    open_registry,
    org_path,
    resident_by_code,
)


def test_the_migrations_build_exactly_the_models_schema(registry: Registry) -> None:
    with registry.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "compare_type": True, "compare_server_default": False}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_open_migrates_to_head_once_and_keeps_its_own_version_table(db_url: str) -> None:
    with open_registry(db_url) as first:
        assert current_revision(first.engine) == head_revision() == "0001"
    with open_registry(db_url) as second:  # already at head: nothing to do
        tables = set(inspect(second.engine).get_table_names())
    assert tables == {*Base.metadata.tables, VERSION_TABLE}


def test_downgrade_to_base_and_upgrade_again(registry: Registry) -> None:
    with registry.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(registry.engine).get_table_names()) <= {VERSION_TABLE}
    assert current_revision(registry.engine) is None
    with registry.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
    assert current_revision(registry.engine) == head_revision()


def test_open_without_upgrade_leaves_an_empty_database_alone(db_url: str) -> None:
    with open_registry(db_url, upgrade=False) as registry:
        assert current_revision(registry.engine) is None
        assert inspect(registry.engine).get_table_names() == []


def test_sqlite_enforces_foreign_keys_and_uses_wal(tmp_path: Path) -> None:
    engine = create_registry_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_sqlite_rolls_back_reads_and_writes_of_a_transaction(tmp_path: Path) -> None:
    # pysqlite on its own would not BEGIN before DDL; the engine emits BEGIN itself, so this rolls back.
    engine = create_registry_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.rollback()
        assert connection.execute(text("SELECT name FROM sqlite_master WHERE name = 't'")).first() is None
    engine.dispose()


def _populate(registry: Registry) -> None:
    county = OrgUnit(level=OrgLevel.COUNTY, name="Minhang")
    grid = OrgUnit(level=OrgLevel.GRID, name="Grid 7", parent=county)
    household = OrgUnit(level=OrgLevel.HOUSEHOLD, name="301", parent=grid)
    home = Home(code="H1", org_unit=household, timezone="Asia/Shanghai")
    resident = Resident(code="R1", name="Li Wei", birth_date=date(1938, 2, 1), sex=Sex.MALE, home=home)
    resident.health_profile = HealthProfile(conditions=["COPD"], spo2_scale=2, spo2_min_pct=88)
    devices = [
        Device(code="BR-1", kind=DeviceKind.BRACELET, home=home, resident=resident, placement=Placement.WRIST),
        Device(code="GW-1", kind=DeviceKind.GATEWAY, home=home, room="hall"),
        Device(code="PIR-1", kind=DeviceKind.PIR, home=home, active=False),
    ]
    with registry.transaction() as session:
        session.add_all([county, grid, household, home, resident, *devices])


def test_lookups(registry: Registry) -> None:
    _populate(registry)
    with registry.session() as session:
        resident = resident_by_code(session, "R1")
        assert resident is not None
        assert resident.home.code == "H1"
        assert resident.health_profile is not None
        assert resident.health_profile.spo2_scale == 2
        assert [d.code for d in resident.devices] == ["BR-1"]
        assert resident_by_code(session, "R2") is None

        assert [d.code for d in devices_of_home(session, "H1")] == ["BR-1", "GW-1", "PIR-1"]
        assert [d.code for d in devices_of_home(session, "H1", active_only=True)] == ["BR-1", "GW-1"]
        assert devices_of_home(session, "H9") == []

        bracelet = device_by_code(session, "BR-1")
        assert bracelet is not None
        assert bracelet.resident is not None
        assert bracelet.resident.code == "R1"
        gateway = device_by_code(session, "GW-1")
        assert gateway is not None
        assert gateway.resident is None
        assert gateway.home.code == "H1"

        profile = health_profile_of(session, "R1")
        assert profile is not None
        assert profile.conditions == ["COPD"]
        assert health_profile_of(session, "R2") is None

        path = org_path(session, resident.home.org_unit_id)
        assert [(u.level, u.name) for u in path] == [
            (OrgLevel.COUNTY, "Minhang"),
            (OrgLevel.GRID, "Grid 7"),
            (OrgLevel.HOUSEHOLD, "301"),
        ]
