"""Registry CSV import: careloop's bulk importer against a naive one-row-per-commit ORM import, in one run.

Generates N residents (default 2,000) with their org paths, devices and health records, then imports them into
a fresh database twice: with `careloop.registry.importer` (bulk, one transaction), and with a baseline that does
what a first version would: for each row, look up or add its org units, home and resident one query at a
time, `session.add()` and `commit()`. Both parse and validate the files the same way (`parse_csv`), so the
difference is the writing. Runs on SQLite (a temporary file) and, when `--pg-url` or `$CARELOOP_TEST_PG_URL`
names a server, on a scratch PostgreSQL database.

Run: `.venv/bin/python bench/registry_import.py [--residents 2000] [--json] [--pg-url URL]`.
Prints seconds for each and the ratio baseline / careloop (above 1 means careloop is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careloop.registry.importer import ImportKind, import_csv, parse_csv
from careloop.registry.models import Base, Device, HealthProfile, Home, OrgUnit, Resident
from careloop.registry.store import open_registry
from careloop.testing.postgres import pg_admin_url, scratch_database
from careloop.testing.registry_csv import RegistryCsv, generate_registry_csv

TODAY = date(2026, 1, 1)


def careloop_import(url: str, data: RegistryCsv) -> None:
    """The real importer: all three files in one transaction."""
    sources = [(kind, getattr(data, kind).encode()) for kind in ("residents", "devices", "health")]
    with open_registry(url) as registry:
        report = import_csv(registry.engine, sources, today=TODAY)
    if not report.written:
        raise SystemExit(f"the import failed: {report.errors[:5]}")


def naive_import(url: str, data: RegistryCsv) -> None:
    """The baseline: one ORM session.add() and commit() per row, looking everything up one query at a time."""
    residents = parse_csv(data.residents.encode(), kind=ImportKind.RESIDENTS, today=TODAY)
    devices = parse_csv(data.devices.encode(), kind=ImportKind.DEVICES, today=TODAY)
    health = parse_csv(data.health.encode(), kind=ImportKind.HEALTH, today=TODAY)
    with open_registry(url) as registry, registry.session() as session:
        for row in residents.rows:
            values = row.values
            parent: OrgUnit | None = None
            for level, name in values.org_path():
                unit = session.scalars(
                    select(OrgUnit).where(OrgUnit.parent == parent, OrgUnit.level == level, OrgUnit.name == name)
                ).one_or_none()
                if unit is None:
                    unit = OrgUnit(level=level, name=name, parent=parent)
                    session.add(unit)
                    session.commit()
                parent = unit
            home = session.scalars(select(Home).where(Home.code == values.home_code)).one_or_none()
            if home is None:
                home = Home(
                    code=values.home_code,
                    org_unit=parent,
                    address=values.address,
                    latitude=values.latitude,
                    longitude=values.longitude,
                    geofence_radius_m=values.geofence_radius_m or 200,
                    timezone=values.timezone,
                )
                session.add(home)
                session.commit()
            resident = Resident(
                code=values.resident_code,
                name=values.name,
                birth_date=values.birth_date,
                sex=values.sex,
                phone=values.phone,
                home=home,
                **({"status": values.status} if values.status else {}),
            )
            session.add(resident)
            session.commit()
        for row in devices.rows:
            values = row.values
            owner = None
            if values.resident_code:
                owner = session.scalars(select(Resident).where(Resident.code == values.resident_code)).one()
            device = Device(
                code=values.device_code,
                kind=values.kind,
                home=session.scalars(select(Home).where(Home.code == values.home_code)).one(),
                resident=owner,
                room=values.room,
                placement=values.placement,
                active=values.active if values.active is not None else True,
            )
            session.add(device)
            session.commit()
        for row in health.rows:
            values = row.values
            fields = {name: getattr(values, name) for name in values.model_fields_set if name != "resident_code"}
            resident = session.scalars(select(Resident).where(Resident.code == values.resident_code)).one()
            session.add(HealthProfile(resident=resident, **{k: v for k, v in fields.items() if v is not None}))
            session.commit()


def row_counts(url: str) -> dict[str, int]:
    """Rows per table, to check both imports did the same."""
    with open_registry(url) as registry, Session(registry.engine) as session:
        return {t.name: session.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    """A fresh SQLite file."""
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{Path(directory) / 'registry.db'}"


def timed(
    database: Callable[[], contextlib.AbstractContextManager[str]],
    run: Callable[[str, RegistryCsv], None],
    data: RegistryCsv,
) -> tuple[float, dict[str, int]]:
    """Seconds one import takes on a fresh database (schema created beforehand), and the rows it left."""
    with database() as url:
        open_registry(url).close()  # migrations are not part of the measurement
        start = time.perf_counter()
        run(url, data)
        seconds = time.perf_counter() - start
        return seconds, row_counts(url)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residents", type=int, default=2000, help="residents to generate")
    parser.add_argument("--pg-url", default=pg_admin_url(), help="PostgreSQL server for scratch databases")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    data = generate_registry_csv(args.residents)
    backends: list[tuple[str, Callable[[], contextlib.AbstractContextManager[str]]]] = [("sqlite", sqlite_database)]
    if args.pg_url:
        pg_url: str = args.pg_url
        backends.append(("postgresql", lambda: scratch_database(pg_url, prefix="careloop_bench")))
    results: dict[str, Any] = {
        "residents": data.n_residents,
        "homes": data.n_homes,
        "devices": data.n_devices,
        "health_records": data.n_residents,
        "backends": {},
    }
    for name, database in backends:
        careloop_s, careloop_rows = timed(database, careloop_import, data)
        naive_s, naive_rows = timed(database, naive_import, data)
        if careloop_rows != naive_rows:
            raise SystemExit(f"{name}: the imports disagree: {careloop_rows} != {naive_rows}")
        results["backends"][name] = {
            "careloop_s": round(careloop_s, 3),
            "naive_s": round(naive_s, 3),
            "ratio": round(naive_s / careloop_s, 1),
            "rows": careloop_rows,
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{results['residents']} residents, {results['homes']} homes, {results['devices']} devices, "
        f"{results['health_records']} health records"
    )
    print(f"{'backend':<12}{'careloop s':>12}{'naive s':>10}{'naive / careloop':>18}")
    for name, result in results["backends"].items():
        print(f"{name:<12}{result['careloop_s']:>12.2f}{result['naive_s']:>10.2f}{result['ratio']:>18.1f}")


if __name__ == "__main__":
    main()
