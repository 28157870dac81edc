"""Fall detection from a wearable accelerometer (bracelet at the wrist, belt clip or pendant at the waist).

One `FallDetector` per device, fed consecutive chunks of samples (the agent gets one AccelBatch a second). Memory
is bounded (a buffer of about 20 s of signal) and the work per chunk is a handful of vectorised numpy calls; the
costlier stage runs only for candidate impacts:

1. trigger: every sample's magnitude |a| goes into the buffer; a sample of at least `trigger_g` that is the
   largest within +-`peak_window_s` is a candidate impact (a fall's impact is the largest peak around it);
2. wait `post_s` after the candidate (3 s at the wrist, 2.5 s at the waist), so that what follows the impact is
   known: a fallen person lies still, in a new orientation; a jogger jogs on, a clapping hand claps on;
3. gates: a device still shaken hard 1.5 s after the candidate is moving on, not lying after a fall; a peak no
   larger than those of the seconds before is a step or a clap among others; both are rejected without computing
   anything else (this keeps walking, jogging and clapping cheap); the limits are learned from the training falls;
4. features, all independent of how the device is worn (magnitude, free-fall dip, impact peak and jerk, activity
   before and after, stillness, change of the gravity vector's direction), then a score per placement, boosted
   oblivious trees at the wrist and a logistic regression at the waist (`falls_model.json`, made by
   `edge/train_falls.py` from the shared WEDA-FALL and SisFall recordings);
5. a candidate whose score reaches the model's threshold is a `FallDetection`: impact time, confidence, the named
   features, and the signal from 10 s before the impact to the last sample seen. After a detection the detector
   keeps quiet for `refractory_s`, so one fall (its bounces, the struggle on the floor) gives one detection.

Latency: a fall is reported with the chunk that completes its post-impact window, 3-4 s (wrist) or 2.5-3.5 s
(waist) after the impact with 1-s chunks, well inside the alarm's 30-s cancel window.

    detector = FallDetector("wrist")
    for batch in batches:
        for fall in detector.update(np.asarray(batch.samples_g), batch.t0): ...
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from careloop import messages as m
from edge.models import FallDetection, Placement
from edge.resample import StreamResampler

Array = npt.NDArray[np.float64]

#: The committed parameters of both placements' models (see `edge/train_falls.py`).
MODEL_PATH = Path(__file__).with_name("falls_model.json")
#: Chunks whose t0 is this far from where the previous chunk ended start a new stream (a gap or a device reset).
MAX_JITTER_S = 0.1
_DEG = 180.0 / math.pi


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """The hand-set signal processing of one placement (seconds and g); the model is trained on its output."""

    post_s: float  # observation after a candidate impact before deciding
    trigger_g: float = 1.6  # below every fall peak in the recordings (lowest: 1.78 g)
    peak_window_s: float = 1.0  # a candidate is the largest |a| within +- this
    context_s: float = 4.0  # signal before the impact the features look at
    clip_before_s: float = 10.0  # clip from this long before the impact
    refractory_s: float = 30.0  # no second detection this soon after an impact

    def to_json(self) -> dict[str, float]:
        """The settings as a JSON object."""
        return dataclasses.asdict(self)


DEFAULT_SETTINGS: Mapping[Placement, DetectorSettings] = {
    "wrist": DetectorSettings(post_s=3.0),
    "waist": DetectorSettings(post_s=2.5),
}


# ---------------------------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------------------------
#: Features reported with a detection (their raw values, in the units their names say).
CORE_FEATURES = (
    "peak_g",  # |a| at the impact
    "pre_min_g",  # lowest |a| in the second before: the free-fall dip
    "free_fall_area_gs",  # integral of (1 - |a|)+ over 1.5 s before: speed lost to free fall, g s
    "pre_velocity_gs",  # integral of (|a| - 1) over 1 s before
    "free_fall_s",  # time below 0.6 g in the 1.5 s before
    "impact_jerk_g",  # largest sample-to-sample change of |a| within +-0.2 s
    "impact_vector_jerk_g",  # ... of the acceleration vector
    "impact_energy_g2s",  # integral of (|a| - 1)^2 from 0.5 s before to 0.7 s after
    "impact_width_s",  # time above half the peak within +-0.3 s
    "peak_over_pre",  # peak / largest |a| from 3 s to 0.3 s before (a peak among equals is a step or a clap)
    "peak_over_post",  # peak / largest |a| from 0.3 s after to the decision
    "pre_std_g",  # std of |a| from 3 s to 1 s before
    "pre_energy_g2s",  # integral of (|a| - 1)^2 from 3 s to 0.7 s before
    "pre_peaks",  # samples above max(1.5 g, half the peak) from 3 s to 0.3 s before
    "post_peaks",  # ... from 0.3 s after to the decision
    "post_std_g",  # std of |a| from 0.5 s after to the decision
    "post_dev_g",  # mean | |a| - 1 | over the same
    "late_std_g",  # std of |a| from 1.5 s after to the decision: lying still?
    "late_axis_std_g",  # norm of the per-axis std over the same (turning counts too)
    "last_dev_g",  # mean | |a| - 1 | in the last second before the decision
    "late_max_g",  # largest |a| from 1 s after to the decision
    "orientation_change_deg",  # gravity direction 2.5-1.2 s before vs 1.5 s after to the decision
    "orientation_change_near_deg",  # 1.5-0.5 s before vs 0.5 s after to the decision
    "descent_rotation_deg",  # 1-0.5 s before vs 0.5-0.1 s before
    "pre_axis_std_g",  # norm of the per-axis std from 3 s to 1 s before
    "post_mean_g",  # mean |a| from 0.5 s after to the decision
)
#: Scale features that enter the model as logarithms.
_LOG = frozenset(
    {
        *("peak_g", "impact_jerk_g", "impact_vector_jerk_g", "impact_energy_g2s", "peak_over_pre", "peak_over_post"),
        *("pre_std_g", "pre_energy_g2s", "post_std_g", "post_dev_g", "late_std_g", "late_axis_std_g"),
        *("last_dev_g", "late_max_g", "pre_axis_std_g"),
    }
)
_COUNTS = frozenset({"pre_peaks", "post_peaks"})
#: |a| >= 0.6 g (no free fall) exactly when |a| > this
_BELOW_FREE_FALL_G = float(np.nextafter(0.6, 0.0))
_ONES3 = np.ones(3)
_ACT_FROM_S, _ACT_BIN_S = -2.5, 0.25  # the activity profile: quarter seconds from 2.5 s before the impact
_TILT_FROM_S, _TILT_BIN_S = -3.0, 0.5  # the tilt profile: half seconds from 3 s before the impact


def raw_split_value(name: str, value: float) -> float:
    """Where a feature's raw value makes its model input reach `value`: input >= value exactly when raw >= this.

    Every transform of `FeatureExtractor.model_input` is increasing, so a tree can ask its question of the raw
    value and no logarithm needs taking to score a candidate.
    """
    if name in _LOG:  # log(max(f, 1e-3))
        edge = math.exp(value)
        return edge if edge > 1e-3 else -math.inf
    if name in _COUNTS:  # log(1 + f)
        return math.expm1(value)
    if name.startswith("act_"):  # log(f + 0.01)
        return math.exp(value) - 0.01
    if name.startswith("tilt_"):  # clipped to [-1, 1]
        return -math.inf if value <= -1.0 else math.inf if value > 1.0 else value
    return value


def _bin_name(prefix: str, start_s: float) -> str:
    sign = "m" if start_s < 0 else "p"
    return f"{prefix}_{sign}{round(abs(start_s) * 100):03d}"


def _bin_starts(first_s: float, width_s: float, until_s: float) -> list[float]:
    return [first_s + i * width_s for i in range(round((until_s - first_s) / width_s))]


def feature_names(settings: DetectorSettings) -> tuple[str, ...]:
    """Every feature the model sees, in order: the core features, then the activity and tilt profiles.

    `act_m250` is log(mean | |a| - 1 | + 0.01) over the quarter second from -2.50 s, up to the decision;
    `tilt_m300` the cosine between the mean acceleration vector of the half second from -3.00 s and the one from
    1.5 s after the impact to the decision (where the gravity vector ended up), up to the decision.
    """
    act = tuple(_bin_name("act", s) for s in _bin_starts(_ACT_FROM_S, _ACT_BIN_S, settings.post_s))
    tilt = tuple(_bin_name("tilt", s) for s in _bin_starts(_TILT_FROM_S, _TILT_BIN_S, settings.post_s))
    return CORE_FEATURES + act + tilt


def _turn_deg(ca: list[float], cb: list[float], cc: list[float], cd: list[float]) -> float:
    """The angle in degrees between the summed acceleration vectors of two windows, each between two boundaries
    (rows 2-4 of `FeatureExtractor.compute`'s sums); 0 when either is zero."""
    ux, uy, uz = cb[2] - ca[2], cb[3] - ca[3], cb[4] - ca[4]
    vx, vy, vz = cd[2] - cc[2], cd[3] - cc[3], cd[4] - cc[4]
    norms = math.sqrt((ux * ux + uy * uy + uz * uz) * (vx * vx + vy * vy + vz * vz))
    if norms < 1e-12:
        return 0.0
    return math.acos(min(1.0, max(-1.0, (ux * vx + uy * vy + uz * vz) / norms))) * _DEG


class FeatureExtractor:
    """Computes a candidate's features from the signal around it, with a fixed plan made once per detector.

    The window holds `context` samples before the impact, the impact (index `context`) and the rest of the post
    window: `x` (context + post, 3) and its magnitude `mag`. Sums, means and variances over the feature windows
    come from one pass of partial sums over a few per-sample rows, so a candidate costs a few dozen microseconds.
    """

    def __init__(self, settings: DetectorSettings, rate_hz: float) -> None:
        self.settings = settings
        self.rate_hz = rate_hz
        self.names = feature_names(settings)
        self.context = round(settings.context_s * rate_hz)
        self.post = round(settings.post_s * rate_hz)
        if round(3.0 * rate_hz) > self.context or self.post < round(1.5 * rate_hz) + 2:
            raise ValueError("context_s must cover 3 s before the impact and post_s at least 1.5 s after")
        self.size = end = self.context + self.post
        self.late_start = self.at(1.5)  # the late post-impact window: from 1.5 s after the impact
        at = self.at
        self._second = round(rate_hz)
        # sample ranges read directly
        self._pre1 = (at(-1.0), self.context)
        self._around = (at(-0.2), at(0.2) + 1)
        self.pre_far = (at(-3.0), at(-0.3))  # the window `peak_over_pre` compares the peak with
        self._post_near = (at(0.3), end)
        self._late_max = (at(1.0), end)
        # every window sum and both profiles come from the rows summed between consecutive boundaries (one
        # np.add.reduceat) times one small matrix, `_plan`: its first columns sum the segments from the first
        # boundary (3 s before the impact) up to each named boundary, so that a window's sum is the difference of
        # two of them; then a column per activity bin (the mean ||a| - 1| over it, row 0) and per tilt bin (the
        # summed vector, rows 2-4)
        act = [at(t) for t in _bin_starts(_ACT_FROM_S, _ACT_BIN_S, settings.post_s)] + [end]
        tilt = [at(t) for t in _bin_starts(_TILT_FROM_S, _TILT_BIN_S, settings.post_s)] + [end]
        named = [at(s) for s in (-3.0, -2.5, -1.5, -1.2, -1.0, -0.7, -0.5, -0.3, -0.1, 0.0, 0.3, 0.5, 0.7, 1.5)]
        named += [end - self._second, end]
        edges = sorted({*named, *act, *tilt})
        self._first = first = edges[0]
        if first < 0 or edges[-1] != end:
            raise ValueError("the feature windows do not fit the context and post windows")
        self._segments = np.array(edges[:-1]) - first  # where each summed segment starts in compute()'s rows
        starts, stops = np.array(edges[:-1]), np.array(edges[1:])
        n_named, n_act, n_tilt = len(named), len(act) - 1, len(tilt) - 1
        self._plan = np.zeros((len(starts), n_named + n_act + n_tilt))
        for j, edge in enumerate(named):
            self._plan[stops <= edge, j] = 1.0
        for j, (start, stop) in enumerate(itertools.pairwise(act)):
            self._plan[(starts >= start) & (stops <= stop), n_named + j] = 1.0 / (stop - start)
        for j, (start, stop) in enumerate(itertools.pairwise(tilt)):
            self._plan[(starts >= start) & (stops <= stop), n_named + n_act + j] = 1.0
        self._n_named = n_named
        self._n_pre, self._n_late, self._n_post = at(-1.0) - at(-3.0), end - self.late_start, end - at(0.5)
        self._n_fall, self._n_velocity = at(0.0) - at(-1.5), at(0.0) - at(-1.0)
        self._n_impact, self._n_calm = at(0.7) - at(-0.5), at(-0.7) - at(-3.0)
        n_core = len(CORE_FEATURES)
        self._n_act = n_act
        self._act_slice = slice(n_core, n_core + n_act)
        self._tilt_slice = slice(n_core + n_act, n_core + n_act + n_tilt)
        if self._tilt_slice.stop != len(self.names):
            raise ValueError("the activity and tilt profiles do not fill the feature vector")
        # the core features that enter the model as log(max(f, 1e-3)), and as log(1 + f)
        self._log_index = np.array([i for i, name in enumerate(CORE_FEATURES) if name in _LOG])
        self._count_index = np.array([i for i, name in enumerate(CORE_FEATURES) if name in _COUNTS])

    def at(self, seconds: float) -> int:
        """Window index of a time relative to the impact."""
        return self.context + round(seconds * self.rate_hz)

    def compute(self, x: Array, mag: Array) -> tuple[list[float], Array]:
        """The core features and the raw feature vector: the core features, then the activity bins' mean
        | |a| - 1 | and the tilt bins' cosines (`model_input` makes the model's input of it).

        Every numpy call costs about a microsecond whatever its size here, so the work is laid out for few calls:
        the rows are ordered so that one call squares four of them and one makes the three indicator rows, and
        every window sum and both profiles come from one np.add.reduceat and one small matrix product.
        """
        r = self.rate_hz
        peak = float(mag[self.context])
        # rows: ||a|-1|, |a|, x, y, z, |a|^2, x^2, y^2, z^2, then 1 where |a| >= 0.6 (no free fall), > max(1.5 g,
        # half the peak) (peaks), > halfway from 1 g to the peak (the impact's width); the sums of |a|-1, (|a|-1)^2
        # and (1-|a|)+ over a window of n samples follow from them: S|a| - n, S|a|^2 - 2 S|a| + n and
        # (S||a|-1| - S|a| + n) / 2. From the first boundary on (3 s before the impact): what the sums need
        o = self._first
        rows = np.empty((12, self.size - o))  # per call: an extractor is shared by every detector of its settings
        rows[1] = mag[o:]
        rows[2:5] = x[o:].T
        np.multiply(rows[1:5], rows[1:5], out=rows[5:9])
        np.subtract(rows[1], 1.0, out=rows[0])
        np.abs(rows[0], out=rows[0])
        levels = np.array(((_BELOW_FREE_FALL_G,), (max(1.5, 0.5 * peak),), (0.5 + 0.5 * peak,)))
        np.greater(rows[1], levels, out=rows[9:12])
        # the rows summed from the first boundary to each boundary, as Python floats: a window's sum is the
        # difference of two of them
        summed = np.add.reduceat(rows, self._segments, axis=1) @ self._plan
        sums = summed[:, : self._n_named].T.tolist()
        m25, m15, m12, m10, m07, m05, m03, m01, at0, p03, p05, p07, p15, last, end = sums[1:]
        m30 = sums[0]  # all zeros: the first boundary
        n_pre, n_late, n_post = self._n_pre, self._n_late, self._n_post
        n_fall, n_velocity, n_impact, n_calm = self._n_fall, self._n_velocity, self._n_impact, self._n_calm

        a, b = self._around[0] - o, self._around[1] - o
        steps = rows[1:5, a + 1 : b] - rows[1:5, a : b - 1]  # sample to sample: |a| (row 0) and the vector
        steps *= steps
        vector_steps = _ONES3.dot(steps[1:4])
        # maxima and minima as `w.item(w.argmax())`: an array's own argmax costs a third of a ufunc's reduction
        jerk2, vector_jerk2 = _largest(steps[0]), _largest(vector_steps)
        (pf0, pf1), (pn0, pn1), (pl0, pl1), (p10, p11) = self.pre_far, self._post_near, self._late_max, self._pre1
        pre_max, post_max, late_max = _largest(mag[pf0:pf1]), _largest(mag[pn0:pn1]), _largest(mag[pl0:pl1])
        pre_min = mag[p10:p11]
        after = (end[2] - p15[2], end[3] - p15[3], end[4] - p15[4])
        values = [
            peak,  # peak_g
            pre_min.item(pre_min.argmin()),  # pre_min_g
            ((at0[0] - m15[0]) - (at0[1] - m15[1]) + n_fall) / (2 * r),  # free_fall_area_gs
            ((at0[1] - m10[1]) - n_velocity) / r,  # pre_velocity_gs
            (n_fall - (at0[9] - m15[9])) / r,  # free_fall_s
            math.sqrt(jerk2),  # impact_jerk_g
            math.sqrt(vector_jerk2),  # impact_vector_jerk_g
            ((p07[5] - m05[5]) - 2 * (p07[1] - m05[1]) + n_impact) / r,  # impact_energy_g2s
            (p03[11] - m03[11]) / r,  # impact_width_s
            peak / max(pre_max, 1e-3),  # peak_over_pre
            peak / max(post_max, 1e-3),  # peak_over_post
            _std(m30, m10, n_pre),  # pre_std_g
            ((m07[5] - m30[5]) - 2 * (m07[1] - m30[1]) + n_calm) / r,  # pre_energy_g2s
            m03[10] - m30[10],  # pre_peaks
            end[10] - p03[10],  # post_peaks
            _std(p05, end, n_post),  # post_std_g
            (end[0] - p05[0]) / n_post,  # post_dev_g
            _std(p15, end, n_late),  # late_std_g
            _axis_std(p15, end, n_late),  # late_axis_std_g
            (end[0] - last[0]) / self._second,  # last_dev_g
            late_max,  # late_max_g
            _turn_deg(m25, m12, p15, end),  # orientation_change_deg
            _turn_deg(m15, m05, p05, end),  # orientation_change_near_deg
            _turn_deg(m10, m05, m05, m01),  # descent_rotation_deg
            _axis_std(m30, m10, n_pre),  # pre_axis_std_g
            (end[1] - p05[1]) / n_post,  # post_mean_g
        ]
        raw = np.empty(len(self.names))
        raw[: len(values)] = values
        profiles = self._n_named + self._n_act  # where the tilt bins' columns start
        raw[self._act_slice] = summed[0, self._n_named : profiles]  # the activity bins' mean ||a|-1|
        # the cosine between each tilt bin's vector and where gravity ended up (`after`); 0 for a zero vector
        bins = summed[2:5, profiles:]  # (3, bins): the summed acceleration vector per bin
        norms = np.vecdot(bins.T, bins.T)
        norms *= after[0] * after[0] + after[1] * after[1] + after[2] * after[2]
        np.sqrt(norms, out=norms)
        np.maximum(norms, 1e-12, out=norms)
        np.divide(np.array(after) @ bins, norms, out=raw[self._tilt_slice])
        return values, raw

    def model_input(self, raw: Array) -> Array:
        """The model's input vector of a raw feature vector: logarithms of the scale features, log(1 + n) of the
        counts, log(mean + 0.01) of the activity bins, the tilt cosines within [-1, 1]."""
        vector = raw.copy()
        scale, counts, act, tilt = self._log_index, self._count_index, self._act_slice, self._tilt_slice
        vector[scale] = np.log(np.maximum(vector[scale], 1e-3))
        vector[counts] = np.log1p(vector[counts])
        vector[act] = np.log(vector[act] + 0.01)
        vector[tilt] = np.clip(vector[tilt], -1.0, 1.0)
        return vector


def _largest(values: Array) -> float:
    """The largest of `values` (non-empty), for a fraction of the cost of np.max on a few hundred numbers."""
    return float(values.item(values.argmax()))


def _std(ca: list[float], cb: list[float], n: int) -> float:
    """The std of |a| (rows 1 and 5) over the n samples between two boundaries."""
    mean = (cb[1] - ca[1]) / n
    return math.sqrt(max((cb[5] - ca[5]) / n - mean * mean, 0.0))


def _axis_std(ca: list[float], cb: list[float], n: int) -> float:
    """The norm of the per-axis std (rows 2-4 and 6-8) over the n samples between two boundaries."""
    mx, my, mz = (cb[2] - ca[2]) / n, (cb[3] - ca[3]) / n, (cb[4] - ca[4]) / n
    var = ((cb[6] - ca[6]) / n - mx * mx) + ((cb[7] - ca[7]) / n - my * my) + ((cb[8] - ca[8]) / n - mz * mz)
    return math.sqrt(max(var, 0.0))


@cache
def feature_extractor(settings: DetectorSettings, rate_hz: float) -> FeatureExtractor:
    """The (stateless) feature extractor of these settings, made once per process."""
    return FeatureExtractor(settings, rate_hz)


# ---------------------------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------------------------
def _rounded(values: npt.NDArray[Any], digits: int = 9) -> list[float]:
    """Numbers for the parameters file: 9 significant digits by default, what float32 would keep."""
    return [float(f"{v:.{digits}g}") for v in values.ravel()]


@dataclass(frozen=True)
class LogisticRegression:
    """A linear score over the features: coef . (f - mean) / scale + intercept."""

    mean: Array
    scale: Array
    coef: Array
    intercept: float

    KIND = "logistic regression"

    def check(self, n_features: int) -> None:
        """Raise ValueError unless the parameters fit `n_features` features."""
        for name in ("mean", "scale", "coef"):
            if getattr(self, name).shape != (n_features,):
                raise ValueError(f"the logistic regression's {name} must have {n_features} values")

    def score(self, vector: Array) -> float:
        """The logit of one feature vector."""
        return float(((vector - self.mean) / self.scale) @ self.coef) + self.intercept

    def scores(self, rows: Array) -> Array:
        """The logits of (n, d) feature rows."""
        return np.asarray(((rows - self.mean) / self.scale) @ self.coef + self.intercept, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        """The parameters as a JSON object."""
        return {
            "kind": self.KIND,
            "mean": _rounded(self.mean),
            "scale": _rounded(self.scale),
            "coef": _rounded(self.coef),
            "intercept": float(f"{self.intercept:.9g}"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LogisticRegression:
        """Parameters from their JSON object."""
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            coef=np.asarray(data["coef"], dtype=np.float64),
            intercept=float(data["intercept"]),
        )


_LITTLE_U32 = np.dtype("<u4")
_GATHER_4 = np.uint32((1 << 27) | (1 << 18) | (1 << 9) | 1)  # see ObliviousTrees.score


@dataclass(frozen=True)
class ObliviousTrees:
    """Boosted oblivious decision trees: a sum of small trees that each ask the same `depth` questions of every
    candidate, "is feature `split_feature[t, l]` at least `split_value[t, l]`?", and add the leaf value that the
    answers pick (the answers read as a binary number, the first question the most significant bit).

    Every tree answers with a handful of numpy operations for the whole ensemble, a few microseconds per scored
    candidate; 150 trees of depth 4 are 3,600 numbers (about 29 KB as float64).
    """

    split_feature: npt.NDArray[np.intp]  # (trees, depth)
    split_value: Array  # (trees, depth)
    leaf_value: Array  # (trees, 2 ** depth)
    base: float  # added to the sum of the leaves
    # flat copies for the scoring path: features and values of every split, the leaves, the weight of each answer
    # in a leaf's number, and where each tree's leaves start in the flat array
    _features: npt.NDArray[np.intp] = field(init=False, repr=False, compare=False)
    _values: Array = field(init=False, repr=False, compare=False)
    _leaves: Array = field(init=False, repr=False, compare=False)
    _bits: npt.NDArray[np.intp] = field(init=False, repr=False, compare=False)
    _offsets: npt.NDArray[np.intp] = field(init=False, repr=False, compare=False)
    _ones: Array = field(init=False, repr=False, compare=False)  # the leaves' sum as a dot product: faster here

    KIND = "boosted oblivious trees"

    def __post_init__(self) -> None:
        trees, depth = self.split_feature.shape
        if self.split_value.shape != (trees, depth) or self.leaf_value.shape != (trees, 1 << depth):
            raise ValueError("the trees' split values must match their split features, with 2 ** depth leaves each")
        object.__setattr__(self, "_features", self.split_feature.ravel())
        object.__setattr__(self, "_values", self.split_value.ravel())
        object.__setattr__(self, "_leaves", self.leaf_value.ravel())
        object.__setattr__(self, "_bits", (1 << np.arange(depth - 1, -1, -1)).astype(np.intp))
        object.__setattr__(self, "_offsets", np.arange(trees, dtype=np.intp) << depth)
        object.__setattr__(self, "_ones", np.ones(trees))

    @property
    def shape(self) -> tuple[int, int]:
        """(trees, depth)."""
        trees, depth = self.split_feature.shape
        return trees, depth

    def check(self, n_features: int) -> None:
        """Raise ValueError unless every split asks about one of `n_features` features."""
        used = self.split_feature
        if used.size and not 0 <= int(used.min()) <= int(used.max()) < n_features:
            raise ValueError(f"the trees split on features outside the {n_features} the model has")

    def score(self, vector: Array) -> float:
        """The logit of one feature vector."""
        answers = vector.take(self._features) >= self._values
        if self.split_feature.shape[1] == 4:
            # a tree's four answers are four bytes of 0 or 1: read as one little-endian number, they sit at bits 0,
            # 8, 16 and 24; one multiplication moves them, without carries, to bits 27, 26, 25 and 24 (first
            # answer most significant), and the top byte is the leaf (a bool matrix product costs twice as much)
            leaves: npt.NDArray[np.integer[Any]] = answers.view(_LITTLE_U32) * _GATHER_4
            leaves >>= 24
        else:
            leaves = answers.reshape(self.split_feature.shape) @ self._bits
        return float(self._leaves.take(leaves + self._offsets).dot(self._ones)) + self.base

    def scores(self, rows: Array) -> Array:
        """The logits of (n, d) feature rows."""
        answers = rows[:, self.split_feature] >= self.split_value  # (n, trees, depth)
        leaves = answers @ self._bits + self._offsets
        return np.asarray(self._leaves[leaves].sum(axis=1) + self.base, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        """The parameters as a JSON object (the trainer picks split values that 9 significant digits hold)."""
        return {
            "kind": self.KIND,
            "split_feature": self.split_feature.tolist(),
            "split_value": [_rounded(row) for row in self.split_value],
            "leaf_value": [_rounded(row, 6) for row in self.leaf_value],  # a millionth of a logit is plenty
            "base": float(f"{self.base:.9g}"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObliviousTrees:
        """Parameters from their JSON object."""
        features = np.asarray(data["split_feature"], dtype=np.intp)
        values = np.asarray(data["split_value"], dtype=np.float64)
        leaves = np.asarray(data["leaf_value"], dtype=np.float64)
        depth = features.shape[1] if features.ndim == 2 else 0
        return cls(
            split_feature=features.reshape(-1, depth),
            split_value=values.reshape(-1, depth),
            leaf_value=leaves.reshape(-1, 1 << depth),
            base=float(data["base"]),
        )


Scorer = LogisticRegression | ObliviousTrees
_SCORERS: dict[str, type[LogisticRegression] | type[ObliviousTrees]] = {
    LogisticRegression.KIND: LogisticRegression,
    ObliviousTrees.KIND: ObliviousTrees,
}


@dataclass(frozen=True)
class FallModel:
    """A placement's score over the features: a logistic regression or boosted oblivious trees (`scorer`).

    Two gates, learned from the training falls, reject a candidate before its features are computed: the std of
    |a| from 1.5 s after the impact above `max_late_std_g` (still moving hard), or a peak below `min_peak_over_pre`
    times the largest |a| from 3 s to 0.3 s before (one step or clap among equals). A candidate that passes and
    whose score reaches `threshold` is a fall; confidence = sigmoid(score - threshold), 0.5 at the threshold.
    `trained_on` identifies the exact recordings it was fitted to (subjects, file hashes).
    """

    placement: Placement
    rate_hz: float
    settings: DetectorSettings
    feature_names: tuple[str, ...]
    scorer: Scorer
    threshold: float
    max_late_std_g: float
    min_peak_over_pre: float
    trained_on: Mapping[str, Any]
    # the trees asking their questions of the raw features (see `raw_split_value`); None for a linear score
    _raw_trees: ObliviousTrees | None = field(init=False, repr=False, compare=False)
    _extractor: FeatureExtractor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.feature_names != feature_names(self.settings):
            raise ValueError(f"the {self.placement} model's features are not the ones its settings produce")
        try:
            self.scorer.check(len(self.feature_names))
        except ValueError as exc:
            raise ValueError(f"the {self.placement} model: {exc}") from None
        raw_trees = None
        if isinstance(self.scorer, ObliviousTrees):
            trees = self.scorer
            names = [self.feature_names[i] for i in trees.split_feature.ravel().tolist()]
            raw = [raw_split_value(n, v) for n, v in zip(names, trees.split_value.ravel().tolist(), strict=True)]
            values = np.array(raw).reshape(trees.split_value.shape)
            raw_trees = ObliviousTrees(trees.split_feature, values, trees.leaf_value, trees.base)
        object.__setattr__(self, "_raw_trees", raw_trees)
        object.__setattr__(self, "_extractor", feature_extractor(self.settings, self.rate_hz))

    def score(self, vector: Array) -> float:
        """The logit of one feature vector (the model's input, `FeatureExtractor.model_input`)."""
        return self.scorer.score(vector)

    def score_raw(self, raw: Array) -> float:
        """The logit of one raw feature vector (`FeatureExtractor.compute`), the same as `score` of its model
        input: trees compare the raw values with their split values mapped back, so no logarithm is taken."""
        if self._raw_trees is not None:
            return self._raw_trees.score(raw)
        return self.scorer.score(self._extractor.model_input(raw))

    @classmethod
    def untrained(cls, placement: Placement, rate_hz: float = 50.0) -> FallModel:
        """A model that never fires (threshold +inf) and gates nothing: for collecting candidates to train on."""
        settings = DEFAULT_SETTINGS[placement]
        names = feature_names(settings)
        zeros = np.zeros(len(names))
        scorer = LogisticRegression(zeros, np.ones(len(names)), zeros, 0.0)
        return cls(placement, rate_hz, settings, names, scorer, math.inf, math.inf, 0.0, {})

    def to_json(self) -> dict[str, Any]:
        """The model as a JSON object."""
        return {
            "placement": self.placement,
            "rate_hz": self.rate_hz,
            "settings": self.settings.to_json(),
            "features": list(self.feature_names),
            "scorer": self.scorer.to_json(),
            "threshold": float(f"{self.threshold:.9g}"),
            "max_late_std_g": float(f"{self.max_late_std_g:.9g}"),
            "min_peak_over_pre": float(f"{self.min_peak_over_pre:.9g}"),
            "trained_on": dict(self.trained_on),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FallModel:
        """A model from its JSON object."""
        placement = data["placement"]
        if placement not in ("wrist", "waist"):
            raise ValueError(f"placement must be wrist or waist, not {placement!r}")
        kind = data["scorer"]["kind"]
        if kind not in _SCORERS:
            raise ValueError(f"the {placement} model's scorer must be one of {sorted(_SCORERS)}, not {kind!r}")
        return cls(
            placement=placement,
            rate_hz=float(data["rate_hz"]),
            settings=DetectorSettings(**data["settings"]),
            feature_names=tuple(data["features"]),
            scorer=_SCORERS[kind].from_json(data["scorer"]),
            threshold=float(data["threshold"]),
            max_late_std_g=float(data["max_late_std_g"]),
            min_peak_over_pre=float(data["min_peak_over_pre"]),
            trained_on=data.get("trained_on", {}),
        )


def read_models(path: Path = MODEL_PATH) -> dict[Placement, FallModel]:
    """Both placements' models from a parameters file (`falls_model.json` by default)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    models = {name: FallModel.from_json(model) for name, model in data["models"].items()}
    return {model.placement: model for model in models.values()}


@cache
def shipped_model(placement: Placement) -> FallModel:
    """The committed model of a placement (read once per process)."""
    try:
        return read_models()[placement]
    except KeyError:
        raise ValueError(f"{MODEL_PATH} has no {placement} model") from None


# ---------------------------------------------------------------------------------------------------------------
# the streaming detector
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Candidate:
    """A candidate impact that passed the gates and was scored (for training and evaluation tools)."""

    impact_ts: float
    decided_ts: float  # the last sample seen when it was scored
    core: dict[str, float]  # the named features, raw
    features: Array  # the model's input vector
    score: float


class FallDetector:
    """Streaming fall detector for one wearable (see the module docstring); implements `edge.models.FallDetector`.

    `update(samples, t0)` takes (n, 3) samples in g, the first taken at `t0` (Unix s), consecutive with the previous
    chunk; a chunk that does not follow on (a gap, a restarted device) starts a new stream, and one already seen
    (a redelivered batch) is ignored. Chunks of any size give the same detections; the buffer holds
    `clip_before_s + post_s + 6 s` of signal (about 20 s, 30 KB).
    """

    def __init__(
        self,
        placement: Placement = "wrist",
        rate_hz: float = 50.0,
        model: FallModel | None = None,
        observer: Callable[[Candidate], None] | None = None,
    ) -> None:
        if placement not in DEFAULT_SETTINGS:
            raise ValueError(f"placement must be wrist or waist, not {placement!r}")
        self.model = model if model is not None else shipped_model(placement)
        if self.model.placement != placement:
            raise ValueError(f"a {self.model.placement} model cannot watch a {placement} device")
        if abs(rate_hz - self.model.rate_hz) > 1e-6:
            raise ValueError(
                f"the {placement} model works at {self.model.rate_hz} Hz, not {rate_hz} Hz: resample first"
            )
        self.placement = placement
        self.rate_hz = rate_hz
        self._observer = observer
        s = self.model.settings
        self._features = feature_extractor(s, rate_hz)
        # work in pieces of at most one second, and no longer than the peak window (see `_track`)
        self._per_piece = max(1, min(round(rate_hz), round(s.peak_window_s * rate_hz)))
        self._window = round(s.peak_window_s * rate_hz)
        self._context = self._features.context
        self._post = self._features.post
        self._clip_before = round(s.clip_before_s * rate_hz)
        self._late = self._features.late_start  # where the late window starts in a candidate's window
        self._n_late = self._features.size - self._late
        self._ones_late = np.ones(self._n_late)
        self._max_late_var = self.model.max_late_std_g**2 if math.isfinite(self.model.max_late_std_g) else math.inf
        self._pre_far = self._features.pre_far
        self._keep = max(self._clip_before, self._context) + self._post + self._per_piece
        self._capacity = self._keep + 5 * self._per_piece  # the oldest samples are dropped every 5 s
        self._x = np.zeros((self._capacity, 3))
        # |a|^2 per sample: the trigger and the peak comparisons need no square root; a candidate's window gets one
        self._m2 = np.zeros(self._capacity)
        self._trigger2 = s.trigger_g * s.trigger_g  # the trigger on |a|^2
        self._restart()
        self._quiet_until = -math.inf  # refractory: no detection with an impact at or before this time

    def _restart(self) -> None:
        self._len = 0  # samples in the buffer
        self._base = 0  # stream index of buffer[0]: negative while the buffer still holds the padding before the
        # stream's first sample (`context_s` of copies of it, the past a candidate's window needs at the start)
        self._count = 0  # samples of this stream so far
        self._t_start = 0.0  # time of the stream's first sample
        self._t_next: float | None = None  # where the next chunk should start
        self._best = -1  # the peak being tracked (stream index; -1: none) ...
        self._best_g2 = 0.0  # ... and its |a|^2
        self._pending: list[int] = []  # candidates (stream indices) waiting for their post window

    def _time(self, index: int) -> float:
        return self._t_start + index / self.rate_hz

    def update(self, samples: npt.NDArray[np.float64], t0: float) -> list[FallDetection]:
        """Feed (n, 3) samples in g, the first taken at t0; return the falls decided with this chunk."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"samples must have shape (n, 3), not {x.shape}")
        n = len(x)
        if n == 0:
            return []
        if self._t_next is not None and abs(t0 - self._t_next) > MAX_JITTER_S:
            if t0 + n / self.rate_hz <= self._t_next + MAX_JITTER_S:
                return []  # already seen
            self._restart()
        # anchor the stream's clock on every chunk, so that a device clock drifting against its sample rate does
        # not accumulate into a gap
        self._t_start = t0 - self._count / self.rate_hz
        self._t_next = t0 + n / self.rate_hz
        if n <= self._per_piece:
            return self._push(x)
        out: list[FallDetection] = []
        for first in range(0, n, self._per_piece):
            out += self._push(x[first : first + self._per_piece])
        return out

    def _push(self, x: Array) -> list[FallDetection]:
        # the path every second of every device takes: a few numpy calls on preallocated buffers
        n = len(x)
        if not self._len:  # a new stream: pad the past with its first sample
            pad = self._context
            self._x[:pad] = x[0]
            self._m2[:pad] = np.vecdot(x[:1], x[:1])[0]  # as the sample's own (same kernel, same rounding)
            self._len, self._base = pad, -pad
        if self._len + n > self._capacity:
            drop = self._len - self._keep
            self._x[: self._keep] = self._x[drop : self._len]
            self._m2[: self._keep] = self._m2[drop : self._len]
            self._base += drop
            self._len = self._keep
        i = self._len
        self._len = j = i + n
        self._count += n
        self._x[i:j] = x
        m2 = np.vecdot(x, x, out=self._m2[i:j])
        at = int(m2.argmax())  # the array's own argmax costs a fifth of a ufunc's reduction at these lengths
        top = m2.item(at)
        if top >= self._trigger2:
            self._track(m2, self._count - n, at, top)
        if self._best >= 0 and self._best + self._window < self._count:
            self._settle()
        if self._pending and self._pending[0] + self._post <= self._count:
            return self._decide()
        return []

    def _track(self, m2: Array, first: int, at: int, top: float) -> None:
        """Follow the largest recent sample above the trigger: a later one within the window replaces it only if
        larger, so the one left when the window has passed is at least as large as everything after it.

        `at` is the first of the piece's largest samples, `top` its |a|^2 (at least the trigger). A piece is no
        longer than the window, so once the tracked peak is in this piece, every later sample of it is within its
        window: the peak is then the first of the piece's largest samples from there on, `at` itself unless the
        piece's largest came within the window of a larger peak from an earlier piece.
        """
        if self._best >= 0:  # a peak from an earlier piece
            expires = self._best + self._window - first  # offsets beyond this are outside its window (>= 0)
            if at > expires:  # the piece's largest sample comes after the window: it follows the tracked peak,
                # which first settles unless a sample within its window beats it
                within = m2[: expires + 1]
                if _largest(within) <= self._best_g2:
                    self._settle()
            elif top <= self._best_g2:  # nothing within the window beats it: the samples after it, if any
                after = m2[expires + 1 :]  # reaches the trigger, follow it once it has settled
                if not len(after):
                    return
                at = int(after.argmax())
                top = after.item(at)
                if top < self._trigger2:
                    return
                self._settle()
                at += expires + 1
        self._best, self._best_g2 = first + at, top

    def _settle(self) -> None:
        """The tracked peak's window is complete: a candidate if also larger than everything before it."""
        k, self._best = self._best, -1
        p = k - self._base
        before = self._m2[max(p - self._window, -self._base, 0) : p]  # not the padding
        if (len(before) == 0 or _largest(before) < self._best_g2) and self._time(k) > self._quiet_until:
            self._pending.append(k)

    def _decide(self) -> list[FallDetection]:
        out: list[FallDetection] = []
        while self._pending and self._pending[0] + self._post <= self._count:
            k = self._pending.pop(0)
            impact_ts = self._time(k)
            if impact_ts <= self._quiet_until:
                continue
            p = k - self._base
            lo = p - self._context  # never before the buffer: a new stream is padded with `context` samples
            hi = p + self._post
            x, mag = self._x[lo:hi], np.sqrt(self._m2[lo:hi])
            late = mag[self._late :]  # (ndarray.dot and argmax cost a third of a ufunc's reduction here)
            mean = late.dot(self._ones_late) / self._n_late
            if late.dot(late) / self._n_late - mean * mean > self._max_late_var:
                continue
            before = mag[self._pre_far[0] : self._pre_far[1]]
            if mag.item(self._context) < self.model.min_peak_over_pre * _largest(before):
                continue
            values, raw = self._features.compute(x, mag)
            score = self.model.score_raw(raw)
            decided_ts = self._time(self._count - 1)
            if self._observer is not None:
                core = dict(zip(CORE_FEATURES, values, strict=True))
                self._observer(Candidate(impact_ts, decided_ts, core, self._features.model_input(raw), score))
            if not score >= self.model.threshold:
                continue
            out.append(self._detection(k, dict(zip(CORE_FEATURES, values, strict=True)), score, decided_ts))
            self._quiet_until = impact_ts + self.model.settings.refractory_s
        return out

    def _detection(self, k: int, core: dict[str, float], score: float, decided_ts: float) -> FallDetection:
        first = max(k - self._clip_before, self._base, 0)
        clip = self._x[first - self._base : self._len].copy()
        margin = score - self.model.threshold
        features = {**core, "score": score, "threshold": self.model.threshold}
        return FallDetection(
            impact_ts=self._time(k),
            detected_ts=decided_ts,
            confidence=1.0 / (1.0 + math.exp(-min(margin, 700.0))),
            features={name: value for name, value in features.items() if math.isfinite(value)},
            clip_t0=self._time(first),
            clip_g=clip,
            clip_rate_hz=self.rate_hz,
        )


class ResampledFallDetector:
    """A `FallDetector` for a device sampling at another rate than its model's: each chunk is resampled to the
    model's rate as it arrives (`edge.resample.StreamResampler`: anti-alias FIR when faster, linear interpolation),
    then fed to the detector. Times stay the device's; a detection's clip is at the model's rate
    (`FallDetection.clip_rate_hz`), and a faster device's detections come the filter's 0.2 s later.
    """

    def __init__(self, detector: FallDetector, rate_hz: float) -> None:
        self.detector = detector
        self.rate_hz = rate_hz
        self.resampler = StreamResampler(rate_hz, detector.rate_hz)

    def update(self, samples: npt.NDArray[np.float64], t0: float) -> list[FallDetection]:
        """Feed (n, 3) samples in g at the device's rate, the first taken at t0; return the falls decided."""
        resampled, first_t = self.resampler.push(samples, t0)
        if not len(resampled):
            return []
        return self.detector.update(resampled, first_t)


def fall_detector(placement: Placement, rate_hz: float) -> FallDetector | ResampledFallDetector:
    """The shipped detector of a placement for a device sampling at `rate_hz`: at the model's own rate it is the
    detector itself, at any other the detector behind a resampler."""
    model = shipped_model(placement)
    detector = FallDetector(placement, model.rate_hz, model)
    if abs(rate_hz - model.rate_hz) <= 1e-6:
        return detector
    return ResampledFallDetector(detector, rate_hz)


def fall_event(
    detection: FallDetection,
    *,
    event_id: str,
    device_id: str,
    placement: Placement,
    resident_id: str | None = None,
) -> m.FallEvent:
    """The wire event of a wearable's detection, its clip included (rounded to 0.1 mg, within the sensor range)."""
    values = np.round(np.clip(detection.clip_g[: m.MAX_CLIP_SAMPLES], -m.ACCEL_LIMIT_G, m.ACCEL_LIMIT_G), 4)
    samples = tuple((a, b, c) for a, b, c in values.tolist())
    clip = m.AccelClip(t0=detection.clip_t0, rate_hz=detection.clip_rate_hz, samples_g=samples)
    return m.FallEvent(
        event_id=event_id,
        ts=detection.detected_ts,
        resident_id=resident_id,
        device_id=device_id,
        impact_ts=detection.impact_ts,
        confidence=detection.confidence,
        placement=placement,
        sources=("bracelet" if placement == "wrist" else "belt",),
        features=dict(detection.features),
        clip=clip,
    )
