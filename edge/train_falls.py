"""Train the fall detector's models (`edge/falls_model.json`) and cross-validate them subject by subject.

    python -m edge.train_falls                 # retrain from the shared recordings, rewrite edge/falls_model.json
    python -m edge.train_falls --check         # retrain and compare with the committed file (exit 1 if it differs)
    python -m edge.train_falls --cv [--json]   # leave-one-subject-out cross-validation, per dataset

Data: every dataset folder under `--data` (default: the shared `falls/` folder, see `careloop.testing.falls_data`);
a placement's model learns from all trials of that placement (today: wrist = WEDA-FALL, waist = SisFall). The
model file records what it was trained on: per dataset the subjects, the number of trials, the SHA-256 of
`trials.csv` and one SHA-256 over every trial file in `trials.csv` order. Nothing of the data is stored here.

Method:
1. every trial streams through `FallDetector` in one-second chunks with a model that never fires, and the
   detector's observer records each candidate that passes the gate (the exact features the edge computes);
2. labels: in a fall trial, candidates whose impact lies in the annotated fall (WEDA: fall_start_s to
   fall_end_s + 0.5 s) or within 0.5 s of the trial's largest |a| (SisFall: no annotation) are falls; its other
   candidates are left out; every candidate of a daily-activity trial is a non-fall;
3. the score (`SCORER`): at the wrist, gradient-boosted oblivious trees (`fit_trees`, class-balanced log-loss, no
   sampling); at the waist, a logistic regression with class-balanced weights, an L2 penalty (`L2`) on
   standardised features and the coefficient signs physics gives (`COEF_SIGNS`);
4. the threshold: scores of each trial (its largest candidate score) out of fold, over `INNER_FOLDS` folds of
   subjects, and the threshold that maximises the balanced accuracy of those trials; the model is then fitted
   on all the training subjects. Everything is deterministic: the same data gives the same file.

Cross-validation (`--cv`): each subject in turn is held out, a model and its threshold are trained on the others
(threshold chosen inside that training set only), and the held-out subject's trials are scored as the streaming
detector would (first firing, refractory period, one-second chunks). Nothing is tuned per subject.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from careloop.recordings import TRIALS_CSV, TrialInfo, read_samples, read_trials
from edge.eval import (
    TRIAL_T0,
    TrialOutcome,
    chunks,
    find_datasets,
    format_table,
    impact_reference_s,
    run_trial,
    summarise,
    trial_placement,
)
from edge.falls import (
    MODEL_PATH,
    Candidate,
    FallDetector,
    FallModel,
    LogisticRegression,
    ObliviousTrees,
    Scorer,
    read_models,
)
from edge.models import Placement

Array = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
#: L2 penalty on the standardised coefficients (the loss is the class-balanced mean log-loss).
L2 = 0.01
#: Physics fixes the direction in which these features may push the score (+1: more of it, more fall-like; -1:
#: less fall-like); the fit keeps their coefficients on that side of zero. The prior costs a little on the
#: training people and makes the model behave on movements they never made (see `tests/edge/test_falls.py`).
COEF_SIGNS: dict[str, int] = {
    **dict.fromkeys(("peak_g", "free_fall_area_gs", "free_fall_s", "impact_jerk_g", "impact_vector_jerk_g"), 1),
    **dict.fromkeys(("impact_energy_g2s", "peak_over_pre", "peak_over_post", "orientation_change_deg"), 1),
    **dict.fromkeys(("orientation_change_near_deg", "descent_rotation_deg"), 1),
    **dict.fromkeys(("pre_min_g", "pre_peaks", "post_peaks", "post_std_g", "post_dev_g", "late_std_g"), -1),
    **dict.fromkeys(("late_axis_std_g", "last_dev_g", "late_max_g"), -1),
}
#: The score of each placement: boosted oblivious trees at the wrist, where they beat the regression by about two
#: points of balanced accuracy in cross-validation; the regression at the waist, which meets its target with it.
SCORER: dict[Placement, str] = {"wrist": ObliviousTrees.KIND, "waist": LogisticRegression.KIND}
#: The trees: how many, how deep, the shrinkage of each tree's step, the L2 penalty on leaf values (in units of the
#: class-balanced Hessian, whose total is the number of training candidates) and the split values per feature.
TREES, TREE_DEPTH, TREE_RATE, TREE_L2, TREE_BINS = 400, 4, 0.05, 1.0, 16
#: The features whose direction (`COEF_SIGNS`) the trees keep too: the size of the impact, the free fall before it,
#: peaks among equals before and after, and movement once lying. (All twenty cost the trees 3 points of balanced
#: accuracy in cross-validation: the other directions hold only other things being equal.)
TREE_SIGNS = frozenset(
    {"peak_g", "free_fall_area_gs", "free_fall_s", "pre_peaks", "post_peaks", "late_std_g", "late_axis_std_g"}
)
#: Folds of subjects for choosing a threshold out of fold.
INNER_FOLDS = 5
#: The gates let through all but this share of the training falls' candidates ...
GATE_QUANTILE = 0.01
#: ... widened by this factor.
GATE_MARGIN = 1.5
#: A fall trial's candidates this close to its impact are the fall (seconds).
LABEL_SLACK_S = 0.5
PLACEMENTS: tuple[Placement, ...] = ("wrist", "waist")


@dataclass(frozen=True, slots=True)
class Trial:
    """A recorded trial and its samples, read once."""

    dataset: str
    info: TrialInfo
    placement: Placement
    samples: Array

    @property
    def group(self) -> str:
        """The subject, qualified by the dataset (subjects of different datasets are different people)."""
        return f"{self.dataset}/{self.info.subject}"


@dataclass(frozen=True, slots=True)
class TrialCandidates:
    """One trial's candidates, as a never-firing, never-gating detector saw them (times from the trial's start)."""

    trial: Trial
    impacts_s: Array  # (n,)
    features: Array  # (n, d) model inputs
    late_std_g: Array  # (n,) the gates' inputs
    peak_over_pre: Array  # (n,)
    labels: Array  # (n,) 1 fall, 0 not, -1 left out

    @property
    def is_fall(self) -> bool:
        """Whether the trial is a fall."""
        return self.trial.info.is_fall

    @property
    def group(self) -> str:
        """The trial's subject (see `Trial.group`)."""
        return self.trial.group


def load_dataset(folder: Path, placement: str = "auto") -> list[Trial]:
    """Every trial of a dataset folder with its samples."""
    return [
        Trial(folder.name, info, trial_placement(info, placement), read_samples(info.file))
        for info in read_trials(folder / TRIALS_CSV)
    ]


def _labels(info: TrialInfo, impact_s: float | None, at: Array) -> Array:
    if not info.is_fall:
        return np.zeros(len(at))
    if info.fall_start_s is not None and info.fall_end_s is not None:
        inside = (at >= info.fall_start_s) & (at <= info.fall_end_s + LABEL_SLACK_S)
    else:
        assert impact_s is not None
        inside = np.abs(at - impact_s) <= LABEL_SLACK_S
    return np.where(inside, 1.0, -1.0)


def collect(trial: Trial) -> TrialCandidates:
    """Stream a trial through a detector that gates nothing and never fires; every candidate with its features."""
    found: list[Candidate] = []
    rate = trial.info.rate_hz
    detector = FallDetector(trial.placement, rate, FallModel.untrained(trial.placement, rate), found.append)
    for piece, t0 in chunks(trial.samples, rate):
        detector.update(piece, t0)
    at = np.array([c.impact_ts - TRIAL_T0 for c in found])
    return TrialCandidates(
        trial=trial,
        impacts_s=at,
        features=np.array([c.features for c in found]).reshape(len(found), len(detector.model.feature_names)),
        late_std_g=np.array([c.core["late_std_g"] for c in found]),
        peak_over_pre=np.array([c.core["peak_over_pre"] for c in found]),
        labels=_labels(trial.info, impact_reference_s(trial.info, trial.samples), at),
    )


# ---------------------------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------------------------
def fit_logistic(
    features: Array, labels: Array, l2: float = L2, signs: Sequence[int] | None = None
) -> LogisticRegression:
    """Class-balanced, L2-penalised logistic regression (L-BFGS-B on the exact gradient; deterministic), with
    each coefficient kept >= 0, <= 0 or free as `signs` says (+1, -1, 0)."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (features - mean) / scale
    y = labels.astype(np.float64)
    positives = float(y.sum())
    weights = np.where(y == 1.0, 0.5 / positives, 0.5 / (len(y) - positives))

    def loss(params: Array) -> tuple[float, Array]:
        s = z @ params[:-1] + params[-1]
        # log(1 + e^s) - y s, computed stably
        value = float(weights @ (np.logaddexp(0.0, s) - y * s)) + 0.5 * l2 * float(params[:-1] @ params[:-1])
        residual = weights * (0.5 * (1.0 + np.tanh(0.5 * s)) - y)
        grad = np.append(z.T @ residual + l2 * params[:-1], residual.sum())
        return value, grad

    side = {1: (0.0, None), -1: (None, 0.0), 0: (None, None)}
    bounds = [side[sign] for sign in (signs if signs is not None else [0] * z.shape[1])] + [(None, None)]
    result = minimize(
        loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 10_000}
    )
    params = np.asarray(result.x, dtype=np.float64)
    return LogisticRegression(mean=mean, scale=scale, coef=params[:-1], intercept=float(params[-1]))


def _split_values(column: Array, bins: int) -> Array:
    """Where a feature may be split: at most `bins - 1` values, picked at the column's quantiles, each halfway
    between two neighbouring distinct values of the column and short enough to be written exactly in the model
    file (9 significant digits), so that no training value sits on a split."""
    distinct = np.unique(column)
    if len(distinct) > bins:
        wanted = np.quantile(column, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        upper = np.unique(np.clip(np.searchsorted(distinct, wanted), 1, len(distinct) - 1))
    else:
        upper = np.arange(1, len(distinct))
    values = []
    for below, above in zip(distinct[upper - 1].tolist(), distinct[upper].tolist(), strict=True):
        short = float(f"{0.5 * (below + above):.9g}")
        values.append(short if below < short < above else 0.5 * (below + above))
    return np.array(values)


def fit_trees(
    features: Array,
    labels: Array,
    trees: int = TREES,
    depth: int = TREE_DEPTH,
    rate: float = TREE_RATE,
    l2: float = TREE_L2,
    bins: int = TREE_BINS,
    signs: Sequence[int] | None = None,
) -> ObliviousTrees:
    """Gradient-boosted oblivious trees on the class-balanced log-loss (deterministic: no sampling).

    Each tree: `depth` levels, each level the one split (feature, value) that most reduces the second-order
    approximation of the loss over all the tree's current leaves; the leaves then take the Newton step, L2-penalised
    (`l2`) and shrunk by `rate`. Candidate split values: `_split_values`. Where `signs` gives a feature a direction
    (+1: more of it, more fall-like; -1: less), every tree's leaves move that way along its splits on that feature
    (`_hold_signs`), so the whole score does."""
    n, d = features.shape
    y = labels.astype(np.float64)
    positives = float(y.sum())
    weights = np.where(y == 1.0, 0.5 / positives, 0.5 / (n - positives)) * n
    values = [_split_values(features[:, j], bins) for j in range(d)]
    # binned[i, j]: how many of feature j's split values sample i reaches; "bin > b" means ">= values[j][b]"
    binned = np.column_stack([np.searchsorted(values[j], features[:, j], side="right") for j in range(d)])
    invalid = np.arange(bins)[None, :] >= np.array([len(v) for v in values])[:, None]  # (d, bins): no such split
    offsets = np.arange(d) * bins
    split_feature = np.zeros((trees, depth), dtype=np.intp)
    split_value = np.zeros((trees, depth))
    leaf_value = np.zeros((trees, 1 << depth))
    logit = np.zeros(n)
    for t in range(trees):
        p = 0.5 * (1.0 + np.tanh(0.5 * logit))
        grad, hess = weights * (p - y), weights * p * (1.0 - p)
        leaf = np.zeros(n, dtype=np.intp)
        for level in range(depth):
            leaves = 1 << level
            codes = (leaf[:, None] * (d * bins) + offsets[None, :] + binned).ravel()
            g = np.bincount(codes, np.repeat(grad, d), leaves * d * bins).reshape(leaves, d, bins).cumsum(axis=2)
            h = np.bincount(codes, np.repeat(hess, d), leaves * d * bins).reshape(leaves, d, bins).cumsum(axis=2)
            g_all, h_all = g[:, :, -1:], h[:, :, -1:]
            gain = (g * g / (h + l2) + (g_all - g) ** 2 / (h_all - h + l2)).sum(axis=0)  # (d, bins)
            gain[invalid] = -np.inf
            j, b = np.unravel_index(int(np.argmax(gain)), gain.shape)
            split_feature[t, level], split_value[t, level] = j, values[j][b]
            leaf = 2 * leaf + (binned[:, j] > b)
        g_leaf = np.bincount(leaf, grad, 1 << depth)
        weight = np.bincount(leaf, hess, 1 << depth).astype(np.float64) + l2
        directions = [0 if signs is None else signs[j] for j in split_feature[t].tolist()]
        leaf_value[t] = rate * _hold_signs(-g_leaf / weight, weight, directions)
        logit += leaf_value[t][leaf]
    return ObliviousTrees(split_feature, split_value, leaf_value, 0.0)


def _hold_signs(values: Array, weights: Array, directions: Sequence[int]) -> Array:
    """A tree's leaf values, pooled (weighted means of neighbouring leaves) until along each level whose split has
    a direction (+1, -1; 0: free) the leaf on the split's upper side is no lower (+1) or no higher (-1) than its
    neighbour; a tree that still disagrees after a few passes is flattened to its weighted mean."""
    depth = len(directions)
    leaves = np.arange(1 << depth)
    held = [(1 << (depth - 1 - level), sign) for level, sign in enumerate(directions) if sign]
    out = values.copy()
    for _ in range(4 * depth):
        wrong = False
        for bit, sign in held:
            low = leaves[(leaves & bit) == 0]
            high = low | bit
            bad = sign * (out[high] - out[low]) < 0
            if bad.any():
                wrong = True
                a, b = low[bad], high[bad]
                pooled = (weights[a] * out[a] + weights[b] * out[b]) / (weights[a] + weights[b])
                out[a] = out[b] = pooled
        if not wrong:
            return out
    return np.full_like(out, float(weights @ values) / float(weights.sum()))


@dataclass(frozen=True, slots=True)
class Gates:
    """The cheap gates before the features (see `FallModel`)."""

    max_late_std_g: float
    min_peak_over_pre: float

    @classmethod
    def learn(cls, trials: Sequence[TrialCandidates]) -> Gates:
        """Limits that let through all but `GATE_QUANTILE` of the training falls' candidates, widened by
        `GATE_MARGIN`."""
        late = np.concatenate([t.late_std_g[t.labels == 1] for t in trials])
        ratio = np.concatenate([t.peak_over_pre[t.labels == 1] for t in trials])
        return cls(
            max_late_std_g=float(np.quantile(late, 1.0 - GATE_QUANTILE)) * GATE_MARGIN,
            min_peak_over_pre=float(np.quantile(ratio, GATE_QUANTILE)) / GATE_MARGIN,
        )

    def open(self, trial: TrialCandidates) -> Mask:
        """Which of a trial's candidates pass."""
        return (trial.late_std_g <= self.max_late_std_g) & (trial.peak_over_pre >= self.min_peak_over_pre)


def _training_rows(trials: Sequence[TrialCandidates], gates: Gates) -> tuple[Array, Array]:
    keep = [gates.open(t) & (t.labels >= 0) for t in trials]
    rows = [t.features[k] for t, k in zip(trials, keep, strict=True)]
    labels = [t.labels[k] for t, k in zip(trials, keep, strict=True)]
    return np.vstack(rows), np.concatenate(labels)


def trial_scores(model: Scorer, gates: Gates, trials: Sequence[TrialCandidates]) -> Array:
    """Each trial's largest score over the candidates that pass the gates (-inf: none): it fires iff this reaches
    the threshold."""
    out = np.full(len(trials), -math.inf)
    for i, trial in enumerate(trials):
        passing = gates.open(trial)
        if passing.any():
            out[i] = float(model.scores(trial.features[passing]).max())
    return out


def best_threshold(scores: Array, is_fall: Mask) -> float:
    """The threshold with the best balanced accuracy over trials (the higher one on ties), halfway between scores."""
    finite = np.unique(scores[np.isfinite(scores)])
    if len(finite) == 0:
        return math.inf
    falls, adls = max(int(is_fall.sum()), 1), max(int((~is_fall).sum()), 1)
    best, best_ba = math.inf, -1.0
    for i, value in enumerate(finite):
        ba = float((scores[is_fall] >= value).sum()) / falls / 2 + float((scores[~is_fall] < value).sum()) / adls / 2
        if ba >= best_ba:
            below = finite[i - 1] if i > 0 else value - 1.0
            best, best_ba = 0.5 * (below + value), ba
    return float(best)


def _folds(groups: Sequence[str], k: int) -> list[list[str]]:
    ordered = sorted(set(groups))
    return [ordered[i::k] for i in range(min(k, len(ordered)))]


def _fit(trials: Sequence[TrialCandidates], kind: str) -> tuple[Gates, Scorer]:
    gates = Gates.learn(trials)
    rows, labels = _training_rows(trials, gates)
    names = FallModel.untrained(trials[0].trial.placement).feature_names
    signs = [COEF_SIGNS.get(name, 0) for name in names]
    if kind == ObliviousTrees.KIND:
        held = [sign if name in TREE_SIGNS else 0 for name, sign in zip(names, signs, strict=True)]
        return gates, fit_trees(rows, labels, TREES, TREE_DEPTH, TREE_RATE, TREE_L2, TREE_BINS, held)
    return gates, fit_logistic(rows, labels, L2, signs)


def _method(kind: str) -> str:
    if kind == ObliviousTrees.KIND:
        return (
            f"{TREES} boosted oblivious trees of depth {TREE_DEPTH}, class-balanced log-loss, rate {TREE_RATE}, "
            f"l2={TREE_L2}, at most {TREE_BINS - 1} split values per feature, {len(TREE_SIGNS)} feature directions held"
        )
    return f"logistic regression, class-balanced, l2={L2}, {len(COEF_SIGNS)} coefficient signs fixed"


def train(trials: Sequence[TrialCandidates]) -> FallModel:
    """A placement's model from its training trials: gates, its scorer (`SCORER`), and a threshold chosen from
    out-of-fold trial scores (folds of subjects)."""
    placements = {t.trial.placement for t in trials}
    if len(placements) != 1:
        raise ValueError(f"train one placement at a time, not {sorted(placements)}")
    placement = placements.pop()
    kind = SCORER[placement]
    oof = np.full(len(trials), -math.inf)
    groups = [t.group for t in trials]
    for held_out in _folds(groups, INNER_FOLDS):
        inside = [t for t, g in zip(trials, groups, strict=True) if g not in held_out]
        outside = [i for i, g in enumerate(groups) if g in held_out]
        gates, fitted = _fit(inside, kind)
        oof[outside] = trial_scores(fitted, gates, [trials[i] for i in outside])
    threshold = best_threshold(oof, np.array([t.is_fall for t in trials]))
    gates, fitted = _fit(trials, kind)
    base = FallModel.untrained(placement, trials[0].trial.info.rate_hz)
    return dataclasses.replace(
        base,
        scorer=fitted,
        threshold=threshold,
        max_late_std_g=gates.max_late_std_g,
        min_peak_over_pre=gates.min_peak_over_pre,
        trained_on={
            "method": f"{_method(kind)}; gates: {GATE_QUANTILE:.0%} quantiles of the falls, widened {GATE_MARGIN}x; "
            f"threshold: best balanced accuracy of {INNER_FOLDS}-fold (by subject) out-of-fold trial scores",
            "candidates": int(sum(len(t.features) for t in trials)),
            "positives": int(sum(int((t.labels == 1).sum()) for t in trials)),
        },
    )


def run_trials(model: FallModel, trials: Iterable[Trial]) -> list[TrialOutcome]:
    """Stream trials through the real detector with `model`, a fresh detector per trial (as `careloop eval`)."""
    return [run_trial(FallDetector(model.placement, t.info.rate_hz, model), t.info, t.samples) for t in trials]


def cross_validate(candidates: Sequence[TrialCandidates]) -> list[TrialOutcome]:
    """Leave-one-subject-out: for each subject, a model trained on the others (gates, coefficients and threshold
    from them only) streams the subject's trials through the real detector."""
    models: dict[str, FallModel] = {}
    for placement in PLACEMENTS:
        mine = [c for c in candidates if c.trial.placement == placement]
        for held_out in sorted({c.group for c in mine}):
            models[held_out] = train([c for c in mine if c.group != held_out])
    # all fitting first: linear-algebra threads still spinning after a fit would count as the detector's CPU time
    return [run_trials(models[c.group], [c.trial])[0] for c in candidates]


# ---------------------------------------------------------------------------------------------------------------
# the model file
# ---------------------------------------------------------------------------------------------------------------
def dataset_manifest(folder: Path) -> dict[str, Any]:
    """What identifies a dataset's recordings: subjects, trial count, SHA-256 of trials.csv and of all trial files."""
    trials = read_trials(folder / TRIALS_CSV)
    files = hashlib.sha256()
    for trial in trials:
        files.update(hashlib.sha256(trial.file.read_bytes()).digest())
    return {
        "trials": len(trials),
        "falls": sum(1 for t in trials if t.is_fall),
        "subjects": sorted({t.subject for t in trials}),
        "trials_csv_sha256": hashlib.sha256((folder / TRIALS_CSV).read_bytes()).hexdigest(),
        "trial_files_sha256": files.hexdigest(),
    }


def build_models(folders: Sequence[Path]) -> dict[str, Any]:
    """The parameters file's content: one model per placement found in the datasets."""
    candidates = [collect(t) for folder in folders for t in load_dataset(folder)]
    models: dict[str, Any] = {}
    for placement in PLACEMENTS:
        mine = [c for c in candidates if c.trial.placement == placement]
        if not mine:
            continue
        model = train(mine)
        used = {c.trial.dataset for c in mine}
        data = {"datasets": {f.name: dataset_manifest(f) for f in folders if f.name in used}}
        models[placement] = dataclasses.replace(model, trained_on={**model.trained_on, **data}).to_json()
    return {
        "about": "Fall detector parameters per placement; made by `python -m edge.train_falls`, do not edit.",
        "models": models,
    }


_NUMBERS = re.compile(r"\[\s*(-?[0-9][^\[\]\"]*?)\s*\]")


def dump_models(content: dict[str, Any]) -> str:
    """The parameters file's text: indented JSON, each list of numbers on one line (a tree is one line)."""
    text = json.dumps(content, indent=1)
    return _NUMBERS.sub(lambda found: "[" + ", ".join(found.group(1).split()).replace(",,", ",") + "]", text) + "\n"


def _default_data() -> Path:
    from careloop.testing.falls_data import falls_root

    return falls_root()


def differences(committed: dict[str, Any], retrained: dict[str, Any], rtol: float = 1e-5) -> list[str]:
    """Where a retrained parameters file differs from the committed one (numbers compared with `rtol`)."""
    problems = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in a or key not in b:
                    problems.append(f"{where}.{key}: only in one")
                else:
                    walk(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]")
        elif isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
            if not math.isclose(a, b, rel_tol=rtol, abs_tol=rtol):
                problems.append(f"{where}: {a} != {b}")
        elif a != b:
            problems.append(f"{where}: {a!r} != {b!r}")

    walk(committed, retrained, "")
    return problems


def cv_scores(folders: Iterable[Path], placement: str = "auto") -> dict[str, dict[str, Any]]:
    """Leave-one-subject-out scores per dataset (the numbers `careloop eval falls --cv` prints)."""
    folders = list(folders)
    candidates = [collect(t) for folder in folders for t in load_dataset(folder, placement)]
    by_dataset: dict[str, list[TrialOutcome]] = defaultdict(list)
    for c, outcome in zip(candidates, cross_validate(candidates), strict=True):
        by_dataset[c.trial.dataset].append(outcome)
    return {folder.name: summarise(by_dataset[folder.name]) for folder in folders}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: retrain (default), --check, or --cv."""
    parser = argparse.ArgumentParser(prog="python -m edge.train_falls", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="a dataset folder or a folder of them")
    parser.add_argument("--out", type=Path, default=MODEL_PATH, help="parameters file to write or check")
    parser.add_argument("--check", action="store_true", help="retrain and compare with --out; exit 1 if different")
    parser.add_argument("--cv", action="store_true", help="print leave-one-subject-out scores per dataset")
    parser.add_argument("--json", action="store_true", help="with --cv: one JSON object")
    args = parser.parse_args(argv)
    folders = find_datasets(args.data if args.data is not None else _default_data())
    if args.cv:
        scores = cv_scores(folders)
        if args.json:
            print(json.dumps({"datasets": scores}, indent=2))
        else:
            print(format_table(scores, "leave-one-subject-out cross-validation"))
        return 0
    content = build_models(folders)
    if args.check:
        problems = differences(json.loads(args.out.read_text(encoding="utf-8")), content)
        for problem in problems[:20]:
            print(problem, file=sys.stderr)
        read_models(args.out)
        return 1 if problems else 0
    args.out.write_text(dump_models(content), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
