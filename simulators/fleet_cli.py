"""`careloop simulate fleet` and `careloop simulate fleet-credentials`: the two commands the `simulate` group adds.

careloop simulate fleet-credentials --homes 10000 --secret S --out broker/
careloop simulate fleet --homes 10000 --rate 10000 --duration 60 --broker mqtt://127.0.0.1:1883 --secret S
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from careloop.topics import DEFAULT_ROOT, ID_PATTERN, TopicError, check_id
from simulators.fleet import DEFAULT_SECRET, FleetConfig, run_fleet, write_fleet_credentials


def _topic_root(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_id(value, "topic root")
    except TopicError as exc:
        raise click.BadParameter(str(exc)) from None


def _broker(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    from pydantic import ValidationError

    from careloop.settings import MqttSettings

    try:
        settings = MqttSettings(url=value)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors(include_url=False)[0]["msg"]) from None
    if settings.tls:
        raise click.BadParameter("the fleet speaks plain MQTT only: give an mqtt:// URL")
    return settings.host, settings.port


@click.command("fleet")
@click.option("--homes", type=click.IntRange(1, 999_999), default=1000, show_default=True, help="one bracelet each")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="total msg/s [homes/interval]")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="s")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, help="s")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True, callback=_broker, help="mqtt://HOST:PORT")
@click.option("--secret", default=DEFAULT_SECRET, help="fleet secret the device passwords derive from")
@click.option("--qos", type=click.Choice(["0", "1"]), default="1", show_default=True)
@click.option("--topic-root", default=DEFAULT_ROOT, show_default=True, callback=_topic_root)
@click.option("--first-index", type=click.IntRange(0, 999_999), default=1, show_default=True, help="first home number")
@click.option("--connect-rate", type=click.FloatRange(min=0, min_open=True), default=1000.0, show_default=True)
@click.option("--window", type=click.IntRange(1, 65_535), default=10, show_default=True, help="QoS 1 in flight each")
@click.option("--seed", type=int, default=0, show_default=True, help="for the vitals baselines and noise")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON on stdout")
@click.option("--quiet", is_flag=True, help="no progress line on stderr")
def fleet(
    homes: int,
    rate: float | None,
    interval: float,
    duration: float,
    broker: tuple[str, int],
    secret: str,
    qos: str,
    topic_root: str,
    first_index: int,
    connect_rate: float,
    window: int,
    seed: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run N simulated bracelets, each on its own MQTT connection, and summarise; exit status 1 on any error."""
    try:
        config = FleetConfig(
            homes=homes,
            host=broker[0],
            port=broker[1],
            secret=secret,
            topic_root=topic_root,
            first_index=first_index,
            interval_s=interval,
            rate=rate,
            duration_s=duration,
            qos=int(qos),
            connect_rate=connect_rate,
            window=window,
            seed=seed,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    summary = run_fleet(config, progress=None if quiet else sys.stderr)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        click.echo("\n".join(summary.lines()))
    if summary.errors:
        sys.exit(1)


@click.command("fleet-credentials")
@click.option("--homes", type=click.IntRange(1, 999_999), required=True)
@click.option("--secret", default=DEFAULT_SECRET, help="fleet secret the device passwords derive from")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--topic-root", default=DEFAULT_ROOT, show_default=True, callback=_topic_root)
@click.option("--first-index", type=click.IntRange(0, 999_999), default=1, show_default=True)
@click.option(
    "--reader",
    "readers",
    multiple=True,
    metavar="USER:PASSWORD",
    help="a user who may read the whole tree (an ingest service, a monitor); repeatable",
)
def fleet_credentials(
    homes: int, secret: str, out_dir: Path, topic_root: str, first_index: int, readers: tuple[str, ...]
) -> None:
    """Write a Mosquitto password file and ACL for the fleet: each device publishes only below its own topics."""
    reader_users: dict[str, str] = {}
    for reader in readers:
        user, sep, password = reader.partition(":")
        if not sep or not password:
            raise click.BadParameter(f"{reader!r} is not USER:PASSWORD", param_hint="--reader")
        if not _is_id(user):
            raise click.BadParameter(f"user {user!r} must match {ID_PATTERN}", param_hint="--reader")
        reader_users[user] = password
    try:
        files = write_fleet_credentials(
            out_dir, homes, secret, topic_root=topic_root, first_index=first_index, readers=reader_users
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {files.users} users to {files.password_file} and the ACL to {files.acl_file}")
    click.echo("add to mosquitto.conf:")
    click.echo("  allow_anonymous false")
    click.echo(f"  password_file {files.password_file.resolve()}")
    click.echo(f"  acl_file {files.acl_file.resolve()}")


def _is_id(value: str) -> bool:
    try:
        check_id(value)
    except TopicError:
        return False
    return True
