"""`careloop registry ...`: import CSV files, migrate the schema, look at a resident.

The database URL is `--db URL`, else `database.url` from the settings (`CARELOOP_DATABASE__URL`, the TOML file).
Exit status 2 means bad input (an import with errors, invalid settings); nothing was written then.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from careloop.registry.importer import IMPORTED_TABLES, ImportKind, ImportReport, import_files
from careloop.registry.models import HealthProfile, Resident
from careloop.registry.store import (
    current_revision,
    head_revision,
    migrate,
    open_registry,
    org_path,
    resident_by_code,
)

_DB_OPTION = click.option(
    "--db", "db_url", metavar="URL", default=None, help="SQLAlchemy URL (default: database.url from the settings)"
)


def _database_url(db_url: str | None) -> str:
    if db_url:
        return db_url
    from careloop.settings import SettingsError, load_settings

    try:
        return load_settings().database.url
    except SettingsError as exc:
        click.echo("configuration is invalid:", err=True)
        for where, what in exc.problems:
            click.echo(f"  {where}: {what}", err=True)
        sys.exit(2)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@click.group()
def registry() -> None:
    """Residents, homes, devices and the organisation tree."""


@registry.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice([kind.value for kind in ImportKind]),
    default=None,
    help="what the files hold (default: told from each header)",
)
@_DB_OPTION
@click.option("--dry-run", is_flag=True, help="check everything and report what would change, write nothing")
def import_command(files: tuple[Path, ...], kind: str | None, db_url: str | None, dry_run: bool) -> None:
    """Import residents, devices and health records from CSV FILES, in one transaction.

    Every error is printed as `line N, field F: reason` and then nothing is imported (exit status 2).
    """
    url = _database_url(db_url)
    started = time.perf_counter()
    with open_registry(url) as opened:
        report = import_files(
            opened.engine, files, kind=ImportKind(kind) if kind else None, dry_run=dry_run, today=date.today()
        )
    seconds = time.perf_counter() - started
    if report.errors:
        _print_errors(report, several_files=len(files) > 1)
        sys.exit(2)
    _print_summary(report, seconds)


def _print_errors(report: ImportReport, *, several_files: bool) -> None:
    for error in report.errors:
        click.echo(f"{error.file}: {error}" if several_files and error.file else str(error), err=True)
    count = len(report.errors)
    click.echo(f"{count} error{'s' if count != 1 else ''}; nothing was imported", err=True)


def _print_summary(report: ImportReport, seconds: float) -> None:
    for name, kind, rows in report.files:
        click.echo(f"{name}: {rows} rows of {kind}")
    click.echo(f"{'table':<16}{'created':>9}{'updated':>9}{'unchanged':>11}")
    for table in IMPORTED_TABLES:
        counts = report.counts[table]
        click.echo(f"{table:<16}{counts.created:>9}{counts.updated:>9}{counts.unchanged:>11}")
    if report.dry_run:
        click.echo(f"dry run: checked in {seconds:.2f} s, nothing was written")
    else:
        click.echo(f"imported in {seconds:.2f} s")


@registry.command("migrate")
@_DB_OPTION
def migrate_command(db_url: str | None) -> None:
    """Create or upgrade the registry schema to the newest revision."""
    url = _database_url(db_url)
    with open_registry(url, upgrade=False) as opened:
        before = current_revision(opened.engine)
        migrate(opened.engine)
        after = current_revision(opened.engine)
    change = "already at" if before == after else f"{before or 'empty'} ->"
    click.echo(f"registry schema {change} revision {after} ({_shown(url)})")


@registry.group("show")
def show() -> None:
    """Look at what the registry holds."""


@show.command("resident")
@click.argument("code")
@_DB_OPTION
def show_resident(code: str, db_url: str | None) -> None:
    """Print a resident: home, place in the organisation tree, devices, health profile, family."""
    url = _database_url(db_url)
    with open_registry(url, upgrade=False) as opened:
        revision = current_revision(opened.engine)
        if revision != head_revision():
            raise click.ClickException(
                f"the registry schema at {_shown(url)} is at revision {revision or 'none'}, not {head_revision()}: "
                "run `careloop registry migrate`"
            )
        with opened.session() as session:
            resident = resident_by_code(session, code)
            if resident is None:
                raise click.ClickException(f"no resident {code}")
            place = " / ".join(unit.name for unit in org_path(session, resident.home.org_unit_id))
            for line in _describe(resident, place):
                click.echo(line)


def _describe(resident: Resident, place: str) -> list[str]:
    home = resident.home
    where = f"{home.latitude}, {home.longitude}; " if home.latitude is not None else ""
    lines = [
        f"{resident.code}  {resident.name} ({resident.sex.value}, born {resident.birth_date}, {resident.status.value})",
        _line("phone", resident.phone or "-"),
        _line("home", f"{home.code}: {(home.address or '-').replace(chr(10), ', ')}"),
        _line("", f"{home.timezone}; {where}geofence {home.geofence_radius_m} m"),
        _line("place", place),
    ]
    devices = [
        f"{d.code} {d.kind.value}" + (f" ({d.placement.value})" if d.placement else "") + ("" if d.active else " off")
        for d in resident.devices
    ]
    lines.append(_line("devices", ", ".join(devices) or "-"))
    lines.extend(_describe_health(resident.health_profile))
    for member in resident.family:
        contact = ", ".join(x for x in (member.phone, member.email) if x)
        emergency = " (emergency contact)" if member.emergency_contact else ""
        lines.append(_line("family", f"{member.priority}. {member.name}, {member.relation}: {contact}{emergency}"))
    return lines


def _line(label: str, value: str) -> str:
    return f"{label:<12}{value}"


def _describe_health(profile: HealthProfile | None) -> list[str]:
    if profile is None:
        return [_line("health", "-")]

    def listed(items: list[str]) -> str:
        """Items joined with '; ', or '-'."""
        return "; ".join(items) or "-"

    def limit(name: str, low: object, high: object, unit: str) -> str | None:
        """A limit pair as 'low..high', '>= low' or '<= high' (None when neither is set)."""
        if low is None and high is None:
            return None
        if high is None:
            return f"{name} >= {low} {unit}"
        return f"{name} <= {high} {unit}" if low is None else f"{name} {low}..{high} {unit}"

    limits = [
        limit("hr", profile.hr_min_bpm, profile.hr_max_bpm, "bpm"),
        limit("spo2", profile.spo2_min_pct, None, f"% (NEWS2 scale {profile.spo2_scale})"),
        limit("skin temp", profile.skin_temp_min_c, profile.skin_temp_max_c, "°C"),
        limit("systolic", profile.bp_systolic_min_mmhg, profile.bp_systolic_max_mmhg, "mmHg"),
        limit("diastolic", profile.bp_diastolic_min_mmhg, profile.bp_diastolic_max_mmhg, "mmHg"),
    ]
    exam = [
        f"{name} {value}"
        for name, value in (
            ("height_cm", profile.height_cm),
            ("weight_kg", profile.weight_kg),
            ("bmi", profile.bmi),
            ("waist_cm", profile.waist_cm),
            ("fasting_glucose_mmol_l", profile.fasting_glucose_mmol_l),
            ("hba1c_pct", profile.hba1c_pct),
        )
        if value is not None
    ]
    return [
        _line("conditions", listed(profile.conditions)),
        _line("medication", listed(profile.medications)),
        _line("allergies", listed(profile.allergies)),
        _line("exam", (", ".join(exam) or "-") + (f" ({profile.exam_date})" if profile.exam_date else "")),
        _line("limits", ", ".join(x for x in limits if x) or "population defaults"),
    ]
