"""Bracelet vital signs: a person's baselines, a circadian rhythm, coupling to effort, and a wrist sensor's flaws.

The model, per reading:
- heart rate = resting rate + circadian offset (lowest about 04:00, -5 bpm; highest about 16:00, +5 bpm)
  + effort (smoothed with a 60 s time constant, as the heart recovers) x the person's heart-rate reserve;
- SpO2 = baseline, about 1 point lower at night; skin temperature at the wrist rises at night (distal
  vasodilation) and follows effort slowly;
- a wrist PPG sensor's flaws: Gaussian noise; motion artefacts while moving (a reading locked to the step
  cadence or wildly off, with low `ppg_quality`); dropouts (no heart rate or SpO2, only skin temperature);
- scenario overrides (a sustained tachycardia, an SpO2 dip, a deliberate artefact spike) take precedence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from careloop.messages import VitalsReading
from simulators.timeline import EFFORT, MOVING, Activity, Segment

#: How much the wrist moves (RMS g, gravity removed) during each activity: the reading's `motion_g`.
MOTION_G: dict[Activity, float] = {
    Activity.SLEEPING: 0.004,
    Activity.LYING: 0.01,
    Activity.RESTING: 0.02,
    Activity.SITTING_DOWN: 0.2,
    Activity.STANDING: 0.05,
    Activity.WALKING: 0.25,
    Activity.STAIRS: 0.35,
    Activity.CLAPPING: 0.9,
    Activity.HITTING_TABLE: 0.6,
    Activity.FALL: 1.2,
    Activity.ON_FLOOR: 0.02,
    Activity.GETTING_UP: 0.3,
    Activity.OUT: 0.25,
}


@dataclass(frozen=True, slots=True)
class Physiology:
    """A resident's own baselines (what "normal" is for this person)."""

    hr_rest_bpm: float = 68.0
    hr_reserve_bpm: float = 60.0  # how far effort can raise the heart rate
    spo2_pct: float = 97.0
    skin_temp_c: float = 33.0
    bp_systolic_mmhg: int | None = None  # None: the bracelet does not measure blood pressure
    bp_diastolic_mmhg: int | None = None


@dataclass(frozen=True, slots=True)
class VitalsOverride:
    """From `start` to `end`, force a vital sign (a tachycardia, a desaturation) or produce a motion artefact."""

    start: float
    end: float
    hr_bpm: float | None = None
    spo2_pct: float | None = None
    artefact: bool = False  # the forced values come with low signal quality and heavy motion


class VitalsModel:
    """Produces one resident's bracelet readings over time; keep one instance per bracelet (it has state)."""

    def __init__(
        self,
        physiology: Physiology,
        rng: np.random.Generator,
        overrides: tuple[VitalsOverride, ...] = (),
        artefact_rate: float = 0.12,
        dropout_rate: float = 0.03,
    ) -> None:
        self.physiology = physiology
        self.overrides = overrides
        self.artefact_rate = artefact_rate
        self.dropout_rate = dropout_rate
        self._rng = rng
        self._effort = 0.0
        self._skin = physiology.skin_temp_c
        self._last_t: float | None = None

    def _override_at(self, t: float) -> VitalsOverride | None:
        for override in self.overrides:
            if override.start <= t < override.end:
                return override
        return None

    def reading(self, t: float, segment: Segment, local_hour: float) -> VitalsReading:
        """The reading the bracelet takes at time t while the person does `segment` (local time of day in hours)."""
        p, rng = self.physiology, self._rng
        first = self._last_t is None
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        effort = EFFORT[segment.activity]
        self._effort = effort if first else _lag(self._effort, effort, dt, 60.0)
        night = math.cos(2 * math.pi * (local_hour - 4.0) / 24.0)  # 1 at 04:00, -1 at 16:00
        target_skin = p.skin_temp_c + 0.8 * night - 0.8 * self._effort
        self._skin = target_skin if first else _lag(self._skin, target_skin, dt, 600.0)

        hr = p.hr_rest_bpm - 5.0 * night + self._effort * p.hr_reserve_bpm + rng.normal(0.0, 2.0)
        spo2 = p.spo2_pct - 0.5 * max(0.0, night) + rng.normal(0.0, 0.6)
        skin = self._skin + rng.normal(0.0, 0.1)
        motion = MOTION_G[segment.activity] * float(rng.uniform(0.6, 1.4))
        quality = float(np.clip(0.93 - 0.8 * motion + rng.normal(0.0, 0.03), 0.0, 1.0))
        hr_out: float | None = hr
        spo2_out: float | None = spo2

        override = self._override_at(t)
        if override is not None:
            if override.hr_bpm is not None:
                hr_out = override.hr_bpm + rng.normal(0.0, 1.5)
            if override.spo2_pct is not None:
                spo2_out = override.spo2_pct + rng.normal(0.0, 0.4)
            if override.artefact:
                quality = float(rng.uniform(0.1, 0.3))
                motion = float(rng.uniform(0.5, 1.0))
        elif segment.activity in MOVING and rng.random() < self.artefact_rate:
            # The PPG locks onto the arm swing, or reads noise: a plausible-looking but wrong value.
            cadence = float(rng.uniform(100.0, 125.0))
            hr_out = cadence if rng.random() < 0.6 else float(rng.uniform(40.0, 190.0))
            spo2_out = float(rng.uniform(84.0, 99.0))
            quality = float(rng.uniform(0.1, 0.4))
        elif rng.random() < self.dropout_rate:
            hr_out = spo2_out = None
            quality = float(rng.uniform(0.0, 0.15))

        bp_sys = bp_dia = None
        if p.bp_systolic_mmhg is not None and p.bp_diastolic_mmhg is not None:
            bp_sys = round(float(p.bp_systolic_mmhg + 8.0 * self._effort - 4.0 * night + rng.normal(0.0, 4.0)))
            bp_dia = round(float(p.bp_diastolic_mmhg + 3.0 * self._effort - 2.0 * night + rng.normal(0.0, 3.0)))
            bp_dia = min(bp_dia, bp_sys - 10)
        return VitalsReading(
            ts=round(t, 3),
            hr_bpm=None if hr_out is None else float(round(np.clip(hr_out, 30.0, 240.0))),
            spo2_pct=None if spo2_out is None else float(round(np.clip(spo2_out, 70.0, 100.0))),
            skin_temp_c=round(float(np.clip(skin, 24.0, 40.0)), 1),
            bp_systolic_mmhg=bp_sys,
            bp_diastolic_mmhg=bp_dia,
            ppg_quality=round(quality, 2),
            motion_g=round(float(np.clip(motion, 0.0, 16.0)), 3),
        )


def _lag(current: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: move `current` toward `target` over `dt` seconds with time constant `tau`."""
    return target + (current - target) * math.exp(-dt / tau)
