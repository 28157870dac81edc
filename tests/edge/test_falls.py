"""The wearable fall detector (edge/falls.py) on real and simulated signals, its wire event, the evaluation command
(`careloop eval falls`) and the reproducibility of its committed model (edge/train_falls.py).

Real recordings are read where they lie (`require_falls_dataset` fails the test when they are missing)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner

from careloop import messages as m
from careloop.cli import cli
from careloop.codec import decode, encode
from careloop.recordings import TRIALS_CSV, TrialInfo, find_trial, read_samples
from careloop.testing.service_fixtures import require_falls_dataset
from edge.eval import METRIC_KEYS, TrialOutcome, summarise
from edge.falls import MODEL_PATH, FallDetector, FallModel, ObliviousTrees, fall_event, shipped_model
from edge.models import FallDetection, Placement, event_id
from edge.train_falls import build_models, differences
from simulators.motion import FALL_SEGMENT_S, MotionSynth, impact_time
from simulators.timeline import Activity, FallKind, Posture, Segment, Timeline

Array = npt.NDArray[np.float64]
RATE = 50.0
T0 = 1_790_000_000.0

# a handful of real trials: every kind of fall of one person per dataset, and the daily activities that look most
# like falls (collapsing into a chair, stumbling, jumping, hitting a table, clapping; jogging, stairs quickly)
REAL_FALLS = [
    *(("weda-fall", f"weda_U01_F0{code}_R01") for code in range(1, 9)),
    *(("sisfall", f"sisfall_SA02_F{code:02d}_R01") for code in (1, 2, 3, 4, 6, 8, 10, 11, 13, 15)),
]
REAL_HARD_ADLS = [
    *(("weda-fall", f"weda_U01_{code}_R01") for code in ("D05", "D07", "D08", "D09", "D10")),
    *(("sisfall", f"sisfall_SA02_{code}_R01") for code in ("D04", "D06", "D11", "D18", "D19")),
]


def real_trial(dataset: str, trial_id: str) -> tuple[TrialInfo, Array]:
    """A shared recording's metadata and samples."""
    info = find_trial(require_falls_dataset(dataset) / TRIALS_CSV, trial_id)
    return info, read_samples(info.file)


def stream(detector: FallDetector, samples: Array, t0: float = T0, chunk: int = 50) -> list[FallDetection]:
    """Feed `samples` in chunks of `chunk` samples, as consecutive batches from `t0`."""
    out: list[FallDetection] = []
    for first in range(0, len(samples), chunk):
        out += detector.update(samples[first : first + chunk], t0 + first / RATE)
    return out


def quiet(seconds: float, rng: np.random.Generator, up: Sequence[float] = (0.0, 0.0, 1.0)) -> Array:
    """A device lying still: gravity along `up` plus sensor noise."""
    n = round(seconds * RATE)
    return np.asarray(up, dtype=np.float64) + rng.normal(0.0, 0.005, (n, 3))


# ---------------------------------------------------------------------------------------------------------------
# real recordings
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dataset", "trial_id"), REAL_FALLS, ids=[t for _, t in REAL_FALLS])
def test_real_falls_are_detected_once_a_few_seconds_after_the_impact(dataset: str, trial_id: str) -> None:
    info, samples = real_trial(dataset, trial_id)
    detector = FallDetector("wrist" if info.placement == "wrist" else "waist")
    falls = stream(detector, samples)
    assert len(falls) == 1, f"{trial_id}: {len(falls)} detections"
    fall = falls[0]
    post_s = detector.model.settings.post_s
    assert post_s <= fall.detected_ts - fall.impact_ts < post_s + 1.0  # decided with the chunk completing post_s
    if info.fall_start_s is not None and info.fall_end_s is not None:
        assert T0 + info.fall_start_s <= fall.impact_ts <= T0 + info.fall_end_s + 0.5
    assert 0.5 <= fall.confidence <= 1.0
    assert fall.features["peak_g"] >= detector.model.settings.trigger_g


@pytest.mark.parametrize(("dataset", "trial_id"), REAL_HARD_ADLS, ids=[t for _, t in REAL_HARD_ADLS])
def test_real_daily_activities_that_look_like_falls_are_not(dataset: str, trial_id: str) -> None:
    info, samples = real_trial(dataset, trial_id)
    assert stream(FallDetector("wrist" if info.placement == "wrist" else "waist"), samples) == []


@pytest.mark.parametrize(
    ("placement", "trial"),
    [("wrist", ("weda-fall", "weda_U02_F03_R01")), ("waist", ("sisfall", "sisfall_SA04_F07_R01"))],
)
def test_chunk_sizes_do_not_change_what_is_detected(placement: Placement, trial: tuple[str, str]) -> None:
    _, fall = real_trial(*trial)
    rng = np.random.default_rng(1)
    samples = np.vstack([quiet(12.0, rng, fall[0]), fall, quiet(5.0, rng, fall[-1])])
    reference = stream(FallDetector(placement), samples, chunk=50)
    assert len(reference) == 1
    for chunk in (1, 7, 13, 64, m.MAX_ACCEL_SAMPLES, len(samples)):
        found = stream(FallDetector(placement), samples, chunk=chunk)
        assert len(found) == 1, f"chunks of {chunk}"
        a, b = reference[0], found[0]
        assert b.impact_ts == pytest.approx(a.impact_ts, abs=1e-6)
        assert b.confidence == pytest.approx(a.confidence, abs=1e-9)
        assert b.features == pytest.approx(a.features, rel=1e-9, abs=1e-12)
        assert b.clip_t0 == pytest.approx(a.clip_t0, abs=1e-6)
        shared = min(len(a.clip_g), len(b.clip_g))  # a longer chunk lets the decision see more after the impact
        assert np.array_equal(a.clip_g[:shared], b.clip_g[:shared])


def test_one_fall_gives_one_detection_and_the_next_fall_another() -> None:
    _, first = real_trial("weda-fall", "weda_U01_F01_R01")
    _, second = real_trial("weda-fall", "weda_U01_F03_R01")
    rng = np.random.default_rng(2)
    # the second fall 12 s after the first: the same episode as far as the alarm is concerned
    close = np.vstack([first, second, quiet(5.0, rng, second[-1])])
    assert len(stream(FallDetector("wrist"), close)) == 1
    # after 40 s on the floor the person got up and fell again: a new alarm
    apart = np.vstack([first, quiet(40.0, rng, first[-1]), second, quiet(5.0, rng, second[-1])])
    falls = stream(FallDetector("wrist"), apart)
    assert len(falls) == 2
    assert falls[1].impact_ts - falls[0].impact_ts > FallDetector("wrist").model.settings.refractory_s


def test_the_clip_runs_from_ten_seconds_before_the_impact_to_the_decision() -> None:
    _, fall = real_trial("sisfall", "sisfall_SA02_F01_R01")
    rng = np.random.default_rng(3)
    samples = np.vstack([quiet(30.0, rng, fall[0]), fall])
    (found,) = stream(FallDetector("waist"), samples)
    assert found.clip_t0 == pytest.approx(found.impact_ts - 10.0, abs=0.5 / RATE)
    assert found.clip_t0 + (len(found.clip_g) - 1) / RATE == pytest.approx(found.detected_ts, abs=1e-6)
    assert len(found.clip_g) <= m.MAX_CLIP_SAMPLES
    first = round((found.clip_t0 - T0) * RATE)
    assert np.array_equal(found.clip_g, samples[first : first + len(found.clip_g)])  # the signal itself


def test_a_detection_travels_as_a_valid_fall_event() -> None:
    _info, samples = real_trial("weda-fall", "weda_U01_F02_R01")
    (found,) = stream(FallDetector("wrist"), samples)
    event = fall_event(
        found, event_id=event_id("fall", "bracelet-1", found.impact_ts), device_id="bracelet-1", placement="wrist"
    )
    assert event.clip is not None
    assert len(event.clip.samples_g) == len(found.clip_g)
    assert 0 < len(event.features) <= 32
    assert all(math.isfinite(v) for v in event.features.values())
    batch = m.EventBatch(msg_id="h0001-000000000001", seq=1, events=(event,))
    decoded = decode(m.EventBatch, encode(batch), now=found.detected_ts + 1.0)
    assert decoded.events[0] == event
    assert isinstance(decoded.events[0], m.FallEvent)
    assert decoded.events[0].impact_ts == found.impact_ts


# ---------------------------------------------------------------------------------------------------------------
# the stream: gaps, redelivery, memory
# ---------------------------------------------------------------------------------------------------------------
def test_a_redelivered_batch_is_ignored_and_a_gap_starts_afresh() -> None:
    _, fall = real_trial("weda-fall", "weda_U01_F05_R01")
    rng = np.random.default_rng(4)
    detector = FallDetector("wrist")
    before = quiet(20.0, rng, fall[0])
    assert stream(detector, before) == []
    assert detector.update(before[-50:], T0 + (len(before) - 50) / RATE) == []  # the last batch again
    # the bracelet was out of range for a minute; the stream goes on from then
    resumed = T0 + 80.0
    falls = stream(detector, np.vstack([quiet(10.0, rng, fall[0]), fall]), t0=resumed)
    assert len(falls) == 1
    assert falls[0].impact_ts > resumed + 10.0
    assert falls[0].clip_t0 >= resumed  # nothing from before the gap


def test_memory_stays_bounded_over_a_long_stream() -> None:
    rng = np.random.default_rng(5)
    detector = FallDetector("waist")
    line = timeline([(Activity.WALKING, 1200.0, Posture.STANDING, {})])
    synth = MotionSynth(line, "waist", rng)
    tracemalloc.start()
    try:
        for second in range(1200):
            detector.update(synth.samples(T0 + second, 50), T0 + second)
            if second == 100:
                warm, _ = tracemalloc.get_traced_memory()
        grown = tracemalloc.get_traced_memory()[0] - warm
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown} bytes more after 1100 s"


# ---------------------------------------------------------------------------------------------------------------
# simulated falls and hard daily activities
# ---------------------------------------------------------------------------------------------------------------
def timeline(steps: Sequence[tuple[Activity, float, Posture, dict[str, Any]]], start: float = T0) -> Timeline:
    """Consecutive segments from `start`: (activity, seconds, posture, params)."""
    segments, t = [], start
    for activity, seconds, posture, params in steps:
        segments.append(Segment(t, t + seconds, activity, "living_room", posture, MappingProxyType(params)))
        t += seconds
    return Timeline(segments)


def simulate(line: Timeline, placement: Placement, seed: int) -> list[FallDetection]:
    """The detector over a simulated device that sends one batch per second."""
    synth = MotionSynth(line, placement, np.random.default_rng(seed))
    detector = FallDetector(placement)
    out: list[FallDetection] = []
    for second in range(round(line.end - line.start)):
        out += detector.update(synth.samples(line.start + second, 50), line.start + second)
    return out


BEFORE_FALL = {
    FallKind.TRIP_FORWARD: (Activity.WALKING, Posture.STANDING),
    FallKind.SLIP_BACKWARD: (Activity.WALKING, Posture.STANDING),
    FallKind.LATERAL: (Activity.WALKING, Posture.STANDING),
    FallKind.SYNCOPE: (Activity.STANDING, Posture.STANDING),
    FallKind.FROM_SITTING: (Activity.RESTING, Posture.SITTING),
}
SEEDS = range(6)
#: Simulated falls detected out of len(SEEDS), at least. The synthetic wrist keeps moving on the floor more than
#: the recorded wrists did (its late std often exceeds every recorded fall's), so it is detected less often.
AT_LEAST = {"wrist": 3, "waist": 5}


@pytest.mark.parametrize("placement", ["wrist", "waist"])
@pytest.mark.parametrize("kind", list(FallKind))
def test_simulated_falls_are_detected_at_their_impact(placement: Placement, kind: FallKind) -> None:
    activity, posture = BEFORE_FALL[kind]
    detected = 0
    for seed in SEEDS:
        line = timeline(
            [
                (activity, 20.0, posture, {}),
                (Activity.FALL, FALL_SEGMENT_S, Posture.LYING_FLOOR, {"kind": kind}),
                (Activity.ON_FLOOR, 30.0, Posture.LYING_FLOOR, {}),
            ]
        )
        falls = simulate(line, placement, seed)
        assert len(falls) <= 1
        if falls:
            assert falls[0].impact_ts == pytest.approx(impact_time(line.segments[1]), abs=0.05)
            detected += 1
    assert detected >= AT_LEAST[placement], f"{detected} of {len(SEEDS)} {kind} falls at the {placement}"


HARD_ADLS = {
    "clapping": [
        (Activity.RESTING, 5.0, Posture.SITTING, {}),
        (Activity.CLAPPING, 8.0, Posture.SITTING, {}),
        (Activity.RESTING, 10.0, Posture.SITTING, {}),
    ],
    "hitting a table": [
        (Activity.RESTING, 5.0, Posture.SITTING, {}),
        (Activity.HITTING_TABLE, 5.0, Posture.SITTING, {}),
        (Activity.RESTING, 10.0, Posture.SITTING, {}),
    ],
    "sitting down hard": [
        (Activity.STANDING, 5.0, Posture.STANDING, {}),
        (Activity.SITTING_DOWN, 4.0, Posture.SITTING, {"hard": True}),
        (Activity.RESTING, 10.0, Posture.SITTING, {}),
    ],
}


@pytest.mark.parametrize("placement", ["wrist", "waist"])
@pytest.mark.parametrize("name", list(HARD_ADLS))
def test_simulated_hard_daily_activities_are_not_falls(placement: Placement, name: str) -> None:
    for seed in SEEDS:
        assert simulate(timeline(HARD_ADLS[name]), placement, seed) == [], f"{name}, seed {seed}"


# ---------------------------------------------------------------------------------------------------------------
# the model and its evaluation
# ---------------------------------------------------------------------------------------------------------------
def test_a_model_is_for_one_placement_rate_and_feature_layout() -> None:
    wrist = shipped_model("wrist")
    with pytest.raises(ValueError, match="cannot watch"):
        FallDetector("waist", model=wrist)
    with pytest.raises(ValueError, match="resample"):
        FallDetector("wrist", rate_hz=25.0)
    data = wrist.to_json()
    assert FallModel.from_json(data).to_json() == data
    with pytest.raises(ValueError, match="features"):
        FallModel.from_json({**data, "features": data["features"][::-1]})
    with pytest.raises(ValueError, match="shape"):
        FallDetector("wrist").update(np.zeros((10, 2)), T0)


def test_boosted_trees_add_the_leaves_their_answers_pick() -> None:
    # two trees of depth 2 over 3 features; the first answer is the most significant bit of the leaf's number
    trees = ObliviousTrees(
        split_feature=np.array([[0, 2], [1, 1]]),
        split_value=np.array([[0.5, -1.0], [2.0, 3.0]]),
        leaf_value=np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]),
        base=0.25,
    )
    rows = np.array([[0.0, 0.0, 0.0], [0.5, 2.5, -2.0], [1.0, 3.0, -1.0]])
    # row 0: tree 1 answers (no, yes) -> leaf 1; tree 2 (no, no) -> leaf 0
    # row 1: (yes, no) -> 2; (yes, no) -> 2.  row 2: (yes, yes) -> 3; (yes, yes) -> 3
    expected = [2.0 + 10.0 + 0.25, 3.0 + 30.0 + 0.25, 4.0 + 40.0 + 0.25]
    assert [trees.score(row) for row in rows] == expected
    assert trees.scores(rows).tolist() == expected
    assert ObliviousTrees.from_json(trees.to_json()).scores(rows).tolist() == expected
    with pytest.raises(ValueError, match="leaves"):
        ObliviousTrees(trees.split_feature, trees.split_value, trees.leaf_value[:, :3], 0.0)
    wrist = shipped_model("wrist").to_json()
    with pytest.raises(ValueError, match="outside"):
        FallModel.from_json({**wrist, "scorer": {**trees.to_json(), "split_feature": [[0, 99], [1, 1]]}})


def test_depth_four_trees_score_one_candidate_as_they_score_many() -> None:
    # one candidate takes a bit-gathering shortcut at depth 4; it must pick the leaves a plain walk picks
    rng = np.random.default_rng(4)
    trees = ObliviousTrees(
        split_feature=rng.integers(0, 6, (50, 4)),
        split_value=rng.normal(0.0, 1.0, (50, 4)),
        leaf_value=rng.normal(0.0, 1.0, (50, 16)),
        base=-0.5,
    )
    rows = rng.normal(0.0, 1.0, (40, 6))

    def walk(row: Array) -> float:
        total = trees.base
        for features, values, leaves in zip(trees.split_feature, trees.split_value, trees.leaf_value, strict=True):
            leaf = 0
            for feature, value in zip(features, values, strict=True):
                leaf = 2 * leaf + int(row[feature] >= value)
            total += leaves[leaf]
        return total

    expected = [walk(row) for row in rows]
    assert [trees.score(row) for row in rows] == pytest.approx(expected, abs=1e-12)
    assert trees.scores(rows).tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("placement", "dataset", "trial_ids"),
    [
        ("wrist", "weda-fall", ("weda_U08_D03_R01", "weda_U01_F01_R01")),
        ("waist", "sisfall", ("sisfall_SA01_D08_R01", "sisfall_SA01_D08_R02", "sisfall_SA04_F07_R01")),
    ],
)
def test_the_score_of_raw_features_is_the_score_of_the_model_input(
    placement: Placement, dataset: str, trial_ids: tuple[str, ...]
) -> None:
    # the detector scores raw features (trees ask their questions of raw values: no logarithm is taken); what it
    # reports to an observer (the training tools) is the model's input vector, and the score must be its score
    model = shipped_model(placement)
    seen: list[Any] = []
    for trial_id in trial_ids:
        _info, samples = real_trial(dataset, trial_id)
        stream(FallDetector(placement, model=model, observer=seen.append), samples)
    assert len(seen) >= 3
    assert any(c.score >= model.threshold for c in seen)
    assert any(c.score < model.threshold for c in seen)
    for candidate in seen:
        assert candidate.score == pytest.approx(model.score(candidate.features), abs=1e-9)


def test_scores_follow_their_definitions() -> None:
    def outcome(fall: bool, fired: list[float], impact: float | None = 1.0, duration: float = 3600.0) -> TrialOutcome:
        return TrialOutcome("t", "s", "F01" if fall else "D01", fall, duration, impact if fall else None,
                            tuple((impact or 0.0, t) for t in fired), cpu_s=0.036)  # fmt: skip

    outcomes = [
        outcome(True, [4.0]),
        outcome(True, [5.0, 40.0]),
        outcome(True, []),
        outcome(False, []),
        outcome(False, [10.0, 50.0]),
        outcome(False, []),
        outcome(False, []),
    ]
    scores = summarise(outcomes)
    assert set(scores) == set(METRIC_KEYS)
    assert scores["sensitivity"] == pytest.approx(2 / 3)
    assert scores["specificity"] == pytest.approx(3 / 4)
    assert scores["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert scores["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert scores["false_alarms_per_hour"] == pytest.approx(2 / 4)
    assert scores["latency_p50_s"] == pytest.approx(3.5)
    assert scores["cpu_us_per_signal_s"] == pytest.approx(10.0)
    assert (scores["trials"], scores["falls"]) == (7, 3)


def _subset(source: Path, target: Path, trial_ids: set[str]) -> None:
    """A dataset folder whose trials.csv lists some of `source`'s trials, pointing at the original files."""
    target.mkdir()
    with (source / TRIALS_CSV).open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["trial_id"] in trial_ids]
        fields = reader.fieldnames
    assert fields is not None
    assert len(rows) == len(trial_ids)
    with (target / TRIALS_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "file": str((source / row["file"]).resolve())})


def test_careloop_eval_falls_prints_the_scores_per_dataset(tmp_path: Path) -> None:
    _subset(
        require_falls_dataset("weda-fall"),
        tmp_path / "wrist-few",
        {"weda_U01_F01_R01", "weda_U01_F04_R01", "weda_U01_D09_R01", "weda_U01_D10_R01", "weda_U01_D01_R01"},
    )
    _subset(
        require_falls_dataset("sisfall"),
        tmp_path / "waist-few",
        {"sisfall_SA02_F01_R01", "sisfall_SA02_D11_R01", "sisfall_SA02_D19_R01"},
    )
    result = CliRunner().invoke(cli, ["eval", "falls", "--data", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    datasets = json.loads(result.output)["datasets"]
    assert set(datasets) == {"wrist-few", "waist-few"}
    for name, (trials, falls) in {"wrist-few": (5, 2), "waist-few": (3, 1)}.items():
        scores = datasets[name]
        assert list(scores) == list(METRIC_KEYS)
        assert (scores["trials"], scores["falls"]) == (trials, falls)
        assert (scores["sensitivity"], scores["specificity"], scores["f1"]) == (1.0, 1.0, 1.0)
        assert scores["false_alarms_per_hour"] == 0.0
        assert 2.0 < scores["latency_p50_s"] <= scores["latency_p95_s"] < 5.0
        assert 0.0 < scores["cpu_us_per_signal_s"] < 1000.0
    one = CliRunner().invoke(cli, ["eval", "falls", "--data", str(tmp_path / "wrist-few")])
    assert one.exit_code == 0
    assert "wrist-few" in one.output
    assert "waist-few" not in one.output
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = CliRunner().invoke(cli, ["eval", "falls", "--data", str(empty)])
    assert refused.exit_code != 0
    assert "trials.csv" in refused.output


def test_retraining_on_the_shared_recordings_reproduces_the_committed_model() -> None:
    root = require_falls_dataset("weda-fall").parent
    committed = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
    retrained = build_models([root / "sisfall", root / "weda-fall"])
    assert differences(committed, retrained) == []
    for placement, dataset in (("wrist", "weda-fall"), ("waist", "sisfall")):
        trained_on = committed["models"][placement]["trained_on"]["datasets"]
        assert list(trained_on) == [dataset]


def test_the_untrained_model_collects_without_firing() -> None:
    _, fall = real_trial("weda-fall", "weda_U01_F01_R01")
    seen: list[object] = []
    detector = FallDetector("wrist", model=FallModel.untrained("wrist"), observer=seen.append)
    assert stream(detector, fall) == []
    assert seen, "the fall's impact was not even a candidate"
    assert dataclasses.replace(FallModel.untrained("waist")).threshold == math.inf
