"""Scenarios: every one runs, every message it produces satisfies the wire contract, runs are reproducible, the
ground truth says when things happened, and `careloop simulate scenario` delivers it all through a real broker."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from careloop.codec import decode, encode
from careloop.contract import SPECS
from careloop.messages import AccelBatch, Availability
from careloop.testing.mosquitto import Mosquitto
from careloop.testing.service_fixtures import require_falls_dataset
from careloop.topics import TopicKind
from simulators.cli import simulate
from simulators.emission import Control, Emission
from simulators.ground_truth import read_jsonl
from simulators.runner import ListSink, build, play, stream
from simulators.scenario import ScenarioFile, anchor_start, load_scenario, scenario_names

NOW = 1_790_000_000.0

REQUIRED = {
    "fall-bathroom-night", "fall-then-ok", "tachycardia", "spo2-88", "hr-artefact-spike", "inactivity-14h",
    "bed-exit-night", "night-wandering", "battery-dies", "bracelet-off-night", "hard-movements",
}  # fmt: skip


def _run(name: str, seed: int = 1, start: float | None = None) -> tuple[ScenarioFile, list[Emission], float]:
    scenario = load_scenario(name)
    begin = anchor_start(scenario, NOW, None) if start is None else start
    return scenario, list(stream(build(scenario, seed=seed, start=begin))), begin


def _fingerprint(emissions: list[Emission]) -> str:
    digest = hashlib.sha256()
    for e in emissions:
        digest.update(f"{e.ts}|{e.device_id}|{e.kind}|{e.control}|".encode())
        if e.message is not None:
            digest.update(encode(e.message))
    return digest.hexdigest()


def test_the_issue_s_scenarios_are_all_shipped() -> None:
    assert set(scenario_names()) >= REQUIRED


@pytest.mark.parametrize("name", scenario_names())
def test_every_message_of_every_scenario_satisfies_the_wire_contract(name: str) -> None:
    scenario, emissions, begin = _run(name)
    kinds: Counter[TopicKind] = Counter()
    for e in emissions:
        assert begin <= e.ts <= begin + scenario.duration
        if e.message is None:
            continue
        assert e.kind is not None
        spec = SPECS[e.kind]
        # judged by a receiver whose clock reads the emission time, as it would when the message arrives
        decode(spec.model, encode(e.message), now=e.ts, max_bytes=spec.max_bytes)
        kinds[e.kind] += 1
    assert [e.ts for e in emissions] == sorted(e.ts for e in emissions)
    assert kinds[TopicKind.DEVICE_MOTION] > 0
    assert kinds[TopicKind.DEVICE_THERMAL] > 0
    assert kinds[TopicKind.DEVICE_VITALS] > 0
    assert kinds[TopicKind.DEVICE_ACCEL] > 0


def test_a_run_is_reproducible_from_its_seed_and_the_seed_matters() -> None:
    _, first, begin = _run("fall-then-ok", seed=7)
    _, again, _ = _run("fall-then-ok", seed=7, start=begin)
    _, other, _ = _run("fall-then-ok", seed=8, start=begin)
    assert _fingerprint(first) == _fingerprint(again)
    assert _fingerprint(first) != _fingerprint(other)


def test_ground_truth_times_the_fall_at_the_impact_the_accelerometer_shows() -> None:
    scenario = load_scenario("fall-bathroom-night")
    built = build(scenario, seed=3, start=anchor_start(scenario, NOW, None))
    falls = [r for r in built.ground_truth if r.kind == "happened" and r.what == "fall"]
    assert len(falls) == 1
    expect = [r for r in built.ground_truth if r.kind == "expect"]
    assert [(r.ts, r.alerts, r.severity) for r in expect] == [(falls[0].ts, ("fall",), "high")]
    batches = [e.message for e in stream(built) if isinstance(e.message, AccelBatch)]
    samples = np.concatenate([np.asarray(b.samples_g) for b in batches])
    times = np.concatenate([b.t0 + np.arange(len(b.samples_g)) / b.rate_hz for b in batches])
    peak = times[np.argmax(np.linalg.norm(samples, axis=1))]
    assert abs(peak - falls[0].ts) <= 0.1


def test_an_accelerated_run_never_dates_a_message_after_the_wall_clock() -> None:
    scenario = load_scenario("night-wandering")
    for speed in (None, 1.0, 60.0):
        begin = anchor_start(scenario, NOW, speed)
        wall_end = NOW + (0 if speed is None else scenario.duration / speed)
        assert begin + scenario.duration <= wall_end
        local = time.strftime("%H:%M", time.gmtime(begin + 8 * 3600))  # Asia/Shanghai
        assert local == "01:50"


async def test_play_paces_emissions_by_speed_without_waiting_on_the_wall_clock() -> None:
    scenario = load_scenario("sos-button")
    begin = anchor_start(scenario, NOW, 60.0)
    built = build(scenario, seed=1, start=begin)
    wall = [0.0]

    async def fake_sleep(seconds: float) -> None:
        wall[0] += seconds

    sink = ListSink([])
    sent = await play(stream(built), sink, speed=60.0, start=begin, sleep=fake_sleep, monotonic=lambda: wall[0])
    assert sent == len(sink.emissions)
    assert wall[0] == pytest.approx((sink.emissions[-1].ts - begin) / 60.0)


def test_bad_scenario_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    base = (Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / "sos-button.toml").read_text()
    cases = {
        'room = "living_room"': ('room = "garage"', "unknown room"),
        'duration = "5m"': ('duration = "five minutes"', "not a duration"),
        'at = "1m"': ('at = "9m"', "after the scenario ends"),
        'press = "sos"': ('press = "sos"\nworn = false', "exactly one of"),
    }
    for original, (replacement, reason) in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(base.replace(original, replacement, 1))
        with pytest.raises(ValueError, match=reason):
            load_scenario(path)
    with pytest.raises(ValueError, match="known scenarios"):
        load_scenario("no-such-scenario")


def test_simulate_scenario_delivers_everything_through_a_real_broker(mosquitto: Mosquitto, tmp_path: Path) -> None:
    received: list[mqtt.MQTTMessage] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, message: received.append(message)
    client.connect(mosquitto.host, mosquitto.port)
    root = "tsim" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:8]
    client.subscribe(f"{root}/v1/#", qos=1)
    client.loop_start()
    try:
        truth = tmp_path / "truth.jsonl"
        args = ["scenario", "battery-dies", "--broker", mosquitto.url, "--speed", "max", "--seed", "5",
                "--topic-root", root, "--ground-truth", str(truth)]  # fmt: skip
        result = CliRunner().invoke(simulate, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        counts = json.loads(result.stdout.strip().splitlines()[-1])
        assert counts["published"] == counts["acknowledged"] > 10_000
        deadline = time.monotonic() + 20
        while len(received) < counts["published"] + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    # everything published arrived, plus the bracelet's last will when its battery died
    assert len(received) == counts["published"] + 1
    wills = [m for m in received if m.topic.endswith("/availability") and not json.loads(m.payload)["online"]]
    assert [m.topic.split("/")[-2] for m in wills] == ["BR-battery-dies"]
    Availability.model_validate_json(wills[0].payload)
    assert {r.what for r in read_jsonl(truth)} >= {"battery_dead", "battery low reminder"}


def test_replay_streams_a_real_recording_as_the_bracelet_s_accelerometer(tmp_path: Path) -> None:
    trial = require_falls_dataset("weda-fall") / "trials" / "weda_U01_F01_R01.csv"
    result = CliRunner().invoke(
        simulate,
        [
            "scenario",
            "sos-button",
            "--dry-run",
            "--replay",
            str(trial),
            "--replay-at",
            "30",
            "--ground-truth",
            str(tmp_path / "t.jsonl"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    truth = read_jsonl(tmp_path / "t.jsonl")
    assert [r.detail.get("recording") for r in truth if r.what == "fall"] == ["weda_U01_F01_R01"]
    real = np.loadtxt(trial, delimiter=",", skiprows=1)
    scenario = load_scenario("sos-button")
    begin = anchor_start(scenario, NOW, None)
    from simulators.replay import open_recording, replay_source

    built = build(scenario, seed=1, start=begin, accel_override=replay_source(open_recording(trial), offset_s=30))
    batches = [e.message for e in stream(built) if isinstance(e.message, AccelBatch)]
    streamed = np.concatenate([np.asarray(b.samples_g) for b in batches])
    assert batches[0].t0 == pytest.approx(begin + 30)
    assert np.allclose(streamed[: len(real)], real, atol=1e-4)


def test_a_dead_bracelet_loses_its_connection_once() -> None:
    _, emissions, _ = _run("battery-dies")
    assert [e.device_id for e in emissions if e.control is Control.CONNECTION_LOST] == ["BR-battery-dies"]
