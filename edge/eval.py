"""Score the fall detector on recorded trials exactly as the agent runs it: one-second chunks, one detector per trial.

A dataset is a folder in the shared fall-data format (`trials.csv` + `trials/`, see `careloop.recordings`). Every
trial streams through the detector the agent builds for its placement and rate (`edge.falls.fall_detector`: the
`FallDetector` itself at the models' 50 Hz, behind a resampler at any other rate) in the chunks MQTT delivers (one
AccelBatch per second, the last one shorter), starting from a fresh detector. A fall trial counts as detected when
the detector fires at least once in it; every firing in a daily-activity trial is a false alarm.

Latency is the first detection's `detected_ts` minus the impact: the largest |a| inside the annotated fall
(`fall_start_s`..`fall_end_s`, WEDA-FALL), or, without annotation (SisFall), the largest |a| of the whole trial.
CPU cost is `time.process_time` around the detector's `update` calls only, per second of signal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from careloop.recordings import TRIALS_CSV, TrialInfo, read_samples, read_trials
from edge.models import FallDetector, Placement

Array = npt.NDArray[np.float64]
#: Where each trial's stream starts (2026-09-21): any time the wire contract accepts would do.
TRIAL_T0 = 1_790_000_000.0
#: Seconds per chunk, as the bracelets publish them.
CHUNK_S = 1.0
METRIC_KEYS = (
    *("sensitivity", "specificity", "balanced_accuracy", "f1", "false_alarms_per_hour"),
    *("latency_p50_s", "latency_p95_s", "cpu_us_per_signal_s", "trials", "falls"),
)


class DatasetError(ValueError):
    """A folder that is neither a dataset nor a folder of datasets."""


def find_datasets(folder: Path) -> list[Path]:
    """The dataset folders at `folder`: itself when it holds a `trials.csv`, else its sub-folders that do."""
    if (folder / TRIALS_CSV).is_file():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / TRIALS_CSV).is_file()) if folder.is_dir() else []
    if not found:
        raise DatasetError(f"{folder} holds no {TRIALS_CSV}, and no sub-folder of it does")
    return found


def trial_placement(trial: TrialInfo, override: str = "auto") -> Placement:
    """The placement to run a trial with: its own (from trials.csv) unless overridden."""
    placement = trial.placement if override == "auto" else override
    if placement not in ("wrist", "waist"):
        raise DatasetError(f"trial {trial.trial_id}: placement must be wrist or waist, not {placement!r}")
    return "wrist" if placement == "wrist" else "waist"


def impact_reference_s(trial: TrialInfo, samples: Array) -> float | None:
    """When a fall trial's impact happened, seconds from its start (None for daily activities): the largest |a|
    inside the annotated fall when there is one, else in the whole trial."""
    if not trial.is_fall:
        return None
    magnitude = np.sqrt(np.einsum("ij,ij->i", samples, samples))
    first, last = 0, len(samples)
    if trial.fall_start_s is not None and trial.fall_end_s is not None:
        first = max(0, math.floor(trial.fall_start_s * trial.rate_hz))
        last = min(len(samples), math.ceil(trial.fall_end_s * trial.rate_hz) + 1)
        if last <= first:
            first, last = 0, len(samples)
    return (first + int(np.argmax(magnitude[first:last]))) / trial.rate_hz


def chunks(samples: Array, rate_hz: float, t0: float = TRIAL_T0) -> list[tuple[Array, float]]:
    """A recording cut as a device publishes it: (samples, t0) per `CHUNK_S`, the last chunk shorter."""
    per_chunk = max(1, round(CHUNK_S * rate_hz))
    return [(samples[i : i + per_chunk], t0 + i / rate_hz) for i in range(0, len(samples), per_chunk)]


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    """What the detector did on one trial; times in seconds from the trial's start."""

    trial_id: str
    subject: str
    activity: str
    is_fall: bool
    duration_s: float
    impact_s: float | None  # reference impact of a fall trial
    detections: tuple[tuple[float, float], ...]  # (impact_s, detected_s) per firing
    cpu_s: float

    @property
    def latency_s(self) -> float | None:
        """First detection's decision time minus the reference impact (fall trials that were detected)."""
        if self.impact_s is None or not self.detections:
            return None
        return self.detections[0][1] - self.impact_s


def run_trial(detector: FallDetector, trial: TrialInfo, samples: Array) -> TrialOutcome:
    """Stream one trial through `detector` in one-second chunks; CPU time counts the `update` calls only."""
    pieces = chunks(samples, trial.rate_hz)
    found = []
    started = time.process_time()
    for piece, t0 in pieces:
        found += detector.update(piece, t0)
    cpu = time.process_time() - started
    return TrialOutcome(
        trial_id=trial.trial_id,
        subject=trial.subject,
        activity=trial.activity,
        is_fall=trial.is_fall,
        duration_s=len(samples) / trial.rate_hz,
        impact_s=impact_reference_s(trial, samples),
        # microseconds: below a sample period, above the float noise of Unix times
        detections=tuple((round(d.impact_ts - TRIAL_T0, 6), round(d.detected_ts - TRIAL_T0, 6)) for d in found),
        cpu_s=cpu,
    )


DetectorFactory = Callable[[Placement, float], FallDetector]


def _shipped_detector(placement: Placement, rate_hz: float) -> FallDetector:
    from edge.falls import fall_detector

    return fall_detector(placement, rate_hz)


def run_dataset(
    folder: Path, placement: str = "auto", factory: DetectorFactory = _shipped_detector
) -> list[TrialOutcome]:
    """Every trial of a dataset folder through a fresh detector each."""
    outcomes = []
    for trial in read_trials(folder / TRIALS_CSV):
        detector = factory(trial_placement(trial, placement), trial.rate_hz)
        outcomes.append(run_trial(detector, trial, read_samples(trial.file)))
    return outcomes


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def summarise(outcomes: Sequence[TrialOutcome]) -> dict[str, Any]:
    """The dataset's scores under `METRIC_KEYS` (None where undefined, e.g. latency without a detected fall)."""
    falls = [o for o in outcomes if o.is_fall]
    adls = [o for o in outcomes if not o.is_fall]
    tp = sum(1 for o in falls if o.detections)
    fp = sum(1 for o in adls if o.detections)
    fn = len(falls) - tp
    se = _ratio(tp, len(falls))
    sp = _ratio(len(adls) - fp, len(adls))
    adl_hours = sum(o.duration_s for o in adls) / 3600.0
    latencies = np.array([o.latency_s for o in falls if o.latency_s is not None])
    signal_s = sum(o.duration_s for o in outcomes)

    def percentile(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)), 3) if len(latencies) else None  # to the millisecond

    return {
        "sensitivity": se,
        "specificity": sp,
        "balanced_accuracy": (se + sp) / 2 if se is not None and sp is not None else None,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "false_alarms_per_hour": _ratio(sum(len(o.detections) for o in adls), adl_hours),
        "latency_p50_s": percentile(50),
        "latency_p95_s": percentile(95),
        "cpu_us_per_signal_s": _ratio(sum(o.cpu_s for o in outcomes) * 1e6, signal_s),
        "trials": len(outcomes),
        "falls": len(falls),
    }


def format_table(scores: dict[str, dict[str, Any]], title: str) -> str:
    """Scores per dataset as a plain-text table."""
    columns = [
        ("trials", "trials", "{:d}"),
        ("falls", "falls", "{:d}"),
        ("SE", "sensitivity", "{:.3f}"),
        ("SP", "specificity", "{:.3f}"),
        ("BA", "balanced_accuracy", "{:.3f}"),
        ("F1", "f1", "{:.3f}"),
        ("FA/h", "false_alarms_per_hour", "{:.2f}"),
        ("lat p50 s", "latency_p50_s", "{:.2f}"),
        ("lat p95 s", "latency_p95_s", "{:.2f}"),
        ("CPU us/s", "cpu_us_per_signal_s", "{:.1f}"),
    ]
    width = max([len("dataset"), *(len(name) for name in scores)])
    lines = [title, "  ".join(["dataset".ljust(width), *(head.rjust(9) for head, _, _ in columns)])]
    for name, score in scores.items():
        cells = []
        for _, key, fmt in columns:
            value = score[key]
            cells.append(("-" if value is None else fmt.format(value)).rjust(9))
        lines.append("  ".join([name.ljust(width), *cells]))
    return "\n".join(lines)


def evaluate(folders: Iterable[Path], placement: str = "auto") -> dict[str, dict[str, Any]]:
    """Scores of the shipped detector per dataset folder (keyed by folder name)."""
    return {folder.name: summarise(run_dataset(folder, placement)) for folder in folders}
