"""Replaying real recordings (WEDA-FALL, SisFall) as a device's AccelBatch stream, with the trial's metadata."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from careloop.codec import decode, encode
from careloop.messages import AccelBatch
from careloop.recordings import RecordingError, read_trials
from careloop.testing.service_fixtures import require_falls_dataset
from careloop.topics import TopicKind
from simulators.emission import Emission
from simulators.replay import Recording, ReplayAccel, open_recording, replay_source

T0 = 1_790_000_000.0


def _batches(device: ReplayAccel, windows: list[float]) -> list[Emission]:
    out: list[Emission] = []
    for t0, t1 in itertools.pairwise(windows):
        out += list(device.emissions(t0, t1))
    return out


def test_a_weda_fall_by_its_file_comes_with_its_metadata() -> None:
    folder = require_falls_dataset("weda-fall")
    trial = next(t for t in read_trials(folder / "trials.csv") if t.is_fall and t.fall_start_s is not None)
    recording = open_recording(trial.file)
    assert recording.info == trial
    assert recording.info.label == "fall"
    assert recording.info.activity.startswith("F")
    assert recording.info.placement == "wrist"
    assert recording.rate_hz == 50.0
    assert recording.samples.shape == (trial.samples, 3)
    assert trial.fall_start_s is not None
    assert trial.fall_end_s is not None
    assert trial.fall_start_s <= recording.peak_s <= trial.fall_end_s  # the impact lies inside the annotated fall


def test_a_sisfall_trial_by_its_id() -> None:
    folder = require_falls_dataset("sisfall")
    recording = open_recording(folder, "sisfall_SA01_D11_R01")
    assert recording.info is not None
    assert recording.info.label == "adl"
    assert recording.info.activity == "D11"
    assert recording.info.placement == "waist"
    assert recording.info.fall_start_s is None  # SisFall does not annotate when a fall happens
    assert recording.info.fall_end_s is None
    assert recording.duration_s == pytest.approx(recording.info.samples / 50.0)
    with pytest.raises(RecordingError, match="no trial"):
        open_recording(folder / "trials.csv", "sisfall_nobody")
    with pytest.raises(RecordingError, match="needs a trial id"):
        open_recording(folder)


def test_a_replay_streams_every_sample_once_in_one_second_batches() -> None:
    recording = open_recording(require_falls_dataset("weda-fall") / "trials" / "weda_U01_F01_R01.csv")
    device = ReplayAccel("bracelet-7", recording, start=T0)
    n = len(recording.samples)
    whole = _batches(device, [T0 - 10.0, T0 + 1000.0])
    pieces = _batches(device, [T0 - 10.0, *[T0 + 0.7 * k for k in range(1, 40)], T0 + 1000.0])
    assert [e.message for e in pieces] == [e.message for e in whole]
    assert len(whole) == -(-n // 50)
    samples: list[tuple[float, float, float]] = []
    for k, emission in enumerate(whole):
        message = emission.message
        assert isinstance(message, AccelBatch)
        assert emission.kind is TopicKind.DEVICE_ACCEL
        assert emission.device_id == "bracelet-7"
        assert message.t0 == pytest.approx(T0 + k)
        assert emission.ts == pytest.approx(message.t0 + len(message.samples_g) / 50.0)  # sent when complete
        assert decode(AccelBatch, encode(message), now=emission.ts) == message
        samples += message.samples_g
    assert np.array_equal(np.asarray(samples), recording.samples)  # the files carry 0.1 mg already
    assert device.end == pytest.approx(T0 + n / 50.0)
    window = device.fall_window()
    assert recording.info is not None
    assert recording.info.fall_start_s is not None
    assert window == pytest.approx((T0 + recording.info.fall_start_s, T0 + (recording.info.fall_end_s or 0.0)))


def test_replay_source_plugs_into_a_scenario_start() -> None:
    recording = open_recording(require_falls_dataset("sisfall"), "sisfall_SA01_F01_R01")
    source = replay_source(recording, offset_s=30.0)("bracelet-1", T0)
    emissions = list(source(T0, T0 + 60.0))
    assert emissions[0].ts == pytest.approx(T0 + 31.0)
    assert len(emissions) == 15  # 15 s of SisFall fall trial
    assert all(e.device_id == "bracelet-1" for e in emissions)


def test_a_lone_csv_plays_at_the_given_rate(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("ax,ay,az\n" + "0.0,-1.0,0.0\n" * 250 + "20.0,0.0,0.0\n")
    recording = open_recording(path, rate_hz=100.0)
    assert recording.info is None
    assert recording.rate_hz == 100.0
    messages = [e.message for e in ReplayAccel("b", recording, T0).emissions(T0, T0 + 10.0)]
    assert [len(m.samples_g) for m in messages if isinstance(m, AccelBatch)] == [100, 100, 51]
    last = messages[-1]
    assert isinstance(last, AccelBatch)
    assert last.samples_g[-1] == (16.0, 0.0, 0.0)  # clipped to the sensor range


def test_a_batch_must_be_a_whole_number_of_samples() -> None:
    recording = Recording(np.zeros((10, 3)), 50.0, None, Path("x.csv"))
    with pytest.raises(ValueError, match="whole number"):
        ReplayAccel("b", recording, T0, batch_s=0.03)
