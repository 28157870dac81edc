"""Stream a real accelerometer recording as a device's AccelBatch messages, with the trial's metadata.

Recordings come in the shared fall-data format (one folder per dataset, e.g. `shared/data/falls/weda-fall/`),
read by the kernel's `careloop.recordings` (the edge's fall evaluation reads them too).

    recording = open_recording(Path(".../weda-fall/trials/weda_U01_F01_R01.csv"))
    device = ReplayAccel("bracelet-1", recording, start=scenario_start + 60.0)
    for emission in device.emissions(t0, t1): ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from careloop.recordings import TRIALS_CSV, RecordingError, TrialInfo, find_trial, read_samples, read_trials
from careloop.topics import TopicKind
from simulators.emission import Emission
from simulators.motion import accel_batch, samples_per_batch

Array = npt.NDArray[np.float64]


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
