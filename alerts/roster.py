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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from alerts.models import ChannelName, QuietHours, Recipient, RecipientKind, Severity
from careloop.messages import EARLIEST_TS, LATEST_TS
from careloop.registry.importer import RowError
from careloop.registry.models import Device, DeviceKind, FamilyMember, Home, OrgUnit, Resident, Staff, StaffRole
from careloop.registry.store import Registry, org_path

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
    channels = STAFF_CHANNELS if staff.email or not staff.phone else (ChannelName.LIVE, ChannelName.WEBHOOK)
    return Recipient(
        recipient_id=staff.code,
        kind=RecipientKind.STAFF,
        name=staff.name,
        role=staff.role.value,
        email=staff.email,
        phone=staff.phone,
        channels=channels,
        min_severity=Severity.LOW,
    )


def family_recipient(member: FamilyMember) -> Recipient:
    """A family member with their defaults: e-mail (SMS gateway without e-mail), alarms only."""
    return Recipient(
        recipient_id=f"family:{member.id}",
        kind=RecipientKind.FAMILY,
        name=member.name,
        role=member.relation,
        email=member.email,
        phone=member.phone,
        channels=(ChannelName.EMAIL,) if member.email else (ChannelName.WEBHOOK,),
        min_severity=Severity.LOW,
    )


class RegistryDirectory:
    """Recipients from the registry, the roster and stored preferences (a short read transaction per question)."""

    def __init__(self, registry: Registry, *, shifts: ShiftSource, preferences: PreferenceSource) -> None:
        self.registry = registry
        self.preferences = preferences
        self.roster = Roster(shifts, self.org_path_ids)

    def org_path_ids(self, home_id: str) -> list[int] | None:
        """The org unit ids from the root to the home's household (None for an unknown home)."""
        with self.registry.session() as session:
            return self._path(session, home_id)

    def staff_covering(self, role: str, home_id: str) -> list[Recipient]:
        """Staff of ``role`` whose org unit is the home's or an ancestor of it, or who cover everything."""
        with self.registry.session() as session:
            path = self._path(session, home_id)
            if path is None:
                return []
            statement = (
                select(Staff)
                .where(Staff.role == role, or_(Staff.org_unit_id.in_(path), Staff.org_unit_id.is_(None)))
                .order_by(Staff.code)
            )
            return self._with_preferences([staff_recipient(s) for s in session.scalars(statement)])

    def staff_on_duty(self, role: str, home_id: str, now: float) -> list[Recipient]:
        """Staff on a roster shift of ``role`` covering the home at ``now``.

        A shift naming a code the registry does not know still yields a recipient (without addresses), so the
        failed delivery shows instead of nobody being paged.
        """
        codes = [shift.staff_code for shift in self.roster.on_duty(role, home_id, now)]
        if not codes:
            return []
        with self.registry.session() as session:
            known = {s.code: s for s in session.scalars(select(Staff).where(Staff.code.in_(codes)))}
        recipients = [
            staff_recipient(known[code])
            if code in known
            else Recipient(
                code, RecipientKind.STAFF, code, role=role, channels=STAFF_CHANNELS, min_severity=Severity.LOW
            )
            for code in codes
        ]
        return self._with_preferences(recipients)

    def family(self, resident_id: str) -> list[Recipient]:
        """The resident's family members, in priority order."""
        return self._family(resident_id, emergency_only=False)

    def emergency_contacts(self, resident_id: str) -> list[Recipient]:
        """The resident's family members marked as emergency contacts, in priority order."""
        return self._family(resident_id, emergency_only=True)

    def resident(self, resident_id: str) -> Recipient | None:
        """The resident on their active bracelet (``device_id`` None when they have none), reminders and up."""
        with self.registry.session() as session:
            resident = session.scalars(select(Resident).where(Resident.code == resident_id)).one_or_none()
            if resident is None:
                return None
            bracelet = session.scalars(
                select(Device.code)
                .where(Device.resident_id == resident.id, Device.kind == DeviceKind.BRACELET, Device.active)
                .order_by(Device.code)
            ).first()
            recipient = Recipient(
                recipient_id=f"resident:{resident.code}",
                kind=RecipientKind.RESIDENT,
                name=resident.name,
                phone=resident.phone,
                device_id=bracelet,
                channels=(ChannelName.BRACELET,),
                min_severity=Severity.REMINDER,
            )
        return self._with_preferences([recipient])[0]

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

    # -- helpers ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _path(session: Session, home_id: str) -> list[int] | None:
        unit = session.scalar(select(Home.org_unit_id).where(Home.code == home_id))
        if unit is None:
            return None
        return [u.id for u in org_path(session, unit)]

    def _family(self, resident_id: str, *, emergency_only: bool) -> list[Recipient]:
        with self.registry.session() as session:
            statement = (
                select(FamilyMember)
                .join(FamilyMember.resident)
                .where(Resident.code == resident_id)
                .order_by(FamilyMember.priority)
            )
            if emergency_only:
                statement = statement.where(FamilyMember.emergency_contact)
            return self._with_preferences([family_recipient(m) for m in session.scalars(statement)])

    def _with_preferences(self, recipients: list[Recipient]) -> list[Recipient]:
        if not recipients:
            return recipients
        stored = self.preferences.preferences([r.recipient_id for r in recipients])
        return [stored[r.recipient_id].apply(r) if r.recipient_id in stored else r for r in recipients]
