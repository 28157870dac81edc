"""`careloop simulate`: run scenarios and fleets against any MQTT broker."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import click

from simulators.fleet_cli import fleet, fleet_credentials

SPEED_HELP = (
    "how fast simulated time runs: 1 = real time (default), 60 = an hour a minute, 'max' = as fast as possible. "
    "Timestamps are anchored so that no message is ever dated after the wall clock."
)


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise click.BadParameter("a number such as 1, 60 or 3600, or 'max'") from None
    if speed <= 0:
        raise click.BadParameter("must be above 0")
    return speed


@click.group()
def simulate() -> None:
    """Simulated devices: scenarios with ground truth, and city-scale fleets.

    Scenario runs take --speed (1 = real time, 60 = an hour a minute, max = as fast as possible) and --seed (the
    same scenario, seed and start give exactly the same messages and ground truth).

    \b
    careloop simulate list
    careloop simulate scenario fall-bathroom-night --broker mqtt://127.0.0.1:1883 --speed 60 --seed 7
    careloop simulate fleet --homes 10000 --rate 10000 --duration 60 --broker mqtt://127.0.0.1:1883
    """


@simulate.command("list")
def list_scenarios() -> None:
    """The shipped scenarios, with their titles."""
    from simulators.scenario import load_scenario, scenario_names

    for name in scenario_names():
        scenario = load_scenario(name)
        click.echo(f"{name:24} {scenario.duration / 60:7.1f} min  {scenario.title}")


@simulate.command("scenario")
@click.argument("name")
@click.option("--broker", default=None, help="mqtt://HOST:PORT (default: the mqtt.url setting)")
@click.option("--speed", "speed_text", default="1", show_default=True, help=SPEED_HELP)
@click.option("--seed", default=1, show_default=True, type=int, help="the same seed gives the same run")
@click.option(
    "--start",
    default=None,
    help="ISO time the scenario starts (default: the latest day at its time of day that keeps messages in the past)",
)
@click.option(
    "--ground-truth",
    "ground_truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the ground truth (JSON lines) here (default: <name>-<seed>.truth.jsonl)",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="stream this recording (a trial CSV of ../shared/data/falls format) as the bracelet's accelerometer",
)
@click.option(
    "--replay-at",
    "replay_at",
    default=60.0,
    show_default=True,
    type=float,
    help="seconds after the start at which the recording begins",
)
@click.option("--secret", default=None, help="fleet secret: devices log in as their id with the derived password")
@click.option("--topic-root", default=None, help="topic root (default: the mqtt.topic_root setting)")
@click.option("--dry-run", is_flag=True, help="do not connect: count what would be sent")
def run_scenario(
    name: str,
    broker: str | None,
    speed_text: str,
    seed: int,
    start: str | None,
    ground_truth: Path | None,
    replay: Path | None,
    replay_at: float,
    secret: str | None,
    topic_root: str | None,
    dry_run: bool,
) -> None:
    """Run scenario NAME (a name from `careloop simulate list`, or a .toml path) and write its ground truth."""
    from careloop.settings import SettingsError, load_settings
    from careloop.topics import TopicTree
    from simulators.runner import ListSink, build, play, stream
    from simulators.scenario import anchor_start, load_scenario

    speed = _speed(speed_text)
    try:
        scenario = load_scenario(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if broker is None or topic_root is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        broker = broker or settings.mqtt.url
        topic_root = topic_root or settings.mqtt.topic_root
    begin = datetime.fromisoformat(start).timestamp() if start else anchor_start(scenario, time.time(), speed)
    accel_override = None
    recording = None
    if replay is not None:
        from careloop.recordings import RecordingError
        from simulators.replay import open_recording, replay_source

        try:
            recording = open_recording(replay)
        except RecordingError as exc:
            raise click.ClickException(str(exc)) from None
        accel_override = replay_source(recording, offset_s=replay_at)
    built = build(scenario, seed=seed, start=begin, accel_override=accel_override)
    if recording is not None and recording.info is not None and recording.info.is_fall:
        from simulators.ground_truth import happened

        impact = begin + replay_at + recording.peak_s
        fact = happened(scenario, seed, impact, "fall", scenario.bracelet_id, recording=recording.info.trial_id)
        built.ground_truth = sorted([*built.ground_truth, fact], key=lambda r: r.ts)
    truth_path = ground_truth or Path(f"{scenario.name}-{seed}.truth.jsonl")
    from simulators.ground_truth import write_jsonl

    write_jsonl(built.ground_truth, truth_path)
    click.echo(
        f"{scenario.name}: {scenario.title}; start {datetime.fromtimestamp(begin).astimezone().isoformat()}, "
        f"{scenario.duration / 60:.1f} min at {'max' if speed is None else speed}x; ground truth in {truth_path}",
        err=True,
    )

    async def run() -> Counter[str]:
        counts: Counter[str] = Counter()
        if dry_run:
            sink = ListSink([])
            await play(stream(built), sink, speed=None, start=begin)
            for emission in sink.emissions:
                counts[emission.kind.name if emission.kind else str(emission.control)] += 1
            return counts
        from simulators.mqtt_sink import MqttSink

        async with MqttSink(broker, scenario.home_id, TopicTree(topic_root), secret=secret) as mqtt:
            await play(stream(built), mqtt, speed=speed, start=begin)
        counts["published"] = mqtt.counters.sent
        counts["acknowledged"] = mqtt.counters.acked
        return counts

    try:
        counts = asyncio.run(run())
    except (OSError, TimeoutError) as exc:
        raise click.ClickException(f"cannot publish to {broker}: {exc}") from None
    click.echo(json.dumps(dict(counts), sort_keys=True))
    if not dry_run and counts["acknowledged"] < counts["published"]:
        click.echo(f"{counts['published'] - counts['acknowledged']} messages were not acknowledged", err=True)
        sys.exit(1)


simulate.add_command(fleet)
simulate.add_command(fleet_credentials, name="fleet-credentials")
