"""The schema's own guarantees: the tree only goes deeper, homes are households, limits are ordered, cascades."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, StatementError

from careloop.registry.models import (
    Base,
    Device,
    DeviceKind,
    FamilyMember,
    HealthProfile,
    Home,
    OrgLevel,
    OrgUnit,
    Placement,
    Resident,
    Sex,
    Staff,
    StaffRole,
)
from careloop.registry.store import Registry


def _commit(registry: Registry, *objects: Base) -> None:
    with registry.transaction() as session:
        session.add_all(objects)


def _rejected(registry: Registry, *objects: Base) -> bool:
    try:
        _commit(registry, *objects)
    except IntegrityError:
        return True
    return False


def _household(registry: Registry, name: str = "101") -> OrgUnit:
    county = OrgUnit(level=OrgLevel.COUNTY, name="Minhang")
    building = OrgUnit(level=OrgLevel.BUILDING, name="Building 1", parent=county)
    household = OrgUnit(level=OrgLevel.HOUSEHOLD, name=name, parent=building)
    _commit(registry, county, building, household)
    return household


def _home(registry: Registry) -> Home:
    home = Home(code="H1", org_unit=_household(registry), timezone="Asia/Shanghai")
    _commit(registry, home)
    return home


def _resident(home: Home, code: str = "R1") -> Resident:
    return Resident(code=code, name="Li Wei", birth_date=date(1940, 5, 1), sex=Sex.FEMALE, home_id=home.id)


def test_levels_are_ordered_county_to_household() -> None:
    assert [level.depth for level in OrgLevel] == list(range(1, 9))
    assert OrgLevel.COUNTY.depth < OrgLevel.GRID.depth < OrgLevel.HOUSEHOLD.depth


def test_a_child_must_be_deeper_than_its_parent(registry: Registry) -> None:
    street = OrgUnit(level=OrgLevel.STREET, name="Street 1")
    _commit(registry, street)
    assert _rejected(registry, OrgUnit(level=OrgLevel.COUNTY, name="Up", parent=street))
    assert _rejected(registry, OrgUnit(level=OrgLevel.STREET, name="Beside", parent=street))
    # skipping levels is allowed
    _commit(registry, OrgUnit(level=OrgLevel.HOUSEHOLD, name="Farmhouse 1", parent=street))


def test_names_are_unique_among_siblings_and_among_roots(registry: Registry) -> None:
    county = OrgUnit(level=OrgLevel.COUNTY, name="Minhang")
    _commit(registry, county, OrgUnit(level=OrgLevel.STREET, name="Street 1", parent=county))
    assert _rejected(registry, OrgUnit(level=OrgLevel.COUNTY, name="Minhang"))
    assert _rejected(registry, OrgUnit(level=OrgLevel.STREET, name="Street 1", parent=county))
    other = OrgUnit(level=OrgLevel.COUNTY, name="Xuhui")
    _commit(registry, other, OrgUnit(level=OrgLevel.STREET, name="Street 1", parent=other))


def test_a_home_is_a_household_and_a_household_one_home(registry: Registry) -> None:
    household = _household(registry)
    with registry.transaction() as session:
        building = session.get(OrgUnit, household.parent_id)
    assert _rejected(registry, Home(code="H0", org_unit=building, timezone="UTC"))
    _commit(registry, Home(code="H1", org_unit_id=household.id, timezone="UTC"))
    assert _rejected(registry, Home(code="H2", org_unit_id=household.id, timezone="UTC"))


def test_health_limits_and_device_placement_are_checked(registry: Registry) -> None:
    home = _home(registry)
    resident = _resident(home)
    _commit(registry, resident)
    assert _rejected(registry, HealthProfile(resident_id=resident.id, hr_min_bpm=100, hr_max_bpm=60))
    assert _rejected(registry, HealthProfile(resident_id=resident.id, spo2_scale=3))
    pir = Device(code="PIR-1", kind=DeviceKind.PIR, home_id=home.id, placement=Placement.WRIST)
    assert _rejected(registry, pir)
    _commit(registry, Device(code="BR-1", kind=DeviceKind.BRACELET, home_id=home.id, placement=Placement.WRIST))


def test_deleting_a_resident_removes_their_records_and_frees_their_devices(registry: Registry) -> None:
    home = _home(registry)
    resident = _resident(home)
    resident.health_profile = HealthProfile(conditions=["COPD"], spo2_scale=2)
    resident.family = [FamilyMember(name="Li Na", relation="daughter", phone="+86 138 0000 0000", priority=1)]
    bracelet = Device(code="BR-1", kind=DeviceKind.BRACELET, home_id=home.id, placement=Placement.WRIST)
    bracelet.resident = resident
    _commit(registry, resident, bracelet)
    with registry.transaction() as session:
        session.delete(session.get(Resident, resident.id))
    with registry.transaction() as session:
        assert session.scalar(select(func.count()).select_from(HealthProfile)) == 0
        assert session.scalar(select(func.count()).select_from(FamilyMember)) == 0
        device = session.scalars(select(Device)).one()
        assert device.resident_id is None


def test_family_members_have_distinct_priorities_and_a_way_to_reach_them(registry: Registry) -> None:
    home = _home(registry)
    resident = _resident(home)
    _commit(registry, resident)
    first = FamilyMember(resident_id=resident.id, name="A", relation="son", email="a@example.org", priority=1)
    _commit(registry, first)
    assert _rejected(registry, FamilyMember(resident_id=resident.id, name="B", relation="son", phone="123", priority=1))
    assert _rejected(registry, FamilyMember(resident_id=resident.id, name="C", relation="son", priority=2))


def test_staff_codes_are_unique_and_roles_known(registry: Registry) -> None:
    _commit(registry, Staff(code="N1", name="Zhao Min", role=StaffRole.NURSE))
    assert _rejected(registry, Staff(code="N1", name="Other", role=StaffRole.DOCTOR))
    with pytest.raises(StatementError, match="not among the defined enum values"):
        _commit(registry, Staff(code="N2", name="X", role="janitor"))
