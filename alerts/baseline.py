"""A person's own normal, by hour of the day: a bounded running estimate of a vital sign's mean and spread.

Population limits miss what is unusual *for this person*: 95 bpm is unremarkable by day and odd at 03:00 for
someone who sleeps at 55. `HourlyBaseline` keeps, for each of the 24 local hours, an exponentially weighted mean
and variance of the readings taken in that hour (West's incremental form), and counts on how many distinct, completed
local days the hour had data (the day in progress does not count: an unusual night must not vouch for itself). It
answers a z-score only once the hour has `min_days` such days behind it.

Weighting: each reading's weight is the time it stands for (the gap since the previous reading, capped) divided by
the memory (`memory_days` days' worth of that hour), so a 1 Hz raw stream and a 60 s summary stream learn at the
same pace. The first readings are averaged plainly (weight 1/n) until the time weight takes over, so the estimate
is not dragged by its first value; after `ROBUST_AFTER` readings a value is clipped to 3 sigma before it is learnt,
so an unusual night teaches the baseline little. Memory is 24 x 5 numbers per person and vital, whatever the data rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

HOURS = 24
#: Readings an hour needs before outliers are clipped to 3 sigma as they are learnt.
ROBUST_AFTER = 30


@dataclass(slots=True)
class HourlyBaseline:
    """Running mean / variance of one vital sign per local hour of the day, for one person."""

    memory_days: float = 14.0
    min_days: int = 7
    min_sd: float = 3.0  # a floor on the spread: a very steady person still gets a sensible z-score
    max_gap_s: float = 60.0  # a reading stands for at most this long (gaps are missing data, not weight)
    mean: list[float] = field(default_factory=lambda: [0.0] * HOURS)
    var: list[float] = field(default_factory=lambda: [0.0] * HOURS)
    count: list[int] = field(default_factory=lambda: [0] * HOURS)
    days: list[int] = field(default_factory=lambda: [0] * HOURS)
    last_day: list[int] = field(default_factory=lambda: [-1] * HOURS)
    last_ts: float = -math.inf

    def update(self, value: float, ts: float, local_day: int, hour: int) -> None:
        """Learn one reading taken at `ts` (UNIX s) on local day number `local_day`, in local hour `hour` (0-23)."""
        gap = ts - self.last_ts
        if gap <= 0.0:
            return  # a repeated or out-of-order reading teaches nothing new
        self.last_ts = ts
        if self.last_day[hour] != local_day:
            if self.last_day[hour] >= 0:
                self.days[hour] += 1  # the previous day with data in this hour is complete
            self.last_day[hour] = local_day
        n = self.count[hour] + 1
        self.count[hour] = n
        if n == 1:
            self.mean[hour] = value
            self.var[hour] = 0.0
            return
        mean = self.mean[hour]
        if n > ROBUST_AFTER:  # an outlier moves the estimate no more than one 3-sigma reading would
            reach = 3.0 * max(math.sqrt(self.var[hour]), self.min_sd)
            value = min(max(value, mean - reach), mean + reach)
        alpha = (gap if gap < self.max_gap_s else self.max_gap_s) / (self.memory_days * 3600.0)
        if alpha < 1.0 / n:
            alpha = 1.0 / n
        diff = value - mean
        step = alpha * diff
        self.mean[hour] += step
        self.var[hour] = (1.0 - alpha) * (self.var[hour] + diff * step)

    def ready(self, hour: int) -> bool:
        """Whether the hour has data from at least `min_days` distinct days before the current one."""
        return self.days[hour] >= self.min_days

    def sd(self, hour: int) -> float:
        """The hour's spread (standard deviation, floored at `min_sd`)."""
        return max(math.sqrt(self.var[hour]), self.min_sd)

    def zscore(self, value: float, hour: int) -> float | None:
        """How many (floored) standard deviations `value` lies from the hour's mean; None until the hour is ready."""
        if self.days[hour] < self.min_days:
            return None
        return (value - self.mean[hour]) / self.sd(hour)
