"""Read accelerometer recordings in the shared fall-data format: a dataset's trial index and each trial's samples.

A dataset is one folder (e.g. `shared/data/falls/weda-fall/`):
- `trials.csv`: one row per trial: `trial_id, subject, group, activity, label (fall|adl), placement (wrist|waist),
  fall_start_s, fall_end_s (blank when unknown), rate_hz, samples, file` (`file` relative to the folder);
- `trials/<trial_id>.csv`: header `ax,ay,az`, then one sample per row, in g, at a uniform `rate_hz`.

The edge scores and trains its fall detector on these (`edge.eval`, `edge.train_falls`) and the simulators replay
them as a bracelet's stream (`simulators.replay`), so the one reader lives in the kernel. The data is read where it
lies; nothing of it belongs in this repository.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
#: The index file of a dataset folder.
TRIALS_CSV = "trials.csv"
_COLUMNS = (
    *("trial_id", "subject", "group", "activity", "label", "placement"),
    *("fall_start_s", "fall_end_s", "rate_hz", "samples", "file"),
)


class RecordingError(ValueError):
    """A recording or trial index that cannot be read; `path` says which file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class TrialInfo:
    """One row of a dataset's `trials.csv`. Fall times are seconds from the start of the recording."""

    trial_id: str
    subject: str
    group: str  # young | elderly
    activity: str  # the dataset's activity code, e.g. F01 or D10
    label: Literal["fall", "adl"]
    placement: str  # wrist | waist
    rate_hz: float
    samples: int
    file: Path  # absolute
    fall_start_s: float | None = None
    fall_end_s: float | None = None

    @property
    def is_fall(self) -> bool:
        """Whether the trial is a fall."""
        return self.label == "fall"


def _optional_float(value: str) -> float | None:
    return float(value) if value.strip() else None


def read_trials(trials_csv: Path) -> list[TrialInfo]:
    """Every trial listed in a dataset's `trials.csv`."""
    try:
        with trials_csv.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise RecordingError(trials_csv, f"missing columns {missing}")
            trials = []
            for line, row in enumerate(reader, start=2):
                label = row["label"]
                if label not in ("fall", "adl"):
                    raise RecordingError(trials_csv, f"line {line}: label must be fall or adl, not {label!r}")
                trials.append(
                    TrialInfo(
                        trial_id=row["trial_id"],
                        subject=row["subject"],
                        group=row["group"],
                        activity=row["activity"],
                        label="fall" if label == "fall" else "adl",
                        placement=row["placement"],
                        rate_hz=float(row["rate_hz"]),
                        samples=int(row["samples"]),
                        file=(trials_csv.parent / row["file"]).resolve(),
                        fall_start_s=_optional_float(row["fall_start_s"]),
                        fall_end_s=_optional_float(row["fall_end_s"]),
                    )
                )
    except RecordingError:
        raise
    except OSError as exc:
        raise RecordingError(trials_csv, f"cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise RecordingError(trials_csv, f"bad value: {exc}") from None
    return trials


def find_trial(trials_csv: Path, trial_id: str) -> TrialInfo:
    """The trial `trial_id` of a dataset's `trials.csv`; RecordingError when it is not listed."""
    for trial in read_trials(trials_csv):
        if trial.trial_id == trial_id:
            return trial
    raise RecordingError(trials_csv, f"no trial {trial_id!r}")


def read_samples(path: Path) -> Array:
    """The samples of a recording CSV (header `ax,ay,az`), shape (n, 3), in g."""
    try:
        with path.open() as handle:
            header = handle.readline().strip().replace(" ", "")
            if header != "ax,ay,az":
                raise RecordingError(path, f"header must be ax,ay,az, not {header!r}")
            samples = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    except RecordingError:
        raise
    except OSError as exc:
        raise RecordingError(path, f"cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise RecordingError(path, f"not three numbers per row: {exc}") from None
    if samples.shape[0] == 0 or samples.shape[1] != 3:
        raise RecordingError(path, f"expected rows of three values, got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise RecordingError(path, "contains NaN or infinite values")
    return samples
