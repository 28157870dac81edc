"""The on-duty roster (shifts, scopes, the CSV file and its errors) and the registry-backed recipient directory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from alerts.models import ChannelName, QuietHours, Recipient, RecipientKind, Severity
from alerts.roster import (
    ALL,
    Preferences,
    RegistryDirectory,
    Roster,
    Shift,
    ShiftImportError,
    on_duty,
    parse_shifts_csv,
)
from alerts.store import AlertStore, open_alert_store
from careloop.registry.models import (
    Device,
    DeviceKind,
    FamilyMember,
    Home,
    OrgLevel,
    OrgUnit,
    Resident,
    Sex,
    Staff,
    StaffRole,
)
from careloop.registry.store import Registry, open_registry

T0 = 1_790_000_000.0
HOUR = 3600.0


# -- shifts -----------------------------------------------------------------------------------------------------------
def test_on_duty_matches_role_time_and_scope_on_the_homes_org_path() -> None:
    shifts = [
        Shift("nurse-1", "nurse", ALL, T0, T0 + 8 * HOUR),
        Shift("nurse-2", "nurse", "7", T0, T0 + 8 * HOUR),  # the home's grid
        Shift("nurse-3", "nurse", "8", T0, T0 + 8 * HOUR),  # another grid
        Shift("nurse-4", "nurse", "7", T0 + 8 * HOUR, T0 + 16 * HOUR),  # the next shift
        Shift("doc-1", "doctor", ALL, T0, T0 + 8 * HOUR),
        Shift("nurse-2", "nurse", ALL, T0, T0 + 4 * HOUR),  # the same person twice: once
    ]
    path = [1, 3, 7, 42]  # county, community, grid, household
    assert [s.staff_code for s in on_duty(shifts, "nurse", path, T0)] == ["nurse-1", "nurse-2"]
    assert [s.staff_code for s in on_duty(shifts, "nurse", path, T0 + 8 * HOUR)] == ["nurse-4"]
    assert on_duty(shifts, "nurse", path, T0 - 1) == []
    assert [s.staff_code for s in on_duty(shifts, "doctor", [99], T0)] == ["doc-1"]


def test_the_roster_asks_for_the_homes_path_and_knows_no_unknown_home() -> None:
    class Source:
        def shifts_at(self, role: str, now: float) -> list[Shift]:
            return [Shift("doc-1", role, "7", T0, T0 + HOUR)]

    roster = Roster(Source(), {"H0001": [1, 7, 42]}.get)
    assert [s.staff_code for s in roster.on_duty("doctor", "H0001", T0)] == ["doc-1"]
    assert roster.on_duty("doctor", "H9999", T0) == []


def test_a_roster_file_in_unix_seconds_and_local_times() -> None:
    text = (
        "staff_code,role,scope,start,end\n"
        f"nurse-1,nurse,all,{T0:.0f},{T0 + 8 * HOUR:.0f}\n"
        "doc-1,doctor,7,2026-09-21 08:00,2026-09-21 20:00\n"
        "doc-2,doctor,ALL,2026-09-21T20:00+08:00,2026-09-22T08:00+08:00\n"
        "\n"
    )
    shifts = parse_shifts_csv(text, timezone="Asia/Shanghai")
    shanghai = ZoneInfo("Asia/Shanghai")
    assert shifts == [
        Shift("nurse-1", "nurse", ALL, T0, T0 + 8 * HOUR),
        Shift(
            "doc-1",
            "doctor",
            "7",
            datetime(2026, 9, 21, 8, tzinfo=shanghai).timestamp(),
            datetime(2026, 9, 21, 20, tzinfo=shanghai).timestamp(),
        ),
        Shift(
            "doc-2",
            "doctor",
            ALL,
            datetime(2026, 9, 21, 20, tzinfo=shanghai).timestamp(),
            datetime(2026, 9, 22, 8, tzinfo=shanghai).timestamp(),
        ),
    ]


def test_every_problem_of_a_roster_file_is_reported_with_line_and_column() -> None:
    text = (
        "staff_code,role,scope,start,end\n"
        "nurse-1,plumber,all,1790000000,1790028800\n"  # 2 role
        "nurse-1,nurse,grid seven,1790000000,1790028800\n"  # 3 scope
        "nurse-1,nurse,all,tomorrow,1790028800\n"  # 4 start
        "nurse-1,nurse,all,1790028800,1790000000\n"  # 5 end before start
        "nurse-1,nurse,all,1790000000,1799000000\n"  # 6 too long
        "nurse-1,nurse,all,1790000000\n"  # 7 cells
        "doc-1,doctor,all,1790000000,1790028800\n"
        "doc-1,doctor,all,1790000000,1790028800\n"  # 9 duplicate of 8
        ",nurse,all,100,1790028800\n"  # 10 empty code, before 2020
    )
    with pytest.raises(ShiftImportError) as caught:
        parse_shifts_csv(text)
    found = [(e.line, e.field) for e in caught.value.errors]
    assert found == [
        (2, "role"),
        (3, "scope"),
        (4, "start"),
        (5, "end"),
        (6, "end"),
        (7, "ROW"),
        (9, "ROW"),
        (10, "staff_code"),
        (10, "start"),
    ]
    reasons = {(e.line, e.field): e.reason for e in caught.value.errors}
    assert reasons[(5, "end")] == "the shift ends before it starts"
    assert reasons[(9, "ROW")] == "the same shift as line 8"
    assert "'grid seven' is not 'all' or an org unit id" in reasons[(3, "scope")]
    assert "9 problem(s) in the roster" in str(caught.value)


def test_a_roster_file_with_a_wrong_header_or_zone() -> None:
    with pytest.raises(ShiftImportError, match="missing column"):
        parse_shifts_csv("staff,role,scope,start,end\n")
    with pytest.raises(ShiftImportError, match="unknown column"):
        parse_shifts_csv("staff_code,role,scope,start,end,ward\n")
    with pytest.raises(ShiftImportError, match="empty"):
        parse_shifts_csv("")
    with pytest.raises(ShiftImportError, match="unknown time zone"):
        parse_shifts_csv("staff_code,role,scope,start,end\n", timezone="Mars/Olympus")


def test_a_roster_file_checked_against_the_registry() -> None:
    text = (
        "staff_code,role,scope,start,end\n"
        "doc-1,nurse,all,1790000000,1790028800\n"
        "ghost,doctor,Minhang / Grid 9,1790000000,1790028800\n"
        "doc-1,doctor,Minhang / Grid 7,1790000000,1790028800\n"
    )
    with pytest.raises(ShiftImportError) as caught:
        parse_shifts_csv(text, staff_roles={"doc-1": "doctor"}, resolve_scope={"Minhang / Grid 7": 7}.get)
    assert [(e.line, e.field, e.reason) for e in caught.value.errors] == [
        (2, "role", "doc-1 is a doctor in the registry, not a nurse"),
        (3, "staff_code", "no staff member 'ghost' in the registry"),
        (3, "scope", "no org unit 'Minhang / Grid 9' in the registry"),
    ]


def test_preferences_replace_only_what_they_set() -> None:
    family = Recipient("family:1", RecipientKind.FAMILY, "Mei", email="mei@example.org", min_severity=Severity.LOW)
    quiet = QuietHours("22:00", "07:00", "Asia/Shanghai")
    changed = Preferences(quiet_hours=quiet, min_severity=Severity.REMINDER).apply(family)
    assert changed.quiet_hours == quiet
    assert changed.min_severity is Severity.REMINDER
    assert changed.channels == (ChannelName.EMAIL,)
    assert Preferences().apply(family) == family


# -- the registry's directory -----------------------------------------------------------------------------------------
@dataclass
class Registered:
    registry: Registry
    store: AlertStore
    directory: RegistryDirectory
    grid: int
    other_grid: int
    community: int


@pytest.fixture
def registered(db_url: str) -> Iterator[Registered]:
    with open_registry(db_url) as registry, open_alert_store(db_url) as store:
        with registry.transaction() as s:
            county = OrgUnit(level=OrgLevel.COUNTY, name="Minhang")
            community = OrgUnit(level=OrgLevel.COMMUNITY, name="Community 1", parent=county)
            grid = OrgUnit(level=OrgLevel.GRID, name="Grid 7", parent=community)
            other = OrgUnit(level=OrgLevel.GRID, name="Grid 8", parent=community)
            household = OrgUnit(level=OrgLevel.HOUSEHOLD, name="301", parent=grid)
            home = Home(code="H0001", org_unit=household, timezone="Asia/Shanghai")
            resident = Resident(code="R0001", name="Wang Wei", birth_date=date(1941, 3, 2), sex=Sex.MALE, home=home)
            s.add_all([county, community, grid, other, household, home, resident])
            s.flush()
            s.add_all(
                [
                    Device(code="PIR-1", kind=DeviceKind.PIR, home=home),
                    Device(code="BR-OLD", kind=DeviceKind.BRACELET, home=home, resident=resident, active=False),
                    Device(code="BR-NEW", kind=DeviceKind.BRACELET, home=home, resident=resident),
                    Staff(
                        code="grid-7", name="Zhao Min", role=StaffRole.GRID_STAFF, email="z@c.example", org_unit=grid
                    ),
                    Staff(code="grid-8", name="Sun Li", role=StaffRole.GRID_STAFF, email="s@c.example", org_unit=other),
                    Staff(code="grid-all", name="Qian", role=StaffRole.GRID_STAFF, phone="+8613800000009"),
                    Staff(
                        code="lead-1",
                        name="Liu",
                        role=StaffRole.COMMUNITY_LEAD,
                        email="l@c.example",
                        org_unit=community,
                    ),
                    Staff(code="doc-1", name="Dr Huang", role=StaffRole.DOCTOR, email="h@c.example"),
                    FamilyMember(resident=resident, name="Jun", relation="son", phone="+8613900000002", priority=2),
                    FamilyMember(
                        resident=resident,
                        name="Mei",
                        relation="daughter",
                        email="mei@example.org",
                        emergency_contact=True,
                        priority=1,
                    ),
                ]
            )
            s.flush()
            ids = (grid.id, other.id, community.id)
        directory = RegistryDirectory(registry, shifts=store, preferences=store)
        yield Registered(registry, store, directory, *ids)


def ids(recipients: list[Recipient]) -> list[str]:
    return [r.recipient_id for r in recipients]


def test_grid_staff_are_those_whose_unit_is_the_homes_or_an_ancestor(registered: Registered) -> None:
    d = registered.directory
    covering = d.staff_covering("grid_staff", "H0001")
    assert ids(covering) == ["grid-7", "grid-all"]  # grid-8 covers another grid; grid-all covers everything
    assert covering[0] == Recipient(
        "grid-7",
        RecipientKind.STAFF,
        "Zhao Min",
        role="grid_staff",
        email="z@c.example",
        channels=(ChannelName.LIVE, ChannelName.EMAIL),
        min_severity=Severity.LOW,
    )
    assert covering[1].channels == (ChannelName.LIVE, ChannelName.WEBHOOK)  # no e-mail: the SMS gateway
    assert ids(d.staff_covering("community_lead", "H0001")) == ["lead-1"]
    assert d.staff_covering("grid_staff", "H9999") == []
    assert d.org_path_ids("H9999") is None


def test_staff_on_duty_come_from_the_roster_scoped_to_the_home(registered: Registered) -> None:
    r = registered
    r.store.add_shifts(
        [
            Shift("doc-1", "doctor", str(r.grid), T0, T0 + HOUR),
            Shift("grid-8", "doctor", str(r.other_grid), T0, T0 + HOUR),
            Shift("locum-9", "doctor", ALL, T0, T0 + HOUR),  # not in the registry (yet)
        ]
    )
    on = r.directory.staff_on_duty("doctor", "H0001", T0 + 60)
    assert ids(on) == ["doc-1", "locum-9"]
    assert on[0].email == "h@c.example"
    assert (on[1].email, on[1].phone, on[1].role) == (None, None, "doctor")  # paged, and the failure will show
    assert r.directory.staff_on_duty("doctor", "H0001", T0 + HOUR) == []
    assert r.directory.staff_on_duty("doctor", "H9999", T0) == []


def test_family_emergency_contacts_and_the_residents_bracelet(registered: Registered) -> None:
    d = registered.directory
    family = d.family("R0001")
    assert len({r.recipient_id for r in family}) == 2
    assert all(r.recipient_id.startswith("family:") for r in family)
    assert [(r.name, r.role, r.channels) for r in family] == [
        ("Mei", "daughter", (ChannelName.EMAIL,)),
        ("Jun", "son", (ChannelName.WEBHOOK,)),
    ]
    assert all(r.kind is RecipientKind.FAMILY and r.min_severity is Severity.LOW for r in family)
    assert [r.name for r in d.emergency_contacts("R0001")] == ["Mei"]
    resident = d.resident("R0001")
    assert resident == Recipient(
        "resident:R0001",
        RecipientKind.RESIDENT,
        "Wang Wei",
        device_id="BR-NEW",
        channels=(ChannelName.BRACELET,),
        min_severity=Severity.REMINDER,
    )
    assert d.resident("R9999") is None
    assert d.family("R9999") == []


def test_stored_preferences_are_applied(registered: Registered) -> None:
    d = registered.directory
    mei = d.family("R0001")[0]
    quiet = QuietHours("21:30", "06:30", "Asia/Shanghai")
    registered.store.set_preferences(
        mei.recipient_id, Preferences(quiet_hours=quiet, min_severity=Severity.REMINDER), T0
    )
    registered.store.set_preferences("doc-1", Preferences(channels=(ChannelName.WEBHOOK,)), T0)
    again = d.family("R0001")[0]
    assert (again.quiet_hours, again.min_severity, again.channels) == (quiet, Severity.REMINDER, (ChannelName.EMAIL,))
    registered.store.add_shifts([Shift("doc-1", "doctor", ALL, T0, T0 + HOUR)])
    [doctor] = d.staff_on_duty("doctor", "H0001", T0)
    assert doctor.channels == (ChannelName.WEBHOOK,)


def test_roster_checks_against_the_registry(registered: Registered) -> None:
    d = registered.directory
    assert d.staff_roles()["lead-1"] == "community_lead"
    assert d.resolve_scope("Minhang / Community 1 / Grid 7") == registered.grid
    assert d.resolve_scope(str(registered.community)) == registered.community
    assert d.resolve_scope("Minhang / Grid 7") is None  # not a path: Grid 7 is under Community 1
    assert d.resolve_scope("999999") is None
    shifts = parse_shifts_csv(
        "staff_code,role,scope,start,end\ndoc-1,doctor,Minhang / Community 1,1790000000,1790028800\n",
        staff_roles=d.staff_roles(),
        resolve_scope=d.resolve_scope,
    )
    assert shifts == [Shift("doc-1", "doctor", str(registered.community), 1_790_000_000.0, 1_790_028_800.0)]
