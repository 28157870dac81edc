"""`careloop registry import / migrate / show resident` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from careloop.cli import cli
from careloop.testing.registry_csv import generate_registry_csv

HEADER = (
    "resident_code,name,birth_date,sex,home_code,county,street,community,grid,compound,building,unit,household,timezone"
)
GOOD = "R1,Li Wei,1940-05-01,female,H1,Minhang,S1,C1,G1,P1,B1,U1,101,Asia/Shanghai"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the careloop CLI."""
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """A small generated registry as three CSV files."""
    data = generate_registry_csv(30, seed=5)
    paths = []
    for kind in ("residents", "devices", "health"):
        path = tmp_path / f"{kind}.csv"
        path.write_text(getattr(data, kind), encoding="utf-8")
        paths.append(path)
    return paths


def test_import_prints_what_it_did_and_a_second_run_changes_nothing(db_url: str, files: list[Path]) -> None:
    first = invoke("registry", "import", *map(str, files), "--db", db_url)
    assert first.exit_code == 0, first.output
    assert first.stderr == ""
    assert "residents.csv: 30 rows of residents" in first.stdout
    assert "residents              30        0          0" in first.stdout
    assert "imported in " in first.stdout

    second = invoke("registry", "import", *map(str, files), "--db", db_url)
    assert second.exit_code == 0, second.output
    assert "residents               0        0         30" in second.stdout

    shown = invoke("registry", "show", "resident", "R00001", "--db", db_url)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0].startswith("R00001  ")
    assert (
        "place       Minhang District / Street 1 / Community 1-1 / Grid 1 / Compound 1 / Building 1 / Unit 1 / 101"
        in (shown.stdout)
    )
    assert "devices     BR-R00001 bracelet (wrist)" in shown.stdout


def test_import_errors_go_to_stderr_with_exit_status_2_and_nothing_is_imported(tmp_path: Path) -> None:
    bad = tmp_path / "residents.csv"
    bad.write_text(f"{HEADER}\n{GOOD}\nR2,,1940-05-01,female,H2,Minhang,S1,C1,G1,P1,B1,U1,102,Asia/Shanghai\n{GOOD}\n")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = invoke("registry", "import", str(bad), "--db", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "line 3, field name: a value is required",
        "line 4, field resident_code: resident R1 is already on line 2",
        "2 errors; nothing was imported",
    ]
    missing = invoke("registry", "show", "resident", "R1", "--db", url)
    assert missing.exit_code == 1
    assert "no resident R1" in missing.stderr


def test_errors_of_several_files_name_the_file(tmp_path: Path) -> None:
    residents = tmp_path / "residents.csv"
    residents.write_text(f"{HEADER}\n{GOOD}\n")
    devices = tmp_path / "devices.csv"
    devices.write_text("device_code,kind,home_code\nBR-1,bracelet,H7\n")
    result = invoke("registry", "import", str(residents), str(devices), "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"{devices}: line 2, field home_code: unknown home H7 (not in the registry or this import)"
    )


def test_dry_run_and_kind_option(tmp_path: Path) -> None:
    residents = tmp_path / "residents.csv"
    residents.write_text(f"{HEADER}\n{GOOD}\n")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    dry = invoke("registry", "import", "--dry-run", str(residents), "--db", url)
    assert dry.exit_code == 0, dry.output
    assert "residents               1        0          0" in dry.stdout
    assert "dry run: checked in " in dry.stdout
    assert invoke("registry", "show", "resident", "R1", "--db", url).exit_code == 1

    wrong_kind = invoke("registry", "import", "--kind", "health", str(residents), "--db", url)
    assert wrong_kind.exit_code == 2
    assert "line 1, field name: not a column of a health file" in wrong_kind.stderr


def test_migrate_and_the_database_url_from_the_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'settings.db'}"
    env = {"CARELOOP_DATABASE__URL": url}
    migrated = invoke("registry", "migrate", env=env)
    assert migrated.exit_code == 0, migrated.output
    assert migrated.stdout == f"registry schema empty -> revision 0001 ({url})\n"
    again = invoke("registry", "migrate", env=env)
    assert again.stdout == f"registry schema already at revision 0001 ({url})\n"


def test_show_refuses_a_database_without_the_schema(tmp_path: Path) -> None:
    result = invoke("registry", "show", "resident", "R1", "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == 1
    assert "is at revision none, not 0001: run `careloop registry migrate`" in result.stderr


def test_invalid_settings_exit_2() -> None:
    result = invoke("registry", "migrate", env={"CARELOOP_DATABASE__URL": "mysql://x"})
    assert result.exit_code == 2
    assert "database.url" in result.stderr
