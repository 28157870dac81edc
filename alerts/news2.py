"""NEWS2 (National Early Warning Score 2, Royal College of Physicians 2017), scored from what is known.

A bracelet measures heart rate, SpO2 and, on some models, a cuffless systolic pressure. It cannot count breaths,
judge consciousness or know whether oxygen is given, and its wrist *skin* temperature is not the body temperature
NEWS2 charts (a wrist reads 30-35 C in health, which the chart would score 3), so those parameters are missing.
Every NEWS2 parameter scores 0 or more, so a missing one can only add points: the partial score is a lower bound
of the full one, and ``News2Score.missing`` says which parameters it lacks.

Bands (RCP 2017 chart; "Royal College of Physicians. National Early Warning Score (NEWS) 2. London: RCP, 2017"),
points in brackets:

- respiration rate /min: <= 8 (3), 9-11 (1), 12-20 (0), 21-24 (2), >= 25 (3)
- SpO2 scale 1 %: <= 91 (3), 92-93 (2), 94-95 (1), >= 96 (0)
- SpO2 scale 2 %: <= 83 (3), 84-85 (2), 86-87 (1), 88-92 (0), >= 93 on air (0),
  93-94 on oxygen (1), 95-96 on oxygen (2), >= 97 on oxygen (3)
- air or oxygen: air (0), oxygen (2)
- systolic BP mmHg: <= 90 (3), 91-100 (2), 101-110 (1), 111-219 (0), >= 220 (3)
- pulse /min: <= 40 (3), 41-50 (1), 51-90 (0), 91-110 (1), 111-130 (2), >= 131 (3)
- consciousness: alert (0); new confusion, voice, pain, unresponsive (3)
- temperature C: <= 35.0 (3), 35.1-36.0 (1), 36.1-38.0 (0), 38.1-39.0 (1), >= 39.1 (2)

The chart is written in whole numbers (temperature in tenths); measured values are rounded half up to that
resolution before banding, as a nurse charting them would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: Every NEWS2 parameter, in chart order (the names ``News2Score.parameters`` and ``missing`` use).
PARAMETERS: tuple[str, ...] = (
    "respiration_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)

#: Why a partial score is a lower bound (put beside the missing parameters wherever a partial score is shown).
LOWER_BOUND_NOTE = "missing parameters can only add points, so the partial score is a lower bound"


@dataclass(frozen=True, slots=True)
class News2Score:
    """A NEWS2 score from the parameters that were available.

    ``parameters`` maps each scored parameter to its points; ``missing`` lists the others (their points, 0 to 3
    each, would only raise ``total``); ``any_three`` is the single-parameter red score (3 in one parameter).
    """

    total: int
    parameters: Mapping[str, int]
    missing: tuple[str, ...]
    any_three: bool

    @property
    def max_parameter(self) -> int:
        """The highest points any one scored parameter got (0 when none was scored)."""
        return max(self.parameters.values(), default=0)

    @property
    def complete(self) -> bool:
        """True when every parameter was scored (the total is the full NEWS2)."""
        return not self.missing


def _whole(value: float) -> int:
    """Round half up to a whole number, as the chart is read."""
    return math.floor(value + 0.5)


def score_pulse(hr_bpm: float) -> int:
    """Points for the pulse rate (per minute)."""
    hr = _whole(hr_bpm)
    if hr <= 40:
        return 3
    if hr <= 50:
        return 1
    if hr <= 90:
        return 0
    if hr <= 110:
        return 1
    if hr <= 130:
        return 2
    return 3


def score_spo2(spo2_pct: float, scale: int = 1, on_oxygen: bool | None = None) -> int:
    """Points for SpO2 on scale 1, or on scale 2 (hypercapnic respiratory failure, target 88-92 %).

    On scale 2, 93 % and above scores 0 on air and 1-3 on oxygen; an unknown oxygen status is scored as air, which
    keeps the score a lower bound.
    """
    spo2 = _whole(spo2_pct)
    if scale == 1:
        if spo2 <= 91:
            return 3
        if spo2 <= 93:
            return 2
        if spo2 <= 95:
            return 1
        return 0
    if scale != 2:
        raise ValueError(f"NEWS2 has SpO2 scales 1 and 2, not {scale!r}")
    if spo2 <= 83:
        return 3
    if spo2 <= 85:
        return 2
    if spo2 <= 87:
        return 1
    if spo2 <= 92 or not on_oxygen:
        return 0
    if spo2 <= 94:
        return 1
    if spo2 <= 96:
        return 2
    return 3


def score_systolic(bp_systolic_mmhg: float) -> int:
    """Points for the systolic blood pressure (mmHg)."""
    sys = _whole(bp_systolic_mmhg)
    if sys <= 90:
        return 3
    if sys <= 100:
        return 2
    if sys <= 110:
        return 1
    if sys <= 219:
        return 0
    return 3


def score_respiration(rate_per_min: float) -> int:
    """Points for the respiration rate (breaths per minute)."""
    rr = _whole(rate_per_min)
    if rr <= 8:
        return 3
    if rr <= 11:
        return 1
    if rr <= 20:
        return 0
    if rr <= 24:
        return 2
    return 3


def score_temperature(temperature_c: float) -> int:
    """Points for the body (core) temperature in degrees Celsius, read to one decimal."""
    tenths = _whole(temperature_c * 10.0)
    if tenths <= 350:
        return 3
    if tenths <= 360:
        return 1
    if tenths <= 380:
        return 0
    if tenths <= 390:
        return 1
    return 2


def score_consciousness(acvpu: str) -> int:
    """Points for the ACVPU level: "A" (alert) 0; "C" (new confusion), "V", "P", "U" 3."""
    level = acvpu.strip().upper()[:1]
    if level == "A":
        return 0
    if level in ("C", "V", "P", "U"):
        return 3
    raise ValueError(f"consciousness is one of A, C, V, P, U, not {acvpu!r}")


def news2_partial(
    *,
    hr_bpm: float | None = None,
    spo2_pct: float | None = None,
    temperature_c: float | None = None,
    bp_systolic_mmhg: float | None = None,
    respiration_rate: float | None = None,
    consciousness: str | None = None,
    spo2_scale: int = 1,
    on_oxygen: bool | None = None,
) -> News2Score:
    """Score NEWS2 from the parameters given (None: not measured); the rest are listed as missing.

    ``temperature_c`` is body temperature: do not pass a wrist skin temperature. ``on_oxygen`` None means unknown
    (missing "air or oxygen", and SpO2 on scale 2 scored as on air).
    """
    points: dict[str, int] = {}
    if respiration_rate is not None:
        points["respiration_rate"] = score_respiration(respiration_rate)
    if spo2_pct is not None:
        points["spo2"] = score_spo2(spo2_pct, spo2_scale, on_oxygen)
    elif spo2_scale not in (1, 2):
        raise ValueError(f"NEWS2 has SpO2 scales 1 and 2, not {spo2_scale!r}")
    if on_oxygen is not None:
        points["air_or_oxygen"] = 2 if on_oxygen else 0
    if bp_systolic_mmhg is not None:
        points["systolic_bp"] = score_systolic(bp_systolic_mmhg)
    if hr_bpm is not None:
        points["pulse"] = score_pulse(hr_bpm)
    if consciousness is not None:
        points["consciousness"] = score_consciousness(consciousness)
    if temperature_c is not None:
        points["temperature"] = score_temperature(temperature_c)
    missing = tuple(name for name in PARAMETERS if name not in points)
    ordered = {name: points[name] for name in PARAMETERS if name in points}
    return News2Score(
        total=sum(ordered.values()),
        parameters=MappingProxyType(ordered),
        missing=missing,
        any_three=any(value == 3 for value in ordered.values()),
    )
