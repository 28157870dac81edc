"""The per-hour baseline: it learns a person's normal by hour, needs enough days, and stays bounded."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from alerts.baseline import HOURS, HourlyBaseline

DAY = 86_400.0


def _feed_days(base: HourlyBaseline, days: int, hr_at_hour: dict[int, float], *, step_s: float = 60.0) -> float:
    """Feed `days` days of readings every `step_s` in the given hours (noise 2 bpm); returns the last ts."""
    rng = random.Random(1)
    ts = 0.0
    for day in range(days):
        for hour, hr in hr_at_hour.items():
            t = day * DAY + hour * 3600.0
            while t < day * DAY + (hour + 1) * 3600.0:
                base.update(hr + rng.gauss(0.0, 2.0), t, day, hour)
                ts = t
                t += step_s
    return ts


def test_not_ready_until_enough_days_before_today() -> None:
    base = HourlyBaseline(min_days=5)
    _feed_days(base, 5, {3: 55.0})
    assert not base.ready(3)  # four completed days, and today's
    assert base.zscore(90.0, 3) is None
    _feed_days_from(base, 5, 1, {3: 55.0})
    assert base.ready(3)
    assert base.zscore(90.0, 3) is not None
    assert not base.ready(4)  # an hour without data stays silent


def _feed_days_from(base: HourlyBaseline, first_day: int, days: int, hr_at_hour: dict[int, float]) -> None:
    for day in range(first_day, first_day + days):
        for hour, hr in hr_at_hour.items():
            t = day * DAY + hour * 3600.0
            for i in range(60):
                base.update(hr, t + 60.0 * i, day, hour)


def test_learns_each_hour_apart() -> None:
    base = HourlyBaseline(min_days=3)
    _feed_days(base, 4, {3: 55.0, 15: 80.0})
    assert math.isclose(base.mean[3], 55.0, abs_tol=1.0)
    assert math.isclose(base.mean[15], 80.0, abs_tol=1.0)
    assert 1.0 < math.sqrt(base.var[3]) < 3.0
    night = base.zscore(80.0, 3)
    day = base.zscore(80.0, 15)
    assert night is not None
    assert night > 5
    assert day is not None
    assert abs(day) < 1


def test_raw_and_summary_streams_learn_at_the_same_pace() -> None:
    fast, slow = HourlyBaseline(min_days=1, memory_days=2), HourlyBaseline(min_days=1, memory_days=2)
    for base, step in ((fast, 1.0), (slow, 60.0)):
        for day in range(20):
            value = 60.0 if day < 10 else 80.0  # the person's normal moves
            t = day * DAY
            while t < day * DAY + 3600.0:
                base.update(value, t, day, 0)
                t += step
    assert abs(fast.mean[0] - slow.mean[0]) < 1.0
    assert fast.mean[0] > 75.0  # two days of memory: ten days later it has moved most of the way


def test_spread_has_a_floor() -> None:
    base = HourlyBaseline(min_days=1, min_sd=3.0)
    _feed_days_from(base, 0, 2, {10: 70.0})  # perfectly constant
    assert base.sd(10) == 3.0
    z = base.zscore(79.0, 10)
    assert z is not None
    assert math.isclose(z, 3.0)


def test_out_of_order_readings_are_ignored() -> None:
    base = HourlyBaseline(min_days=1)
    base.update(70.0, 100.0, 0, 0)
    base.update(200.0, 50.0, 0, 0)
    base.update(200.0, 100.0, 0, 0)
    assert base.count[0] == 1
    assert base.mean[0] == 70.0


@given(st.lists(st.tuples(st.floats(0.001, 5000.0), st.floats(20.0, 250.0)), max_size=300))
def test_bounded_and_finite(steps: list[tuple[float, float]]) -> None:
    base = HourlyBaseline(min_days=1)
    ts = 0.0
    for gap, value in steps:
        ts += gap
        base.update(value, ts, int(ts // DAY), int(ts // 3600) % HOURS)
    assert len(base.mean) == HOURS
    assert all(math.isfinite(m) and v >= 0.0 for m, v in zip(base.mean, base.var, strict=True))
    for hour in range(HOURS):
        z = base.zscore(100.0, hour)
        assert z is None or math.isfinite(z)


def test_an_unusual_hour_teaches_the_baseline_little() -> None:
    base = HourlyBaseline(min_days=1, min_sd=3.0)
    _feed_days_from(base, 0, 3, {3: 55.0})
    for i in range(60):
        base.update(120.0, 3 * DAY + 3 * 3600.0 + 60.0 * i, 3, 3)
    assert base.mean[3] < 60.0
