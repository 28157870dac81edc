"""Vitals: gating by PPG quality and motion, smoothing, one valid summary per interval."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop import messages as m
from edge.vitals import VitalsSummarizer

T0 = 1_790_000_040.0  # 40 s into a minute


def summarizer(interval_s: float = 60.0) -> VitalsSummarizer:
    return VitalsSummarizer("br1", "r1", interval_s=interval_s, ppg_min_quality=0.6, motion_max_g=0.5)


def reading(
    ts: float, hr: float | None = 70, spo2: float | None = 97, quality: float = 0.9, **extra: object
) -> m.VitalsReading:
    return m.VitalsReading.model_validate(
        {"ts": ts, "hr_bpm": hr, "spo2_pct": spo2, "skin_temp_c": 33.0, "ppg_quality": quality, "motion_g": 0.02}
        | extra
    )


def feed(s: VitalsSummarizer, readings: list[m.VitalsReading]) -> list[m.VitalsSummary]:
    out: list[m.VitalsSummary] = []
    for r in readings:
        out += s.add(r, r.ts)
    return out


def test_low_quality_and_heavy_motion_readings_are_dropped_and_counted() -> None:
    s = summarizer()
    start = math.floor(T0 / 60) * 60 + 60  # the start of the next minute
    readings = [reading(start + 5 * k, hr=72) for k in range(12)]
    readings[3] = reading(start + 15, hr=160, spo2=85, quality=0.2)  # PPG locked onto the arm swing
    readings[7] = reading(start + 35, hr=150, quality=0.9, motion_g=0.9)  # clean-looking, but the arm is moving
    assert feed(s, readings) == []
    [summary] = s.tick(start + 62)
    assert summary.ts == start + 60
    assert summary.interval_s == 60
    assert summary.n_readings == 10
    assert summary.n_rejected == 2
    assert summary.hr_bpm == 72
    assert summary.hr_max_bpm == 72
    assert summary.spo2_min_pct == 97
    assert summary.skin_temp_c == 33.0  # the thermistor is not the PPG: kept
    assert summary.device_id == "br1"
    assert summary.resident_id == "r1"


def test_a_lone_spike_that_passes_the_gate_is_smoothed_away_a_sustained_change_is_not() -> None:
    s = summarizer()
    start = math.floor(T0 / 60) * 60 + 60
    spike = [reading(start + 5 * k, hr=180 if k == 5 else 70) for k in range(12)]
    feed(s, spike)
    [calm] = s.tick(start + 62)
    assert calm.hr_max_bpm == 70
    tachy = [reading(start + 60 + 5 * k, hr=135) for k in range(12)]
    feed(s, tachy)
    [fast] = s.tick(start + 122)
    assert fast.hr_max_bpm == 135
    assert fast.hr_bpm is not None
    assert fast.hr_bpm > 125


def test_one_summary_per_interval_closed_by_the_next_reading_or_by_a_tick() -> None:
    s = summarizer()
    start = math.floor(T0 / 60) * 60
    out = feed(s, [reading(start + 5 * k) for k in range(36)])  # three minutes
    assert [x.ts for x in out] == [start + 60, start + 120]  # the third is still open
    assert s.tick(start + 180) == []  # grace for a reading in transit
    [third] = s.tick(start + 182)
    assert third.ts == start + 180
    assert third.n_readings == 12
    assert s.tick(start + 500) == []


def test_a_reading_for_an_interval_already_summarised_is_counted_as_late() -> None:
    s = summarizer()
    start = math.floor(T0 / 60) * 60
    feed(s, [reading(start + 10), reading(start + 70)])
    assert s.add(reading(start + 50), start + 71) == []
    assert s.late == 1


def test_an_interval_with_only_rejected_readings_still_says_so() -> None:
    s = summarizer()
    start = math.floor(T0 / 60) * 60
    feed(s, [reading(start + 5 * k, hr=None, spo2=None, quality=0.05) for k in range(12)])
    [summary] = s.tick(start + 65)
    assert summary.n_readings == 0
    assert summary.n_rejected == 12
    assert summary.hr_bpm is None
    assert summary.spo2_pct is None
    assert summary.skin_temp_c == 33.0


def test_blood_pressure_is_gated_with_the_ppg_and_summarised_as_a_median_pair() -> None:
    s = summarizer()
    start = math.floor(T0 / 60) * 60
    good = [reading(start + 5 * k, bp_systolic_mmhg=120 + k, bp_diastolic_mmhg=80) for k in range(5)]
    bad = [reading(start + 30, quality=0.3, bp_systolic_mmhg=200, bp_diastolic_mmhg=130)]
    feed(s, good + bad)
    [summary] = s.tick(start + 65)
    assert (summary.bp_systolic_mmhg, summary.bp_diastolic_mmhg) == (122, 80)


def test_the_interval_must_fit_the_contract() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        summarizer(interval_s=7200)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(25, 250),
            st.floats(50, 100),
            st.floats(0, 1),
            st.floats(0, 2),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([5.0, 30.0, 60.0]),
)
def test_every_summary_satisfies_the_contract(values: list[tuple[float, float, float, float]], interval: float) -> None:
    s = summarizer(interval)
    out: list[m.VitalsSummary] = []
    for k, (hr, spo2, quality, motion) in enumerate(values):
        r = reading(T0 + 2.5 * k, hr=hr, spo2=spo2, quality=quality, motion_g=motion)
        out += s.add(r, r.ts)
    out += s.tick(T0 + 2.5 * len(values) + interval + 5)
    assert sum(x.n_readings + x.n_rejected for x in out) == len(values)
    for summary in out:
        again = m.VitalsSummary.model_validate(summary.model_dump())  # hr_min <= hr <= hr_max and the bounds
        assert again == summary
        if summary.hr_bpm is not None:
            assert summary.hr_min_bpm is not None
            assert summary.hr_max_bpm is not None
            assert summary.hr_min_bpm <= summary.hr_bpm <= summary.hr_max_bpm
        if summary.spo2_pct is not None:
            assert summary.spo2_min_pct is not None
            assert summary.spo2_min_pct <= summary.spo2_pct


def test_a_backlog_delivered_long_after_is_summarised_by_its_own_timestamps() -> None:
    """After a restart the home broker delivers what queued up: readings far behind the clock, arriving together."""
    summarizer = VitalsSummarizer("BR-1", "R-1", interval_s=60.0, ppg_min_quality=0.6, motion_max_g=0.5)
    base = 1_790_000_040.0 - 1_790_000_040.0 % 60
    now = base + 3600.0  # an hour later
    out = []
    for i in range(24):  # two minutes of readings every 5 s
        reading = m.VitalsReading(ts=base + 5 * i, hr_bpm=70.0, spo2_pct=97.0, ppg_quality=0.9)
        out += summarizer.add(reading, now + 0.001 * i)
        out += summarizer.tick(now + 0.001 * i)
    out += summarizer.tick(now + 10)
    assert [s.n_readings for s in out] == [12, 12]
    assert summarizer.late == 0
