"""CSV import: a generated 2,000-resident registry read back, every bad row reported, all or nothing."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from careloop.registry.importer import (
    FILE,
    HEADER,
    ROW,
    ImportKind,
    ImportReport,
    detect_kind,
    import_csv,
    import_files,
    parse_csv,
)
from careloop.registry.models import Base, HealthProfile, Home, OrgLevel, OrgUnit, Placement
from careloop.registry.store import (
    Registry,
    device_by_code,
    devices_of_home,
    health_profile_of,
    org_path,
    resident_by_code,
)
from careloop.testing.registry_csv import generate_registry_csv, home_path

TODAY = date(2026, 1, 15)
RESIDENTS_HEADER = (
    "resident_code,name,birth_date,sex,home_code,county,street,community,grid,compound,building,unit,household,timezone"
)
R1 = "R1,Li Wei,1940-05-01,female,H1,Minhang,S1,C1,G1,P1,B1,U1,101,Asia/Shanghai"
R2 = "R2,Wang Fang,1938-03-02,male,H1,Minhang,S1,C1,G1,P1,B1,U1,101,Asia/Shanghai"
R3 = "R3,Zhang Min,1945-07-07,female,H2,Minhang,S1,C1,G1,P1,B1,U1,102,Asia/Shanghai"


def csv_bytes(header: str, *rows: str) -> bytes:
    """A CSV file from its lines."""
    return ("\n".join((header, *rows)) + "\n").encode()


def run(registry: Registry, *files: tuple[str, bytes], **options: object) -> ImportReport:
    """Import in-memory files with a fixed 'today'."""
    return import_csv(registry.engine, list(files), today=TODAY, **options)  # type: ignore[arg-type]


def errors(report: ImportReport) -> list[tuple[int, str, str]]:
    """The report's errors as (line, field, reason)."""
    return [(e.line, e.field, e.reason) for e in report.errors]


def counts(report: ImportReport) -> dict[str, tuple[int, int, int]]:
    """(created, updated, unchanged) per table."""
    return {table: (c.created, c.updated, c.unchanged) for table, c in report.counts.items()}


def row_counts(registry: Registry) -> dict[str, int]:
    """Rows in every registry table."""
    with registry.session() as session:
        return {t.name: session.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}


def assert_empty(registry: Registry) -> None:
    """Nothing at all was written."""
    assert set(row_counts(registry).values()) == {0}


def distinct_org_units(n_homes: int) -> int:
    """How many org units the generator's first n homes sit in (every prefix of every path)."""
    prefixes = set()
    for index in range(n_homes):
        path = tuple((level, name) for level, name in home_path(index).items() if name)
        prefixes.update(path[:depth] for depth in range(1, len(path) + 1))
    return len(prefixes)


# -- the generated registry -------------------------------------------------------------------------------------
def test_a_generated_2000_resident_registry_imports_and_reads_back(registry: Registry, tmp_path: Path) -> None:
    data = generate_registry_csv(2000, seed=7)
    paths = []
    for kind in ("health", "devices", "residents"):  # any order: residents are imported first
        path = tmp_path / f"{kind}.csv"
        path.write_text(getattr(data, kind), encoding="utf-8")
        paths.append(path)
    report = import_files(registry.engine, paths, today=TODAY)
    assert report.errors == []
    assert report.written

    n_units = distinct_org_units(data.n_homes)
    expected = {
        "org_units": (n_units, 0, 0),
        "homes": (data.n_homes, 0, 0),
        "residents": (2000, 0, 0),
        "devices": (data.n_devices, 0, 0),
        "health_profiles": (2000, 0, 0),
    }
    assert counts(report) == expected
    assert row_counts(registry) == {
        "org_units": n_units,
        "staff": 0,
        "homes": data.n_homes,
        "residents": 2000,
        "family_members": 0,
        "devices": data.n_devices,
        "health_profiles": 2000,
    }

    with registry.session() as session:
        first = resident_by_code(session, "R00001")
        assert first is not None
        assert first.home.code == "H00001"
        assert first.home.timezone == "Asia/Shanghai"
        assert [(u.level.value, u.name) for u in org_path(session, first.home.org_unit_id)] == [
            ("county", "Minhang District"),
            ("street", "Street 1"),
            ("community", "Community 1-1"),
            ("grid", "Grid 1"),
            ("compound", "Compound 1"),
            ("building", "Building 1"),
            ("unit", "Unit 1"),
            ("household", "101"),
        ]
        # Every 50th home is a farmhouse: compound, building and unit are skipped.
        farm = session.scalars(select(Home).where(Home.code == "H00050")).one()
        levels = [u.level for u in org_path(session, farm.org_unit_id)]
        assert levels == [OrgLevel.COUNTY, OrgLevel.STREET, OrgLevel.COMMUNITY, OrgLevel.GRID, OrgLevel.HOUSEHOLD]
        # A quoted address spanning two lines survives.
        assert "\n" in (session.scalars(select(Home.address).where(Home.code == "H00100")).one() or "")
        # Couples share a home (every 5th home) and its devices.
        shared = session.scalars(select(Home).where(Home.code == "H00005")).one()
        assert len(shared.residents) == 2
        assert {d.code for d in devices_of_home(session, "H00005")} == {
            "GW-H00005",
            "PIR-H00005",
            *(f"BR-{r.code}" for r in shared.residents),
        }
        bracelet = device_by_code(session, "BR-R00010")
        assert bracelet is not None
        assert bracelet.resident is not None
        assert bracelet.resident.code == "R00010"
        assert bracelet.placement is Placement.WRIST
        profiles = session.scalars(select(HealthProfile).where(HealthProfile.spo2_scale == 2)).all()
        assert profiles, "the generator gives some residents COPD"
        assert all("COPD" in p.conditions and p.spo2_min_pct == 88 for p in profiles)
        last = health_profile_of(session, "R02000")
        assert last is not None
        assert last.hr_max_bpm == 120

    again = import_files(registry.engine, paths, today=TODAY)
    assert again.errors == []
    assert counts(again) == {table: (0, 0, created) for table, (created, _, _) in expected.items()}


def test_reimport_reports_only_what_changed(registry: Registry) -> None:
    data = generate_registry_csv(50, seed=3)
    files = [("residents.csv", data.residents.encode()), ("health.csv", data.health.encode())]
    assert run(registry, *files).written
    with registry.session() as session:
        before = health_profile_of(session, "R00002")
        assert before is not None
    residents = data.residents.replace("Asia/Shanghai", "Asia/Urumqi", 1)  # first home moves time zone
    health = "resident_code,hr_max_bpm\nR00002,110\nR00003,120\n"  # 120 is what R00003 has already
    report = run(registry, ("residents.csv", residents.encode()), ("health.csv", health.encode()))
    assert report.errors == []
    assert counts(report) == {
        "org_units": (0, 0, distinct_org_units(data.n_homes)),
        "homes": (0, 1, data.n_homes - 1),
        "residents": (0, 0, 50),
        "devices": (0, 0, 0),
        "health_profiles": (0, 1, 1),
    }
    with registry.session() as session:
        profile = health_profile_of(session, "R00002")
        assert profile is not None
        assert profile.hr_max_bpm == 110
        # columns left out of the file keep their values
        assert (profile.hr_min_bpm, profile.conditions, profile.bmi) == (
            before.hr_min_bpm,
            before.conditions,
            before.bmi,
        )


# -- one transaction, several files -----------------------------------------------------------------------------
DEVICES_HEADER = "device_code,kind,home_code,resident_code,room,placement,active"


def test_devices_may_refer_to_residents_created_by_the_same_import(registry: Registry) -> None:
    devices = csv_bytes(
        DEVICES_HEADER,
        "BR-1,bracelet,H1,R1,,,",
        "BELT-2,belt,H1,R2,,,yes",
        "GW-1,gateway,H1,,hall,,",
        "PIR-2,pir,H2,,bedroom,,false",
    )
    report = run(registry, ("devices.csv", devices), ("residents.csv", csv_bytes(RESIDENTS_HEADER, R1, R2, R3)))
    assert report.errors == []
    assert counts(report) == {
        "org_units": (9, 0, 0),
        "homes": (2, 0, 0),
        "residents": (3, 0, 0),
        "devices": (4, 0, 0),
        "health_profiles": (0, 0, 0),
    }
    with registry.session() as session:
        belt = device_by_code(session, "BELT-2")
        assert belt is not None
        assert belt.resident is not None
        assert belt.resident.code == "R2"
        assert belt.placement is Placement.WAIST  # the default for a belt
        pir = device_by_code(session, "PIR-2")
        assert pir is not None
        assert pir.active is False
        assert pir.placement is None


def test_an_error_in_one_file_rolls_back_every_file(registry: Registry) -> None:
    devices = csv_bytes(DEVICES_HEADER, "BR-1,bracelet,H1,R9,,,")
    report = run(registry, ("residents.csv", csv_bytes(RESIDENTS_HEADER, R1, R2, R3)), ("devices.csv", devices))
    assert errors(report) == [(2, "resident_code", "unknown resident R9 (not in the registry or this import)")]
    assert report.errors[0].file == "devices.csv"
    assert not report.written
    assert_empty(registry)


def test_dry_run_counts_but_writes_nothing(registry: Registry) -> None:
    report = run(registry, ("residents.csv", csv_bytes(RESIDENTS_HEADER, R1, R2, R3)), dry_run=True)
    assert report.ok
    assert not report.written
    assert counts(report)["residents"] == (3, 0, 0)
    assert_empty(registry)


def test_org_units_are_found_by_parent_level_and_name(registry: Registry) -> None:
    assert run(registry, ("a.csv", csv_bytes(RESIDENTS_HEADER, R1))).written
    # Same building, new household; and a 'Street S1' under another county is a different unit.
    r4 = "R4,Chen Jie,1950-01-01,male,H4,Minhang,S1,C1,G1,P1,B1,U1,201,Asia/Shanghai"
    r5 = "R5,Liu Yang,1951-01-01,male,H5,Xuhui,S1,,,,,,9,Asia/Shanghai"
    report = run(registry, ("b.csv", csv_bytes(RESIDENTS_HEADER, r4, r5)))
    assert counts(report)["org_units"] == (4, 0, 7)  # 201; Xuhui, Xuhui/S1, Xuhui/S1/9 new; 7 reused
    with registry.session() as session:
        assert session.scalar(select(func.count()).select_from(OrgUnit).where(OrgUnit.name == "S1")) == 2


def test_a_resident_can_move_home(registry: Registry) -> None:
    assert run(registry, ("a.csv", csv_bytes(RESIDENTS_HEADER, R1, R2, R3))).written
    moved = R2.replace(",H1,", ",H2,").replace(",101,", ",102,")
    report = run(registry, ("b.csv", csv_bytes(RESIDENTS_HEADER, moved)))
    assert counts(report)["residents"] == (0, 1, 0)
    with registry.session() as session:
        resident = resident_by_code(session, "R2")
        assert resident is not None
        assert resident.home.code == "H2"


# -- rejected files -------------------------------------------------------------------------------------------
def test_a_malformed_residents_file_is_rejected_with_every_error_and_nothing_imported(registry: Registry) -> None:
    header = RESIDENTS_HEADER + ",phone,status,latitude,longitude,address"
    rows = [
        R1 + ',+86 138 0000 0001,active,31.1,121.4,"Building 1,\nUnit 1, room 101"',  # lines 2-3: fine
        R2 + ',,away,31.1,121.4,"Building 1,\nUnit 1, room 101"',  # lines 4-5: fine, the same home
        "R3,,1945-02-30,woman,H2,Minhang,S1,C1,G1,P1,B1,U1,102,Mars/Base,12ab,asleep,91,121.4,",  # line 6
        "R1,Li Again,1940-05-01,female,H3,Minhang,S1,C1,G1,P1,B1,U1,103,UTC,,,,,",  # line 7: duplicate code
        "R4,Zhao Lei,2031-01-01,male,H4,Minhang,S1,C1,G1,P1,B1,U1,104,UTC,,,,,",  # line 8: born in the future
        "R4,Zhao Lei,1931-01-01,male,H4,Minhang,S1,C1,G1,P1,B1,U1,104,UTC,,,,,",  # line 9: duplicate of a bad row
        "R5,Sun Li,1939-09-09,female,H1,Minhang,S1,C1,G1,P1,B1,U1,101,UTC,,,31.1,121.4,",  # line 10: H1 differs
        "R6,Zhou Bo,1939-09-09,male,H6,Minhang,S1,C1,G1,P1,B1,U1,101,Asia/Shanghai,,,,,",  # line 11: H1's flat
        "R7,Wu Qi,1939-09-09,male,H7,Minhang,S1,C1,G1,P1,B1,U1,107,UTC,,,31.1,,",  # line 12: lat without lon
        "R8,Too Few,1939-09-09",  # line 13
        "R 9,Zheng He,19390909,male,H9,Minhang,S1,C1,G1,P1,B1,U1,109,UTC,,,,,",  # line 14
    ]
    report = run(registry, ("residents.csv", csv_bytes(header, *rows)))
    assert errors(report) == [
        (6, "name", "a value is required"),
        (6, "birth_date", "must be a real date written YYYY-MM-DD (got '1945-02-30')"),
        (6, "sex", "should be 'female', 'male' or 'other' (got 'woman')"),
        (6, "timezone", "is not an IANA time zone name such as Asia/Shanghai (got 'Mars/Base')"),
        (6, "phone", "must be digits, optionally with a leading '+', spaces, '-' or parentheses (got '12ab')"),
        (6, "status", "should be 'active', 'away', 'in_hospital' or 'inactive' (got 'asleep')"),
        (6, "latitude", "should be less than or equal to 90 (got '91')"),
        (7, "resident_code", "resident R1 is already on line 2"),
        (8, "birth_date", "lies in the future (got '2031-01-01')"),
        (9, "resident_code", "resident R4 is already on line 8"),
        (10, "timezone", "home H1 has timezone 'Asia/Shanghai' on line 2"),
        (10, "address", "home H1 has address 'Building 1,\\nUnit 1, room 101' on line 2"),
        (11, "household", "Minhang / S1 / C1 / G1 / P1 / B1 / U1 / 101 is already home H1 on line 2"),
        (12, "longitude", "latitude and longitude go together: give both or neither"),
        (13, ROW, "3 cells, but the header has 19 columns"),
        (14, "resident_code", "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit (got 'R 9')"),
        (14, "birth_date", "must be a real date written YYYY-MM-DD (got '19390909')"),
    ]
    assert {e.file for e in report.errors} == {"residents.csv"}
    assert not report.written
    assert_empty(registry)


def test_devices_and_health_rows_are_checked_against_the_registry(registry: Registry) -> None:
    assert run(registry, ("residents.csv", csv_bytes(RESIDENTS_HEADER, R1, R2, R3))).written
    devices = csv_bytes(
        DEVICES_HEADER,
        "BR-1,bracelet,H1,R1,,,",  # 2: fine
        "BR-1,bracelet,H1,R2,,,",  # 3: duplicate
        "BR-3,bracelet,H9,R1,,,",  # 4: unknown home
        "BR-4,bracelet,H2,R1,,,",  # 5: R1 lives in H1
        "BR-5,bracelet,H1,R7,,,",  # 6: unknown resident
        "PIR-1,pir,H1,,bedroom,wrist,",  # 7: placement on a PIR
        "GW-1,gateway,H1,R1,,,",  # 8: gateway with a resident
        "TV-1,television,H1,,living room,,maybe",  # 9: bad kind, room and flag
    )
    health = csv_bytes(
        "resident_code,conditions,hr_min_bpm,hr_max_bpm,hr_baseline_bpm,spo2_min_pct,spo2_scale,"
        "height_cm,weight_kg,bmi,exam_date",
        "R1,hypertension; COPD,50,110,70,88,2,170,70,24.2,2025-06-01",  # 2: fine
        "R2,,100,60,,,,,,,",  # 3: min above max
        "R3,,50,110,130,95,2,170,70,31,2025-01-01",  # 4: baseline outside, scale 2 limit, bmi
        "R8,,,,,,,,,,",  # 5: unknown resident
        "R2,copd; COPD,,,,,3,,,,",  # 6: duplicate, repeated condition, bad scale
        "R9,,,,,,,,,,2027-01-01",  # 7: an exam in the future (a row with bad cells is not looked up)
    )
    report = run(registry, ("devices.csv", devices), ("health.csv", health))
    assert errors(report) == [
        (3, "device_code", "device BR-1 is already on line 2"),
        (4, "home_code", "unknown home H9 (not in the registry or this import)"),
        (5, "resident_code", "resident R1 lives in home H1, not H2"),
        (6, "resident_code", "unknown resident R7 (not in the registry or this import)"),
        (7, "placement", "only bracelets and belts have a placement, not a pir"),
        (8, "resident_code", "a gateway serves a home, not one resident"),
        (
            9,
            "kind",
            "should be 'bracelet', 'belt', 'pir', 'thermopile', 'bed_sensor', 'chair_sensor', 'door' or "
            "'gateway' (got 'television')",
        ),
        (9, "room", "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit (got 'living room')"),
        (9, "active", "should be a valid boolean, unable to interpret input (got 'maybe')"),
        (3, "hr_min_bpm", "hr_min_bpm 100 must be below hr_max_bpm 60"),
        (4, "hr_baseline_bpm", "hr_baseline_bpm 130 lies outside the limits (hr_min_bpm 50, hr_max_bpm 110)"),
        (4, "spo2_min_pct", "spo2_min_pct 95 is above the NEWS2 scale 2 target of 88-92 % (spo2_scale is 2)"),
        (4, "bmi", "bmi 31.0 does not match weight_kg / height_cm² = 24.2"),
        (5, "resident_code", "unknown resident R8 (not in the registry or this import)"),
        (6, "resident_code", "resident R2 is already on line 3"),
        (6, "conditions", "lists 'COPD' twice (got 'copd; COPD')"),
        (6, "spo2_scale", "must be 1 or 2 (NEWS2 SpO2 scale) (got '3')"),
        (7, "exam_date", "lies in the future (got '2027-01-01')"),
    ]
    assert [e.file for e in report.errors] == ["devices.csv"] * 9 + ["health.csv"] * 9
    counts_after = row_counts(registry)
    assert counts_after["devices"] == counts_after["health_profiles"] == 0


def test_changed_limits_are_checked_against_the_limits_already_stored(registry: Registry) -> None:
    assert run(registry, ("residents.csv", csv_bytes(RESIDENTS_HEADER, R1))).written
    assert run(registry, ("h.csv", b"resident_code,hr_min_bpm,hr_max_bpm\nR1,50,110\n")).written
    report = run(registry, ("h.csv", b"resident_code,hr_max_bpm\nR1,45\n"))
    assert errors(report) == [(2, "hr_min_bpm", "hr_min_bpm 50 must be below hr_max_bpm 45")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"", [(1, FILE, "the file is empty")], id="empty"),
        pytest.param(b"\n \r\n", [(1, FILE, "the file is empty")], id="blank"),
        pytest.param(RESIDENTS_HEADER.encode() + b"\n\n", [(1, FILE, "no data rows below the header")], id="header"),
        pytest.param(
            b"code,label\nx,y\n",
            [
                (
                    1,
                    HEADER,
                    "cannot tell what the file holds: residents files have name and household columns, devices "
                    "files a device_code column, health files a resident_code column (or give the kind)",
                )
            ],
            id="unknown-kind",
        ),
        pytest.param(
            b"device_code,kind,room,colour,Room\nD1,pir,hall,red,x\n",
            [
                (1, "colour", "not a column of a devices file"),
                (1, "room", "the column appears twice"),
                (1, "home_code", "required column is missing"),
            ],
            id="bad-header",
        ),
        pytest.param(
            b"resident_code\nR1\n",
            [(1, HEADER, "a health file needs at least one health-profile column besides resident_code")],
            id="health-without-data",
        ),
        pytest.param(
            "resident_code,allergies\nR1,penicillin\nR2,pénicilline\nR3,latex\nR4,Stäbchen\n".encode("latin-1"),
            [
                (3, FILE, "not UTF-8: byte 0xe9 at position 5 of the line (save the file as UTF-8)"),
                (5, FILE, "not UTF-8: byte 0xe4 at position 6 of the line (save the file as UTF-8)"),
            ],
            id="latin-1",
        ),
        pytest.param(
            b'device_code,kind,home_code\nD1,pir,H1\nD2,pir,"H1\nD3,pir,H1\n',
            [(3, ROW, "malformed CSV (unexpected end of data); nothing after this line was read")],
            id="unclosed-quote",
        ),
    ],
)
def test_file_level_problems(content: bytes, expected: list[tuple[int, str, str]]) -> None:
    parsed = parse_csv(content, "f.csv", today=TODAY)
    assert [(e.line, e.field, e.reason) for e in parsed.errors] == expected


def test_line_numbers_are_physical_lines(registry: Registry) -> None:
    content = (
        b"\xef\xbb\xbfresident_code,allergies,conditions\r\n"  # a byte order mark, CRLF line ends
        b'R1,"penicillin;\r\nlatex","a\r\n\r\nb"\r\n'  # lines 2-5
        b"\r\n"  # line 6: blank
        b"R2,,x;x\r\n"  # line 7
    )
    parsed = parse_csv(content, "h.csv", today=TODAY)
    assert parsed.kind is ImportKind.HEALTH
    assert [(e.line, e.field) for e in parsed.errors] == [(7, "conditions")]
    assert parsed.rows[0].line == 2
    assert parsed.rows[0].values.allergies == ["penicillin", "latex"]


def test_the_kind_comes_from_the_header_unless_given() -> None:
    assert detect_kind(RESIDENTS_HEADER.split(",")) is ImportKind.RESIDENTS
    assert detect_kind(DEVICES_HEADER.split(",")) is ImportKind.DEVICES
    assert detect_kind(["resident_code", "allergies"]) is ImportKind.HEALTH
    forced = parse_csv(b"resident_code,allergies\nR1,latex\n", kind=ImportKind.DEVICES, today=TODAY)
    assert [(e.field, e.reason) for e in forced.errors] == [
        ("allergies", "not a column of a devices file"),
        ("device_code", "required column is missing"),
        ("kind", "required column is missing"),
        ("home_code", "required column is missing"),
    ]


def test_a_bad_resident_row_does_not_make_their_devices_unknown_too(registry: Registry) -> None:
    bad_r1 = R1.replace("1940-05-01", "1940-13-01")
    devices = csv_bytes(DEVICES_HEADER, "BR-1,bracelet,H1,R1,,,")
    report = run(registry, ("residents.csv", csv_bytes(RESIDENTS_HEADER, bad_r1)), ("devices.csv", devices))
    assert errors(report) == [(2, "birth_date", "must be a real date written YYYY-MM-DD (got '1940-13-01')")]
    assert_empty(registry)


def test_a_household_already_taken_by_another_home_is_rejected(registry: Registry) -> None:
    assert run(registry, ("a.csv", csv_bytes(RESIDENTS_HEADER, R1))).written
    intruder = "R5,Liu Yang,1951-01-01,male,H5,Minhang,S1,C1,G1,P1,B1,U1,101,Asia/Shanghai"
    report = run(registry, ("b.csv", csv_bytes(RESIDENTS_HEADER, intruder)))
    assert errors(report) == [(2, "household", "Minhang / S1 / C1 / G1 / P1 / B1 / U1 / 101 is already home H1")]
    assert row_counts(registry)["residents"] == 1


def test_sex_as_health_records_often_write_it_is_understood(registry: Registry) -> None:
    rows = (R1.replace(",female,", ",F,"), R2.replace(",male,", ",Male,"))
    report = run(registry, ("residents.csv", csv_bytes(RESIDENTS_HEADER, *rows)))
    assert report.ok, errors(report)
    with registry.session() as session:
        assert [r.sex.value for r in (resident_by_code(session, "R1"), resident_by_code(session, "R2")) if r] == [
            "female",
            "male",
        ]
