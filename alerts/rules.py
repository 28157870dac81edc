"""The rule engine: observations in, signals out; a pure core with the clock passed in.

`RuleEngine.observe(obs, profile, now)` takes one vitals reading, event or device report of one resident and
returns the signals it causes; `RuleEngine.tick(now)` returns those that time alone causes (no data, stale
conditions, medication reminders). Nothing here reads a clock, sleeps or does I/O.

How a vitals condition behaves (each `[thresholds.*]` rule, see alerts/ruleset.py):

- raw SIM-bracelet readings pass a quality gate first: heart rate, SpO2 and blood pressure taken with a poor PPG
  signal or a moving arm are dropped (skin temperature is kept); edge summaries were gated by the edge;
- a rule raises once its measure has been at the raise level for ``for_s`` (readings in the hysteresis band keep
  the count going, readings at the raise level must keep coming at least every ``max_gap_s``), and clears once it
  has been back at the clear level for ``clear_for_s``;
- rules (tiers) of the same *kind* form one condition per resident and kind: one RAISE at onset, another at once
  when a worse tier joins, then at most one per ``repeat_s`` with the latest value, and one CLEAR when the last
  tier has cleared. Durations use the readings' own timestamps (a batch delivered late is judged as it happened);
- a measure not read for ``stale_after_s`` leaves its conditions unobserved: they clear (tick);
- a rule with ``inhibited_by`` does not raise while one of those kinds is raised as an alarm.

Identities: an event's signal carries its ``event_id``; a condition's carries ``<rule id>:<resident>:<onset>``
(repeats and the clear add their own reading time), so a redelivered message yields the same ``source_id``.

Memory is bounded per resident: a fixed set of trackers per rule, a rise window of at most `RISE_MAX_POINTS`
readings, 24 baseline buckets, at most `SEEN_EVENTS` remembered event ids, one record per device.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alerts.baseline import HourlyBaseline
from alerts.models import (
    DeviceObservation,
    EventObservation,
    Observation,
    ResidentProfile,
    Severity,
    Signal,
    SignalAction,
    VitalsObservation,
)
from alerts.news2 import LOWER_BOUND_NOTE, PARAMETERS, score_pulse, score_spo2, score_systolic
from alerts.ruleset import (
    EVENT_KINDS,
    LIMIT_NAMES,
    MEASURES,
    MEDICATION_KIND,
    Defaults,
    EventRule,
    NightWindow,
    RuleSet,
    TechnicalRule,
    ThresholdRule,
    clock_minutes,
)

# measure indexes (the order of alerts.ruleset.MEASURES, which is also the order a reading feeds them in: vital
# signs first, so the rules that the derived measures' rules name in `inhibited_by` have had their say)
HR, SPO2, SKIN, SYS, DIA, RISE, HRZ, N2_TOTAL, N2_MAX = range(9)
assert MEASURES[HR] == "hr_bpm"
assert MEASURES[N2_MAX] == "news2_max_parameter"
_UNITS = ("bpm", "%", "°C", "mmHg", "mmHg", "bpm", "sd", "points", "points")

#: The most readings the heart-rate rise window keeps (the running minimum holds far fewer in practice).
RISE_MAX_POINTS = 1024
#: Event ids remembered per resident, so a redelivered event is not raised again.
SEEN_EVENTS = 64
#: A resident's timers are looked at least this often by tick() (new devices, changed profiles).
MAX_SLEEP_S = 30.0

_NIGHT_ALWAYS, _NIGHT_ONLY, _DAY_ONLY = 0, 1, 2
_WHEN = {"always": _NIGHT_ALWAYS, "night": _NIGHT_ONLY, "day": _DAY_ONLY}
_NEWS2_PARAMS = ("pulse", "spo2", "systolic_bp")


# ---------------------------------------------------------------------------------------------------------------
# compiled rules
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spec:
    """One rule as it applies to one resident (levels moved by their limits), or a technical rule."""

    rule_id: str
    kind: str
    measure: int  # -1 for technical rules
    high: bool
    raise_at: float
    clear_at: float
    for_s: float
    clear_for_s: float
    severity: Severity
    rank: int
    reason: str
    repeat_s: float
    promote_after_s: float | None
    promote_to: Severity | None
    inhibited_by: tuple[str, ...] = ()
    when: int = _NIGHT_ALWAYS
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the rules are for residents with one combination of limits, scale, disabled rules and windows."""

    specs: tuple[tuple[_Spec, ...], ...]  # per measure
    quiet_low: tuple[float, ...]  # per measure: values strictly between these raise nothing
    quiet_high: tuple[float, ...]
    windowed: tuple[bool, ...]  # per measure: some rule is night- or day-only
    spo2_scale: int
    night_start: int  # minutes after local midnight
    night_end: int
    limits: Mapping[str, float]
    medication_minutes: tuple[int, ...]


def _tech_spec(kind: str, rule: TechnicalRule, unit: str | None) -> _Spec:
    return _Spec(
        rule_id=kind,
        kind=kind,
        measure=-1,
        high=True,
        raise_at=0.0,
        clear_at=0.0,
        for_s=0.0,
        clear_for_s=0.0,
        severity=rule.severity,
        rank=rule.severity.rank,
        reason=rule.reason,
        repeat_s=math.inf,  # a device condition says nothing new until it changes
        promote_after_s=rule.promote_after_s,
        promote_to=rule.promote_to,
        unit=unit,
    )


# ---------------------------------------------------------------------------------------------------------------
# per-resident state
# ---------------------------------------------------------------------------------------------------------------


class _Track:
    """The state of one rule for one resident (or, for technical rules, of one device's condition)."""

    __slots__ = ("active", "clear_since", "last_beyond", "last_ts", "onset", "pending", "spec", "value")

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.pending: float | None = None  # when the measure first reached the raise level (duration counting)
        self.last_beyond = -math.inf  # last reading at the raise level
        self.active = False
        self.onset = 0.0
        self.clear_since: float | None = None
        self.value: float | None = None
        self.last_ts = -math.inf


class _Kind:
    """One condition kind of one resident: the rules (or devices) holding it, and what was last said."""

    __slots__ = (
        "contribs",
        "dirty",
        "episode",
        "episode_rule",
        "last_emit",
        "name",
        "onset",
        "raised",
        "rank",
        "severity",
        "value",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.contribs: dict[str, _Track] = {}
        self.dirty = False
        self.raised = False
        self.episode = ""
        self.episode_rule = ""
        self.onset = 0.0
        self.last_emit = -math.inf
        self.rank = -1
        self.severity = Severity.REMINDER
        self.value: float | None = None

    def alarm_raised(self) -> bool:
        """Whether an alarm-severity rule holds this kind now."""
        return any(t.spec.rank > 0 for t in self.contribs.values())


class _Device:
    __slots__ = (
        "battery_pct",
        "device_id",
        "last_seen",
        "offline_reason",
        "online",
        "vitals_since",
        "wearable",
        "worn",
    )

    def __init__(self, device_id: str, t: float) -> None:
        self.device_id = device_id
        self.last_seen = t
        self.online: bool | None = None
        self.worn: bool | None = None
        self.wearable = False
        self.battery_pct: float | None = None
        self.offline_reason: str | None = None
        self.vitals_since = t  # last usable HR / SpO2, or when the clock for "vitals missing" (re)started


@dataclass(slots=True)
class _Resident:
    rid: str
    home_id: str
    profile: ResidentProfile
    plan: _Plan
    tz: ZoneInfo
    snoozed: bool
    tracks: list[list[_Track]]
    engaged: list[int] = field(default_factory=lambda: [0] * len(MEASURES))
    last_ts: list[float] = field(default_factory=lambda: [-math.inf] * len(MEASURES))
    kinds: dict[str, _Kind] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    # partial NEWS2: latest points and time of each parameter (pulse, spo2, systolic_bp)
    n2_points: list[int] = field(default_factory=lambda: [0, 0, 0])
    n2_ts: list[float] = field(default_factory=lambda: [-math.inf] * 3)
    rise: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RISE_MAX_POINTS))
    baseline: HourlyBaseline | None = None
    last_z: tuple[float, float, float, float] | None = None  # (heart rate, z, mean, sd) of the last comparison
    seen: dict[str, None] = field(default_factory=dict)
    offset_block: int = -1
    offset_s: float = 0.0
    medication_next: float | None = None
    medication_open: str | None = None
    scheduled_seq: int = -1

    def local_seconds(self, t: float) -> float:
        """Seconds since the local epoch (UTC offset of the home's zone at `t` added)."""
        block = int(t // 900.0)  # zone offsets change only on quarter hours of UTC
        if block != self.offset_block:
            self.offset_block = block
            offset = datetime.fromtimestamp(t, UTC).astimezone(self.tz).utcoffset()
            self.offset_s = offset.total_seconds() if offset is not None else 0.0
        return t + self.offset_s

    def is_night(self, t: float) -> bool:
        """Whether `t` falls in the resident's night window, home time."""
        minute = (self.local_seconds(t) % 86_400.0) / 60.0
        start, end = self.plan.night_start, self.plan.night_end
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end

    def kind(self, name: str) -> _Kind:
        state = self.kinds.get(name)
        if state is None:
            state = self.kinds[name] = _Kind(name)
        return state


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # the registry validates zones; a bad one must not stop the rules


def _condition_key(text: str) -> str:
    out = []
    for ch in text.lower():
        out.append(ch if ch.isalnum() else "_")
    return "_".join(part for part in "".join(out).split("_") if part)


# ---------------------------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------------------------


class RuleEngine:
    """Turns observations into signals by a rule set; one instance holds the state of every resident it has seen.

    ``profile_of`` (optional) lets tick() refresh a resident's profile between observations, so a resident who
    went away, and whose bracelet fell silent, is snoozed without waiting for a message.
    """

    def __init__(self, rules: RuleSet, *, profile_of: Callable[[str], ResidentProfile | None] | None = None) -> None:
        self.rules = rules
        self.profile_of = profile_of
        self._residents: dict[str, _Resident] = {}
        self._plans: dict[tuple[object, ...], _Plan] = {}
        self._heap: list[tuple[float, int, _Resident]] = []
        self._seq = itertools.count()
        d = rules.defaults
        self._max_gap = d.max_gap_s
        self._stale = d.stale_after_s
        self._ppg_min = rules.quality.ppg_min_quality
        self._motion_max = rules.quality.motion_max_g
        self._rest_motion = rules.rate.rest_motion_max_g
        self._rise_window = rules.rate.window_s
        self._n2_age = rules.news2.max_age_s
        self._n2_bp = rules.news2.use_bp
        self._snooze = frozenset(s.value for s in rules.snooze_statuses)
        self._aliases: dict[str, str] = {}
        for name, override in rules.conditions.items():
            for alias in (name, *override.aliases):
                self._aliases[alias] = name
        t = rules.technical
        self._tech = {
            "device_offline": _tech_spec("device_offline", t.device_offline, None),
            "battery_low": _tech_spec("battery_low", t.battery_low, "%"),
            "not_worn": _tech_spec("not_worn", t.not_worn, None),
            "no_data": _tech_spec("no_data", t.no_data, "s"),
            "vitals_missing": _tech_spec("vitals_missing", t.vitals_missing, "s"),
        }
        self._tech_on = {name: getattr(t, name).enabled for name in self._tech}
        self.rejected_readings = 0  # raw readings whose PPG values failed the quality gate

    # -- public ---------------------------------------------------------------------------------------------
    def observe(self, obs: Observation, profile: ResidentProfile, now: float) -> list[Signal]:
        """The signals one observation causes, for the resident `profile` describes, received at `now`."""
        out: list[Signal] = []
        res = self._residents.get(obs.resident_id)
        t = obs.ts if obs.ts <= now else now  # a device clock ahead of ours is not allowed to run time forward
        if res is None:
            res = self._add_resident(obs.resident_id, profile, now)
        elif res.profile is not profile:
            if res.profile == profile:
                res.profile = profile  # the same values: remember this object for the cheap check next time
            else:
                self._set_profile(res, profile, t, out)
        if isinstance(obs, VitalsObservation):
            self._vitals(res, obs, t, out)
        elif isinstance(obs, EventObservation):
            self._event(res, obs, t, out)
        else:
            self._device(res, obs, t, out)
        return out

    def tick(self, now: float) -> list[Signal]:
        """The signals time alone causes by `now`: no data, vitals missing, stale conditions, medication."""
        out: list[Signal] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, res = heapq.heappop(heap)
            if seq != res.scheduled_seq:
                continue  # superseded by a later schedule
            self._timers(res, now, out)
            self._schedule(res, self._next_deadline(res, now), now)
        return out

    def update_profile(self, profile: ResidentProfile, now: float) -> list[Signal]:
        """Tell the engine a resident's profile changed (limits, status); returns the signals that causes."""
        out: list[Signal] = []
        res = self._residents.get(profile.resident_id)
        if res is None:
            self._add_resident(profile.resident_id, profile, now)
        elif res.profile != profile:
            self._set_profile(res, profile, now, out)
        return out

    def limits_for(self, profile: ResidentProfile) -> Mapping[str, float]:
        """The limits the rules apply to a resident (after conditions, profile and rule-file overrides)."""
        return self._plan(profile).limits

    # -- residents and plans --------------------------------------------------------------------------------
    def _add_resident(self, rid: str, profile: ResidentProfile, now: float) -> _Resident:
        plan = self._plan(profile)
        res = _Resident(
            rid=rid,
            home_id=profile.home_id,
            profile=profile,
            plan=plan,
            tz=_zone(profile.timezone),
            snoozed=profile.status in self._snooze,
            tracks=[[_Track(s) for s in specs] for specs in plan.specs],
        )
        self._residents[rid] = res
        if plan.medication_minutes:
            res.medication_next = self._next_medication(res, now)
        self._schedule(res, now + MAX_SLEEP_S, now)
        return res

    def _set_profile(self, res: _Resident, profile: ResidentProfile, t: float, out: list[Signal]) -> None:
        was_snoozed = res.snoozed
        res.profile = profile
        res.home_id = profile.home_id
        res.snoozed = profile.status in self._snooze
        if res.tz.key != profile.timezone:
            res.tz = _zone(profile.timezone)
            res.offset_block = -1
        plan = self._plan(profile)
        if plan is not res.plan:
            self._replan(res, plan, t, out)
        if res.snoozed and not was_snoozed:
            self._snooze_resident(res, t, out)
        elif was_snoozed and not res.snoozed:
            dirty: list[_Kind] = []
            for dev in res.devices.values():  # back home: the silence while away is not "no data" ...
                dev.last_seen = max(dev.last_seen, t)
                dev.vitals_since = max(dev.vitals_since, t)
                self._device_conditions(res, dev, t, dirty)  # ... but an offline or unworn bracelet is news
            self._settle_dirty(res, dirty, t, out)
            if res.plan.medication_minutes:
                res.medication_next = self._next_medication(res, t)

    def _replan(self, res: _Resident, plan: _Plan, t: float, out: list[Signal]) -> None:
        """New limits or rules for a resident: rules kept keep their state; rules gone let go of their kinds."""
        old = {track.spec.rule_id: track for tracks in res.tracks for track in tracks}
        res.plan = plan
        res.tracks = [[_Track(s) for s in specs] for specs in plan.specs]
        res.engaged = [0] * len(MEASURES)
        for m, tracks in enumerate(res.tracks):
            for track in tracks:
                before = old.pop(track.spec.rule_id, None)
                if before is None:
                    continue
                track.pending, track.last_beyond, track.active = before.pending, before.last_beyond, before.active
                track.onset, track.clear_since, track.value = before.onset, before.clear_since, before.value
                track.last_ts = before.last_ts
                if track.active or track.pending is not None:
                    res.engaged[m] += 1
                if track.active:
                    state = res.kind(track.spec.kind)
                    state.contribs[track.spec.rule_id] = track
        dirty: list[_Kind] = []
        for gone in old.values():
            if gone.active:
                state = res.kind(gone.spec.kind)
                state.contribs.pop(gone.spec.rule_id, None)
                if not state.dirty:
                    state.dirty = True
                    dirty.append(state)
        res.medication_next = self._next_medication(res, t) if plan.medication_minutes else None
        self._settle_dirty(res, dirty, t, out, "rules changed for this resident")

    def _snooze_resident(self, res: _Resident, t: float, out: list[Signal]) -> None:
        """Away or in hospital: close what was said (a reminder must not become an alarm) and start afresh."""
        reason = f"monitoring snoozed: resident {res.profile.status}"
        for state in res.kinds.values():
            if state.raised:
                state.contribs.clear()
                self._settle(res, state, t, out, reason)
        res.kinds.clear()
        res.tracks = [[_Track(s) for s in specs] for specs in res.plan.specs]
        res.engaged = [0] * len(MEASURES)
        res.rise.clear()
        if res.medication_open is not None:
            out.append(self._medication_clear(res, f"{res.medication_open}/snoozed", t, reason))
        res.medication_next = None

    def _plan(self, profile: ResidentProfile) -> _Plan:
        rules = self.rules
        resident = rules.residents.get(profile.resident_id)
        scale = resident.spo2_scale if resident is not None and resident.spo2_scale is not None else profile.spo2_scale
        limits: dict[str, float] = {}
        disabled: set[str] = set()
        for condition in profile.conditions:
            name = self._aliases.get(_condition_key(condition))
            if name is None:
                continue
            override = rules.conditions[name]
            if override.when_spo2_scale is not None and override.when_spo2_scale != scale:
                continue
            limits.update(override.limits.set_values())
            disabled.update(override.disable)
        for name in LIMIT_NAMES:  # the health profile's own limits
            value = getattr(profile, name)
            if value is not None:
                limits[name] = float(value)
        night: NightWindow = rules.night
        medication: tuple[int, ...] = ()
        if resident is not None:
            limits.update(resident.limits.set_values())
            disabled.update(resident.disable)
            night = resident.night or night
            medication = tuple(sorted({clock_minutes(x) for x in resident.medication_times}))
        key = (tuple(sorted(limits.items())), scale, tuple(sorted(disabled)), night.start, night.end, medication)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._compile(limits, scale, disabled, night, medication)
        return plan

    def _compile(
        self,
        limits: Mapping[str, float],
        scale: int,
        disabled: set[str],
        night: NightWindow,
        medication: tuple[int, ...],
    ) -> _Plan:
        per_measure: list[list[_Spec]] = [[] for _ in MEASURES]
        defaults = self.rules.defaults
        for rule_id, rule in self.rules.thresholds.items():
            if rule_id in disabled or (rule.spo2_scale is not None and rule.spo2_scale != scale):
                continue
            per_measure[MEASURES.index(rule.measure)].append(self._spec(rule_id, rule, limits, defaults))
        quiet_low, quiet_high, windowed = [], [], []
        for specs in per_measure:
            quiet_low.append(max((s.raise_at for s in specs if not s.high), default=-math.inf))
            quiet_high.append(min((s.raise_at for s in specs if s.high), default=math.inf))
            windowed.append(any(s.when != _NIGHT_ALWAYS for s in specs))
        return _Plan(
            specs=tuple(tuple(specs) for specs in per_measure),
            quiet_low=tuple(quiet_low),
            quiet_high=tuple(quiet_high),
            windowed=tuple(windowed),
            spo2_scale=scale,
            night_start=night.start_minute,
            night_end=night.end_minute,
            limits=dict(limits),
            medication_minutes=medication,
        )

    @staticmethod
    def _spec(rule_id: str, rule: ThresholdRule, limits: Mapping[str, float], defaults: Defaults) -> _Spec:
        shift = 0.0
        if rule.limit is not None and rule.limit_default is not None and rule.limit in limits:
            shift = limits[rule.limit] - rule.limit_default
        measure = MEASURES.index(rule.measure)
        return _Spec(
            rule_id=rule_id,
            kind=rule.kind,
            measure=measure,
            high=rule.direction == "high",
            raise_at=rule.raise_at + shift,
            clear_at=rule.clear_at + shift,
            for_s=rule.for_s,
            clear_for_s=rule.clear_for_s if rule.clear_for_s is not None else defaults.clear_for_s,
            severity=rule.severity,
            rank=rule.severity.rank,
            reason=rule.reason,
            repeat_s=rule.repeat_s if rule.repeat_s is not None else defaults.repeat_s,
            promote_after_s=rule.promote_after_s,
            promote_to=rule.promote_to,
            inhibited_by=rule.inhibited_by,
            when=_WHEN[rule.when],
            unit=_UNITS[measure],
        )

    # -- vitals ---------------------------------------------------------------------------------------------
    def _vitals(self, res: _Resident, obs: VitalsObservation, t: float, out: list[Signal]) -> None:
        dev = res.devices.get(obs.device_id)
        if dev is None:
            dev = res.devices[obs.device_id] = _Device(obs.device_id, t)
        elif t > dev.last_seen:
            dev.last_seen = t
        dev.wearable = True
        if res.snoozed:
            dev.online = True
            return
        dirty: list[_Kind] = []
        if dev.online is not True:
            if dev.online is False:
                dev.vitals_since = max(dev.vitals_since, t)
            dev.online = True  # it speaks: it is online
            self._drop(res, "device_offline", obs.device_id, dirty)
        if "no_data" in res.kinds:
            self._drop(res, "no_data", obs.device_id, dirty)
        hr, spo2, sys, dia = obs.hr_bpm, obs.spo2_pct, obs.bp_systolic_mmhg, obs.bp_diastolic_mmhg
        motion = obs.motion_g
        if not obs.summary:
            quality = obs.ppg_quality
            if (quality is not None and quality < self._ppg_min) or (motion is not None and motion > self._motion_max):
                hr = spo2 = sys = dia = None  # PPG values of a bad reading are artefacts; skin temperature is not
                self.rejected_readings += 1
        if hr is not None or spo2 is not None:
            if t > dev.vitals_since:
                dev.vitals_since = t
            if "vitals_missing" in res.kinds:
                self._drop(res, "vitals_missing", obs.device_id, dirty)
        plan = res.plan
        specs = plan.specs
        if hr is not None:
            if specs[HR]:
                self._feed(res, HR, hr, t, dirty)
            if specs[RISE] and (
                obs.summary or motion is None or self._rest_motion is None or motion <= self._rest_motion
            ):
                self._rise(res, hr, t, dirty)
            if specs[HRZ]:
                self._baseline(res, hr, t, dirty)
        if spo2 is not None and specs[SPO2]:
            self._feed(res, SPO2, spo2, t, dirty)
        if obs.skin_temp_c is not None and specs[SKIN]:
            self._feed(res, SKIN, obs.skin_temp_c, t, dirty)
        if sys is not None and specs[SYS]:
            self._feed(res, SYS, sys, t, dirty)
        if dia is not None and specs[DIA]:
            self._feed(res, DIA, dia, t, dirty)
        if (specs[N2_TOTAL] or specs[N2_MAX]) and (hr is not None or spo2 is not None or sys is not None):
            self._news2(res, hr, spo2, sys, t, dirty)
        if dirty:
            self._settle_dirty(res, dirty, t, out)

    def _feed(self, res: _Resident, m: int, value: float, t: float, dirty: list[_Kind]) -> None:
        """One value of measure `m` at `t` through that measure's rules."""
        if t <= res.last_ts[m]:
            return  # a redelivered or out-of-order reading: its moment has been judged
        res.last_ts[m] = t
        plan = res.plan
        if res.engaged[m] == 0 and plan.quiet_low[m] < value < plan.quiet_high[m] and not plan.windowed[m]:
            return  # the usual case: nothing near a level and nothing counting
        window_open: bool | None = None
        for track in res.tracks[m]:
            spec = track.spec
            if spec.high:
                beyond = value >= spec.raise_at
                cleared = value <= spec.clear_at
            else:
                beyond = value <= spec.raise_at
                cleared = value >= spec.clear_at
            if spec.when:
                if window_open is None:
                    window_open = res.is_night(t)
                if window_open != (spec.when == _NIGHT_ONLY):
                    beyond, cleared = False, True
                    if track.active:
                        track.clear_since = -math.inf  # the rule's window closed: clear now
            track.last_ts = t
            if track.active:
                track.value = value
                if cleared:
                    if track.clear_since is None:
                        track.clear_since = t
                    if t - track.clear_since >= spec.clear_for_s:
                        self._deactivate(res, track, dirty)
                    continue  # going back to normal: no repeat with a normal value meanwhile
                track.clear_since = None
                state = res.kinds[spec.kind]
                if not state.dirty:
                    state.dirty = True  # a repeat may be due
                    dirty.append(state)
                continue
            if track.pending is not None and (cleared or t - track.last_beyond > self._max_gap):
                track.pending = None  # back to normal, or the raise-level readings stopped: the count starts over
                res.engaged[m] -= 1
            if not beyond:
                continue
            track.last_beyond = t
            if track.pending is None:
                track.pending = t
                res.engaged[m] += 1
            if t - track.pending >= spec.for_s and not self._inhibited(res, spec):
                self._activate(res, track, value, t, dirty)

    def _inhibited(self, res: _Resident, spec: _Spec) -> bool:
        for name in spec.inhibited_by:
            state = res.kinds.get(name)
            if state is not None and state.alarm_raised():
                return True
        return False

    def _activate(self, res: _Resident, track: _Track, value: float, t: float, dirty: list[_Kind]) -> None:
        track.active = True
        track.pending = None  # stays engaged: active
        track.onset = t
        track.value = value
        track.clear_since = None
        state = res.kind(track.spec.kind)
        state.contribs[track.spec.rule_id] = track
        if not state.dirty:
            state.dirty = True
            dirty.append(state)

    def _deactivate(self, res: _Resident, track: _Track, dirty: list[_Kind]) -> None:
        track.active = False
        track.pending = None
        track.clear_since = None
        res.engaged[track.spec.measure] -= 1
        state = res.kinds[track.spec.kind]
        state.contribs.pop(track.spec.rule_id, None)
        state.value = track.value
        if not state.dirty:
            state.dirty = True
            dirty.append(state)

    def _rise(self, res: _Resident, hr: float, t: float, dirty: list[_Kind]) -> None:
        window = res.rise
        if window and t <= window[-1][0]:
            return
        while window and window[-1][1] >= hr:
            window.pop()  # a running minimum: a later, lower reading makes earlier higher ones irrelevant
        window.append((t, hr))
        horizon = t - self._rise_window
        while window[0][0] < horizon:
            window.popleft()
        self._feed(res, RISE, hr - window[0][1], t, dirty)

    def _baseline(self, res: _Resident, hr: float, t: float, dirty: list[_Kind]) -> None:
        base = res.baseline
        if base is None:
            b = self.rules.baseline
            base = res.baseline = HourlyBaseline(memory_days=b.memory_days, min_days=b.min_days, min_sd=b.min_sd_bpm)
        local = res.local_seconds(t)
        hour = int(local // 3600.0) % 24
        if res.engaged[HRZ] == 0:
            base.update(hr, t, int(local // 86_400.0), hour)  # not while a deviation is being judged: not learnt
        z = base.zscore(hr, hour)
        if z is not None:
            res.last_z = (hr, z, base.mean[hour], base.sd(hour))
            self._feed(res, HRZ, z, t, dirty)

    def _news2(
        self, res: _Resident, hr: float | None, spo2: float | None, sys: float | None, t: float, dirty: list[_Kind]
    ) -> None:
        points, stamps = res.n2_points, res.n2_ts
        if hr is not None:
            points[0], stamps[0] = score_pulse(hr), t
        if spo2 is not None:
            points[1], stamps[1] = score_spo2(spo2, res.plan.spo2_scale), t
        if sys is not None and self._n2_bp:
            points[2], stamps[2] = score_systolic(sys), t
        oldest = t - self._n2_age
        total = top = 0
        for i in range(3):
            if stamps[i] >= oldest:
                p = points[i]
                total += p
                if p > top:
                    top = p
        if res.plan.specs[N2_TOTAL]:
            self._feed(res, N2_TOTAL, float(total), t, dirty)
        if res.plan.specs[N2_MAX]:
            self._feed(res, N2_MAX, float(top), t, dirty)

    def _news2_detail(self, res: _Resident, t: float) -> dict[str, object]:
        oldest = t - self._n2_age
        scored = {name: res.n2_points[i] for i, name in enumerate(_NEWS2_PARAMS) if res.n2_ts[i] >= oldest}
        return {
            "news2_total": sum(scored.values()),
            "parameters": scored,
            "missing": [name for name in PARAMETERS if name not in scored],
            "note": LOWER_BOUND_NOTE,
            "spo2_scale": res.plan.spo2_scale,
            "skin_temperature": "not scored: wrist skin temperature is not body temperature",
        }

    # -- kinds: what is said ----------------------------------------------------------------------------------
    def _settle_dirty(self, res: _Resident, dirty: list[_Kind], t: float, out: list[Signal], reason: str = "") -> None:
        for state in dirty:
            if state.dirty:
                self._settle(res, state, t, out, reason)

    def _settle(self, res: _Resident, state: _Kind, t: float, out: list[Signal], reason: str = "") -> None:
        """Say what changed about one kind: onset, worse, a due repeat, or clear."""
        state.dirty = False
        if not state.contribs:
            if state.raised:
                state.raised = False
                out.append(
                    self._signal(
                        res,
                        state.name,
                        SignalAction.CLEAR,
                        state.severity,
                        t,
                        state.episode_rule,
                        f"{state.episode}/clear@{t:.3f}",
                        state.value,
                        None,
                        reason or _CLEAR_REASONS.get(state.name, "condition cleared"),
                        {"onset_ts": state.onset, "cleared_ts": t},
                    )
                )
            state.rank = -1
            return
        top: _Track | None = None
        for track in state.contribs.values():
            if top is None or track.spec.rank > top.spec.rank:
                top = track
        assert top is not None
        spec = top.spec
        state.value = top.value
        if not state.raised:
            state.raised = True
            state.onset = t
            state.episode_rule = spec.rule_id
            state.episode = source = f"{spec.rule_id}:{res.rid}:{t:.3f}"
        elif spec.rank > state.rank or t - state.last_emit >= spec.repeat_s:
            source = f"{state.episode}@{t:.3f}"  # worse, or a repeat that is due
        else:
            state.rank = spec.rank
            state.severity = spec.severity
            return
        state.rank = spec.rank
        state.severity = spec.severity
        state.last_emit = t
        out.append(
            self._signal(
                res,
                state.name,
                SignalAction.RAISE,
                spec.severity,
                t,
                spec.rule_id,
                source,
                top.value,
                spec.unit,
                spec.reason,
                self._detail(res, state, top, t),
                promote_after_s=spec.promote_after_s,
                promote_to=spec.promote_to,
            )
        )

    def _detail(self, res: _Resident, state: _Kind, top: _Track, t: float) -> dict[str, object]:
        spec = top.spec
        detail: dict[str, object] = {"onset_ts": state.onset}
        if spec.measure >= 0:
            detail.update(
                measure=MEASURES[spec.measure],
                raise_at=spec.raise_at,
                clear_at=spec.clear_at,
                for_s=spec.for_s,
                held_since_ts=top.onset - spec.for_s,
                rules=sorted(state.contribs),
            )
            if spec.measure in (N2_TOTAL, N2_MAX):
                detail.update(self._news2_detail(res, t))
            elif spec.measure == HRZ and res.last_z is not None:
                hr, z, mean, sd = res.last_z
                detail.update(hr_bpm=hr, z=round(z, 2), baseline_bpm=round(mean, 1), baseline_sd_bpm=round(sd, 1))
        else:
            detail["devices"] = sorted(state.contribs)
            if state.name == "device_offline":
                detail["offline_reasons"] = {
                    did: dev.offline_reason for did in state.contribs if (dev := res.devices.get(did)) is not None
                }
        return detail

    def _signal(
        self,
        res: _Resident,
        kind: str,
        action: SignalAction,
        severity: Severity,
        t: float,
        rule_id: str,
        source_id: str,
        value: float | None,
        unit: str | None,
        reason: str,
        detail: Mapping[str, object],
        *,
        cancel_window_s: float = 0.0,
        promote_after_s: float | None = None,
        promote_to: Severity | None = None,
    ) -> Signal:
        return Signal(
            resident_id=res.rid,
            home_id=res.home_id,
            kind=kind,
            action=action,
            severity=severity,
            ts=t,
            rule_id=rule_id,
            source_id=source_id,
            value=value,
            unit=unit,
            reason=reason,
            detail=detail,
            cancel_window_s=cancel_window_s,
            promote_after_s=promote_after_s,
            promote_to=promote_to,
        )

    # -- devices --------------------------------------------------------------------------------------------
    def _hold(
        self, res: _Resident, kind: str, device_id: str, value: float | None, t: float, dirty: list[_Kind]
    ) -> None:
        """A device condition holds (adds the device to the kind, or updates its value)."""
        if not self._tech_on[kind]:
            return
        state = res.kind(kind)
        track = state.contribs.get(device_id)
        if track is None:
            track = state.contribs[device_id] = _Track(self._tech[kind])
            track.active, track.onset = True, t
            if not state.dirty:
                state.dirty = True
                dirty.append(state)
        track.value = value

    def _drop(self, res: _Resident, kind: str, device_id: str, dirty: list[_Kind]) -> None:
        """A device condition no longer holds."""
        state = res.kinds.get(kind)
        if state is None or state.contribs.pop(device_id, None) is None:
            return
        if not state.dirty:
            state.dirty = True
            dirty.append(state)

    def _device(self, res: _Resident, obs: DeviceObservation, t: float, out: list[Signal]) -> None:
        dev = res.devices.get(obs.device_id)
        if dev is None:
            dev = res.devices[obs.device_id] = _Device(obs.device_id, t)
        if obs.worn is not None:
            dev.wearable = True
        if obs.online is False:
            dev.online = False  # its last will, or the edge's verdict; not a sign of life
            dev.offline_reason = obs.offline_reason
        else:
            if t > dev.last_seen:
                dev.last_seen = t
            if dev.online is False:
                dev.vitals_since = max(dev.vitals_since, t)
            dev.online = True
        if obs.battery_pct is not None:
            dev.battery_pct = obs.battery_pct
        if obs.worn is not None:
            if obs.worn and dev.worn is False:
                dev.vitals_since = max(dev.vitals_since, t)  # the clock for "vitals missing" starts when put on
            dev.worn = obs.worn
        if res.snoozed:
            return  # remembered as device state; said when the resident is back
        dirty: list[_Kind] = []
        self._device_conditions(res, dev, t, dirty)
        self._settle_dirty(res, dirty, t, out)

    def _device_conditions(self, res: _Resident, dev: _Device, t: float, dirty: list[_Kind]) -> None:
        """Bring the device's conditions in line with what is known of it."""
        did = dev.device_id
        if dev.online is False:
            self._hold(res, "device_offline", did, None, t, dirty)
            self._drop(res, "no_data", did, dirty)  # offline says it all: no "no data" ...
            self._drop(res, "vitals_missing", did, dirty)  # ... and no "vitals missing"
        else:
            self._drop(res, "device_offline", did, dirty)
            self._drop(res, "no_data", did, dirty)
        battery = self.rules.technical.battery_low
        if dev.battery_pct is not None and battery.raise_at_pct is not None and battery.clear_at_pct is not None:
            if dev.battery_pct <= battery.raise_at_pct:
                self._hold(res, "battery_low", did, dev.battery_pct, t, dirty)
            elif dev.battery_pct >= battery.clear_at_pct:
                self._drop(res, "battery_low", did, dirty)
        if dev.worn is False:
            self._hold(res, "not_worn", did, None, t, dirty)
            self._drop(res, "no_data", did, dirty)  # not worn: no "no data", no "vitals missing" either
            self._drop(res, "vitals_missing", did, dirty)
        else:
            self._drop(res, "not_worn", did, dirty)

    # -- events ---------------------------------------------------------------------------------------------
    def _event(self, res: _Resident, obs: EventObservation, t: float, out: list[Signal]) -> None:
        kind = obs.kind
        if res.snoozed and kind != "sos":
            return
        if obs.event_id in res.seen:
            return  # redelivered
        res.seen[obs.event_id] = None
        if len(res.seen) > SEEN_EVENTS:
            del res.seen[next(iter(res.seen))]
        if kind == "ok":
            out.append(
                self._signal(
                    res,
                    "fall",
                    SignalAction.CANCEL,
                    Severity.HIGH,
                    t,
                    "events.ok",
                    obs.event_id,
                    None,
                    None,
                    "resident pressed I'm OK",
                    {"device_id": obs.device_id},
                )
            )
            if res.medication_open is not None:
                out.append(self._medication_clear(res, f"{obs.event_id}/medication", t, "answered with I'm OK"))
            return
        rule: EventRule | None = getattr(self.rules.events, kind, None) if kind in _EVENT_RULES else None
        if rule is None or not rule.enabled:
            return  # presence, or an event kind no rule is about
        severity = rule.severity
        reason = rule.reason
        unit: str | None = None
        if rule.night_severity is not None and res.is_night(obs.ts):
            severity = rule.night_severity
            reason = f"{reason} at night"
        if kind == "inactivity":
            unit = "s"
            if obs.value is not None:
                reason = f"{reason} ({obs.value / 3600.0:.1f} h)"
                if rule.high_after_s is not None and obs.value >= rule.high_after_s:
                    severity = Severity.HIGH
        elif kind == "night_wandering":
            zone = obs.detail.get("zone")
            if obs.room in rule.high_rooms or (isinstance(zone, str) and zone in rule.high_rooms):
                severity = Severity.HIGH
                reason = f"{reason}: at the {obs.room or zone}"
        elif kind == "geofence_exit":
            unit = "m"
        elif kind == "bed_exit":
            unit = "s"
        detail: dict[str, object] = dict(obs.detail)
        if obs.room is not None:
            detail["room"] = obs.room
        if obs.device_id is not None:
            detail["device_id"] = obs.device_id
        out.append(
            self._signal(
                res,
                kind,
                SignalAction.RAISE,
                severity,
                t,
                f"events.{kind}",
                obs.event_id,
                obs.value,
                unit,
                reason,
                detail,
                cancel_window_s=rule.cancel_window_s,
            )
        )

    # -- time -----------------------------------------------------------------------------------------------
    def _schedule(self, res: _Resident, when: float, now: float) -> None:
        seq = next(self._seq)
        res.scheduled_seq = seq
        heapq.heappush(self._heap, (max(when, now + 1e-3), seq, res))

    def _timers(self, res: _Resident, now: float, out: list[Signal]) -> None:
        if self.profile_of is not None:
            fresh = self.profile_of(res.rid)
            if fresh is not None and fresh is not res.profile and fresh != res.profile:
                self._set_profile(res, fresh, now, out)
        if res.snoozed:
            return
        dirty: list[_Kind] = []
        no_data_s = self.rules.technical.no_data.after_s
        missing_s = self.rules.technical.vitals_missing.after_s
        assert no_data_s is not None
        assert missing_s is not None
        for dev in res.devices.values():
            if not dev.wearable or dev.online is False or dev.worn is False:
                continue  # offline or off the wrist: that is what was said, not "no data"
            silent = now - dev.last_seen
            if silent >= no_data_s:
                self._hold(res, "no_data", dev.device_id, round(silent, 1), now, dirty)
                self._drop(res, "vitals_missing", dev.device_id, dirty)
            elif now - dev.vitals_since >= missing_s:
                self._hold(res, "vitals_missing", dev.device_id, round(now - dev.vitals_since, 1), now, dirty)
        self._settle_dirty(res, dirty, now, out)
        for m in range(len(MEASURES)):
            if res.engaged[m] and now - res.last_ts[m] >= self._stale:
                stale: list[_Kind] = []
                for track in res.tracks[m]:
                    if track.active:
                        self._deactivate(res, track, stale)
                    elif track.pending is not None:
                        track.pending = None
                        res.engaged[m] -= 1
                reason = f"no {MEASURES[m]} reading for {self._stale:g} s: no longer observed"
                self._settle_dirty(res, stale, now, out, reason)
        if res.medication_next is not None and now >= res.medication_next:
            out.append(self._medication(res, res.medication_next, now))
            res.medication_next = self._next_medication(res, now)

    def _next_deadline(self, res: _Resident, now: float) -> float:
        due = now + MAX_SLEEP_S
        if res.snoozed:
            return due
        no_data_s = self.rules.technical.no_data.after_s or math.inf
        missing_s = self.rules.technical.vitals_missing.after_s or math.inf
        for dev in res.devices.values():
            if dev.wearable and dev.online is not False and dev.worn is not False:
                due = min(due, dev.last_seen + no_data_s, dev.vitals_since + missing_s)
        for m in range(len(MEASURES)):
            if res.engaged[m]:
                due = min(due, res.last_ts[m] + self._stale)
        if res.medication_next is not None:
            due = min(due, res.medication_next)
        return due

    def _next_medication(self, res: _Resident, after: float) -> float | None:
        minutes = res.plan.medication_minutes
        if not minutes:
            return None
        local = datetime.fromtimestamp(after, res.tz)
        for days in range(3):
            day = local.date() + timedelta(days=days)
            for minute in minutes:
                moment = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=res.tz)
                ts = moment.timestamp()
                if ts > after:
                    return ts
        return None

    def _medication(self, res: _Resident, due: float, now: float) -> Signal:
        settings = self.rules.medication
        clock = datetime.fromtimestamp(due, res.tz).strftime("%H:%M")
        source = f"{MEDICATION_KIND}:{res.rid}:{due:.0f}"
        res.medication_open = source
        return self._signal(
            res,
            MEDICATION_KIND,
            SignalAction.RAISE,
            settings.severity,
            now,
            MEDICATION_KIND,
            source,
            None,
            None,
            f"{settings.reason} ({clock})",
            {"scheduled_ts": due, "scheduled_local": clock},
            promote_after_s=settings.promote_after_s,
            promote_to=settings.promote_to,
        )

    def _medication_clear(self, res: _Resident, source: str, t: float, reason: str) -> Signal:
        res.medication_open = None
        return self._signal(
            res,
            MEDICATION_KIND,
            SignalAction.CLEAR,
            self.rules.medication.severity,
            t,
            MEDICATION_KIND,
            source,
            None,
            None,
            reason,
            {},
        )


_EVENT_RULES = frozenset(EVENT_KINDS)
_CLEAR_REASONS = {
    "device_offline": "device back online",
    "battery_low": "battery charged",
    "not_worn": "bracelet worn again",
    "no_data": "data arriving again",
    "vitals_missing": "readings arriving again",
}
