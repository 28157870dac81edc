"""The rule engine: what each rule raises, how often it repeats, when it clears, and what it must never raise.

Time is the `now` argument: tests feed readings with advancing timestamps and call tick() as the service's ticker
would; nothing sleeps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from alerts.rules import RISE_MAX_POINTS, SEEN_EVENTS, RuleEngine
from alerts.ruleset import RuleSet, load_rules, packaged_rules_text, parse_rules
from careloop import messages as m
from simulators.emission import Control
from simulators.ground_truth import GroundTruth
from simulators.runner import build, stream
from simulators.scenario import load_scenario

TZ = "Asia/Shanghai"
#: A weekday afternoon in the home's time zone (daytime: no night-only behaviour).
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=ZoneInfo(TZ)).timestamp()
RAISE, CLEAR, CANCEL = SignalAction.RAISE, SignalAction.CLEAR, SignalAction.CANCEL
RULES = load_rules()


def profile(**changes: object) -> ResidentProfile:
    base = ResidentProfile(resident_id="R1", home_id="H1", timezone=TZ)
    return replace(base, **changes)  # type: ignore[arg-type]


def at_local(hour: int, minute: int = 0, day: int = 2) -> float:
    return datetime(2026, 3, day, hour, minute, tzinfo=ZoneInfo(TZ)).timestamp()


class Run:
    """One engine, one resident, and every signal it said (ticks included)."""

    def __init__(self, rules: RuleSet = RULES, prof: ResidentProfile | None = None) -> None:
        self.engine = RuleEngine(rules)
        self.profile = prof or profile()
        self.signals: list[Signal] = []

    def observe(self, obs: Observation, now: float | None = None) -> list[Signal]:
        now = obs.ts if now is None else now
        out = self.engine.observe(obs, self.profile, now) + self.engine.tick(now)
        self.signals += out
        return out

    def tick(self, now: float) -> list[Signal]:
        out = self.engine.tick(now)
        self.signals += out
        return out

    def vitals(self, t: float, **values: object) -> list[Signal]:
        fields: dict[str, object] = {"hr_bpm": 72.0, "spo2_pct": 97.0, "skin_temp_c": 33.0}
        fields.update(ppg_quality=0.9, motion_g=0.02)
        fields.update(values)
        obs = VitalsObservation(self.profile.resident_id, self.profile.home_id, "B1", t, **fields)  # type: ignore[arg-type]
        return self.observe(obs)

    def hold(self, start: float, seconds: float, step: float = 1.0, **values: object) -> list[Signal]:
        """Readings every `step` seconds in [start, start + seconds)."""
        out: list[Signal] = []
        n = round(seconds / step)
        for i in range(n):
            out += self.vitals(start + i * step, **values)
        return out

    def event(self, kind: str, t: float, event_id: str | None = None, **fields: object) -> list[Signal]:
        eid = event_id or f"{kind}-{t:.0f}"
        obs = EventObservation(self.profile.resident_id, self.profile.home_id, kind, eid, t, **fields)  # type: ignore[arg-type]
        return self.observe(obs)

    def device(self, t: float, **fields: object) -> list[Signal]:
        obs = DeviceObservation(self.profile.resident_id, self.profile.home_id, "B1", t, **fields)  # type: ignore[arg-type]
        return self.observe(obs)


def of(signals: Iterable[Signal], kind: str, action: SignalAction | None = None) -> list[Signal]:
    return [s for s in signals if s.kind == kind and (action is None or s.action is action)]


def onsets(signals: Iterable[Signal], kind: str) -> list[Signal]:
    return [s for s in of(signals, kind, RAISE) if "@" not in s.source_id]


# ---------------------------------------------------------------------------------------------------------------
# thresholds: duration, repeats, hysteresis
# ---------------------------------------------------------------------------------------------------------------


def test_ten_minutes_of_tachycardia_at_1hz_is_one_alarm_updated_not_hundreds() -> None:
    run = Run()
    run.hold(T0, 300, hr_bpm=72.0)
    run.hold(T0 + 300, 600, hr_bpm=135.0)
    run.hold(T0 + 900, 300, hr_bpm=72.0)
    run.tick(T0 + 1300)
    assert {s.kind for s in run.signals} == {"hr_high"}  # no hr_rise, no NEWS2 on top of it
    raises = of(run.signals, "hr_high", RAISE)
    (onset,) = onsets(run.signals, "hr_high")
    assert onset.ts == T0 + 300 + 300  # held 5 min
    assert onset.severity is Severity.HIGH
    assert onset.rule_id == "hr_high_severe"
    assert onset.value == 135.0
    assert onset.unit == "bpm"
    repeats = raises[1:]
    assert 1 <= len(repeats) <= 600 // 60
    assert all(r.source_id.startswith(onset.source_id + "@") for r in repeats)
    times = [r.ts for r in raises]
    assert all(b - a >= 60.0 for a, b in itertools.pairwise(times))
    assert all(r.value == 135.0 for r in repeats)  # the latest value; none of the normal ones while clearing
    (clear,) = of(run.signals, "hr_high", CLEAR)
    assert clear.ts == T0 + 900 + 60  # back at the clear level for clear_for_s
    assert clear.value == 72.0
    assert clear.source_id.startswith(onset.source_id + "/clear")


def test_tachycardia_120_is_medium_after_5_min_and_clears_only_below_110() -> None:
    run = Run()
    assert run.hold(T0, 299, hr_bpm=125.0) == []
    (onset,) = run.vitals(T0 + 299 + 1, hr_bpm=125.0)
    assert (onset.kind, onset.action, onset.severity) == ("hr_high", RAISE, Severity.MEDIUM)
    assert onset.rule_id == "hr_high"
    assert onset.detail["raise_at"] == 120.0
    assert onset.detail["for_s"] == 300.0
    # 115 is in the hysteresis band: still raised (repeats continue), no clear
    band = run.hold(T0 + 301, 600, hr_bpm=115.0)
    assert of(band, "hr_high", CLEAR) == []
    assert of(band, "hr_high", RAISE)
    cleared = run.hold(T0 + 901, 120, hr_bpm=100.0)
    (clear,) = of(cleared, "hr_high", CLEAR)
    assert clear.ts == T0 + 901 + 60


def test_worse_tier_raises_at_once_in_the_same_episode() -> None:
    run = Run()
    run.hold(T0, 301, hr_bpm=125.0)
    (first,) = onsets(run.signals, "hr_high")
    assert first.severity is Severity.MEDIUM
    worse = run.hold(T0 + 301, 301, hr_bpm=140.0)
    high = [s for s in worse if s.severity is Severity.HIGH]
    assert high[0].ts == T0 + 301 + 300  # when the severe tier had held its 5 min, not at the next repeat
    assert high[0].source_id.startswith(first.source_id + "@")
    assert onsets(run.signals, "hr_high") == [first]


def test_a_single_spike_or_a_short_burst_never_raises() -> None:
    run = Run()
    run.hold(T0, 120)
    run.vitals(T0 + 120, hr_bpm=190.0, spo2_pct=80.0)
    run.hold(T0 + 121, 120)
    run.hold(T0 + 241, 60, hr_bpm=150.0, spo2_pct=85.0)  # one minute: shorter than any rule's duration
    run.hold(T0 + 301, 1200)
    run.tick(T0 + 2000)
    assert run.signals == []


def test_readings_at_the_raise_level_must_keep_coming() -> None:
    run = Run()
    for i in range(10):  # a reading of 125 every 2 minutes, normal in between: not a sustained tachycardia
        run.vitals(T0 + 120 * i, hr_bpm=125.0)
        run.hold(T0 + 120 * i + 1, 119, hr_bpm=115.0)
    assert of(run.signals, "hr_high") == []


def test_heart_rate_high_for_30_min_is_a_reminder_promoted_if_unanswered() -> None:
    run = Run()
    run.hold(T0, 1800, step=5.0, hr_bpm=105.0)
    assert run.signals == []
    (reminder,) = run.vitals(T0 + 1800, hr_bpm=105.0)
    assert reminder.kind == "hr_high"
    assert reminder.severity is Severity.REMINDER
    assert reminder.reason == "heart rate high for 30 min"
    assert reminder.promote_after_s == 1800.0
    assert reminder.promote_to is Severity.LOW


def test_bradycardia_medium_then_high() -> None:
    run = Run()
    run.hold(T0, 121, hr_bpm=38.0)
    (onset,) = onsets(run.signals, "hr_low")
    assert onset.severity is Severity.MEDIUM
    assert onset.ts == T0 + 120
    run.hold(T0 + 121, 61, hr_bpm=28.0)
    assert of(run.signals, "hr_low", RAISE)[-1].severity is Severity.HIGH


def test_spo2_below_92_is_medium_and_88_is_high() -> None:
    run = Run()
    run.hold(T0, 121, spo2_pct=90.0)
    (onset,) = onsets(run.signals, "spo2_low")
    assert (onset.severity, onset.ts, onset.unit) == (Severity.MEDIUM, T0 + 120, "%")
    run2 = Run()
    run2.hold(T0, 61, spo2_pct=88.0)
    (onset,) = onsets(run2.signals, "spo2_low")
    assert (onset.severity, onset.ts) == (Severity.HIGH, T0 + 60)


def test_skin_temperature_and_blood_pressure_rules() -> None:
    run = Run()
    run.hold(T0, 1810, step=10.0, skin_temp_c=37.4)
    (warm,) = onsets(run.signals, "temp_high")
    assert warm.severity is Severity.LOW
    run = Run()
    run.hold(T0, 305, step=5.0, bp_systolic_mmhg=85.0, bp_diastolic_mmhg=55.0)
    (low,) = onsets(run.signals, "bp_low")
    assert low.severity is Severity.MEDIUM
    assert low.unit == "mmHg"
    run = Run()
    run.hold(T0, 910, step=10.0, bp_systolic_mmhg=190.0, bp_diastolic_mmhg=95.0)
    (high,) = onsets(run.signals, "bp_high")
    assert high.severity is Severity.LOW


def test_a_fast_rise_at_rest_that_stays_under_the_limits() -> None:
    run = Run()
    run.hold(T0, 300, step=5.0, hr_bpm=60.0)
    run.hold(T0 + 300, 305, step=5.0, hr_bpm=95.0)
    (rise,) = onsets(run.signals, "hr_rise")
    assert rise.severity is Severity.LOW
    assert rise.value == 35.0
    # the same rise while walking is effort, not news
    walking = Run()
    walking.hold(T0, 300, step=5.0, hr_bpm=60.0, motion_g=0.3)
    walking.hold(T0 + 300, 305, step=5.0, hr_bpm=95.0, motion_g=0.3)
    assert walking.signals == []


# ---------------------------------------------------------------------------------------------------------------
# quality gate
# ---------------------------------------------------------------------------------------------------------------


def test_motion_artefact_spike_raises_nothing() -> None:
    run = Run()
    run.hold(T0, 240, step=5.0, hr_bpm=80.0, motion_g=0.25, ppg_quality=0.75)
    run.hold(T0 + 240, 20, step=1.0, hr_bpm=160.0, ppg_quality=0.2, motion_g=0.8)
    run.hold(T0 + 260, 600, step=5.0, hr_bpm=80.0, motion_g=0.05)
    assert run.signals == []
    assert run.engine.rejected_readings == 20


def test_long_artefacts_are_still_artefacts() -> None:
    run = Run()
    run.hold(T0, 900, hr_bpm=165.0, spo2_pct=84.0, ppg_quality=0.3)  # bad contact for 15 min
    run.hold(T0 + 900, 900, hr_bpm=165.0, spo2_pct=84.0, motion_g=1.2)  # clapping, hitting the table
    assert of(run.signals, "hr_high") == []
    assert of(run.signals, "spo2_low") == []
    assert of(run.signals, "news2") == []


def test_edge_summaries_are_not_gated_again() -> None:
    run = Run()
    for i in range(7):
        run.vitals(T0 + 60 * i, hr_bpm=128.0, ppg_quality=None, motion_g=None, summary=True)
    (onset,) = onsets(run.signals, "hr_high")
    assert onset.ts == T0 + 300


# ---------------------------------------------------------------------------------------------------------------
# per-resident limits
# ---------------------------------------------------------------------------------------------------------------


def test_atrial_fibrillation_moves_the_heart_rate_limits() -> None:
    af = Run(prof=profile(conditions=("atrial_fibrillation",)))
    af.hold(T0, 900, step=5.0, hr_bpm=125.0)
    assert of(af.signals, "hr_high") == []
    assert af.engine.limits_for(af.profile)["hr_max_bpm"] == 130.0
    af.hold(T0 + 900, 305, step=5.0, hr_bpm=133.0)
    (onset,) = onsets(af.signals, "hr_high")
    assert onset.severity is Severity.MEDIUM
    assert onset.detail["raise_at"] == 130.0
    other = Run()
    other.hold(T0, 305, step=5.0, hr_bpm=125.0)
    assert onsets(other.signals, "hr_high")


def test_registry_condition_text_and_aliases_match() -> None:
    for text in ("Atrial fibrillation", "AF", "afib"):
        engine = RuleEngine(RULES)
        assert engine.limits_for(profile(conditions=(text,)))["hr_max_bpm"] == 130.0


def test_health_profile_limits_override_condition_defaults_and_the_rule_file_overrides_both() -> None:
    engine = RuleEngine(RULES)
    prof = profile(conditions=("atrial_fibrillation",), hr_max_bpm=110.0)
    assert engine.limits_for(prof)["hr_max_bpm"] == 110.0
    rules = parse_rules(
        _packaged() + '\n[residents.R1]\nlimits = { hr_max_bpm = 140.0 }\nmedication_times = ["08:00"]\n'
    )
    assert RuleEngine(rules).limits_for(prof)["hr_max_bpm"] == 140.0
    run = Run(prof=profile(hr_max_bpm=110.0))
    run.hold(T0, 305, step=5.0, hr_bpm=112.0)
    (onset,) = onsets(run.signals, "hr_high")
    assert onset.severity is Severity.MEDIUM


def test_copd_on_scale_2_alarms_below_88_and_scores_news2_on_scale_2() -> None:
    copd = profile(conditions=("COPD",), spo2_scale=2, spo2_min_pct=88.0)
    run = Run(prof=copd)
    run.hold(T0, 900, step=5.0, spo2_pct=89.0)  # inside the 88-92 % target: fine
    assert run.signals == []
    run.hold(T0 + 900, 125, step=5.0, spo2_pct=86.0)
    (onset,) = onsets(run.signals, "spo2_low")
    assert (onset.rule_id, onset.severity) == ("spo2_low_scale2", Severity.MEDIUM)
    run.hold(T0 + 1025, 65, step=5.0, spo2_pct=82.0)
    assert of(run.signals, "spo2_low", RAISE)[-1].severity is Severity.HIGH
    # the same 89 % on scale 1 is an alarm
    scale1 = Run()
    scale1.hold(T0, 125, step=5.0, spo2_pct=89.0)
    assert onsets(scale1.signals, "spo2_low")


def test_a_scale_2_override_in_the_rule_file() -> None:
    rules = parse_rules(_packaged() + "\n[residents.R1]\nspo2_scale = 2\n")
    run = Run(rules)
    run.hold(T0, 600, step=5.0, spo2_pct=89.0)
    assert run.signals == []


def test_changing_limits_mid_episode_keeps_the_episode() -> None:
    run = Run()
    run.hold(T0, 305, step=5.0, hr_bpm=125.0)
    (onset,) = onsets(run.signals, "hr_high")
    run.profile = profile(hr_max_bpm=122.0)
    run.hold(T0 + 305, 120, step=5.0, hr_bpm=125.0)
    assert onsets(run.signals, "hr_high") == [onset]
    assert of(run.signals, "hr_high", CLEAR) == []


# ---------------------------------------------------------------------------------------------------------------
# NEWS2
# ---------------------------------------------------------------------------------------------------------------


def test_news2_total_5_is_medium_and_lists_what_is_missing() -> None:
    run = Run()
    # pulse 115 (2) + SpO2 93 (2) + systolic 105 (1) = 5; no single rule fires on any of them
    run.hold(T0, 305, step=5.0, hr_bpm=115.0, spo2_pct=93.0, bp_systolic_mmhg=105.0, bp_diastolic_mmhg=70.0)
    (onset,) = onsets(run.signals, "news2")
    assert (onset.rule_id, onset.severity, onset.value) == ("news2_5", Severity.MEDIUM, 5.0)
    assert onset.detail["parameters"] == {"pulse": 2, "spo2": 2, "systolic_bp": 1}
    assert onset.detail["missing"] == ["respiration_rate", "air_or_oxygen", "consciousness", "temperature"]
    assert "lower bound" in str(onset.detail["note"])
    assert onset.detail["spo2_scale"] == 1


def test_news2_total_7_is_high() -> None:
    run = Run()
    run.hold(T0, 125, step=5.0, hr_bpm=135.0, spo2_pct=91.0, bp_systolic_mmhg=105.0, bp_diastolic_mmhg=70.0)
    (onset,) = onsets(run.signals, "news2")
    assert (onset.rule_id, onset.severity, onset.value) == ("news2_7", Severity.HIGH, 7.0)


def test_news2_single_red_parameter_when_no_own_rule_says_so() -> None:
    wide = Run(prof=profile(hr_max_bpm=150.0))  # a personal limit beyond NEWS2's red band
    wide.hold(T0, 305, step=5.0, hr_bpm=135.0)
    assert of(wide.signals, "hr_high") == []
    (onset,) = onsets(wide.signals, "news2")
    assert (onset.rule_id, onset.severity) == ("news2_single_3", Severity.MEDIUM)
    assert onset.detail["parameters"] == {"pulse": 3, "spo2": 0}
    # with default limits, hr_high says it first and the NEWS2 net stays quiet
    usual = Run()
    usual.hold(T0, 600, step=5.0, hr_bpm=135.0)
    assert of(usual.signals, "news2") == []


# ---------------------------------------------------------------------------------------------------------------
# baseline
# ---------------------------------------------------------------------------------------------------------------


def test_baseline_needs_its_days_then_flags_an_unusual_night() -> None:
    run = Run()
    night = at_local(3, day=2)
    day_s = 86_400.0

    def usual_night(day: int) -> None:
        for i in range(60):  # 03:00-04:00, edge summaries every minute, about 55 bpm
            run.vitals(night + day * day_s + 60 * i, hr_bpm=55.0 + (i % 5) - 2, summary=True, ppg_quality=None)

    for day in range(6):
        usual_night(day)
    unusual = night + 6 * day_s
    for i in range(30):  # only 6 days known: 85 bpm at 03:00 says nothing yet
        run.vitals(unusual + 60 * i, hr_bpm=85.0, summary=True, ppg_quality=None)
    assert of(run.signals, "hr_baseline") == []
    run.hold(unusual + 1800, 1800, step=60.0, hr_bpm=55.0, summary=True, ppg_quality=None)
    later = night + 8 * day_s  # a 7th night of data went in with the one above
    for i in range(20):
        run.vitals(later + 60 * i, hr_bpm=85.0, summary=True, ppg_quality=None)
    (onset,) = onsets(run.signals, "hr_baseline")
    assert onset.severity is Severity.LOW
    assert onset.ts == later + 900
    assert onset.unit == "sd"
    assert onset.detail["hr_bpm"] == 85.0
    assert float(str(onset.detail["z"])) > 3.0
    assert abs(float(str(onset.detail["baseline_bpm"])) - 55.0) < 5.0


# ---------------------------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------------------------


def test_fall_waits_in_its_cancel_window_and_ok_cancels_it() -> None:
    run = Run()
    (fall,) = run.event("fall", T0, "fall-B1-1", value=0.93, room="bathroom")
    assert (fall.kind, fall.action, fall.severity) == ("fall", RAISE, Severity.HIGH)
    assert fall.cancel_window_s == 30.0
    assert fall.source_id == "fall-B1-1"
    assert fall.detail["room"] == "bathroom"
    assert run.event("fall", T0 + 1, "fall-B1-1") == []  # redelivered
    (cancel,) = run.event("ok", T0 + 15, "B1-ok-1")
    assert (cancel.kind, cancel.action, cancel.source_id) == ("fall", CANCEL, "B1-ok-1")


def test_sos_pages_at_once() -> None:
    run = Run()
    (sos,) = run.event("sos", T0, "B1-sos-1")
    assert (sos.kind, sos.action, sos.severity, sos.cancel_window_s) == ("sos", RAISE, Severity.HIGH, 0.0)


def test_inactivity_bed_exit_wandering_geofence() -> None:
    run = Run()
    (short,) = run.event("inactivity", T0, value=2 * 3600.0)
    (long,) = run.event("inactivity", T0 + 1, value=5 * 3600.0)
    assert (short.severity, long.severity) == (Severity.MEDIUM, Severity.HIGH)
    assert long.unit == "s"
    (bed,) = run.event("bed_exit", at_local(2, 30), value=1800.0)
    assert bed.severity is Severity.MEDIUM
    (hall,) = run.event("night_wandering", at_local(2, 0), room="hallway", detail={"zone": "hallway"})
    (door,) = run.event("night_wandering", at_local(2, 5), room="front_door", detail={"zone": "front_door"})
    assert (hall.severity, door.severity) == (Severity.MEDIUM, Severity.HIGH)
    (day,) = run.event("geofence_exit", at_local(11, 0), value=350.0)
    (night,) = run.event("geofence_exit", at_local(23, 30), value=350.0)
    assert (day.severity, night.severity) == (Severity.MEDIUM, Severity.HIGH)
    assert night.unit == "m"
    assert run.event("presence", T0 + 5, value=1.0) == []
    assert run.event("something_new", T0 + 6) == []


def test_the_night_window_is_the_homes_local_time() -> None:
    rules = RULES
    t = at_local(23, 30)  # 23:30 in Shanghai is 15:30 UTC
    in_utc = Run(rules, profile(timezone="UTC"))
    (day,) = in_utc.event("geofence_exit", t)
    assert day.severity is Severity.MEDIUM
    (night,) = Run(rules, profile()).event("geofence_exit", t)
    assert night.severity is Severity.HIGH


def test_night_only_rule() -> None:
    rules = parse_rules(
        """
[thresholds.hr_night]
kind = "hr_night"
measure = "hr_bpm"
direction = "high"
raise_at = 90.0
clear_at = 80.0
for_s = 60.0
clear_for_s = 0.0
severity = "low"
reason = "heart rate 90 or more at night"
when = "night"
"""
    )
    run = Run(rules)
    run.hold(at_local(14), 300, step=10.0, hr_bpm=95.0)
    assert run.signals == []
    run.hold(at_local(5, 50, day=3), 20 * 60, step=10.0, hr_bpm=95.0)  # 05:50-06:10: raised, then morning
    (onset,) = onsets(run.signals, "hr_night")
    assert onset.ts == at_local(5, 51, day=3)
    (clear,) = of(run.signals, "hr_night", CLEAR)
    assert clear.ts == at_local(6, 0, day=3)


# ---------------------------------------------------------------------------------------------------------------
# devices, inhibition
# ---------------------------------------------------------------------------------------------------------------


def test_battery_low_reminder_with_hysteresis() -> None:
    run = Run()
    (low,) = run.device(T0, battery_pct=15.0)
    assert (low.kind, low.severity, low.value, low.unit) == ("battery_low", Severity.REMINDER, 15.0, "%")
    assert low.promote_after_s == 3600.0
    assert low.promote_to is Severity.LOW
    assert run.device(T0 + 300, battery_pct=14.0) == []
    assert run.device(T0 + 600, battery_pct=25.0) == []  # charging, in the band
    (clear,) = run.device(T0 + 900, battery_pct=31.0)
    assert (clear.kind, clear.action) == ("battery_low", CLEAR)


def test_offline_bracelet_raises_neither_no_data_nor_vitals_missing_and_clears_when_back() -> None:
    run = Run()
    run.hold(T0, 60, step=5.0)
    (offline,) = run.device(T0 + 60, online=False, offline_reason="last_will")
    assert (offline.kind, offline.severity) == ("device_offline", Severity.LOW)
    assert offline.detail["offline_reasons"] == {"B1": "last_will"}
    for minute in range(1, 121):
        run.tick(T0 + 60 + 60 * minute)
    assert {s.kind for s in run.signals} == {"device_offline"}
    back = run.device(T0 + 7400, online=True)
    assert [(s.kind, s.action) for s in back] == [("device_offline", CLEAR)]


def test_not_worn_is_a_reminder_and_inhibits_no_data() -> None:
    run = Run()
    run.hold(T0, 60, step=5.0)
    (off,) = run.device(T0 + 60, worn=False)
    assert (off.kind, off.severity, off.reason) == ("not_worn", Severity.REMINDER, "wear your bracelet")
    for minute in range(1, 121):
        run.tick(T0 + 60 + 60 * minute)
    assert {s.kind for s in run.signals} == {"not_worn"}
    (on,) = run.device(T0 + 7300, worn=True)
    assert (on.kind, on.action) == ("not_worn", CLEAR)


def test_no_data_after_silence_and_clear_on_data() -> None:
    run = Run()
    run.hold(T0, 60, step=5.0)
    assert run.tick(T0 + 55 + 899) == []
    (silent,) = run.tick(T0 + 55 + 900)
    assert (silent.kind, silent.severity, silent.action) == ("no_data", Severity.LOW, RAISE)
    assert run.tick(T0 + 3000) == []  # said once
    (clear,) = run.vitals(T0 + 3001)
    assert (clear.kind, clear.action) == ("no_data", CLEAR)


def test_vitals_missing_when_the_bracelet_sends_only_unusable_readings() -> None:
    run = Run()
    run.hold(T0, 1810, step=10.0, ppg_quality=0.1)
    (missing,) = of(run.signals, "vitals_missing")
    assert missing.severity is Severity.REMINDER
    assert missing.ts == T0 + 1800
    (clear,) = run.vitals(T0 + 1810)
    assert (clear.kind, clear.action) == ("vitals_missing", CLEAR)


def test_stale_condition_clears_when_its_measure_stops() -> None:
    run = Run()
    run.hold(T0, 305, step=5.0, hr_bpm=125.0)
    assert onsets(run.signals, "hr_high")
    run.tick(T0 + 300 + 599)
    assert of(run.signals, "hr_high", CLEAR) == []
    (clear,) = run.tick(T0 + 300 + 600)
    assert clear.kind == "hr_high"
    assert "no longer observed" in clear.reason


# ---------------------------------------------------------------------------------------------------------------
# snooze
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["away", "in_hospital"])
def test_away_or_in_hospital_raises_nothing_but_sos(status: str) -> None:
    run = Run(prof=profile(status=status))
    run.hold(T0, 600, step=5.0, hr_bpm=140.0, spo2_pct=85.0)
    run.event("fall", T0 + 600)
    run.event("inactivity", T0 + 601, value=6 * 3600.0)
    run.device(T0 + 602, battery_pct=5.0, worn=False)
    run.device(T0 + 603, online=False)
    for minute in range(1, 60):
        run.tick(T0 + 603 + 60 * minute)
    assert run.signals == []
    (sos,) = run.event("sos", T0 + 4000)
    assert (sos.kind, sos.severity) == ("sos", Severity.HIGH)


def test_going_away_clears_what_was_said_and_coming_back_resumes() -> None:
    run = Run()
    run.device(T0, battery_pct=15.0)
    run.hold(T0 + 1, 305, step=5.0, hr_bpm=125.0)
    run.profile = profile(status="away")
    cleared = run.vitals(T0 + 400, hr_bpm=125.0)
    assert sorted((s.kind, s.action) for s in cleared) == [("battery_low", CLEAR), ("hr_high", CLEAR)]
    assert all("snoozed" in s.reason for s in cleared)
    run.profile = profile()
    back = run.device(T0 + 5000, battery_pct=14.0)
    assert [(s.kind, s.action) for s in back] == [("battery_low", RAISE)]


def test_update_profile_snoozes_at_once() -> None:
    run = Run()
    run.device(T0, battery_pct=10.0)
    out = run.engine.update_profile(profile(status="in_hospital"), T0 + 10)
    assert [(s.kind, s.action) for s in out] == [("battery_low", CLEAR)]
    assert run.engine.update_profile(profile(status="in_hospital"), T0 + 20) == []


def test_tick_learns_a_status_change_without_a_message() -> None:
    profiles = {"R1": profile()}
    engine = RuleEngine(RULES, profile_of=profiles.get)
    engine.observe(DeviceObservation("R1", "H1", "B1", T0, worn=False), profiles["R1"], T0)
    profiles["R1"] = profile(status="in_hospital")
    out = engine.tick(T0 + 60)
    assert [(s.kind, s.action) for s in out] == [("not_worn", CLEAR)]
    assert engine.tick(T0 + 86_400) == []


# ---------------------------------------------------------------------------------------------------------------
# medication reminders
# ---------------------------------------------------------------------------------------------------------------


def test_medication_reminder_at_local_time_answered_by_ok() -> None:
    rules = parse_rules(_packaged() + '\n[residents.R1]\nmedication_times = ["08:00", "20:00"]\n')
    run = Run(rules)
    run.device(at_local(7, 0), battery_pct=80.0)
    assert run.tick(at_local(7, 59)) == []
    (reminder,) = run.tick(at_local(8, 0))
    assert (reminder.kind, reminder.action, reminder.severity) == ("medication", RAISE, Severity.REMINDER)
    assert reminder.promote_to is Severity.LOW
    assert "08:00" in reminder.reason
    assert run.tick(at_local(8, 1)) == []
    answered = run.event("ok", at_local(8, 5))
    assert sorted((s.kind, s.action) for s in answered) == [("fall", CANCEL), ("medication", CLEAR)]
    (evening,) = run.tick(at_local(20, 0, day=2))
    assert evening.source_id != reminder.source_id


# ---------------------------------------------------------------------------------------------------------------
# identities, redelivery, memory
# ---------------------------------------------------------------------------------------------------------------


def _episode(run: Run) -> list[Signal]:
    run.hold(T0, 310, step=5.0, hr_bpm=125.0)
    run.hold(T0 + 310, 200, step=5.0, hr_bpm=90.0)
    run.event("fall", T0 + 600, "fall-x")
    run.device(T0 + 601, battery_pct=10.0)
    return run.signals


def test_the_same_input_gives_the_same_source_ids() -> None:
    first, second = _episode(Run()), _episode(Run())
    assert [s.source_id for s in first] == [s.source_id for s in second]
    assert len({s.source_id for s in first}) == len(first)
    assert next(s.source_id for s in first if s.kind == "hr_high") == f"hr_high:R1:{T0 + 300:.3f}"


def test_redelivered_readings_say_nothing_new() -> None:
    run = Run()
    run.hold(T0, 305, step=5.0, hr_bpm=125.0)
    before = len(run.signals)
    run.hold(T0, 305, step=5.0, hr_bpm=125.0)  # the same readings again
    assert len(run.signals) == before


def test_memory_per_resident_is_bounded() -> None:
    run = Run()
    for i in range(3000):
        run.vitals(T0 + i * 0.2, hr_bpm=60.0 + i * 0.01)  # strictly rising: the worst case for the rise window
        run.event("presence", T0 + i * 0.2, f"p-{i}")
    res = run.engine._residents["R1"]
    assert len(res.rise) <= RISE_MAX_POINTS
    assert len(res.seen) <= SEEN_EVENTS


def test_an_unknown_time_zone_does_not_stop_the_rules() -> None:
    run = Run(prof=profile(timezone="Mars/Olympus_Mons"))
    (geo,) = run.event("geofence_exit", T0)
    assert geo.kind == "geofence_exit"


# ---------------------------------------------------------------------------------------------------------------
# simulator scenarios, driven straight into the engine
# ---------------------------------------------------------------------------------------------------------------


def _scenario_observations(name: str, seed: int) -> tuple[list[Observation], list[GroundTruth], str]:
    scenario = load_scenario(name)
    built = build(scenario, seed=seed, start=T0, accel_override=lambda _d, _s: lambda _t0, _t1: iter(()))
    built.devices = [d for d in built.devices if d.device_id == scenario.bracelet_id]  # the bracelet's stream
    rid, hid = scenario.resident_id, scenario.home_id
    out: list[Observation] = []
    for e in stream(built):
        msg, did = e.message, e.device_id
        if e.control is Control.CONNECTION_LOST:  # the broker publishes the device's last will
            out.append(DeviceObservation(rid, hid, did, e.ts, online=False, offline_reason="last_will"))
        elif isinstance(msg, m.VitalsReading):
            out.append(
                VitalsObservation(
                    rid,
                    hid,
                    did,
                    msg.ts,
                    hr_bpm=msg.hr_bpm,
                    spo2_pct=msg.spo2_pct,
                    skin_temp_c=msg.skin_temp_c,
                    bp_systolic_mmhg=msg.bp_systolic_mmhg,
                    bp_diastolic_mmhg=msg.bp_diastolic_mmhg,
                    ppg_quality=msg.ppg_quality,
                    motion_g=msg.motion_g,
                )
            )
        elif isinstance(msg, m.BatteryStatus):
            out.append(DeviceObservation(rid, hid, did, msg.ts, battery_pct=msg.level_pct))
        elif isinstance(msg, m.WearStatus):
            out.append(DeviceObservation(rid, hid, did, msg.ts, worn=msg.worn))
        elif isinstance(msg, m.Availability):
            out.append(DeviceObservation(rid, hid, did, e.ts, online=msg.online))
        elif isinstance(msg, m.SosPress | m.OkPress):
            kind = "sos" if isinstance(msg, m.SosPress) else "ok"
            out.append(EventObservation(rid, hid, kind, f"{did}-{kind}-{int(msg.ts * 1000)}", msg.ts, device_id=did))
    return out, list(built.ground_truth), scenario.timezone


def _drive(observations: list[Observation], tz: str, until: float) -> list[Signal]:
    prof = ResidentProfile(resident_id=observations[0].resident_id, home_id=observations[0].home_id, timezone=tz)
    engine = RuleEngine(RULES)
    signals: list[Signal] = []
    next_tick = observations[0].ts
    for obs in observations:
        while next_tick < obs.ts:  # the service's ticker, every 10 s of scenario time
            signals += engine.tick(next_tick)
            next_tick += 10.0
        signals += engine.observe(obs, prof, obs.ts)
    while next_tick <= until:
        signals += engine.tick(next_tick)
        next_tick += 10.0
    return signals


def _first_raises(signals: list[Signal]) -> Iterator[Signal]:
    for s in signals:
        if s.action is RAISE and "@" not in s.source_id:
            yield s


@pytest.mark.parametrize(
    "name", ["hr-artefact-spike", "tachycardia", "spo2-88", "battery-dies", "bracelet-off-night", "sos-button"]
)
@pytest.mark.parametrize("seed", [1, 7])
def test_simulator_scenarios_meet_their_ground_truth(name: str, seed: int) -> None:
    observations, truth, tz = _scenario_observations(name, seed)
    last = max(o.ts for o in observations)
    end = last + 1800.0  # the bracelet's stream ends with the scenario: what follows is its silence
    signals = _drive(observations, tz, end)
    raised = list(_first_raises(signals))
    expectations = [g for g in truth if g.kind == "expect"]
    assert expectations
    for expect in expectations:
        start, within = expect.ts, expect.within_s or 120.0
        window = [s for s in raised if start - 1.0 <= s.ts <= start + within]
        for kind in expect.alerts:
            found = [s for s in window if s.kind == kind]
            assert found, f"{name}: expected {kind} within {within} s of {expect.what}"
            if expect.severity is not None:
                assert found[0].severity.value == expect.severity
        for kind in expect.no_alerts:
            assert not [s for s in window if s.kind == kind], f"{name}: {kind} must not be raised"
    if name == "tachycardia":
        assert len([s for s in raised if s.kind == "hr_high"]) == 1
    if name == "hr-artefact-spike":
        assert [s for s in signals if s.action is RAISE and s.severity.is_alarm and s.ts <= last] == []


# ---------------------------------------------------------------------------------------------------------------
# property: whatever arrives, nothing crashes and every signal is well formed
# ---------------------------------------------------------------------------------------------------------------

_KINDS = ["fall", "sos", "ok", "inactivity", "bed_exit", "night_wandering", "geofence_exit", "presence", "odd"]
_opt = st.none() | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@st.composite
def _observations(draw: st.DrawFn) -> list[tuple[Observation, float, str]]:
    t = T0
    items: list[tuple[Observation, float, str]] = []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.floats(0.0, 4000.0))
        ts = t + draw(st.floats(-600.0, 600.0))  # late, early, repeated timestamps
        rid = draw(st.sampled_from(["R1", "R2"]))
        status = draw(st.sampled_from(["active", "active", "away", "in_hospital"]))
        which = draw(st.integers(0, 2))
        obs: Observation
        if which == 0:
            obs = VitalsObservation(
                rid,
                "H1",
                draw(st.sampled_from(["B1", "B2"])),
                ts,
                hr_bpm=draw(_opt),
                spo2_pct=draw(_opt),
                skin_temp_c=draw(_opt),
                bp_systolic_mmhg=draw(_opt),
                bp_diastolic_mmhg=draw(_opt),
                ppg_quality=draw(st.none() | st.floats(0.0, 1.0)),
                motion_g=draw(st.none() | st.floats(0.0, 16.0)),
                summary=draw(st.booleans()),
            )
        elif which == 1:
            obs = EventObservation(
                rid,
                "H1",
                draw(st.sampled_from(_KINDS)),
                draw(st.sampled_from(["e1", "e2", "e3", f"e{t}"])),
                ts,
                room=draw(st.none() | st.sampled_from(["front_door", "hallway"])),
                value=draw(_opt),
            )
        else:
            obs = DeviceObservation(
                rid,
                "H1",
                draw(st.sampled_from(["B1", "B2", "PIR1"])),
                ts,
                online=draw(st.none() | st.booleans()),
                battery_pct=draw(st.none() | st.floats(0.0, 100.0)),
                worn=draw(st.none() | st.booleans()),
            )
        items.append((obs, t, status))
    return items


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=_observations(), scale=st.sampled_from([1, 2]), conditions=st.sampled_from([(), ("AF",), ("copd",)]))
def test_no_observation_sequence_crashes_and_signals_are_well_formed(
    items: list[tuple[Observation, float, str]], scale: int, conditions: tuple[str, ...]
) -> None:
    rules = parse_rules(_packaged() + '\n[residents.R2]\nmedication_times = ["08:00", "13:30"]\n')
    engine = RuleEngine(rules)
    signals: list[Signal] = []
    for obs, now, status in items:
        prof = ResidentProfile(
            obs.resident_id, "H1", status=status, spo2_scale=scale, conditions=conditions, timezone=TZ
        )
        signals += engine.observe(obs, prof, now)
        signals += engine.tick(now)
    raised: dict[tuple[str, str], bool] = {}
    for s in signals:
        assert isinstance(s.action, SignalAction)
        assert isinstance(s.severity, Severity)
        assert s.kind in rules.kinds()
        assert s.resident_id in ("R1", "R2")
        assert s.home_id == "H1"
        assert s.source_id
        assert s.rule_id
        assert math.isfinite(s.ts)
        assert s.value is None or isinstance(s.value, float)
        assert s.cancel_window_s >= 0.0
        assert (s.promote_after_s is None) == (s.promote_to is None)
        if s.action is CANCEL:
            assert s.kind == "fall"
        key = (s.resident_id, s.kind)
        if s.action is CLEAR and s.kind != "medication":
            assert raised.get(key), f"a CLEAR of {key} without a RAISE before it"
        if s.kind not in ("fall", "sos", "inactivity", "bed_exit", "night_wandering", "geofence_exit"):
            raised[key] = s.action is RAISE or (s.action is not CLEAR and raised.get(key, False))


def _packaged() -> str:
    return packaged_rules_text()
