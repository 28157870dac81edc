"""Reading recordings in the shared fall-data format: a dataset's trial index and each trial's samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from careloop.recordings import TRIALS_CSV, RecordingError, find_trial, read_samples, read_trials
from careloop.testing.service_fixtures import require_falls_dataset

HEADER = "trial_id,subject,group,activity,label,placement,fall_start_s,fall_end_s,rate_hz,samples,file\n"


def dataset(folder: Path, rows: str, trials: dict[str, str] | None = None) -> Path:
    """A dataset folder with this `trials.csv` body and these trial files (name -> content)."""
    (folder / "trials").mkdir(parents=True, exist_ok=True)
    for name, content in (trials or {}).items():
        (folder / "trials" / name).write_text(content)
    index = folder / TRIALS_CSV
    index.write_text(HEADER + rows)
    return index


def test_a_trial_index_gives_each_trial_its_metadata_and_absolute_file(tmp_path: Path) -> None:
    index = dataset(
        tmp_path,
        "x_U01_F01_R01,U01,young,F01,fall,wrist,2.5,3.75,50,3,trials/a.csv\n"
        "x_U01_D10_R01,U01,elderly,D10,adl,waist,,,100,4,trials/b.csv\n",
    )
    fall, adl = read_trials(index)
    assert (fall.trial_id, fall.subject, fall.group, fall.activity) == ("x_U01_F01_R01", "U01", "young", "F01")
    assert fall.is_fall
    assert (fall.placement, fall.rate_hz, fall.samples) == ("wrist", 50.0, 3)
    assert (fall.fall_start_s, fall.fall_end_s) == (2.5, 3.75)
    assert fall.file == (tmp_path / "trials" / "a.csv").resolve()
    assert not adl.is_fall
    assert (adl.placement, adl.rate_hz, adl.fall_start_s, adl.fall_end_s) == ("waist", 100.0, None, None)
    assert find_trial(index, "x_U01_D10_R01") == adl
    with pytest.raises(RecordingError, match="no trial 'nobody'"):
        find_trial(index, "nobody")


@pytest.mark.parametrize(
    ("header", "rows", "problem"),
    [
        ("trial_id,subject,label\n", "", "missing columns"),
        (HEADER, "t,U01,young,F01,maybe,wrist,,,50,3,trials/a.csv\n", "line 2: label must be fall or adl"),
        (HEADER, "t,U01,young,F01,fall,wrist,soon,,50,3,trials/a.csv\n", "bad value"),
        (HEADER, "t,U01,young,F01,fall,wrist,,,50,many,trials/a.csv\n", "bad value"),
    ],
)
def test_a_malformed_trial_index_is_refused_naming_the_file(
    tmp_path: Path, header: str, rows: str, problem: str
) -> None:
    index = tmp_path / TRIALS_CSV
    index.write_text(header + rows)
    with pytest.raises(RecordingError, match=problem) as raised:
        read_trials(index)
    assert raised.value.path == index
    with pytest.raises(RecordingError, match="cannot read"):
        read_trials(tmp_path / "elsewhere" / TRIALS_CSV)


def test_samples_are_read_as_an_n_by_3_array_in_g(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("ax, ay, az\n0.0,-1.0,0.0\n0.5,-0.5,0.25\n")
    samples = read_samples(path)
    assert samples.dtype == np.float64
    assert samples.tolist() == [[0.0, -1.0, 0.0], [0.5, -0.5, 0.25]]
    path.write_text("ax,ay,az\n1,2,3\n")  # one row is still (1, 3)
    assert read_samples(path).shape == (1, 3)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("x,y,z\n0,0,1\n", "header"),
        ("ax,ay,az\n0,0\n", "three"),
        ("ax,ay,az\n0,0,nan\n", "NaN"),
        ("ax,ay,az\n0,zero,1\n", "three"),
    ],
)
def test_a_malformed_recording_is_refused(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(RecordingError, match=problem):
        read_samples(path)
    with pytest.raises(RecordingError, match="cannot read"):
        read_samples(tmp_path / "missing.csv")


@pytest.mark.parametrize("name", ["weda-fall", "sisfall"])
def test_the_shared_datasets_read_as_their_index_says(name: str) -> None:
    folder = require_falls_dataset(name)
    trials = read_trials(folder / TRIALS_CSV)
    assert {t.placement for t in trials} == {"wrist" if name == "weda-fall" else "waist"}
    assert any(t.is_fall for t in trials)
    assert any(not t.is_fall for t in trials)
    first = trials[0]
    assert read_samples(first.file).shape == (first.samples, 3)
