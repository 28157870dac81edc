"""Who is told about an alert, and when the next people are: the escalation policy and its routing.

An :class:`EscalationPolicy` is a list of levels. Level 0 is told when an alert opens; each level has, per
severity, a timeout after which nobody having acknowledged escalates to the next level, and a repeat interval at
which the same level is paged again meanwhile. The default policy (overridable from TOML, see
:meth:`EscalationPolicy.from_mapping`):

====  =====================  ==================================================================================
 0    responsible            the home's grid staff, the nurse on duty, the family (per their preferences) and,
                             for reminders, the resident's own bracelet
 1    doctor on duty         from the on-duty roster
 2    community lead         registry staff whose org unit covers the home
 3    emergency contacts     the resident's family members marked as emergency contacts
====  =====================  ==================================================================================

Timeouts before escalating: high 2 min, medium 10 min, low 30 min; repeats every 1, 5 and 15 min. Reminders do
not escalate (an unanswered reminder is promoted to an alarm instead, see ``lifecycle.py``).

Who an audience is, concretely, is asked of a :class:`RecipientDirectory` (``roster.py`` has the registry-backed
one); :func:`recipients_at` is the pure routing on top of it.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alerts.models import Recipient, Severity
from alerts.notify.preferences import wants
from careloop.registry.models import StaffRole

#: Per severity, seconds at a level before escalating to the next (reminders: never).
DEFAULT_TIMEOUTS_S: Mapping[Severity, float] = {Severity.HIGH: 120.0, Severity.MEDIUM: 600.0, Severity.LOW: 1800.0}
#: Per severity, seconds between pages of the same level until someone acknowledges (reminders: never).
DEFAULT_REPEATS_S: Mapping[Severity, float] = {Severity.HIGH: 60.0, Severity.MEDIUM: 300.0, Severity.LOW: 900.0}


class PolicyError(ValueError):
    """An escalation policy that cannot be used; ``problems`` lists every reason (location: message)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid escalation policy: " + "; ".join(problems))
        self.problems = tuple(problems)


class AudienceKind(enum.StrEnum):
    """A kind of people an escalation level notifies."""

    COVERING = "covering"  # registry staff of a role whose org unit is the home's or an ancestor (grid staff)
    ON_DUTY = "on_duty"  # staff of a role on a roster shift covering the home right now (nurse, doctor)
    FAMILY = "family"  # the resident's family members: informed, per their preferences
    EMERGENCY_CONTACTS = "emergency_contacts"  # family members marked as emergency contacts: paged
    RESIDENT = "resident"  # the resident's own bracelet: reminders only


_ROLE_KINDS = frozenset({AudienceKind.COVERING, AudienceKind.ON_DUTY})


@dataclass(slots=True, frozen=True)
class Audience:
    """Who a level notifies: ``covering:<role>``, ``on_duty:<role>``, ``family``, ``emergency_contacts``, ``resident``.

    A role is a registry staff role (grid_staff, nurse, doctor, community_lead, ...).
    """

    kind: AudienceKind
    role: str | None = None

    def __post_init__(self) -> None:
        if (self.kind in _ROLE_KINDS) != (self.role is not None):
            raise ValueError(f"{self.kind.value} {'needs' if self.kind in _ROLE_KINDS else 'takes no'} staff role")
        if self.role is not None and self.role not in {r.value for r in StaffRole}:
            raise ValueError(f"unknown staff role {self.role!r} (one of {', '.join(r.value for r in StaffRole)})")

    @classmethod
    def parse(cls, text: str) -> Audience:
        """Parse ``kind`` or ``kind:role``; ValueError saying what is wrong."""
        kind_text, _, role = text.strip().partition(":")
        try:
            kind = AudienceKind(kind_text)
        except ValueError:
            raise ValueError(
                f"unknown audience {text!r} (one of covering:<role>, on_duty:<role>, family, emergency_contacts, "
                "resident)"
            ) from None
        return cls(kind, role or None)

    @property
    def paged(self) -> bool:
        """Whether repeat timers notify this audience again: staff and emergency contacts until someone acknowledges;
        the family and the bracelet are told once per level."""
        return self.kind not in (AudienceKind.FAMILY, AudienceKind.RESIDENT)

    def __str__(self) -> str:
        return self.kind.value if self.role is None else f"{self.kind.value}:{self.role}"


@dataclass(slots=True, frozen=True)
class EscalationLevel:
    """One level: its audiences, and per severity the seconds before escalating and between repeats (absent: never)."""

    name: str
    audiences: tuple[Audience, ...]
    timeout_s: Mapping[Severity, float] = field(default_factory=dict)
    repeat_s: Mapping[Severity, float] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class EscalationPolicy:
    """The escalation levels, level 0 first."""

    levels: tuple[EscalationLevel, ...]

    def __post_init__(self) -> None:
        if not self.levels:
            raise PolicyError(["levels: an escalation policy needs at least one level"])
        problems = [
            f"levels[{i}].{what}.{severity.value}: {seconds!r} is not a positive number of seconds"
            for i, level in enumerate(self.levels)
            for what, times in (("timeout_s", level.timeout_s), ("repeat_s", level.repeat_s))
            for severity, seconds in times.items()
            if not seconds > 0
        ]
        if problems:
            raise PolicyError(problems)

    @property
    def last_level(self) -> int:
        """The highest level number."""
        return len(self.levels) - 1

    def level(self, number: int) -> EscalationLevel:
        """Level ``number`` (0 first); IndexError beyond the last."""
        if not 0 <= number < len(self.levels):
            raise IndexError(f"no escalation level {number} (levels 0..{self.last_level})")
        return self.levels[number]

    def has_next(self, level: int) -> bool:
        """Whether there is a level after ``level`` to escalate to."""
        return 0 <= level < self.last_level

    def escalate_after(self, severity: Severity, level: int) -> float | None:
        """Seconds at ``level`` before an unacknowledged alert of this severity escalates; None: it does not."""
        if not self.has_next(level):
            return None
        return self.levels[level].timeout_s.get(severity)

    def repeat_every(self, severity: Severity, level: int) -> float | None:
        """Seconds between pages of ``level`` until someone acknowledges; None: it is paged once."""
        if not 0 <= level < len(self.levels):
            return None
        return self.levels[level].repeat_s.get(severity)

    @classmethod
    def default(cls) -> EscalationPolicy:
        """Grid staff + nurse on duty + family, then the doctor on duty, the community lead, emergency contacts."""
        return cls.from_mapping({})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EscalationPolicy:
        """A policy from parsed TOML / JSON; every problem reported at once as :class:`PolicyError`.

        Keys: ``timeout_s`` and ``repeat_s`` (per-severity tables overriding the defaults for every level; 0 turns
        one off), ``levels`` (an array of tables with ``name``, ``notify`` (audience strings) and optional
        per-level ``timeout_s`` / ``repeat_s`` overriding the policy-wide ones). Without ``levels``, the default
        four levels.
        """
        try:
            config = _PolicyConfig.model_validate(dict(data))
        except ValidationError as exc:
            raise PolicyError(
                [f"{'.'.join(str(p) for p in error['loc']) or 'policy'}: {error['msg']}" for error in exc.errors()]
            ) from None
        timeouts = {**DEFAULT_TIMEOUTS_S, **config.timeout_s}
        repeats = {**DEFAULT_REPEATS_S, **config.repeat_s}
        levels = config.levels if config.levels is not None else _DEFAULT_LEVELS
        return cls(
            tuple(
                EscalationLevel(
                    name=level.name,
                    audiences=tuple(Audience.parse(text) for text in level.notify),
                    timeout_s=_enabled({**timeouts, **level.timeout_s}),
                    repeat_s=_enabled({**repeats, **level.repeat_s}),
                )
                for level in levels
            )
        )

    @classmethod
    def from_toml(cls, text: str) -> EscalationPolicy:
        """A policy from TOML text (see :meth:`from_mapping`)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError([f"TOML: {exc}"]) from None
        return cls.from_mapping(data)


def load_escalation_policy(path: Path | None) -> EscalationPolicy:
    """The policy in a TOML file, or the default one when no file is given."""
    if path is None:
        return EscalationPolicy.default()
    return EscalationPolicy.from_toml(path.read_text(encoding="utf-8"))


def _enabled(times: Mapping[Severity, float]) -> dict[Severity, float]:
    return {severity: seconds for severity, seconds in times.items() if seconds > 0}


# -- the configuration file's shape (boundary: validated, frozen, no unknown keys) ---------------------------------
_Seconds = Annotated[float, Field(ge=0.0, le=7 * 86_400.0, allow_inf_nan=False)]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LevelConfig(_Config):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    notify: Annotated[tuple[str, ...], Field(min_length=1)]
    timeout_s: dict[Severity, _Seconds] = {}
    repeat_s: dict[Severity, _Seconds] = {}

    @field_validator("notify")
    @classmethod
    def _audiences(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            Audience.parse(text)  # ValueError becomes a validation error at its location
        return value


class _PolicyConfig(_Config):
    timeout_s: dict[Severity, _Seconds] = {}
    repeat_s: dict[Severity, _Seconds] = {}
    levels: Annotated[tuple[_LevelConfig, ...], Field(min_length=1)] | None = None


_DEFAULT_LEVELS = (
    _LevelConfig(name="responsible", notify=("covering:grid_staff", "on_duty:nurse", "family", "resident")),
    _LevelConfig(name="doctor on duty", notify=("on_duty:doctor",)),
    _LevelConfig(name="community lead", notify=("covering:community_lead",)),
    _LevelConfig(name="emergency contacts", notify=("emergency_contacts",)),
)


# -- routing ------------------------------------------------------------------------------------------------------
class RecipientDirectory(Protocol):
    """Who the people of each audience are, with their addresses and preferences already applied."""

    def staff_covering(self, role: str, home_id: str) -> list[Recipient]:
        """Staff of ``role`` whose org unit is the home's or one of its ancestors (or who cover everything)."""
        ...

    def staff_on_duty(self, role: str, home_id: str, now: float) -> list[Recipient]:
        """Staff on a roster shift of ``role`` covering the home at ``now``."""
        ...

    def family(self, resident_id: str) -> list[Recipient]:
        """The resident's family members, in priority order."""
        ...

    def emergency_contacts(self, resident_id: str) -> list[Recipient]:
        """The resident's family members marked as emergency contacts, in priority order."""
        ...

    def resident(self, resident_id: str) -> Recipient | None:
        """The resident, reachable on their bracelet (``device_id``), or None when unknown."""
        ...


@runtime_checkable
class ScopedDirectory(Protocol):
    """A directory that can answer a batch of questions (one alert transition's) from one read."""

    def scope(self) -> AbstractContextManager[RecipientDirectory]:
        """A directory to ask the batch's questions of; its answers are remembered until the block ends."""
        ...


def audience_members(
    directory: RecipientDirectory, audience: Audience, *, resident_id: str, home_id: str, now: float
) -> list[Recipient]:
    """The people an audience stands for, for one resident and home at one time."""
    match audience.kind:
        case AudienceKind.COVERING:
            assert audience.role is not None
            return directory.staff_covering(audience.role, home_id)
        case AudienceKind.ON_DUTY:
            assert audience.role is not None
            return directory.staff_on_duty(audience.role, home_id, now)
        case AudienceKind.FAMILY:
            return directory.family(resident_id)
        case AudienceKind.EMERGENCY_CONTACTS:
            return directory.emergency_contacts(resident_id)
        case AudienceKind.RESIDENT:
            resident = directory.resident(resident_id)
            return [] if resident is None else [resident]


@dataclass(slots=True, frozen=True)
class Routed:
    """A recipient of one level, and whether they are paged (staff, emergency contacts) or only informed (family,
    the bracelet)."""

    recipient: Recipient
    paged: bool


def route(
    policy: EscalationPolicy,
    directory: RecipientDirectory,
    level: int,
    *,
    resident_id: str,
    home_id: str,
    severity: Severity,
    now: float,
    repeat: bool = False,
) -> list[Routed]:
    """Who to notify at ``level`` about an alert of ``severity``: each person once, in the order of the audiences.

    A recipient whose preferences exclude this severity is left out; the resident's bracelet is told reminders
    only (alarms are for the people who come); a repeat pages only the audiences that are paged (not the family).
    Someone in two audiences is paged if either pages them.
    """
    chosen: dict[str, Routed] = {}
    for audience in policy.level(level).audiences:
        if repeat and not audience.paged:
            continue
        if audience.kind is AudienceKind.RESIDENT and severity.is_alarm:
            continue
        for recipient in audience_members(directory, audience, resident_id=resident_id, home_id=home_id, now=now):
            if not wants(recipient, severity):
                continue
            known = chosen.get(recipient.recipient_id)
            if known is None:
                chosen[recipient.recipient_id] = Routed(recipient, audience.paged)
            elif audience.paged and not known.paged:
                chosen[recipient.recipient_id] = Routed(known.recipient, True)
    return list(chosen.values())


def recipients_at(
    policy: EscalationPolicy,
    directory: RecipientDirectory,
    level: int,
    *,
    resident_id: str,
    home_id: str,
    severity: Severity,
    now: float,
    repeat: bool = False,
) -> list[Recipient]:
    """The recipients :func:`route` picks, without the paged / informed distinction."""
    routed = route(
        policy, directory, level, resident_id=resident_id, home_id=home_id, severity=severity, now=now, repeat=repeat
    )
    return [r.recipient for r in routed]
