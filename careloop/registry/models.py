"""The registry's data: the organisation tree, homes, residents and their health profiles, devices, staff, families.

SQLAlchemy 2 typed ORM over SQLite or PostgreSQL; the schema is created and changed only by the Alembic
migrations in `careloop/registry/migrations`, and a test checks that the migrations produce exactly this schema.

Enumerations are stored as short strings with a CHECK constraint (not PostgreSQL enum types), so adding a value
is one migration that works the same on both databases. Codes (`Home.code`, `Resident.code`, `Device.code`,
`Staff.code`) appear in MQTT topics and wire messages, so they follow `careloop.topics.ID_PATTERN`; the importer
checks that at the boundary.
"""

from __future__ import annotations

import enum
from datetime import date

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    MetaData,
    SmallInteger,
    String,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Constraint names are spelled out, so migrations can refer to them and they match on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CODE_LENGTH = 64
NAME_LENGTH = 200
PHONE_LENGTH = 32
EMAIL_LENGTH = 254
ENUM_LENGTH = 20
#: A list of short strings (conditions, medications, allergies); JSONB on PostgreSQL.
StringList = JSON().with_variant(JSONB(), "postgresql")


class OrgLevel(enum.StrEnum):
    """A level of the organisation tree, from the widest (county) to a single dwelling (household)."""

    COUNTY = "county"
    STREET = "street"
    COMMUNITY = "community"
    GRID = "grid"
    COMPOUND = "compound"
    BUILDING = "building"
    UNIT = "unit"
    HOUSEHOLD = "household"

    @property
    def depth(self) -> int:
        """1 for county ... 8 for household; a child is always deeper than its parent."""
        return _LEVEL_ORDER.index(self) + 1


_LEVEL_ORDER = list(OrgLevel)


class ResidentStatus(enum.StrEnum):
    """Whether a resident is expected at home (only `active` residents raise 'no activity' alarms)."""

    ACTIVE = "active"
    AWAY = "away"
    IN_HOSPITAL = "in_hospital"
    INACTIVE = "inactive"


class Sex(enum.StrEnum):
    """Sex as recorded in the health record (reference ranges depend on it)."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"


class DeviceKind(enum.StrEnum):
    """What a device is; wearables (bracelet, belt) have a placement."""

    BRACELET = "bracelet"
    BELT = "belt"
    PIR = "pir"
    THERMOPILE = "thermopile"
    BED_SENSOR = "bed_sensor"
    CHAIR_SENSOR = "chair_sensor"
    DOOR = "door"
    GATEWAY = "gateway"


WEARABLE_KINDS = frozenset({DeviceKind.BRACELET, DeviceKind.BELT})


class Placement(enum.StrEnum):
    """Where a wearable is worn; the fall detector's thresholds depend on it."""

    WRIST = "wrist"
    WAIST = "waist"


class StaffRole(enum.StrEnum):
    """What a staff member does; decides which alarms reach them."""

    NURSE = "nurse"
    DOCTOR = "doctor"
    GRID_STAFF = "grid_staff"
    COMMUNITY_LEAD = "community_lead"
    ADMIN = "admin"
    INSTALLER = "installer"


def _enum(cls: type[enum.StrEnum]) -> Enum:
    # The values (not the member names) are stored; the CHECK constraint is added per column by _one_of().
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=ENUM_LENGTH,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def _one_of(column: str, cls: type[enum.StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{m.value}'" for m in cls)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


def _depth_sql(column: str) -> str:
    whens = " ".join(f"WHEN '{level.value}' THEN {level.depth}" for level in OrgLevel)
    return f"(CASE {column} {whens} END)"


def _below(low: str, high: str, name: str) -> CheckConstraint:
    return CheckConstraint(f"{low} IS NULL OR {high} IS NULL OR {low} < {high}", name=name)


class Base(DeclarativeBase):
    """Declarative base of the registry tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class OrgUnit(Base):
    """A node of the organisation tree (county -> street -> ... -> household); levels may be skipped, not reversed.

    The parent's level is stored beside `parent_id` and covered by the foreign key, so the database itself
    checks that a child is deeper than its parent.
    """

    __tablename__ = "org_units"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column()
    parent_level: Mapped[OrgLevel | None] = mapped_column(_enum(OrgLevel))
    level: Mapped[OrgLevel] = mapped_column(_enum(OrgLevel))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))

    parent: Mapped[OrgUnit | None] = relationship(
        remote_side=[id, level], back_populates="children", foreign_keys=[parent_id, parent_level]
    )
    children: Mapped[list[OrgUnit]] = relationship(back_populates="parent", foreign_keys=[parent_id, parent_level])

    __table_args__ = (
        ForeignKeyConstraint(["parent_id", "parent_level"], ["org_units.id", "org_units.level"], ondelete="RESTRICT"),
        UniqueConstraint("id", "level"),  # the target of the (parent_id, parent_level) foreign key
        UniqueConstraint("parent_id", "level", "name"),  # also the index for the parent foreign key
        # NULLs are distinct in a unique constraint, so roots need their own partial index.
        Index(
            "uq_org_units_root_level_name",
            "level",
            "name",
            unique=True,
            sqlite_where=text("parent_id IS NULL"),
            postgresql_where=text("parent_id IS NULL"),
        ),
        _one_of("level", OrgLevel),
        CheckConstraint("(parent_id IS NULL) = (parent_level IS NULL)", name="parent_level_given"),
        CheckConstraint(f"{_depth_sql('level')} > {_depth_sql('parent_level')}", name="deeper_than_parent"),
        CheckConstraint("length(name) > 0", name="name_not_empty"),
    )

    def __repr__(self) -> str:
        return f"OrgUnit({self.id}, {self.level.value} {self.name!r})"


class Home(Base):
    """A dwelling with one or more residents: one household of the organisation tree."""

    __tablename__ = "homes"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    org_unit_id: Mapped[int] = mapped_column(unique=True)
    # Always 'household': with the composite foreign key, the database checks the home's org unit is a household.
    org_unit_level: Mapped[OrgLevel] = mapped_column(
        _enum(OrgLevel), default=OrgLevel.HOUSEHOLD, server_default=OrgLevel.HOUSEHOLD.value
    )
    address: Mapped[str | None] = mapped_column(String(300))
    latitude: Mapped[float | None] = mapped_column(comment="WGS84 degrees")
    longitude: Mapped[float | None] = mapped_column(comment="WGS84 degrees")
    geofence_radius_m: Mapped[int] = mapped_column(default=200, server_default="200")
    timezone: Mapped[str] = mapped_column(String(64), comment="IANA name, e.g. Asia/Shanghai")

    org_unit: Mapped[OrgUnit] = relationship(foreign_keys=[org_unit_id, org_unit_level])
    residents: Mapped[list[Resident]] = relationship(back_populates="home", order_by="Resident.code")
    devices: Mapped[list[Device]] = relationship(back_populates="home", order_by="Device.code")

    __table_args__ = (
        ForeignKeyConstraint(
            ["org_unit_id", "org_unit_level"], ["org_units.id", "org_units.level"], ondelete="RESTRICT"
        ),
        CheckConstraint("org_unit_level = 'household'", name="org_unit_is_household"),
        CheckConstraint("latitude IS NULL OR (latitude >= -90 AND latitude <= 90)", name="latitude_range"),
        CheckConstraint("longitude IS NULL OR (longitude >= -180 AND longitude <= 180)", name="longitude_range"),
        CheckConstraint("(latitude IS NULL) = (longitude IS NULL)", name="lat_lon_together"),
        CheckConstraint("geofence_radius_m > 0", name="geofence_positive"),
    )

    def __repr__(self) -> str:
        return f"Home({self.code!r})"


class Resident(Base):
    """An older person being looked after; `code` is the external (EHR) id, also used on the wire."""

    __tablename__ = "residents"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    birth_date: Mapped[date]
    sex: Mapped[Sex] = mapped_column(_enum(Sex))
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH))
    home_id: Mapped[int] = mapped_column(ForeignKey("homes.id", ondelete="RESTRICT"), index=True)
    status: Mapped[ResidentStatus] = mapped_column(
        _enum(ResidentStatus), default=ResidentStatus.ACTIVE, server_default=ResidentStatus.ACTIVE.value
    )

    home: Mapped[Home] = relationship(back_populates="residents")
    health_profile: Mapped[HealthProfile | None] = relationship(
        back_populates="resident", cascade="all, delete-orphan", passive_deletes=True
    )
    devices: Mapped[list[Device]] = relationship(back_populates="resident", order_by="Device.code")
    family: Mapped[list[FamilyMember]] = relationship(
        back_populates="resident",
        order_by="FamilyMember.priority",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        _one_of("sex", Sex),
        _one_of("status", ResidentStatus),
        CheckConstraint("length(name) > 0", name="name_not_empty"),
    )

    def __repr__(self) -> str:
        return f"Resident({self.code!r})"


class HealthProfile(Base):
    """A resident's health record and the vital-sign limits and baselines the alert rules use for them.

    Limits are per person: a limit left empty means the rules' population default applies. `spo2_scale` is the
    NEWS2 SpO2 scale: 2 for patients with hypercapnic respiratory failure (target 88-92 %), else 1.
    """

    __tablename__ = "health_profiles"

    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"), primary_key=True)
    conditions: Mapped[list[str]] = mapped_column(StringList, default=list)
    medications: Mapped[list[str]] = mapped_column(StringList, default=list)
    allergies: Mapped[list[str]] = mapped_column(StringList, default=list)
    # physical examination
    exam_date: Mapped[date | None]
    height_cm: Mapped[float | None]
    weight_kg: Mapped[float | None]
    bmi: Mapped[float | None] = mapped_column(comment="kg/m2")
    waist_cm: Mapped[float | None]
    fasting_glucose_mmol_l: Mapped[float | None]
    hba1c_pct: Mapped[float | None]
    # per-person vital-sign limits
    hr_min_bpm: Mapped[int | None] = mapped_column(SmallInteger)
    hr_max_bpm: Mapped[int | None] = mapped_column(SmallInteger)
    spo2_min_pct: Mapped[int | None] = mapped_column(SmallInteger)
    spo2_scale: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")
    skin_temp_min_c: Mapped[float | None]
    skin_temp_max_c: Mapped[float | None]
    bp_systolic_min_mmhg: Mapped[int | None] = mapped_column(SmallInteger)
    bp_systolic_max_mmhg: Mapped[int | None] = mapped_column(SmallInteger)
    bp_diastolic_min_mmhg: Mapped[int | None] = mapped_column(SmallInteger)
    bp_diastolic_max_mmhg: Mapped[int | None] = mapped_column(SmallInteger)
    # baselines (the person's usual values)
    hr_baseline_bpm: Mapped[int | None] = mapped_column(SmallInteger)
    spo2_baseline_pct: Mapped[int | None] = mapped_column(SmallInteger)
    skin_temp_baseline_c: Mapped[float | None]
    bp_systolic_baseline_mmhg: Mapped[int | None] = mapped_column(SmallInteger)
    bp_diastolic_baseline_mmhg: Mapped[int | None] = mapped_column(SmallInteger)

    resident: Mapped[Resident] = relationship(back_populates="health_profile")

    __table_args__ = (
        CheckConstraint("spo2_scale IN (1, 2)", name="spo2_scale_valid"),
        _below("hr_min_bpm", "hr_max_bpm", "hr_range"),
        _below("skin_temp_min_c", "skin_temp_max_c", "skin_temp_range"),
        _below("bp_systolic_min_mmhg", "bp_systolic_max_mmhg", "bp_systolic_range"),
        _below("bp_diastolic_min_mmhg", "bp_diastolic_max_mmhg", "bp_diastolic_range"),
    )

    def __repr__(self) -> str:
        return f"HealthProfile(resident_id={self.resident_id})"


class Device(Base):
    """A sensor or gateway installed in a home; `code` is the device id in MQTT topics."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    kind: Mapped[DeviceKind] = mapped_column(_enum(DeviceKind))
    home_id: Mapped[int] = mapped_column(ForeignKey("homes.id", ondelete="RESTRICT"), index=True)
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id", ondelete="SET NULL"), index=True)
    room: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    placement: Mapped[Placement | None] = mapped_column(_enum(Placement))
    active: Mapped[bool] = mapped_column(default=True, server_default=true())

    home: Mapped[Home] = relationship(back_populates="devices")
    resident: Mapped[Resident | None] = relationship(back_populates="devices")

    __table_args__ = (
        _one_of("kind", DeviceKind),
        _one_of("placement", Placement),
        CheckConstraint(
            "placement IS NULL OR kind IN ({})".format(", ".join(f"'{k.value}'" for k in sorted(WEARABLE_KINDS))),
            name="placement_only_for_wearables",
        ),
    )

    def __repr__(self) -> str:
        return f"Device({self.code!r}, {self.kind.value})"


class Staff(Base):
    """A person who handles alarms or runs the system; `org_unit` is the subtree they cover (none: everything)."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(CODE_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    role: Mapped[StaffRole] = mapped_column(_enum(StaffRole))
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH))
    email: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH))
    org_unit_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id", ondelete="RESTRICT"), index=True)

    org_unit: Mapped[OrgUnit | None] = relationship()

    __table_args__ = (_one_of("role", StaffRole), CheckConstraint("length(name) > 0", name="name_not_empty"))

    def __repr__(self) -> str:
        return f"Staff({self.code!r}, {self.role.value})"


class FamilyMember(Base):
    """A relative or friend of a resident, called in `priority` order (1 first) when staff cannot be reached."""

    __tablename__ = "family_members"

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    relation: Mapped[str] = mapped_column(String(50), comment="e.g. daughter, son, spouse, neighbour")
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH))
    email: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH))
    emergency_contact: Mapped[bool] = mapped_column(default=False, server_default=false())
    priority: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")

    resident: Mapped[Resident] = relationship(back_populates="family")

    __table_args__ = (
        UniqueConstraint("resident_id", "priority"),  # also the index for the resident foreign key
        CheckConstraint("priority >= 1", name="priority_positive"),
        CheckConstraint("phone IS NOT NULL OR email IS NOT NULL", name="reachable"),
        CheckConstraint("length(name) > 0", name="name_not_empty"),
    )

    def __repr__(self) -> str:
        return f"FamilyMember({self.name!r}, {self.relation})"


def table_names() -> list[str]:
    """The registry's tables, parents before children (the order to insert in)."""
    return [table.name for table in Base.metadata.sorted_tables]
