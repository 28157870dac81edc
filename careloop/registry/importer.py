"""Import residents, devices and health records from CSV files: every bad row reported, and all or nothing.

Three kinds of file, told apart by their header (or named with `kind=`); see `COLUMNS` for the full lists:

- residents: one row per resident, with their home and the home's place in the organisation tree (the columns
  county ... household; empty levels are skipped). Org units are found or created by parent + level + name,
  homes by `home_code`. Residents of one home repeat the home's columns, which must then agree.
- devices: one row per device (`device_code` is the id in MQTT topics), in a home, optionally worn by or
  assigned to a resident of that home.
- health: one row per resident (`resident_code`) with any of the health-profile columns.

Rows are upserted by code: re-importing a file changes nothing and reports the rows as unchanged. A column left
out of the header leaves that field as it is on existing rows (and at its default on new ones); an empty cell
means "no value" (or the default, for a field that cannot be empty).

Every row is checked, on its own and against the database and the rest of the import, and every problem is
reported as `RowError(line, field, reason)`, where `line` is the physical line of the file on which the row
starts (header = line 1; quoted cells spanning lines are counted). If there is any error nothing is written:
the whole import is one transaction. Several files may be imported together (residents first, then devices, then
health records), so a devices file can refer to residents that a residents file of the same import creates.

Writing is done in bulk: one INSERT ... RETURNING per table (per tree level for org units) and one executemany
UPDATE, after loading the existing rows the import touches with a few `IN` queries.
"""

from __future__ import annotations

import csv
import enum
import functools
import io
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from careloop.registry.models import (
    WEARABLE_KINDS,
    Base,
    Device,
    DeviceKind,
    HealthProfile,
    Home,
    OrgLevel,
    OrgUnit,
    Placement,
    Resident,
    ResidentStatus,
    Sex,
)
from careloop.topics import ID_PATTERN

#: `RowError.field` for problems with the file as a whole, the header, or a whole row; DATABASE (line 0) for a
#: write the database refused.
FILE = "(file)"
DATABASE = "(database)"
HEADER = "(header)"
ROW = "(row)"
#: Codes are looked up with `IN` lists of at most this many values (SQLite limits bound parameters).
_CHUNK = 1000
_ID_RE = re.compile(ID_PATTERN)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()-]{2,30}$")


class ImportKind(enum.StrEnum):
    """What a CSV file holds."""

    RESIDENTS = "residents"
    DEVICES = "devices"
    HEALTH = "health"


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem: where (file, physical line, column or FILE/HEADER/ROW) and why."""

    line: int
    field: str
    reason: str
    file: str = ""

    def __str__(self) -> str:
        if self.line == 0:  # about the import as a whole
            return f"{self.field}: {self.reason}"
        return f"line {self.line}, field {self.field}: {self.reason}"


@dataclass(slots=True)
class TableCounts:
    """What an import did to one table."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(slots=True)
class ImportReport:
    """The outcome of an import: per-table counts, or the errors (then nothing was written)."""

    files: list[tuple[str, ImportKind | None, int]] = field(default_factory=list)  # name, kind, data rows
    counts: dict[str, TableCounts] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True when there were no errors."""
        return not self.errors

    @property
    def written(self) -> bool:
        """True when the import was committed."""
        return self.ok and not self.dry_run


# -- cell types -------------------------------------------------------------------------------------------------
def _code(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise PydanticCustomError("code", "must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return value


def _iso_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            if _DATE_RE.fullmatch(value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        raise PydanticCustomError("date", "must be a real date written YYYY-MM-DD")
    return value


def _past_date(value: date, info: ValidationInfo) -> date:
    today: date = (info.context or {}).get("today") or date.today()
    if value > today:
        raise PydanticCustomError("future_date", "lies in the future")
    if value.year < 1900:
        raise PydanticCustomError("old_date", "is before 1900")
    return value


def _phone(value: str) -> str:
    if not _PHONE_RE.fullmatch(value):
        raise PydanticCustomError("phone", "must be digits, optionally with a leading '+', spaces, '-' or parentheses")
    return value


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: str) -> str:
    if value not in _timezones():
        raise PydanticCustomError("timezone", "is not an IANA time zone name such as Asia/Shanghai")
    return value


def _split_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(";") if item.strip()]
    return value


def _no_repeats(items: list[str]) -> list[str]:
    seen: set[str] = set()
    for item in items:
        if item.casefold() in seen:
            raise PydanticCustomError("repeated", "lists {item} twice", {"item": repr(item)})
        seen.add(item.casefold())
    return items


Code = Annotated[str, AfterValidator(_code)]
#: Health records often write sex as F / M; accept those and any capitalisation.
_SEX_ALIASES = {"f": "female", "m": "male", "o": "other"}


def _sex(value: Any) -> Any:
    if isinstance(value, str):
        folded = value.strip().lower()
        return _SEX_ALIASES.get(folded, folded)
    return value


SexField = Annotated[Sex, BeforeValidator(_sex)]
PersonName = Annotated[str, Field(min_length=1, max_length=200)]
OrgName = Annotated[str, Field(min_length=1, max_length=200)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
PastDate = Annotated[date, BeforeValidator(_iso_date), AfterValidator(_past_date)]
Phone = Annotated[str, AfterValidator(_phone)]
TimeZoneName = Annotated[str, AfterValidator(_timezone)]
#: A cell listing items separated by ';' (e.g. "hypertension; type 2 diabetes").
StrList = Annotated[
    list[Annotated[str, Field(max_length=200)]], BeforeValidator(_split_list), AfterValidator(_no_repeats)
]


def _between(lo: float, hi: float, what: str) -> Any:
    return Field(default=None, ge=lo, le=hi, description=what)


# -- row models -------------------------------------------------------------------------------------------------
class _Row(BaseModel):
    """One data row; the fields a row sets are its header's columns (`model_fields_set`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Columns the header must have (their cells may still be empty where the field is optional).
    REQUIRED_COLUMNS: ClassVar[tuple[str, ...]]


ORG_COLUMNS = tuple(level.value for level in OrgLevel)
#: A place in the organisation tree as (level, name) pairs, root first.
OrgPath = tuple[tuple[OrgLevel, str], ...]
HOME_FIELDS = ("address", "latitude", "longitude", "geofence_radius_m", "timezone")
RESIDENT_FIELDS = ("name", "birth_date", "sex", "phone", "status")


class ResidentRow(_Row):
    """A row of a residents file: the resident, their home, and the home's place in the organisation tree."""

    REQUIRED_COLUMNS = ("resident_code", "name", "birth_date", "sex", "home_code", *ORG_COLUMNS, "timezone")

    resident_code: Code
    name: PersonName
    birth_date: PastDate
    sex: SexField
    phone: Phone | None = None
    status: ResidentStatus | None = None
    home_code: Code
    county: OrgName | None = None
    street: OrgName | None = None
    community: OrgName | None = None
    grid: OrgName | None = None
    compound: OrgName | None = None
    building: OrgName | None = None
    unit: OrgName | None = None
    household: OrgName
    address: Annotated[str, Field(max_length=300)] | None = None
    latitude: float | None = _between(-90, 90, "WGS84 degrees")
    longitude: float | None = _between(-180, 180, "WGS84 degrees")
    geofence_radius_m: int | None = _between(10, 100_000, "metres")
    timezone: TimeZoneName

    def org_path(self) -> OrgPath:
        """The home's household and its ancestors, root first, skipping empty levels."""
        return tuple((level, name) for level in OrgLevel if (name := getattr(self, level.value)) is not None)


class DeviceRow(_Row):
    """A row of a devices file."""

    REQUIRED_COLUMNS = ("device_code", "kind", "home_code")

    device_code: Code
    kind: DeviceKind
    home_code: Code
    resident_code: Code | None = None
    room: Code | None = None
    placement: Placement | None = None
    active: bool | None = None


#: Limits, as (min, max) pairs, and the baselines that must lie between them.
LIMIT_PAIRS = (
    ("hr_min_bpm", "hr_max_bpm"),
    ("skin_temp_min_c", "skin_temp_max_c"),
    ("bp_systolic_min_mmhg", "bp_systolic_max_mmhg"),
    ("bp_diastolic_min_mmhg", "bp_diastolic_max_mmhg"),
)
BASELINES: tuple[tuple[str, str, str | None], ...] = (
    ("hr_baseline_bpm", "hr_min_bpm", "hr_max_bpm"),
    ("spo2_baseline_pct", "spo2_min_pct", None),
    ("skin_temp_baseline_c", "skin_temp_min_c", "skin_temp_max_c"),
    ("bp_systolic_baseline_mmhg", "bp_systolic_min_mmhg", "bp_systolic_max_mmhg"),
    ("bp_diastolic_baseline_mmhg", "bp_diastolic_min_mmhg", "bp_diastolic_max_mmhg"),
)
#: NEWS2 SpO2 scale 2 (hypercapnic respiratory failure) targets 88-92 %.
SCALE2_TARGET_MAX_PCT = 92


class HealthRow(_Row):
    """A row of a health file: a resident's health record and per-person vital-sign limits and baselines."""

    REQUIRED_COLUMNS = ("resident_code",)

    resident_code: Code
    conditions: StrList = []
    medications: StrList = []
    allergies: StrList = []
    exam_date: PastDate | None = None
    height_cm: float | None = _between(80, 230, "centimetres")
    weight_kg: float | None = _between(20, 250, "kilograms")
    bmi: float | None = _between(10, 70, "kg/m2")
    waist_cm: float | None = _between(40, 200, "centimetres")
    fasting_glucose_mmol_l: float | None = _between(1, 40, "mmol/L")
    hba1c_pct: float | None = _between(3, 20, "percent")
    hr_min_bpm: int | None = _between(25, 250, "beats per minute")
    hr_max_bpm: int | None = _between(25, 250, "beats per minute")
    spo2_min_pct: int | None = _between(70, 100, "percent")
    spo2_scale: int | None = Field(default=None, description="NEWS2 SpO2 scale: 2 for hypercapnic patients")
    skin_temp_min_c: float | None = _between(20, 44, "degrees Celsius")
    skin_temp_max_c: float | None = _between(20, 44, "degrees Celsius")
    bp_systolic_min_mmhg: int | None = _between(50, 260, "mmHg")
    bp_systolic_max_mmhg: int | None = _between(50, 260, "mmHg")
    bp_diastolic_min_mmhg: int | None = _between(25, 160, "mmHg")
    bp_diastolic_max_mmhg: int | None = _between(25, 160, "mmHg")
    hr_baseline_bpm: int | None = _between(25, 250, "beats per minute")
    spo2_baseline_pct: int | None = _between(50, 100, "percent")
    skin_temp_baseline_c: float | None = _between(20, 44, "degrees Celsius")
    bp_systolic_baseline_mmhg: int | None = _between(50, 260, "mmHg")
    bp_diastolic_baseline_mmhg: int | None = _between(25, 160, "mmHg")

    @field_validator("spo2_scale")
    @classmethod
    def _scale(cls, value: int | None) -> int | None:
        if value not in (None, 1, 2):
            raise PydanticCustomError("spo2_scale", "must be 1 or 2 (NEWS2 SpO2 scale)")
        return value


HEALTH_FIELDS = tuple(name for name in HealthRow.model_fields if name != "resident_code")
ROW_MODELS: dict[ImportKind, type[_Row]] = {
    ImportKind.RESIDENTS: ResidentRow,
    ImportKind.DEVICES: DeviceRow,
    ImportKind.HEALTH: HealthRow,
}
#: Every column a file of each kind may have, in the documented order.
COLUMNS: dict[ImportKind, tuple[str, ...]] = {kind: tuple(model.model_fields) for kind, model in ROW_MODELS.items()}
#: Values of non-nullable fields whose cell is empty, or whose column is missing on a new row.
DEFAULTS: dict[str, Any] = {
    "status": ResidentStatus.ACTIVE,
    "geofence_radius_m": 200,
    "active": True,
    "spo2_scale": 1,
    "conditions": [],
    "medications": [],
    "allergies": [],
}
_DEFAULT_PLACEMENT = {DeviceKind.BRACELET: Placement.WRIST, DeviceKind.BELT: Placement.WAIST}


# -- parsing ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ParsedRow:
    """A valid data row and the line it starts on."""

    line: int
    values: Any  # the kind's row model (ResidentRow, DeviceRow or HealthRow)


@dataclass(slots=True)
class ParsedFile:
    """A CSV file read and checked row by row (no database involved)."""

    name: str
    kind: ImportKind | None = None
    columns: tuple[str, ...] = ()
    rows: list[ParsedRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    #: Rows that failed validation, as (line, raw cells), so later checks know the codes they meant to create.
    rejected: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        """Data rows read, valid or not."""
        return len(self.rows) + len(self.rejected)

    def error(self, line: int, where: str, reason: str) -> None:
        """Record a problem."""
        self.errors.append(RowError(line, where, reason, self.name))


def detect_kind(columns: Iterable[str]) -> ImportKind | None:
    """The kind of file a header belongs to, from its marker columns (None: cannot tell)."""
    present = set(columns)
    if "device_code" in present:
        return ImportKind.DEVICES
    if present & {"name", "household", "home_code", "birth_date"}:
        return ImportKind.RESIDENTS
    if "resident_code" in present:
        return ImportKind.HEALTH
    return None


def _decode(data: bytes, parsed: ParsedFile) -> str | None:
    try:
        return data.decode("utf-8-sig")  # a byte order mark (Excel's "CSV UTF-8") is fine
    except UnicodeDecodeError:
        pass
    # A newline byte never occurs inside a UTF-8 sequence, so each line can be checked on its own.
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            parsed.error(
                number,
                FILE,
                f"not UTF-8: byte 0x{raw[exc.start]:02x} at position {exc.start + 1} of the line "
                "(save the file as UTF-8)",
            )
    return None


def _reason(error: Any) -> str:
    if error["type"] == "missing":
        return "a value is required"
    message = str(error["msg"])
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    message = message.replace("Input should", "should", 1)
    value = error.get("input")
    if isinstance(value, str) and error["type"] not in ("missing", "extra_forbidden"):
        message += f" (got {value!r})"
    return message


def parse_csv(
    data: bytes, name: str = "<csv>", *, kind: ImportKind | None = None, today: date | None = None
) -> ParsedFile:
    """Read one CSV file and validate every row on its own; `kind` overrides detection from the header."""
    parsed = ParsedFile(name)
    if not data.strip():
        parsed.error(1, FILE, "the file is empty")
        return parsed
    text = _decode(data, parsed)
    if text is None:
        return parsed
    context = {"today": today or date.today()}
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = _records(reader, parsed)
    header = next(records, None)
    if header is None:
        if not parsed.errors:
            parsed.error(1, FILE, "the file is empty")
        return parsed
    header_line, cells = header
    columns = tuple(cell.strip().lower() for cell in cells)
    if not _check_header(parsed, header_line, columns, kind):
        return parsed
    assert parsed.kind is not None
    model = ROW_MODELS[parsed.kind]
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    for line, record in records:
        if len(record) != len(columns):
            parsed.error(line, ROW, f"{len(record)} cells, but the header has {len(columns)} columns")
            parsed.rejected.append((line, {}))
            continue
        cells_by_column = {column: cell.strip() for column, cell in zip(columns, record, strict=True)}
        # An empty required cell is left out (pydantic says "missing"); an empty optional cell is None.
        values = {c: v or None for c, v in cells_by_column.items() if v or c not in required}
        try:
            parsed.rows.append(ParsedRow(line, model.model_validate(values, context=context)))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                parsed.error(line, str(error["loc"][0]) if error["loc"] else ROW, _reason(error))
            parsed.rejected.append((line, cells_by_column))
    if not parsed.row_count and not parsed.errors:
        parsed.error(header_line, FILE, "no data rows below the header")
    order = {column: index for index, column in enumerate(columns)}
    parsed.errors.sort(key=lambda e: (e.line, order.get(e.field, len(order))))
    return parsed


def _records(reader: Any, parsed: ParsedFile) -> Iterator[tuple[int, list[str]]]:
    # Yields (line the record starts on, cells), skipping blank lines and rows of empty cells.
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in record):
                yield start, record
    except csv.Error as exc:
        parsed.error(end + 1, ROW, f"malformed CSV ({exc}); nothing after this line was read")


def _check_header(parsed: ParsedFile, line: int, columns: tuple[str, ...], kind: ImportKind | None) -> bool:
    parsed.columns = columns
    parsed.kind = kind or detect_kind(columns)
    if parsed.kind is None:
        parsed.error(
            line,
            HEADER,
            "cannot tell what the file holds: residents files have name and household columns, devices files a "
            "device_code column, health files a resident_code column (or give the kind)",
        )
        return False
    known = COLUMNS[parsed.kind]
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            parsed.error(line, column or HEADER, "the column appears twice")
        elif column not in known:
            parsed.error(line, column or HEADER, f"not a column of a {parsed.kind} file" if column else "empty name")
        seen.add(column)
    for column in ROW_MODELS[parsed.kind].REQUIRED_COLUMNS:
        if column not in seen:
            parsed.error(line, column, "required column is missing")
    if parsed.kind is ImportKind.HEALTH and not seen & set(HEALTH_FIELDS):
        parsed.error(line, HEADER, "a health file needs at least one health-profile column besides resident_code")
    return not parsed.errors


# -- checking against the database and applying ----------------------------------------------------------------
def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _path_text(path: Sequence[tuple[OrgLevel, str]]) -> str:
    return " / ".join(name for _, name in path)


@dataclass(slots=True)
class _Upserts:
    """Rows to insert (with a placeholder id) and to update (with their real id), per table."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0


class _Import:
    """One import transaction: checks each file against the database and the earlier files, then writes it.

    New rows get negative placeholder ids while planning, so later rows (and files) can refer to them; writing
    replaces each placeholder with the id the database assigned. Once any error is found nothing more is
    written, but later files are still checked so every error is reported; the caller then rolls back.
    """

    def __init__(self, session: Session, *, write: bool) -> None:
        self.session = session
        self.write = write
        self.errors: list[RowError] = []
        self.counts = {table: TableCounts() for table in IMPORTED_TABLES}
        self._next_placeholder = 0
        self._real: dict[int, int] = {}  # placeholder -> database id
        # What this import has seen so far, overriding the database: code -> id (maybe a placeholder).
        self.seen_homes: dict[str, int] = {}
        self.seen_residents: dict[str, tuple[int, str | None]] = {}  # code -> (id, home code; None if unknown)

    # helpers ---------------------------------------------------------------------------------------------------
    def _placeholder(self) -> int:
        self._next_placeholder -= 1
        return self._next_placeholder

    def _id(self, value: int | None) -> int | None:
        return None if value is None else self._real.get(value, value)

    def _apply(self, table: Table, plan: _Upserts, refs: Sequence[str]) -> None:
        """Insert and update the planned rows, replacing placeholder ids in `refs` (and the new rows' own ids)."""
        counts = self.counts[table.name]
        counts.created += len(plan.inserts)
        counts.updated += len(plan.updates)
        counts.unchanged += plan.unchanged
        if not self.write:
            return
        for rows in (plan.inserts, plan.updates):
            for row in rows:
                for ref in refs:
                    row[ref] = self._id(row[ref])
        if plan.inserts and "id" in table.c:
            placeholders = [row.pop("id") for row in plan.inserts]
            self._real.update(zip(placeholders, self._insert_returning_ids(table, plan.inserts), strict=True))
        elif plan.inserts:
            self.session.execute(insert(table), plan.inserts)
        if plan.updates:
            (key,) = table.primary_key.columns
            names = [name for name in plan.updates[0] if name != key.name]
            statement = (
                update(table).where(key == bindparam("key_")).values({name: bindparam(f"new_{name}") for name in names})
            )
            params = [{"key_": row[key.name], **{f"new_{n}": row[n] for n in names}} for row in plan.updates]
            self.session.execute(statement, params)

    def _insert_returning_ids(self, table: Table, rows: list[dict[str, Any]]) -> list[int]:
        # Core, not the ORM's bulk insert: that one leaves NULL values out, splitting the rows into many small
        # statements whenever they differ in which fields are empty.
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(self.session.scalars(statement, rows).all())

    def _existing(self, columns: Sequence[Any], key: Any, values: Iterable[Any]) -> dict[Any, dict[str, Any]]:
        """Rows whose `key` column is one of `values`, as {key value: {column name: value}}."""
        wanted = sorted(set(values))
        found: dict[Any, dict[str, Any]] = {}
        for chunk in _chunks(wanted):
            for row in self.session.execute(select(*columns).where(key.in_(chunk))):
                mapping = dict(row._mapping)
                found[mapping[key.key]] = mapping
        return found

    @staticmethod
    def _merge(existing: dict[str, Any] | None, fields: Sequence[str], row: Any) -> dict[str, Any]:
        """The record after applying a row: the columns the row has replace the existing (or default) values."""
        record = {name: existing[name] if existing else DEFAULTS.get(name) for name in fields}
        for name in fields:
            if name in row.model_fields_set:
                value = getattr(row, name)
                record[name] = DEFAULTS.get(name) if value is None else value
        return record

    @staticmethod
    def _duplicates(parsed: ParsedFile, code_field: str, what: str) -> list[ParsedRow]:
        """Report every row (valid or not) whose code an earlier row has; return the valid rows that are first."""
        codes = [(row.line, getattr(row.values, code_field)) for row in parsed.rows]
        for line, cells in parsed.rejected:
            if _ID_RE.fullmatch(code := cells.get(code_field, "")):
                codes.append((line, code))
        first: dict[str, int] = {}
        for line, code in sorted(codes):
            earlier = first.setdefault(code, line)
            if earlier != line:
                parsed.error(line, code_field, f"{what} {code} is already on line {earlier}")
        return [row for row in parsed.rows if first[getattr(row.values, code_field)] == row.line]

    def _finish(self, parsed: ParsedFile) -> bool:
        """Sort the file's errors and decide whether to write it."""
        order = {column: index for index, column in enumerate(parsed.columns)}
        parsed.errors.sort(key=lambda e: (e.line, order.get(e.field, len(order))))
        self.errors.extend(parsed.errors)
        if parsed.errors:
            self.write = False
        return not self.errors

    # residents -------------------------------------------------------------------------------------------------
    def residents(self, parsed: ParsedFile) -> None:
        """Check and apply a residents file: org units, homes, residents."""
        rows = self._duplicates(parsed, "resident_code", "resident")
        for _, cells in parsed.rejected:  # known codes, so later files do not report them as unknown too
            if _ID_RE.fullmatch(code := cells.get("resident_code", "")):
                self.seen_residents.setdefault(code, (self._placeholder(), None))
            if _ID_RE.fullmatch(home := cells.get("home_code", "")):
                self.seen_homes.setdefault(home, self._placeholder())

        # One description per home, one home per household (in the file).
        home_rows: dict[str, ParsedRow] = {}
        household_home: dict[OrgPath, tuple[str, int]] = {}
        for row in rows:
            values: ResidentRow = row.values
            first = home_rows.setdefault(values.home_code, row)
            if first is row:
                path = values.org_path()
                other = household_home.setdefault(path, (values.home_code, row.line))
                if other[0] != values.home_code:
                    parsed.error(
                        row.line, "household", f"{_path_text(path)} is already home {other[0]} on line {other[1]}"
                    )
                continue
            for column in (*ORG_COLUMNS, *HOME_FIELDS):
                if getattr(values, column) != (other_value := getattr(first.values, column)):
                    shown = f"no {column}" if other_value is None else f"{column} {other_value!r}"
                    parsed.error(row.line, column, f"home {values.home_code} has {shown} on line {first.line}")

        unit_ids, new_units = self._plan_org_units([row.values.org_path() for row in home_rows.values()])
        # A household that already is another home in the database.
        households = [unit_ids[row.values.org_path()] for row in home_rows.values()]
        owners = self._existing((Home.org_unit_id, Home.code), Home.org_unit_id, [i for i in households if i > 0])
        for code, row in home_rows.items():
            owner = owners.get(unit_ids[row.values.org_path()])
            if owner is not None and owner["code"] != code:
                parsed.error(
                    row.line, "household", f"{_path_text(row.values.org_path())} is already home {owner['code']}"
                )

        # Homes.
        home_columns = (Home.id, Home.code, Home.org_unit_id, *(getattr(Home, f) for f in HOME_FIELDS))
        existing_homes = self._existing(home_columns, Home.code, home_rows)
        homes = _Upserts()
        for code, row in home_rows.items():
            old = existing_homes.get(code)
            record = self._merge(old, HOME_FIELDS, row.values)
            record["org_unit_id"] = unit_ids[row.values.org_path()]
            if (record["latitude"] is None) != (record["longitude"] is None):
                missing = "latitude" if record["latitude"] is None else "longitude"
                parsed.error(row.line, missing, "latitude and longitude go together: give both or neither")
            self._plan(homes, old, record, code)
            self.seen_homes[code] = record["id"]

        # Residents.
        resident_columns = (
            Resident.id,
            Resident.code,
            Resident.home_id,
            *(getattr(Resident, f) for f in RESIDENT_FIELDS),
        )
        existing_residents = self._existing(resident_columns, Resident.code, [r.values.resident_code for r in rows])
        residents = _Upserts()
        for row in rows:
            values = row.values
            old = existing_residents.get(values.resident_code)
            record = self._merge(old, RESIDENT_FIELDS, values)
            record["home_id"] = self.seen_homes[values.home_code]
            self._plan(residents, old, record, values.resident_code)
            self.seen_residents[values.resident_code] = (record["id"], values.home_code)

        if not self._finish(parsed):
            return
        self.counts["org_units"].created += len(new_units)
        self.counts["org_units"].unchanged += len(unit_ids) - len(new_units)
        self._create_org_units(new_units)
        self._apply(_table(Home), homes, refs=("org_unit_id",))
        self._apply(_table(Resident), residents, refs=("home_id",))

    def _plan_org_units(self, paths: Iterable[OrgPath]) -> tuple[dict[OrgPath, int], list[dict[str, Any]]]:
        """The id of every org unit on the paths (a placeholder for a missing one), and the missing units."""
        tree = {
            (parent, level, name): unit_id
            for unit_id, parent, level, name in self.session.execute(
                select(OrgUnit.id, OrgUnit.parent_id, OrgUnit.level, OrgUnit.name)
            )
        }
        unit_ids: dict[OrgPath, int] = {}
        new_units: list[dict[str, Any]] = []
        for path in paths:
            for depth in range(1, len(path) + 1):
                prefix = path[:depth]
                if prefix in unit_ids:
                    continue
                parent = unit_ids[prefix[:-1]] if depth > 1 else None
                level, name = prefix[-1]
                unit_id = tree.get((parent, level, name))
                if unit_id is None:
                    unit_id = self._placeholder()
                    parent_level = prefix[-2][0] if depth > 1 else None
                    new_units.append(
                        {"id": unit_id, "parent_id": parent, "parent_level": parent_level, "level": level, "name": name}
                    )
                unit_ids[prefix] = unit_id
        return unit_ids, new_units

    def _create_org_units(self, new_units: list[dict[str, Any]]) -> None:
        """Insert planned org units, one statement per level: parents are always at a shallower level."""
        if not self.write:
            return
        for level in OrgLevel:
            batch = [unit for unit in new_units if unit["level"] is level]
            if not batch:
                continue
            placeholders = [unit.pop("id") for unit in batch]
            for unit in batch:
                unit["parent_id"] = self._id(unit["parent_id"])
            ids = self._insert_returning_ids(_table(OrgUnit), batch)
            self._real.update(zip(placeholders, ids, strict=True))

    def _plan(self, plan: _Upserts, old: dict[str, Any] | None, record: dict[str, Any], code: str) -> None:
        """Add a merged record (with or without an existing row) to a table's plan; sets record['id']."""
        if old is None:
            record["id"] = self._placeholder()
            record["code"] = code
            plan.inserts.append(record)
            return
        record["id"] = old["id"]
        if all(old.get(k) == v for k, v in record.items() if k != "id"):
            plan.unchanged += 1
        else:
            plan.updates.append(record)

    # devices ---------------------------------------------------------------------------------------------------
    def _homes_by_code(self, codes: Iterable[str]) -> dict[str, int]:
        missing = [code for code in set(codes) if code not in self.seen_homes]
        found = self._existing((Home.code, Home.id), Home.code, missing)
        return {**{code: row["id"] for code, row in found.items()}, **self.seen_homes}

    def _residents_by_code(self, codes: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        missing = sorted({code for code in codes if code not in self.seen_residents})
        found: dict[str, tuple[int, str | None]] = {}
        for chunk in _chunks(missing):
            statement = (
                select(Resident.code, Resident.id, Home.code).join(Resident.home).where(Resident.code.in_(chunk))
            )
            found.update({code: (resident_id, home) for code, resident_id, home in self.session.execute(statement)})
        return {**found, **self.seen_residents}

    def devices(self, parsed: ParsedFile) -> None:
        """Check and apply a devices file."""
        rows = self._duplicates(parsed, "device_code", "device")
        homes = self._homes_by_code(row.values.home_code for row in rows)
        residents = self._residents_by_code(row.values.resident_code for row in rows if row.values.resident_code)
        fields = ("kind", "room", "placement", "active")
        columns = (Device.id, Device.code, Device.home_id, Device.resident_id, *(getattr(Device, f) for f in fields))
        existing = self._existing(columns, Device.code, [row.values.device_code for row in rows])
        devices = _Upserts()
        for row in rows:
            values: DeviceRow = row.values
            old = existing.get(values.device_code)
            record = self._merge(old, fields, values)
            if values.home_code not in homes:
                parsed.error(
                    row.line, "home_code", f"unknown home {values.home_code} (not in the registry or this import)"
                )
                continue
            record["home_id"] = homes[values.home_code]
            if "resident_code" in values.model_fields_set or old is None:
                record["resident_id"] = None
                if values.resident_code is not None:
                    resident = residents.get(values.resident_code)
                    if resident is None:
                        parsed.error(
                            row.line,
                            "resident_code",
                            f"unknown resident {values.resident_code} (not in the registry or this import)",
                        )
                        continue
                    resident_id, resident_home = resident
                    if resident_home is not None and resident_home != values.home_code:
                        parsed.error(
                            row.line,
                            "resident_code",
                            f"resident {values.resident_code} lives in home {resident_home}, not {values.home_code}",
                        )
                    record["resident_id"] = resident_id
            else:
                record["resident_id"] = old["resident_id"]
            kind = record["kind"]
            if kind in WEARABLE_KINDS:
                record["placement"] = record["placement"] or _DEFAULT_PLACEMENT[kind]
            elif values.placement is not None:
                parsed.error(row.line, "placement", f"only bracelets and belts have a placement, not a {kind}")
            else:
                record["placement"] = None
            if kind is DeviceKind.GATEWAY and record["resident_id"] is not None:
                parsed.error(row.line, "resident_code", "a gateway serves a home, not one resident")
            self._plan(devices, old, record, values.device_code)
        if self._finish(parsed):
            self._apply(_table(Device), devices, refs=("home_id", "resident_id"))

    # health ----------------------------------------------------------------------------------------------------
    def health(self, parsed: ParsedFile) -> None:
        """Check and apply a health file (one health profile per resident)."""
        rows = self._duplicates(parsed, "resident_code", "resident")
        residents = self._residents_by_code(row.values.resident_code for row in rows)
        columns = (HealthProfile.resident_id, *(getattr(HealthProfile, f) for f in HEALTH_FIELDS))
        referenced = {residents[r.values.resident_code][0] for r in rows if r.values.resident_code in residents}
        existing = self._existing(
            columns, HealthProfile.resident_id, [i for i in map(self._id, referenced) if i and i > 0]
        )
        profiles = _Upserts()
        for row in rows:
            values: HealthRow = row.values
            if values.resident_code not in residents:
                parsed.error(
                    row.line,
                    "resident_code",
                    f"unknown resident {values.resident_code} (not in the registry or this import)",
                )
                continue
            resident_id = residents[values.resident_code][0]
            old = existing.get(self._id(resident_id))
            record = self._merge(old, HEALTH_FIELDS, values)
            for where, reason in profile_problems(record):
                parsed.error(row.line, where, reason)
            record["resident_id"] = old["resident_id"] if old else resident_id
            if old is None:
                profiles.inserts.append(record)
            elif all(old[k] == v for k, v in record.items()):
                profiles.unchanged += 1
            else:
                profiles.updates.append(record)
        if self._finish(parsed):
            self._apply(_table(HealthProfile), profiles, refs=("resident_id",))


def profile_problems(profile: dict[str, Any]) -> list[tuple[str, str]]:
    """`(field, reason)` for each inconsistency between the limits, baselines and measurements of a profile."""
    problems = []
    for low, high in LIMIT_PAIRS:
        lo, hi = profile.get(low), profile.get(high)
        if lo is not None and hi is not None and lo >= hi:
            problems.append((low, f"{low} {lo} must be below {high} {hi}"))
    for baseline, low_name, high_name in BASELINES:
        value = profile.get(baseline)
        if value is None:
            continue
        lo = profile.get(low_name)
        hi = profile.get(high_name) if high_name else None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            limits = ", ".join(f"{n} {v}" for n, v in ((low_name, lo), (high_name, hi)) if n and v is not None)
            problems.append((baseline, f"{baseline} {value} lies outside the limits ({limits})"))
    spo2_min = profile.get("spo2_min_pct")
    if profile.get("spo2_scale") == 2 and spo2_min is not None and spo2_min > SCALE2_TARGET_MAX_PCT:
        problems.append(
            ("spo2_min_pct", f"spo2_min_pct {spo2_min} is above the NEWS2 scale 2 target of 88-92 % (spo2_scale is 2)")
        )
    height, weight, bmi = profile.get("height_cm"), profile.get("weight_kg"), profile.get("bmi")
    if height and weight and bmi is not None:
        computed = weight / (height / 100) ** 2
        if abs(computed - bmi) > 1.0:
            problems.append(("bmi", f"bmi {bmi} does not match weight_kg / height_cm² = {computed:.1f}"))
    return problems


#: The tables an import writes, in the order it writes them.
IMPORTED_TABLES = ("org_units", "homes", "residents", "devices", "health_profiles")
_KIND_ORDER = {ImportKind.RESIDENTS: 0, ImportKind.DEVICES: 1, ImportKind.HEALTH: 2}


def import_csv(
    engine: Engine,
    sources: Sequence[tuple[str, bytes]],
    *,
    kind: ImportKind | None = None,
    dry_run: bool = False,
    today: date | None = None,
) -> ImportReport:
    """Import `(name, content)` CSV files in one transaction; returns the counts, or every error (nothing written)."""
    report = ImportReport(dry_run=dry_run)
    parsed_files = [parse_csv(data, name, kind=kind, today=today) for name, data in sources]
    report.files = [(p.name, p.kind, p.row_count) for p in parsed_files]
    with Session(engine) as session:  # leaving it without a commit rolls back
        job = _Import(session, write=not dry_run and not any(p.errors for p in parsed_files))
        handlers = {ImportKind.RESIDENTS: job.residents, ImportKind.DEVICES: job.devices, ImportKind.HEALTH: job.health}
        try:
            for parsed in sorted(parsed_files, key=lambda p: _KIND_ORDER[p.kind] if p.kind else len(_KIND_ORDER)):
                if parsed.kind is None:
                    job.errors.extend(parsed.errors)
                    job.write = False
                else:
                    handlers[parsed.kind](parsed)
            if job.write:
                session.commit()
        except DBAPIError as exc:  # a constraint the checks missed, or another import writing the same codes
            session.rollback()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            job.errors.append(RowError(0, DATABASE, f"refused the import: {reason}"))
    report.counts = job.counts
    file_order = {p.name: index for index, p in enumerate(parsed_files)}
    report.errors = sorted(job.errors, key=lambda e: file_order.get(e.file, -1))
    return report


def import_files(
    engine: Engine,
    paths: Sequence[Path],
    *,
    kind: ImportKind | None = None,
    dry_run: bool = False,
    today: date | None = None,
) -> ImportReport:
    """Import CSV files by path, in one transaction (see import_csv)."""
    return import_csv(
        engine, [(str(path), path.read_bytes()) for path in paths], kind=kind, dry_run=dry_run, today=today
    )
