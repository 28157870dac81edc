"""Who is on duty, and who the people are: the shift roster, recipient preferences, and the registry's directory.

- A :class:`Shift` says a staff member works a role (nurse, doctor, ...) over a scope (one org unit and all below
  it, or ``all``) from ``start_ts`` to ``end_ts``. :func:`on_duty` picks the shifts covering a home at a time;
  :func:`parse_shifts_csv` reads a roster file (``staff_code,role,scope,start,end``), reporting every bad row.
- :class:`Preferences` are a recipient's own channels, quiet hours and minimum severity (stored by recipient id).
- :class:`RegistryDirectory` is the :class:`~alerts.escalation.RecipientDirectory` over the registry: grid staff
  and community leads by org unit, the on-duty roster, family members, the resident's bracelet; with
  preferences applied. Defaults: staff live + e-mail, alarms only; family e-mail (SMS gateway when they have
  no e-mail), alarms only unless they ask for reminders; the resident's bracelet, reminders.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, bindparam, literal, or_, select

from alerts.models import ChannelName, QuietHours, Recipient, RecipientKind, Severity
from careloop.messages import EARLIEST_TS, LATEST_TS
from careloop.registry.importer import RowError
from careloop.registry.models import Device, DeviceKind, FamilyMember, Home, OrgUnit, Resident, Staff, StaffRole
from careloop.registry.store import Registry

#: The scope of a shift that covers every home.
ALL = "all"
SHIFT_COLUMNS = ("staff_code", "role", "scope", "start", "end")
#: Longer than this is a typo in a roster, not a shift.
MAX_SHIFT_S = 7 * 86_400.0

STAFF_CHANNELS = (ChannelName.LIVE, ChannelName.EMAIL)


@dataclass(slots=True, frozen=True)
class Shift:
    """A staff member on duty in a role over a scope (``all`` or an org unit id) from ``start_ts`` to ``end_ts``."""

    staff_code: str
    role: str
    scope: str
    start_ts: float
    end_ts: float

    def covers(self, org_unit_ids: Collection[int], now: float) -> bool:
        """Whether this shift is running at ``now`` over a home whose org path holds these unit ids."""
        if not self.start_ts <= now < self.end_ts:
            return False
        return self.scope == ALL or (self.scope.isdigit() and int(self.scope) in org_unit_ids)


def on_duty(shifts: Iterable[Shift], role: str, org_unit_ids: Collection[int], now: float) -> list[Shift]:
    """The shifts of ``role`` running at ``now`` over a home with this org path, by staff code, each person once."""
    chosen: dict[str, Shift] = {}
    for shift in shifts:
        if shift.role == role and shift.covers(org_unit_ids, now):
            chosen.setdefault(shift.staff_code, shift)
    return [chosen[code] for code in sorted(chosen)]


class ShiftSource(Protocol):
    """Where shifts are kept (``AlertStore``)."""

    def shifts_at(self, role: str, now: float) -> list[Shift]:
        """The shifts of ``role`` running at ``now``, whatever their scope."""
        ...


class Roster:
    """The on-duty table: shifts from a source, and each home's org path to match their scopes."""

    def __init__(self, shifts: ShiftSource, org_path_of: Callable[[str], Sequence[int] | None]) -> None:
        self.shifts = shifts
        self.org_path_of = org_path_of

    def on_duty(self, role: str, home: str, now: float) -> list[Shift]:
        """The shifts of ``role`` covering home ``home`` (its code) at ``now``; none for an unknown home."""
        path = self.org_path_of(home)
        if path is None:
            return []
        return on_duty(self.shifts.shifts_at(role, now), role, set(path), now)


# -- the roster file ------------------------------------------------------------------------------------------------
class ShiftImportError(ValueError):
    """A roster file with problems; ``errors`` holds every one (line, column, reason). Nothing is imported."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        self.errors = tuple(errors)
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"{len(self.errors)} problem(s) in the roster: {shown}{more}")


def parse_shifts_csv(
    text: str,
    *,
    timezone: str = "UTC",
    staff_roles: Mapping[str, str] | None = None,
    resolve_scope: Callable[[str], int | None] | None = None,
) -> list[Shift]:
    """The shifts of a roster CSV (``staff_code,role,scope,start,end``), or ShiftImportError listing every problem.

    ``start`` / ``end`` are UNIX seconds or a date and time (``2026-11-26 08:00``; in ``timezone`` unless it
    carries an offset). ``scope`` is ``all``, an org unit id, or an org path (``County / Street 1 / ...``) that
    ``resolve_scope`` turns into an id (None: no such unit). With ``staff_roles`` (code -> registry role), every
    staff code must exist and be rostered in its own role.
    """
    errors: list[RowError] = []
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ShiftImportError([RowError(0, "timezone", f"unknown time zone {timezone!r}")]) from None
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header = next(reader, None)
    if header is None:
        raise ShiftImportError([RowError(0, "FILE", "the file is empty")])
    columns = [c.strip() for c in header]
    missing = [c for c in SHIFT_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in SHIFT_COLUMNS]
    if missing or unknown:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
        )
        raise ShiftImportError([RowError(1, "HEADER", "; ".join(parts) + f" (expected {','.join(SHIFT_COLUMNS)})")])
    shifts: list[Shift] = []
    seen: dict[Shift, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            errors.append(RowError(line, "ROW", f"{len(cells)} cells, the header has {len(columns)}"))
            continue
        row = {column: cell.strip() for column, cell in zip(columns, cells, strict=True)}
        shift = _shift(row, line, zone, staff_roles, resolve_scope, errors)
        if shift is None:
            continue
        if shift in seen:
            errors.append(RowError(line, "ROW", f"the same shift as line {seen[shift]}"))
            continue
        seen[shift] = line
        shifts.append(shift)
    if errors:
        raise ShiftImportError(errors)
    return shifts


def _shift(
    row: Mapping[str, str],
    line: int,
    zone: ZoneInfo,
    staff_roles: Mapping[str, str] | None,
    resolve_scope: Callable[[str], int | None] | None,
    errors: list[RowError],
) -> Shift | None:
    found = len(errors)
    code, role = row["staff_code"], row["role"]
    if not code:
        errors.append(RowError(line, "staff_code", "empty"))
    if role not in {r.value for r in StaffRole}:
        errors.append(RowError(line, "role", f"unknown role {role!r} (one of {', '.join(r.value for r in StaffRole)})"))
    elif code and staff_roles is not None:
        registered = staff_roles.get(code)
        if registered is None:
            errors.append(RowError(line, "staff_code", f"no staff member {code!r} in the registry"))
        elif registered != role:
            errors.append(RowError(line, "role", f"{code} is a {registered} in the registry, not a {role}"))
    scope = _scope(row["scope"], line, resolve_scope, errors)
    start = _time(row["start"], "start", line, zone, errors)
    end = _time(row["end"], "end", line, zone, errors)
    if start is not None and end is not None:
        if end <= start:
            errors.append(RowError(line, "end", "the shift ends before it starts"))
        elif end - start > MAX_SHIFT_S:
            errors.append(RowError(line, "end", f"a shift of {(end - start) / 3600:g} h is longer than 7 days"))
    if len(errors) > found or scope is None or start is None or end is None:
        return None
    return Shift(code, role, scope, start, end)


def _scope(text: str, line: int, resolve: Callable[[str], int | None] | None, errors: list[RowError]) -> str | None:
    if text.lower() == ALL:
        return ALL
    if not text:
        errors.append(RowError(line, "scope", "empty (use 'all' for every home)"))
        return None
    if resolve is None:
        if text.isdigit():
            return str(int(text))
        errors.append(RowError(line, "scope", f"{text!r} is not 'all' or an org unit id"))
        return None
    unit_id = resolve(text)
    if unit_id is None:
        errors.append(RowError(line, "scope", f"no org unit {text!r} in the registry"))
        return None
    return str(unit_id)


def _time(text: str, column: str, line: int, zone: ZoneInfo, errors: list[RowError]) -> float | None:
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            errors.append(RowError(line, column, f"{text!r} is not UNIX seconds or a date and time (2026-11-26 08:00)"))
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        value = moment.timestamp()
    if not (math.isfinite(value) and EARLIEST_TS <= value <= LATEST_TS):
        errors.append(RowError(line, column, f"{text!r} is not between 2020 and 2100"))
        return None
    return value


# -- preferences ------------------------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Preferences:
    """A recipient's own settings; None leaves the default for their kind."""

    channels: tuple[ChannelName, ...] | None = None
    quiet_hours: QuietHours | None = None
    min_severity: Severity | None = None
    language: str | None = None

    def apply(self, recipient: Recipient) -> Recipient:
        """The recipient with these preferences in place of the defaults."""
        return replace(
            recipient,
            channels=self.channels if self.channels else recipient.channels,
            quiet_hours=self.quiet_hours if self.quiet_hours is not None else recipient.quiet_hours,
            min_severity=self.min_severity if self.min_severity is not None else recipient.min_severity,
            language=self.language if self.language else recipient.language,
        )


class PreferenceSource(Protocol):
    """Where preferences are kept (``AlertStore``)."""

    def preferences(self, recipient_ids: Collection[str]) -> dict[str, Preferences]:
        """The stored preferences of these recipients (absent: none stored)."""
        ...


# -- the registry's directory ---------------------------------------------------------------------------------------
def staff_recipient(staff: Staff) -> Recipient:
    """A staff member with their defaults: live + e-mail (live + SMS gateway without e-mail), alarms only."""
    return _staff_recipient(staff.code, staff.name, staff.role, staff.email, staff.phone)


def _staff_recipient(code: str, name: str, role: StaffRole, email: str | None, phone: str | None) -> Recipient:
    channels = STAFF_CHANNELS if email or not phone else (ChannelName.LIVE, ChannelName.WEBHOOK)
    return Recipient(
        recipient_id=code,
        kind=RecipientKind.STAFF,
        name=name,
        role=role.value,
        email=email,
        phone=phone,
        channels=channels,
        min_severity=Severity.LOW,
    )


def family_recipient(member: FamilyMember) -> Recipient:
    """A family member with their defaults: e-mail (SMS gateway without e-mail), alarms only."""
    return _family_recipient(member.id, member.name, member.relation, member.email, member.phone)


def _family_recipient(member_id: int, name: str, relation: str, email: str | None, phone: str | None) -> Recipient:
    return Recipient(
        recipient_id=f"family:{member_id}",
        kind=RecipientKind.FAMILY,
        name=name,
        role=relation,
        email=email,
        phone=phone,
        channels=(ChannelName.EMAIL,) if email else (ChannelName.WEBHOOK,),
        min_severity=Severity.LOW,
    )


# The directory's questions as statements built once (a statement built per question costs more CPU than the
# database takes to answer it).
_chain = (
    select(OrgUnit.id, OrgUnit.parent_id, literal(0).label("depth"))
    .join(Home, Home.org_unit_id == OrgUnit.id)
    .where(Home.code == bindparam("home_id"))
    .cte("chain", recursive=True)
)
_chain = _chain.union_all(
    select(OrgUnit.id, OrgUnit.parent_id, _chain.c.depth + 1).join(_chain, OrgUnit.id == _chain.c.parent_id)
)
#: The home's household and its ancestors, the root last.
_ORG_PATH = select(_chain.c.id).order_by(_chain.c.depth)
_STAFF = select(Staff.code, Staff.name, Staff.role, Staff.email, Staff.phone)
_STAFF_COVERING = _STAFF.where(
    Staff.role == bindparam("role"),
    or_(Staff.org_unit_id.in_(bindparam("path", expanding=True)), Staff.org_unit_id.is_(None)),
).order_by(Staff.code)
_STAFF_BY_CODE = _STAFF.where(Staff.code.in_(bindparam("codes", expanding=True)))
_FAMILY = (
    select(
        FamilyMember.id,
        FamilyMember.name,
        FamilyMember.relation,
        FamilyMember.email,
        FamilyMember.phone,
        FamilyMember.emergency_contact,
    )
    .join(Resident, Resident.id == FamilyMember.resident_id)
    .where(Resident.code == bindparam("resident_id"))
    .order_by(FamilyMember.priority)
)
_BRACELET = (
    select(Device.code)
    .where(Device.resident_id == Resident.id, Device.kind == DeviceKind.BRACELET, Device.active)
    .order_by(Device.code)
    .limit(1)
    .scalar_subquery()
)
_RESIDENT = select(Resident.code, Resident.name, Resident.phone, _BRACELET.label("bracelet")).where(
    Resident.code == bindparam("resident_id")
)


class RegistryDirectory:
    """Recipients from the registry, the roster and stored preferences.

    Each question is one short read transaction; :meth:`scope` answers a batch of questions (those of one alert
    transition) from one, asking the database each thing once.
    """

    def __init__(self, registry: Registry, *, shifts: ShiftSource, preferences: PreferenceSource) -> None:
        self.registry = registry
        self.preferences = preferences
        self.roster = Roster(shifts, self.org_path_ids)

    @contextmanager
    def scope(self) -> Iterator[DirectoryScope]:
        """A view of the directory whose answers come from one registry read transaction and are remembered until
        the block ends: a home's org path, a resident's family, a recipient's preferences are read once."""
        scope = DirectoryScope(self)
        try:
            yield scope
        finally:
            scope.close()

    def org_path_ids(self, home_id: str) -> list[int] | None:
        """The org unit ids from the root to the home's household (None for an unknown home)."""
        with self.scope() as scope:
            return scope.org_path_ids(home_id)

    def staff_covering(self, role: str, home_id: str) -> list[Recipient]:
        """Staff of ``role`` whose org unit is the home's or an ancestor of it, or who cover everything."""
        with self.scope() as scope:
            return scope.staff_covering(role, home_id)

    def staff_on_duty(self, role: str, home_id: str, now: float) -> list[Recipient]:
        """Staff on a roster shift of ``role`` covering the home at ``now``.

        A shift naming a code the registry does not know still yields a recipient (without addresses), so the
        failed delivery shows instead of nobody being paged.
        """
        with self.scope() as scope:
            return scope.staff_on_duty(role, home_id, now)

    def family(self, resident_id: str) -> list[Recipient]:
        """The resident's family members, in priority order."""
        with self.scope() as scope:
            return scope.family(resident_id)

    def emergency_contacts(self, resident_id: str) -> list[Recipient]:
        """The resident's family members marked as emergency contacts, in priority order."""
        with self.scope() as scope:
            return scope.emergency_contacts(resident_id)

    def resident(self, resident_id: str) -> Recipient | None:
        """The resident on their active bracelet (``device_id`` None when they have none), reminders and up."""
        with self.scope() as scope:
            return scope.resident(resident_id)

    def staff_roles(self) -> dict[str, str]:
        """Every staff code with its role, to check a roster file against."""
        with self.registry.session() as session:
            return {code: role.value for code, role in session.execute(select(Staff.code, Staff.role))}

    def resolve_scope(self, text: str) -> int | None:
        """An org unit id from its id or its path of names (``County / Street 1 / Community 1-1``); None if none."""
        with self.registry.session() as session:
            if text.isdigit():
                return session.scalar(select(OrgUnit.id).where(OrgUnit.id == int(text)))
            parent: int | None = None
            for name in (part.strip() for part in text.split("/")):
                parent_is = OrgUnit.parent_id.is_(None) if parent is None else OrgUnit.parent_id == parent
                found = session.scalars(select(OrgUnit.id).where(parent_is, OrgUnit.name == name)).all()
                if len(found) != 1:
                    return None
                parent = found[0]
            return parent


class DirectoryScope:
    """The :class:`RegistryDirectory` over one registry read transaction (opened at the first question), each
    answer remembered: see :meth:`RegistryDirectory.scope`. Not shared between threads."""

    def __init__(self, directory: RegistryDirectory) -> None:
        self.directory = directory
        self.roster = Roster(self, self.org_path_ids)
        self._connection: Connection | None = None
        self._paths: dict[str, list[int] | None] = {}
        self._shifts: dict[tuple[str, float], list[Shift]] = {}
        self._families: dict[str, list[tuple[Recipient, bool]]] = {}
        self._residents: dict[str, Recipient | None] = {}
        self._preferences: dict[str, Preferences | None] = {}

    @property
    def connection(self) -> Connection:
        """The registry connection of this scope."""
        if self._connection is None:
            self._connection = self.directory.registry.engine.connect()
        return self._connection

    def close(self) -> None:
        """End the read transaction (the remembered answers stay)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def shifts_at(self, role: str, now: float) -> list[Shift]:
        """The shifts of ``role`` running at ``now`` (the roster's :class:`ShiftSource`)."""
        key = (role, now)
        if key not in self._shifts:
            self._shifts[key] = self.directory.roster.shifts.shifts_at(role, now)
        return self._shifts[key]

    def org_path_ids(self, home_id: str) -> list[int] | None:
        """The org unit ids from the root to the home's household (None for an unknown home)."""
        if home_id not in self._paths:
            path = [unit for (unit,) in self.connection.execute(_ORG_PATH, {"home_id": home_id})][::-1]
            self._paths[home_id] = path or None
        return self._paths[home_id]

    def staff_covering(self, role: str, home_id: str) -> list[Recipient]:
        """Staff of ``role`` whose org unit is the home's or an ancestor of it, or who cover everything."""
        path = self.org_path_ids(home_id)
        if path is None:
            return []
        rows = self.connection.execute(_STAFF_COVERING, {"role": role, "path": path})
        return self._with_preferences([_staff_recipient(*row) for row in rows])

    def staff_on_duty(self, role: str, home_id: str, now: float) -> list[Recipient]:
        """Staff on a roster shift of ``role`` covering the home at ``now`` (see the directory's)."""
        codes = [shift.staff_code for shift in self.roster.on_duty(role, home_id, now)]
        if not codes:
            return []
        known = {row.code: _staff_recipient(*row) for row in self.connection.execute(_STAFF_BY_CODE, {"codes": codes})}
        recipients = [
            known[code]
            if code in known
            else Recipient(
                code, RecipientKind.STAFF, code, role=role, channels=STAFF_CHANNELS, min_severity=Severity.LOW
            )
            for code in codes
        ]
        return self._with_preferences(recipients)

    def family(self, resident_id: str) -> list[Recipient]:
        """The resident's family members, in priority order."""
        return [member for member, _ in self._family(resident_id)]

    def emergency_contacts(self, resident_id: str) -> list[Recipient]:
        """The resident's family members marked as emergency contacts, in priority order."""
        return [member for member, emergency in self._family(resident_id) if emergency]

    def resident(self, resident_id: str) -> Recipient | None:
        """The resident on their active bracelet (``device_id`` None when they have none), reminders and up."""
        if resident_id not in self._residents:
            row = self.connection.execute(_RESIDENT, {"resident_id": resident_id}).first()
            recipient = None
            if row is not None:
                recipient = Recipient(
                    recipient_id=f"resident:{row.code}",
                    kind=RecipientKind.RESIDENT,
                    name=row.name,
                    phone=row.phone,
                    device_id=row.bracelet,
                    channels=(ChannelName.BRACELET,),
                    min_severity=Severity.REMINDER,
                )
                recipient = self._with_preferences([recipient])[0]
            self._residents[resident_id] = recipient
        return self._residents[resident_id]

    def _family(self, resident_id: str) -> list[tuple[Recipient, bool]]:
        if resident_id not in self._families:
            rows = list(self.connection.execute(_FAMILY, {"resident_id": resident_id}))
            members = self._with_preferences([_family_recipient(*row[:5]) for row in rows])
            emergency = [bool(row.emergency_contact) for row in rows]
            self._families[resident_id] = list(zip(members, emergency, strict=True))
        return self._families[resident_id]

    def _with_preferences(self, recipients: list[Recipient]) -> list[Recipient]:
        missing = [r.recipient_id for r in recipients if r.recipient_id not in self._preferences]
        if missing:
            stored = self.directory.preferences.preferences(missing)
            self._preferences.update({rid: stored.get(rid) for rid in missing})
        return [r if (p := self._preferences[r.recipient_id]) is None else p.apply(r) for r in recipients]
