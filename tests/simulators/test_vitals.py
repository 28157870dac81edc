"""Bracelet vitals: baselines, circadian rhythm, effort, artefacts, overrides; always within the contract."""

from __future__ import annotations

import numpy as np

from careloop.codec import decode, encode
from careloop.messages import VitalsReading
from simulators.timeline import Activity, Posture, Segment
from simulators.vitals import Physiology, VitalsModel, VitalsOverride

T0 = 1_790_000_000.0


def _segment(activity: Activity) -> Segment:
    return Segment(T0 - 10, T0 + 100_000, activity, "living_room", Posture.SITTING)


def _series(
    model: VitalsModel, activity: Activity, hour: float, n: int = 200, step: float = 5.0
) -> list[VitalsReading]:
    return [model.reading(T0 + i * step, _segment(activity), hour) for i in range(n)]


def _median(readings: list[VitalsReading], field: str, min_quality: float = 0.6) -> float:
    values = [getattr(r, field) for r in readings if getattr(r, field) is not None and r.ppg_quality >= min_quality]
    return float(np.median(values))


def test_resting_heart_rate_follows_the_persons_baseline() -> None:
    slow = _series(VitalsModel(Physiology(hr_rest_bpm=58), np.random.default_rng(1)), Activity.RESTING, 10.0)
    fast = _series(VitalsModel(Physiology(hr_rest_bpm=82), np.random.default_rng(1)), Activity.RESTING, 10.0)
    assert 55 <= _median(slow, "hr_bpm") <= 70
    assert _median(fast, "hr_bpm") - _median(slow, "hr_bpm") == 24


def test_heart_rate_is_lower_asleep_at_night_and_higher_climbing_stairs() -> None:
    night = _series(VitalsModel(Physiology(), np.random.default_rng(2)), Activity.SLEEPING, 3.5)
    stairs = _series(VitalsModel(Physiology(), np.random.default_rng(2)), Activity.STAIRS, 11.0)
    day = _series(VitalsModel(Physiology(), np.random.default_rng(2)), Activity.RESTING, 11.0)
    assert _median(night, "hr_bpm") < _median(day, "hr_bpm") - 3
    assert _median(stairs, "hr_bpm") > _median(day, "hr_bpm") + 30
    assert _median(night, "skin_temp_c", 0.0) > _median(day, "skin_temp_c", 0.0)


def test_walking_produces_artefacts_with_low_quality_and_resting_barely_any() -> None:
    walking = _series(VitalsModel(Physiology(), np.random.default_rng(3)), Activity.WALKING, 10.0, n=500)
    resting = _series(VitalsModel(Physiology(), np.random.default_rng(3)), Activity.RESTING, 10.0, n=500)
    low_walking = sum(r.ppg_quality < 0.5 for r in walking)
    low_resting = sum(r.ppg_quality < 0.5 for r in resting)
    assert low_walking > 40
    assert low_resting < 25  # only dropouts
    assert any(r.hr_bpm is not None and r.hr_bpm > 100 and r.ppg_quality < 0.5 for r in walking)


def test_overrides_force_values_and_artefacts_come_with_low_quality() -> None:
    overrides = (
        VitalsOverride(T0 + 100, T0 + 700, hr_bpm=135),
        VitalsOverride(T0 + 800, T0 + 820, hr_bpm=160, artefact=True),
    )
    model = VitalsModel(Physiology(), np.random.default_rng(4), overrides)
    readings = _series(model, Activity.RESTING, 15.0, n=200)
    tachy = [r for r in readings if T0 + 100 <= r.ts < T0 + 700]
    spike = [r for r in readings if T0 + 800 <= r.ts < T0 + 820]
    assert all(130 <= (r.hr_bpm or 0) <= 140 and r.ppg_quality > 0.6 for r in tachy)
    assert spike
    assert all((r.hr_bpm or 0) > 150 and r.ppg_quality <= 0.3 for r in spike)


def test_every_reading_is_a_valid_wire_message() -> None:
    model = VitalsModel(Physiology(bp_systolic_mmhg=135, bp_diastolic_mmhg=85), np.random.default_rng(5))
    for activity in Activity:
        for reading in _series(model, activity, 2.0, n=20):
            decode(VitalsReading, encode(reading), now=reading.ts)
