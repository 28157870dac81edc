"""The rule file: validated, frozen models of `alerts/rules.toml` (or an operator's own), and its loader.

A rule set is data: the engine (`alerts.rules`) has no clinical number of its own. The file holds

- ``[defaults]``: how conditions repeat, clear and go stale; ``[quality]``: the signal-quality gate for raw bracelet
  readings; ``[night]``: the night window in each home's local time;
- ``[thresholds.<rule id>]``: a level with a duration and hysteresis on one *measure* (a vital sign, the heart
  rate's rise, its deviation from the person's baseline, or the partial NEWS2), raising a *kind* of condition at a
  severity; several rules (tiers) may raise the same kind, the worst one holding says how bad it is;
- ``[news2]``, ``[rate]``, ``[baseline]``: how those derived measures are computed;
- ``[events.<kind>]``: what the edge's and bracelet's events become; ``[technical.*]``: device offline, battery
  low, not worn, no data, vitals missing; ``[medication]``: reminders at the times ``[residents.*]`` list;
- ``[conditions.<condition>]`` and ``[residents.<code>]``: per-resident limits, disabled rules, SpO2 scale, night
  window and medication times.

Limits (``hr_max_bpm`` ...) are per resident: a rule tied to a limit (``limit``) is written for the population
value ``limit_default``, and for a resident whose limit differs both its levels move by the difference.
A resident's limit comes from, lowest to highest precedence: the rule file's conditions, the registry's health
profile, the rule file's ``[residents.<code>]``.

Every problem is reported at once, each with the file, the key path and the reason (:class:`RulesError`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alerts.models import Severity
from careloop.registry.models import ResidentStatus
from careloop.topics import ID_PATTERN

# ---------------------------------------------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------------------------------------------

#: What a threshold rule can watch. Vital signs come from readings (raw ones after the quality gate); the others
#: are derived by the engine: the heart rate's rise over ``[rate].window_s``, its z-score against the person's
#: own baseline for the hour, and the partial NEWS2 (total, and the most points any one parameter scores).
Measure = Literal[
    "hr_bpm",
    "spo2_pct",
    "skin_temp_c",
    "bp_systolic_mmhg",
    "bp_diastolic_mmhg",
    "hr_rise_bpm",
    "hr_baseline_z",
    "news2_total",
    "news2_max_parameter",
]
MEASURES: tuple[str, ...] = get_args(Measure)

#: The per-resident limits (ResidentProfile's fields) and the measure each one moves.
LimitName = Literal[
    "hr_min_bpm",
    "hr_max_bpm",
    "spo2_min_pct",
    "skin_temp_min_c",
    "skin_temp_max_c",
    "bp_systolic_min_mmhg",
    "bp_systolic_max_mmhg",
    "bp_diastolic_min_mmhg",
    "bp_diastolic_max_mmhg",
]
LIMIT_NAMES: tuple[str, ...] = get_args(LimitName)
LIMIT_MEASURE: Mapping[str, str] = {
    "hr_min_bpm": "hr_bpm",
    "hr_max_bpm": "hr_bpm",
    "spo2_min_pct": "spo2_pct",
    "skin_temp_min_c": "skin_temp_c",
    "skin_temp_max_c": "skin_temp_c",
    "bp_systolic_min_mmhg": "bp_systolic_mmhg",
    "bp_systolic_max_mmhg": "bp_systolic_mmhg",
    "bp_diastolic_min_mmhg": "bp_diastolic_mmhg",
    "bp_diastolic_max_mmhg": "bp_diastolic_mmhg",
}

#: Conditions a rule file may give overrides for, as the registry's health records name them once normalised
#: (lower case, words joined by "_": see alerts.directory.condition_key). A misspelt condition in a rule file
#: would silently never match anyone, so an unknown one is an error; extend this list to add one.
CONDITIONS: frozenset[str] = frozenset(
    {
        "atrial_fibrillation",
        "heart_failure",
        "coronary_artery_disease",
        "pacemaker",
        "hypertension",
        "hypotension",
        "copd",
        "asthma",
        "obesity_hypoventilation",
        "neuromuscular_disease",
        "type_1_diabetes",
        "type_2_diabetes",
        "chronic_kidney_disease",
        "dementia",
        "parkinsons_disease",
        "stroke",
        "epilepsy",
        "osteoarthritis",
        "osteoporosis",
        "hypothyroidism",
        "hyperthyroidism",
        "beta_blocker",
    }
)

#: Event kinds (the wire contract's) the rule file configures; "ok" and "presence" have fixed meanings.
EVENT_KINDS: tuple[str, ...] = ("fall", "sos", "inactivity", "bed_exit", "night_wandering", "geofence_exit")
#: Condition kinds the technical rules raise.
TECHNICAL_KINDS: tuple[str, ...] = ("device_offline", "battery_low", "not_worn", "no_data", "vitals_missing")
#: The kind medication reminders raise.
MEDICATION_KIND = "medication"

Id = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
ResidentCode = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=160)]
Seconds = Annotated[float, Field(ge=0.0, le=7 * 86_400.0)]
PositiveSeconds = Annotated[float, Field(gt=0.0, le=7 * 86_400.0)]


def clock_minutes(text: str) -> int:
    """Minutes after midnight of a "HH:MM" local time; raises ValueError for anything else."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    hours, minutes = int(parts[0]), int(parts[1])
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return hours * 60 + minutes


def _clock(text: str) -> str:
    clock_minutes(text)
    return text


ClockTime = Annotated[str, StringConstraints(max_length=5), AfterValidator(_clock)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------------


class NightWindow(_Model):
    """A daily window in the home's local time; it may wrap midnight (22:00-06:00)."""

    start: ClockTime = "22:00"
    end: ClockTime = "06:00"

    @model_validator(mode="after")
    def _not_empty(self) -> NightWindow:
        if self.start == self.end:
            raise ValueError("start and end are the same time: the window would be empty")
        return self

    @property
    def start_minute(self) -> int:
        """Minutes after midnight the window opens."""
        return clock_minutes(self.start)

    @property
    def end_minute(self) -> int:
        """Minutes after midnight the window closes."""
        return clock_minutes(self.end)

    def contains(self, minute_of_day: float) -> bool:
        """Whether a local time (minutes after midnight) lies in the window."""
        start, end = self.start_minute, self.end_minute
        if start < end:
            return start <= minute_of_day < end
        return minute_of_day >= start or minute_of_day < end


class Defaults(_Model):
    """How every condition rule behaves unless the rule says otherwise."""

    repeat_s: PositiveSeconds = Field(60.0, description="at most one repeat RAISE (latest value) per this long")
    clear_for_s: Seconds = Field(60.0, description="a condition clears after this long back at its clear level")
    max_gap_s: PositiveSeconds = Field(
        90.0, description="while a duration counts, readings at the raise level must come at least this often"
    )
    stale_after_s: PositiveSeconds = Field(
        600.0, description="a condition with no reading of its measure for this long is no longer observed: clear"
    )


class QualityGate(_Model):
    """Raw bracelet readings whose heart rate, SpO2 and (PPG-derived) pressure are not trusted."""

    ppg_min_quality: float = Field(0.6, ge=0.0, le=1.0)
    motion_max_g: float = Field(0.5, ge=0.0, le=16.0)


class Limits(_Model):
    """Per-resident vital-sign limits; None leaves the rules' population values (``limit_default``)."""

    hr_min_bpm: float | None = Field(None, ge=20.0, le=250.0)
    hr_max_bpm: float | None = Field(None, ge=20.0, le=250.0)
    spo2_min_pct: float | None = Field(None, ge=50.0, le=100.0)
    skin_temp_min_c: float | None = Field(None, ge=15.0, le=45.0)
    skin_temp_max_c: float | None = Field(None, ge=15.0, le=45.0)
    bp_systolic_min_mmhg: float | None = Field(None, ge=40.0, le=300.0)
    bp_systolic_max_mmhg: float | None = Field(None, ge=40.0, le=300.0)
    bp_diastolic_min_mmhg: float | None = Field(None, ge=20.0, le=200.0)
    bp_diastolic_max_mmhg: float | None = Field(None, ge=20.0, le=200.0)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        for low, high in (
            ("hr_min_bpm", "hr_max_bpm"),
            ("skin_temp_min_c", "skin_temp_max_c"),
            ("bp_systolic_min_mmhg", "bp_systolic_max_mmhg"),
            ("bp_diastolic_min_mmhg", "bp_diastolic_max_mmhg"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"{low} {lo:g} is not below {high} {hi:g}")
        return self

    def set_values(self) -> dict[str, float]:
        """The limits given (name -> value)."""
        return {name: value for name, value in self.model_dump().items() if value is not None}


class ThresholdRule(_Model):
    """Raise `kind` when `measure` reaches `raise_at` and stays there `for_s`; clear back at `clear_at`.

    Comparisons include the level: a "high" rule raises at ``value >= raise_at`` and clears at
    ``value <= clear_at``; a "low" rule raises at ``value <= raise_at`` and clears at ``value >= clear_at``.
    Between the two levels (the hysteresis band) nothing changes: a raised condition stays raised, and a duration
    being counted keeps counting as long as readings at the raise level keep coming (``[defaults].max_gap_s``).
    """

    kind: Id
    measure: Measure
    direction: Literal["high", "low"]
    raise_at: float
    clear_at: float
    for_s: Seconds = 0.0
    clear_for_s: Seconds | None = None  # None: [defaults].clear_for_s
    severity: Severity
    reason: Reason
    limit: LimitName | None = None
    limit_default: float | None = None
    spo2_scale: Literal[1, 2] | None = None  # only for residents on this NEWS2 SpO2 scale
    when: Literal["always", "night", "day"] = "always"  # night: in the home's [night] window, local time
    repeat_s: PositiveSeconds | None = None  # None: [defaults].repeat_s
    promote_after_s: PositiveSeconds | None = None
    promote_to: Severity | None = None
    inhibited_by: tuple[Id, ...] = ()  # kinds that, raised as alarms for the resident, keep this rule from raising

    @field_validator("clear_at")
    @classmethod
    def _hysteresis(cls, clear_at: float, info: ValidationInfo) -> float:
        direction, raise_at = info.data.get("direction"), info.data.get("raise_at")
        if raise_at is None:
            return clear_at
        if direction == "high" and clear_at >= raise_at:
            raise ValueError(
                f"raise_at {raise_at:g} and clear_at {clear_at:g} are inverted: a 'high' rule must clear below the "
                "level it raises at"
            )
        if direction == "low" and clear_at <= raise_at:
            raise ValueError(
                f"raise_at {raise_at:g} and clear_at {clear_at:g} are inverted: a 'low' rule must clear above the "
                "level it raises at"
            )
        return clear_at

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        if (self.limit is None) != (self.limit_default is None):
            raise ValueError("limit and limit_default go together: the limit, and the value the levels are written for")
        if self.limit is not None and LIMIT_MEASURE[self.limit] != self.measure:
            raise ValueError(f"limit {self.limit} moves {LIMIT_MEASURE[self.limit]}, not this rule's {self.measure}")
        _check_promotion(self.severity, self.promote_after_s, self.promote_to)
        return self


def _check_promotion(severity: Severity, after_s: float | None, to: Severity | None) -> None:
    if (after_s is None) != (to is None):
        raise ValueError("promote_after_s and promote_to go together")
    if to is not None and to.rank <= severity.rank:
        raise ValueError(f"promote_to {to.value} is not above severity {severity.value}")
    if to is not None and severity is not Severity.REMINDER:
        raise ValueError("only a reminder is promoted (an alarm escalates instead)")


class News2Settings(_Model):
    """The partial NEWS2 from the bracelet's parameters (see alerts.news2)."""

    max_age_s: PositiveSeconds = Field(300.0, description="a parameter not measured for this long is missing")
    use_bp: bool = True  # score a cuffless systolic pressure when the bracelet has one


class RateSettings(_Model):
    """The heart rate's rise: latest reading minus the lowest in the window (measure ``hr_rise_bpm``)."""

    window_s: PositiveSeconds = 600.0
    rest_motion_max_g: float | None = Field(
        0.1, ge=0.0, description="raw readings taken while moving more than this do not count (walking raises HR)"
    )


class BaselineSettings(_Model):
    """The person's own heart rate by local hour (measure ``hr_baseline_z``; see alerts.baseline)."""

    memory_days: float = Field(14.0, gt=0.0, le=365.0)
    min_days: int = Field(7, ge=1, le=365)
    min_sd_bpm: float = Field(3.0, gt=0.0, le=50.0)


class EventRule(_Model):
    """What one kind of detected event raises."""

    enabled: bool = True
    severity: Severity
    reason: Reason
    night_severity: Severity | None = None  # instead of `severity` when the event is in the home's night window
    cancel_window_s: Seconds = 0.0  # a raised alarm waits this long for "I'm OK" before paging
    high_after_s: PositiveSeconds | None = None  # inactivity: a duration at or beyond this is high
    high_rooms: tuple[Annotated[str, StringConstraints(max_length=64)], ...] = ()  # wandering: these rooms are high


class Events(_Model):
    """Events from the edge (falls, inactivity, bed exit, wandering, geofence) and the bracelet's buttons."""

    fall: EventRule = EventRule(severity=Severity.HIGH, reason="fall detected", cancel_window_s=30.0)
    sos: EventRule = EventRule(severity=Severity.HIGH, reason="SOS button pressed")
    inactivity: EventRule = EventRule(severity=Severity.MEDIUM, reason="no movement at home for a long time")
    bed_exit: EventRule = EventRule(severity=Severity.MEDIUM, reason="left bed at night and has not returned")
    night_wandering: EventRule = EventRule(severity=Severity.MEDIUM, reason="walking about at night")
    geofence_exit: EventRule = EventRule(severity=Severity.MEDIUM, reason="left the home zone")

    @model_validator(mode="after")
    def _sos_pages_at_once(self) -> Events:
        sos = self.sos
        if not sos.enabled or sos.severity is not Severity.HIGH or sos.cancel_window_s or sos.night_severity:
            raise ValueError("sos is always enabled, high, with no cancel window: an SOS pages at once")
        return self


class TechnicalRule(_Model):
    """A device condition: offline, not worn, battery low, no data, vitals missing."""

    enabled: bool = True
    severity: Severity
    reason: Reason
    after_s: PositiveSeconds | None = None  # no data / vitals missing: for this long
    raise_at_pct: float | None = Field(None, ge=0.0, le=100.0)  # battery low at or below
    clear_at_pct: float | None = Field(None, ge=0.0, le=100.0)  # ... until charged to at least
    promote_after_s: PositiveSeconds | None = None
    promote_to: Severity | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TechnicalRule:
        _check_promotion(self.severity, self.promote_after_s, self.promote_to)
        if self.raise_at_pct is not None and self.clear_at_pct is not None and self.clear_at_pct <= self.raise_at_pct:
            raise ValueError(
                f"raise_at_pct {self.raise_at_pct:g} and clear_at_pct {self.clear_at_pct:g} are inverted: a battery "
                "must be charged above the level it raises at to clear"
            )
        return self


class Technical(_Model):
    """Device health. An offline device raises neither "no data" nor "vitals missing"; one not worn neither."""

    device_offline: TechnicalRule = TechnicalRule(severity=Severity.LOW, reason="device offline")
    battery_low: TechnicalRule = TechnicalRule(
        severity=Severity.REMINDER, reason="battery low: charge your bracelet", raise_at_pct=20.0, clear_at_pct=30.0
    )
    not_worn: TechnicalRule = TechnicalRule(severity=Severity.REMINDER, reason="wear your bracelet")
    no_data: TechnicalRule = TechnicalRule(severity=Severity.LOW, reason="no data from the bracelet", after_s=900.0)
    vitals_missing: TechnicalRule = TechnicalRule(
        severity=Severity.REMINDER, reason="the bracelet cannot read your pulse: adjust it", after_s=1800.0
    )

    @model_validator(mode="after")
    def _needed_settings(self) -> Technical:
        missing = [name for name in ("no_data", "vitals_missing") if getattr(self, name).after_s is None]
        if self.battery_low.raise_at_pct is None or self.battery_low.clear_at_pct is None:
            missing.append("battery_low (raise_at_pct and clear_at_pct)")
        if missing:
            raise ValueError(f"needs its after_s / levels: {', '.join(missing)}")
        return self


class MedicationSettings(_Model):
    """Reminders at the medication times a resident's entry lists; "I'm OK" on the bracelet answers one."""

    severity: Severity = Severity.REMINDER
    reason: Reason = "time to take your medication"
    promote_after_s: PositiveSeconds | None = 3600.0
    promote_to: Severity | None = Severity.LOW

    @model_validator(mode="after")
    def _consistent(self) -> MedicationSettings:
        _check_promotion(self.severity, self.promote_after_s, self.promote_to)
        return self


class ConditionOverride(_Model):
    """Overrides for residents whose health record lists the condition (or one of its aliases)."""

    aliases: tuple[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")], ...] = ()
    when_spo2_scale: Literal[1, 2] | None = None  # only for residents on this SpO2 scale
    limits: Limits = Limits()
    disable: tuple[Id, ...] = ()  # threshold rule ids that do not apply


class ResidentOverride(_Model):
    """Overrides for one resident (by registry code); the most specific, applied last."""

    limits: Limits = Limits()
    disable: tuple[Id, ...] = ()
    spo2_scale: Literal[1, 2] | None = None
    night: NightWindow | None = None
    medication_times: tuple[ClockTime, ...] = Field((), max_length=12)


class RuleSet(_Model):
    """A whole rule file."""

    version: Literal[1] = 1
    defaults: Defaults = Defaults()
    quality: QualityGate = QualityGate()
    night: NightWindow = NightWindow()
    snooze_statuses: tuple[ResidentStatus, ...] = (
        ResidentStatus.AWAY,
        ResidentStatus.IN_HOSPITAL,
        ResidentStatus.INACTIVE,
    )
    thresholds: dict[Id, ThresholdRule] = Field(default_factory=dict)
    news2: News2Settings = News2Settings()
    rate: RateSettings = RateSettings()
    baseline: BaselineSettings = BaselineSettings()
    events: Events = Events()
    technical: Technical = Technical()
    medication: MedicationSettings = MedicationSettings()
    conditions: dict[Annotated[str, StringConstraints(max_length=64)], ConditionOverride] = Field(default_factory=dict)
    residents: dict[ResidentCode, ResidentOverride] = Field(default_factory=dict)

    @field_validator("snooze_statuses")
    @classmethod
    def _never_active(cls, statuses: tuple[ResidentStatus, ...]) -> tuple[ResidentStatus, ...]:
        if ResidentStatus.ACTIVE in statuses:
            raise ValueError("an active resident is never snoozed")
        return statuses

    def kinds(self) -> frozenset[str]:
        """Every condition kind this rule set can raise."""
        return frozenset({rule.kind for rule in self.thresholds.values()} | set(EVENT_KINDS) | set(TECHNICAL_KINDS)) | {
            MEDICATION_KIND
        }


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------


class RulesError(ValueError):
    """A rule file that cannot be used; ``problems`` lists each one as "key.path: reason"."""

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {source}: {problem}" for problem in self.problems)
        count = len(self.problems)
        super().__init__(f"rule file {source} has {count} problem{'s' if count != 1 else ''}:\n{lines}")


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _describe(error: Any) -> str:
    kind, loc, msg = error["type"], _path(tuple(error["loc"])), error["msg"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: missing (required)"
    if msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {error.get('input')!r})"


def _cross_check(rules: RuleSet) -> list[str]:
    """What single sections cannot see: references between them."""
    problems: list[str] = []
    rule_ids = set(rules.thresholds)
    kinds = rules.kinds()
    for rule_id, rule in rules.thresholds.items():
        for kind in rule.inhibited_by:
            if kind not in kinds:
                problems.append(f"thresholds.{rule_id}.inhibited_by: unknown kind {kind!r}")
            elif kind == rule.kind:
                problems.append(f"thresholds.{rule_id}.inhibited_by: a kind cannot inhibit itself ({kind!r})")
    names: dict[str, str] = {}
    for name, override in rules.conditions.items():
        if name not in CONDITIONS:
            problems.append(
                f"conditions.{name}: unknown condition; known conditions are {', '.join(sorted(CONDITIONS))}"
            )
        for alias in (name, *override.aliases):
            if alias in names and names[alias] != name:
                problems.append(f"conditions.{name}.aliases: {alias!r} already names conditions.{names[alias]}")
            names[alias] = name
        problems += _unknown_rules(f"conditions.{name}.disable", override.disable, rule_ids)
    for code, resident in rules.residents.items():
        problems += _unknown_rules(f"residents.{code}.disable", resident.disable, rule_ids)
    return problems


def _unknown_rules(path: str, disabled: Iterable[str], rule_ids: set[str]) -> list[str]:
    return [f"{path}: unknown rule {rule_id!r}" for rule_id in disabled if rule_id not in rule_ids]


def parse_rules(text: str, source: str = "<string>") -> RuleSet:
    """Parse and validate a TOML rule file's text; raises RulesError naming every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(source, [f"not valid TOML: {exc}"]) from None
    try:
        rules = RuleSet.model_validate(data)
    except ValidationError as exc:
        raise RulesError(source, [_describe(error) for error in exc.errors()]) from None
    problems = _cross_check(rules)
    if problems:
        raise RulesError(source, problems)
    return rules


def packaged_rules_text() -> str:
    """The text of the packaged default rule set (alerts/rules.toml)."""
    return resources.files("alerts").joinpath("rules.toml").read_text(encoding="utf-8")


def load_rules(path: Path | None = None) -> RuleSet:
    """Load a TOML rule file (None: the packaged alerts/rules.toml); raises RulesError naming every problem."""
    if path is None:
        return parse_rules(packaged_rules_text(), "alerts/rules.toml (packaged)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), [f"cannot be read: {exc}"]) from None
    return parse_rules(text, str(path))
