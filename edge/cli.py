"""`careloop edge`: run the edge agent for one home (a gateway) or many (demo, benchmarks); inspect its outbox.

careloop edge run --home H0001 --home-broker mqtt://127.0.0.1:1883 --uplink mqtt://central:1883
careloop edge run --homes homes.toml --all-homes --uplink mqtt://central:1883 --outbox /var/lib/careloop/edge.db
careloop edge status --outbox /var/lib/careloop/edge.db
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

DEFAULT_OUTBOX = Path("edge-outbox.db")


def load_homes(path: Path) -> list[Any]:
    """HomeConfig entries from a TOML file (`[[homes]]` tables) or a JSON file (a list, or {"homes": [...]})."""
    from pydantic import TypeAdapter, ValidationError

    from edge.models import HomeConfig

    try:
        if path.suffix == ".json":
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        else:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    entries = data.get("homes", data.get("home")) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise click.ClickException(f"{path}: expected a list of homes ([[homes]] tables in TOML)")
    try:
        return TypeAdapter(list[HomeConfig]).validate_python(entries)
    except ValidationError as exc:
        problems = "; ".join(
            f"homes[{'.'.join(str(p) for p in e['loc'])}]: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise click.ClickException(f"{path}: {problems}") from None


@click.group()
def edge() -> None:
    """The edge agent: watches a home's devices, detects, forwards upstream through a durable outbox."""


@edge.command("run")
@click.option(
    "--homes",
    "homes_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML ([[homes]] tables) or JSON file of home configurations",
)
@click.option("--home", "home_ids", multiple=True, help="serve this home with default settings (repeatable)")
@click.option("--home-broker", default=None, help="the home's MQTT broker (default: the mqtt.url setting)")
@click.option("--uplink", required=True, help="the central MQTT broker, mqtt://HOST:PORT or mqtts://...")
@click.option(
    "--outbox",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_OUTBOX,
    show_default=True,
    help="the outbox database (SQLite)",
)
@click.option("--max-outbox-mb", type=click.FloatRange(min=1), default=None, help="outbox bound (default 256 MiB)")
@click.option("--all-homes", is_flag=True, help="subscribe to every home's devices with one '+' filter")
@click.option(
    "--client-id",
    default=None,
    help="stable MQTT client id (default: edge-<first home>); the uplink's gets '-uplink' added",
)
@click.option("--topic-root", default=None, help="topic root on both brokers (default: the mqtt.topic_root setting)")
@click.option("--uplink-username", default=None, help="user on the central broker")
@click.option(
    "--uplink-password",
    default=None,
    envvar="CARELOOP_EDGE_UPLINK_PASSWORD",
    help="password on the central broker (or $CARELOOP_EDGE_UPLINK_PASSWORD)",
)
@click.option(
    "--max-batch-wait-s",
    type=click.FloatRange(min=0),
    default=None,
    help="cap how long items wait to be batched (default: vitals 30 s, events 5 s, health 60 s)",
)
@click.option("--heartbeat-s", type=click.FloatRange(min=0.1), default=60.0, show_default=True)
@click.option("--no-replay", is_flag=True, help="do not rebuild detector state from the journal after a restart")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None)
def run(
    homes_file: Path | None,
    home_ids: tuple[str, ...],
    home_broker: str | None,
    uplink: str,
    outbox: Path,
    max_outbox_mb: float | None,
    all_homes: bool,
    client_id: str | None,
    topic_root: str | None,
    uplink_username: str | None,
    uplink_password: str | None,
    max_batch_wait_s: float | None,
    heartbeat_s: float,
    no_replay: bool,
    log_level: str | None,
) -> None:
    """Run the edge agent until SIGINT or SIGTERM (a kill -9 loses nothing: see `edge.outbox`)."""
    from pydantic import SecretStr, ValidationError

    from careloop.settings import MqttSettings, SettingsError, load_settings
    from edge.models import HomeConfig
    from edge.outbox import DEFAULT_MAX_BYTES, DEFAULT_POLICIES, Outbox, OutboxError
    from edge.service import EdgeOptions, EdgeService
    from edge.uplink import UplinkOptions

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(
        level=log_level or settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    homes: list[HomeConfig] = load_homes(homes_file) if homes_file else []
    try:
        homes += [HomeConfig(home_id=h) for h in home_ids if h not in {c.home_id for c in homes}]
    except ValidationError as exc:
        raise click.ClickException(f"--home: {exc.errors(include_url=False)[0]['msg']}") from None
    if not homes:
        raise click.ClickException("no home to serve: give --homes FILE or --home ID")
    root = topic_root or settings.mqtt.topic_root
    try:
        home_settings = settings.mqtt.model_copy(
            update={"topic_root": root, **({"url": home_broker} if home_broker else {})}
        )
        MqttSettings.model_validate(home_settings.model_dump())  # the URL override is checked like the setting
        uplink_settings = MqttSettings(
            url=uplink,
            username=uplink_username,
            password=SecretStr(uplink_password) if uplink_password else None,
            topic_root=root,
            keepalive_s=settings.mqtt.keepalive_s,
            ca_file=settings.mqtt.ca_file,
        )
    except ValidationError as exc:
        raise click.ClickException(f"broker settings: {exc.errors(include_url=False)[0]['msg']}") from None
    max_bytes = int(max_outbox_mb * 2**20) if max_outbox_mb else DEFAULT_MAX_BYTES
    try:
        policies = (
            {
                stream: replace(p, max_wait_s=min(p.max_wait_s, max_batch_wait_s))
                for stream, p in DEFAULT_POLICIES.items()
            }
            if max_batch_wait_s is not None
            else DEFAULT_POLICIES
        )
        box = Outbox(outbox, max_bytes=max_bytes, policies=policies)
    except (OutboxError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    options = EdgeOptions(
        all_homes=all_homes,
        replay=not no_replay,
        uplink=UplinkOptions(heartbeat_interval_s=heartbeat_s),
    )
    service = EdgeService(
        homes,
        home_broker=home_settings,
        uplink=uplink_settings,
        outbox=box,
        options=options,
        client_id=client_id,
    )
    log = logging.getLogger("edge")
    log.info(
        "edge agent for %d home(s) (%s%s); home broker %s, uplink %s, outbox %s (bound %.0f MiB)",
        len(homes),
        ", ".join(h.home_id for h in homes[:5]),
        ", ..." if len(homes) > 5 else "",
        home_settings.url,
        uplink_settings.url,
        outbox,
        max_bytes / 2**20,
    )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await service.run()
        except asyncio.CancelledError:
            log.info("stopped; what waits in the outbox goes out on the next start")

    asyncio.run(main())


@edge.command("status")
@click.option(
    "--outbox",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_OUTBOX,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def status(outbox: Path, as_json: bool) -> None:
    """What waits in an outbox (per home: depth, oldest, bytes, staged items, evictions); safe while it runs."""
    from edge.outbox import Outbox, OutboxError

    try:
        box = Outbox(outbox, readonly=True)
    except (OutboxError, OSError, sqlite3.Error) as exc:
        raise click.ClickException(f"{outbox}: {exc}") from None
    with box:
        backlog = box.backlog()
        now = time.time()
        evicted = {s.value: e.messages for s, e in box.evictions().items()}
        data: dict[str, Any] = {
            "outbox": str(outbox),
            "depth": sum(b.depth for b in backlog.values()),
            "bytes": box.size_bytes(),
            "file_bytes": box.file_bytes(),
            "oldest_ts": box.oldest_ts(),
            "staged": box.staged_count(),
            "evicted": evicted,
            "homes": {
                h: {
                    "depth": b.depth,
                    "oldest_ts": b.oldest_ts,
                    "bytes": b.bytes,
                    "staged": b.staged,
                    "next_seq": b.next_seq,
                    "evicted": {s.value: {"messages": e.messages, "items": e.items} for s, e in b.evicted.items()},
                }
                for h, b in backlog.items()
            },
        }
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    oldest = data["oldest_ts"]
    age = f"{now - oldest:.0f} s ago" if isinstance(oldest, float) else "-"
    click.echo(
        f"{outbox}: {data['depth']} messages waiting ({data['bytes']} bytes), oldest {age}, "
        f"{data['staged']} items being batched; file {data['file_bytes']} bytes"
    )
    click.echo("evicted by the size bound: " + (", ".join(f"{k} {v}" for k, v in evicted.items()) or "none"))
    for home_id, b in backlog.items():
        lost = ", ".join(f"{s.value} {e.messages}" for s, e in b.evicted.items()) or "none evicted"
        home_age = f"{now - b.oldest_ts:.0f} s" if b.oldest_ts is not None else "-"
        click.echo(
            f"  {home_id:24} depth {b.depth:6}  oldest {home_age:>9}  staged {b.staged:4}  next seq {b.next_seq:8}"
            f"  {lost}"
        )
