"""Bracelet vitals: signal-quality gating, smoothing, and one `VitalsSummary` per bracelet per interval.

Gating: a wrist PPG sensor reads heart rate and SpO2 from light through the skin; with poor skin contact (low
`ppg_quality`) or while the arm moves (`motion_g`) it locks onto the movement or reads noise, producing values
that look plausible and are wrong (a 160 bpm "tachycardia" while clapping). A reading below `ppg_min_quality` or
above `motion_max_g` is *rejected*: its heart rate, SpO2 and blood pressure (a wrist cuffless pressure is derived
from the same PPG) are dropped and it is counted in `n_rejected`. Its skin temperature (a thermistor, not the
PPG) is kept. A reading without `motion_g` is judged on quality alone.

Smoothing: each signal goes through a running median of three (carried across intervals), which removes a lone
outlier that passed the gate while keeping a sustained change (a tachycardia) one reading late. The summary
carries the mean, minimum and maximum of the smoothed values (SpO2: mean and minimum), blood pressure as the
median.

Intervals are aligned on multiples of `interval_s` in Unix time (the same boundaries after a restart) and the
summary's `ts` is the interval's end. An interval is closed by the first reading of a later interval or by a
tick `grace_s` after its end once no reading has arrived for `grace_s` (a reading delayed in transit still makes
it, and a backlog delivered after a restart, arriving far behind the clock, is summarised by its own timestamps
instead of one reading per interval); a reading for an interval already closed is counted in `late` and dropped.
An interval with readings, even only rejected ones, gets a summary:
"the bracelet sends, but nothing usable" is worth knowing upstream.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from careloop import messages as m

_HR = (25.0, 250.0)
_SPO2 = (50.0, 100.0)
_SKIN = (20.0, 44.0)


@dataclass(slots=True)
class _Median3:
    """Running median of the last three values."""

    last: deque[float] = field(default_factory=lambda: deque(maxlen=3))

    def __call__(self, value: float) -> float:
        self.last.append(value)
        return statistics.median(self.last)


@dataclass(slots=True)
class _Interval:
    index: int
    hr: list[float] = field(default_factory=list)
    spo2: list[float] = field(default_factory=list)
    skin: list[float] = field(default_factory=list)
    systolic: list[int] = field(default_factory=list)
    diastolic: list[int] = field(default_factory=list)
    passed: int = 0
    rejected: int = 0


class VitalsSummarizer:
    """Gates, smooths and summarises one bracelet's `VitalsReading`s."""

    def __init__(
        self,
        device_id: str,
        resident_id: str | None,
        *,
        interval_s: float,
        ppg_min_quality: float,
        motion_max_g: float,
        grace_s: float = 2.0,
    ) -> None:
        if not 0 < interval_s <= 3600:
            raise ValueError("interval_s must be in (0, 3600] (the contract's summary interval)")
        self.device_id = device_id
        self.resident_id = resident_id
        self.interval_s = interval_s
        self.ppg_min_quality = ppg_min_quality
        self.motion_max_g = motion_max_g
        self.grace_s = grace_s
        self.late = 0  # readings for an interval already summarised
        self.rejected_bp = 0  # blood pressure left out because its median pair was inconsistent
        self._current: _Interval | None = None
        self._last_arrival = -math.inf  # receiver time of the last reading taken
        self._closed_up_to = -1  # highest interval index already summarised
        self._hr, self._spo2, self._skin = _Median3(), _Median3(), _Median3()

    def accepts(self, reading: m.VitalsReading) -> bool:
        """True when the reading's PPG values are trustworthy (quality high enough, arm still enough)."""
        if reading.ppg_quality < self.ppg_min_quality:
            return False
        return reading.motion_g is None or reading.motion_g <= self.motion_max_g

    def add(self, reading: m.VitalsReading, now: float) -> list[m.VitalsSummary]:
        """Take one reading; returns the summary of an interval it closed, if any."""
        index = math.floor(reading.ts / self.interval_s)
        if index <= self._closed_up_to:
            self.late += 1
            return []
        out = self.tick(now)
        self._last_arrival = now
        current = self._current
        if current is not None and index > current.index:
            out.append(self._close(current))
            current = None
        if current is None:
            current = self._current = _Interval(index)
        if reading.skin_temp_c is not None:
            current.skin.append(self._skin(reading.skin_temp_c))
        if not self.accepts(reading):
            current.rejected += 1
            return out
        current.passed += 1
        if reading.hr_bpm is not None:
            current.hr.append(self._hr(reading.hr_bpm))
        if reading.spo2_pct is not None:
            current.spo2.append(self._spo2(reading.spo2_pct))
        if reading.bp_systolic_mmhg is not None and reading.bp_diastolic_mmhg is not None:
            current.systolic.append(reading.bp_systolic_mmhg)
            current.diastolic.append(reading.bp_diastolic_mmhg)
        return out

    def tick(self, now: float) -> list[m.VitalsSummary]:
        """Close the current interval once `grace_s` past its end and `grace_s` after the last reading arrived."""
        current = self._current
        if current is None or now < (current.index + 1) * self.interval_s + self.grace_s:
            return []
        if now - self._last_arrival < self.grace_s:  # readings are still flowing in (a backlog): let data close it
            return []
        return [self._close(current)]

    def _close(self, interval: _Interval) -> m.VitalsSummary:
        self._current = None
        self._closed_up_to = max(self._closed_up_to, interval.index)
        hr_mean = hr_min = hr_max = spo2_mean = spo2_min = skin = None
        if interval.hr:
            hr_min, hr_max = _r1(min(interval.hr), *_HR), _r1(max(interval.hr), *_HR)
            hr_mean = min(max(_r1(statistics.fmean(interval.hr), *_HR), hr_min), hr_max)  # rounding stays inside
        if interval.spo2:
            spo2_min = _r1(min(interval.spo2), *_SPO2)
            spo2_mean = max(_r1(statistics.fmean(interval.spo2), *_SPO2), spo2_min)
        if interval.skin:
            skin = _r1(statistics.fmean(interval.skin), *_SKIN)
        systolic = diastolic = None
        if interval.systolic:
            systolic = round(statistics.median(interval.systolic))
            diastolic = round(statistics.median(interval.diastolic))
            if systolic <= diastolic:  # medians of the two series need not pair up; never send an impossible pair
                self.rejected_bp += 1
                systolic = diastolic = None
        return m.VitalsSummary(
            ts=(interval.index + 1) * self.interval_s,
            device_id=self.device_id,
            resident_id=self.resident_id,
            interval_s=float(self.interval_s),
            hr_bpm=hr_mean,
            hr_min_bpm=hr_min,
            hr_max_bpm=hr_max,
            spo2_pct=spo2_mean,
            spo2_min_pct=spo2_min,
            skin_temp_c=skin,
            bp_systolic_mmhg=systolic,
            bp_diastolic_mmhg=diastolic,
            n_readings=interval.passed,
            n_rejected=interval.rejected,
        )


def _r1(value: float, lo: float, hi: float) -> float:
    """Rounded to 0.1 and kept inside the contract's bounds."""
    return min(max(round(value, 1), lo), hi)
