"""Stream a real accelerometer recording as a device's AccelBatch messages, with the trial's metadata.

Recordings come in the shared fall-data format (one folder per dataset, e.g. `shared/data/falls/weda-fall/`):
- `trials.csv`: one row per trial: `trial_id, subject, group, activity, label (fall|adl), placement (wrist|waist),
  fall_start_s, fall_end_s (blank when unknown), rate_hz, samples, file` (`file` relative to the folder);
- `trials/<trial_id>.csv`: header `ax,ay,az`, then one sample per row, in g, at a uniform `rate_hz`.

The data is read where it lies; nothing of it belongs in this repository.

    recording = open_recording(Path(".../weda-fall/trials/weda_U01_F01_R01.csv"))
    device = ReplayAccel("bracelet-1", recording, start=scenario_start + 60.0)
    for emission in device.emissions(t0, t1): ...
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from careloop.topics import TopicKind
from simulators.emission import Emission
from simulators.motion import accel_batch, samples_per_batch

Array = npt.NDArray[np.float64]
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


@dataclass(frozen=True)
class Recording:
    """A recording's samples (n, 3) in g at `rate_hz`, with its trial metadata when known."""

    samples: Array
    rate_hz: float
    info: TrialInfo | None
    source: Path

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate_hz

    @property
    def peak_s(self) -> float:
        """When the acceleration magnitude is largest, seconds from the start (a fall's impact, usually)."""
        return float(np.argmax(np.linalg.norm(self.samples, axis=1))) / self.rate_hz


def open_recording(source: Path | str, trial_id: str | None = None, rate_hz: float = 50.0) -> Recording:
    """Open a recording: a trial CSV, or a dataset (its folder or `trials.csv`) with `trial_id`.

    A trial CSV found in a dataset's `trials/` folder gets its metadata (and rate) from the dataset's
    `trials.csv`; a lone CSV has no metadata and is taken to be sampled at `rate_hz`.
    """
    path = Path(source)
    if path.is_dir():
        path = path / TRIALS_CSV
    if path.name == TRIALS_CSV:
        if trial_id is None:
            raise RecordingError(path, "a dataset index needs a trial id")
        info: TrialInfo | None = find_trial(path, trial_id)
    else:
        index = path.resolve().parent.parent / TRIALS_CSV
        info = None
        if index.is_file():
            resolved = path.resolve()
            info = next((t for t in read_trials(index) if t.file == resolved), None)
        if trial_id is not None and (info is None or info.trial_id != trial_id):
            raise RecordingError(path, f"is not trial {trial_id!r}")
    file = info.file if info is not None else path
    samples = read_samples(file)
    rate = info.rate_hz if info is not None else rate_hz
    if not 10.0 <= rate <= 200.0:
        raise RecordingError(file, f"rate {rate} Hz is outside the wire contract's 10-200 Hz")
    return Recording(samples=samples, rate_hz=rate, info=info, source=file)


class ReplayAccel:
    """A device whose accelerometer plays a recording from sim time `start`: one AccelBatch per `batch_s`.

    Batch k holds samples from `start + k * batch_s` and is published when complete; the last one may be
    shorter. After the recording nothing more is sent. Fits `simulators.emission.DeviceSimulator`.
    """

    def __init__(self, device_id: str, recording: Recording, start: float, batch_s: float = 1.0) -> None:
        self.device_id = device_id
        self.recording = recording
        self.start = start
        self.batch_s = batch_s
        self.per_batch = samples_per_batch(batch_s, recording.rate_hz)
        self.batches = math.ceil(len(recording.samples) / self.per_batch)

    @property
    def end(self) -> float:
        """When the last sample was taken (sim time) plus one sample period."""
        return self.start + self.recording.duration_s

    def fall_window(self) -> tuple[float, float] | None:
        """The annotated fall (sim times) of a fall trial that has one (WEDA-FALL does, SisFall does not)."""
        info = self.recording.info
        if info is None or not info.is_fall or info.fall_start_s is None or info.fall_end_s is None:
            return None
        return self.start + info.fall_start_s, self.start + info.fall_end_s

    def emissions(self, t0: float, t1: float) -> Iterator[Emission]:
        """The batches completed in [t0, t1), in time order."""
        rate = self.recording.rate_hz
        k = max(0, math.floor((t0 - self.start) / self.batch_s - 1e-9) - 1)
        while k < self.batches:
            first = k * self.per_batch
            chunk = self.recording.samples[first : first + self.per_batch]
            batch_t0 = self.start + first / rate
            sent = batch_t0 + len(chunk) / rate
            if sent >= t1:
                return
            if sent >= t0:
                message = accel_batch(batch_t0, rate, chunk)
                yield Emission(ts=sent, device_id=self.device_id, kind=TopicKind.DEVICE_ACCEL, message=message)
            k += 1


AccelSource = Callable[[float, float], Iterator[Emission]]


def replay_source(recording: Recording, offset_s: float = 0.0) -> Callable[[str, float], AccelSource]:
    """For `simulators.runner.build(accel_override=...)`: the bracelet plays `recording` from `offset_s` after the
    scenario's start."""

    def source(device_id: str, start: float) -> AccelSource:
        return ReplayAccel(device_id, recording, start + offset_s).emissions

    return source
