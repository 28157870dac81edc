"""`careloop ingest`: run one ingest process, or (`--health`) ask a running one how it is.

Run N processes for more throughput: give each its own `--instance` (its MQTT client id, spool file and metrics
port follow from it) and the same `--group`; the broker splits the messages between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

HEALTH_EXIT = {"ok": 0, "degraded": 1, "down": 2}


def _default(field: str) -> Any:
    """The default of an IngestConfig field, so the options and the model never disagree."""
    from ingest.models import IngestConfig

    return IngestConfig.model_fields[field].default


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML settings file (default: $CARELOOP_CONFIG); broker, InfluxDB and site come from there",
)
@click.option(
    "--instance",
    type=click.IntRange(0, 999),
    default=0,
    show_default=True,
    help="this process's number among those sharing the group: client id <client-id-prefix>-N, "
    "spool file, metrics port + N",
)
@click.option(
    "--client-id-prefix",
    default="careloop-ingest",
    show_default=True,
    help="MQTT client ids are <prefix>-<instance>; keep them stable so the broker keeps the sessions",
)
@click.option("--group", default="ingest", show_default=True, help="shared subscription group")
@click.option(
    "--batch-points",
    type=int,
    default=_default("batch_points"),
    show_default=True,
    help="write a batch at this many points",
)
@click.option(
    "--batch-delay",
    type=float,
    default=_default("batch_delay_s"),
    show_default=True,
    help="... or when its first message is this many seconds old",
)
@click.option(
    "--write-concurrency",
    type=int,
    default=_default("write_concurrency"),
    show_default=True,
    help="batches written at once",
)
@click.option(
    "--max-pending-points",
    type=int,
    default=_default("max_pending_points"),
    show_default=True,
    help="points in memory before reading from the broker pauses",
)
@click.option(
    "--receive-maximum",
    type=int,
    default=_default("receive_maximum"),
    show_default=True,
    help="unacknowledged messages the broker may send at once",
)
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ingest-spool"),
    show_default=True,
    help="where the spool files live",
)
@click.option(
    "--direct-retries",
    type=int,
    default=_default("direct_retries"),
    show_default=True,
    help="retries of a write before its batch goes to the spool",
)
@click.option(
    "--registry/--no-registry",
    default=False,
    show_default=True,
    help="tag bracelet topics with their resident from the registry (settings database.url) and "
    "reject devices it does not know",
)
@click.option("--no-dead-letters", is_flag=True, help="count rejected messages but do not publish them")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65_535),
    default=9464,
    show_default=True,
    help="/metrics and /health listen on this port + instance (0: any free port)",
)
@click.option(
    "--health",
    is_flag=True,
    help="do not run: ask the running instance for its health, print it, exit 0 ok, 1 degraded, 2 down",
)
@click.option("--health-url", default=None, help="with --health: the /health URL (default from host, port, instance)")
def ingest(
    config_file: Path | None,
    instance: int,
    client_id_prefix: str,
    group: str,
    batch_points: int,
    batch_delay: float,
    write_concurrency: int,
    max_pending_points: int,
    receive_maximum: int,
    spool_dir: Path,
    direct_retries: int,
    registry: bool,
    no_dead_letters: bool,
    metrics_host: str,
    metrics_port: int,
    health: bool,
    health_url: str | None,
) -> None:
    """Stream MQTT (devices and edge gateways) into InfluxDB: validated, batched, nothing lost, nothing doubled."""
    port = metrics_port + instance if metrics_port else 0
    if health:
        sys.exit(check_health(health_url or f"http://{metrics_host}:{port}/health"))

    from pydantic import ValidationError

    from careloop.settings import SettingsError, load_settings
    from ingest.models import IngestConfig

    try:
        settings = load_settings(config_file)
        config = IngestConfig(
            client_id=f"{client_id_prefix}-{instance}",
            group=group,
            batch_points=batch_points,
            batch_delay_s=batch_delay,
            write_concurrency=write_concurrency,
            max_pending_points=max_pending_points,
            receive_maximum=receive_maximum,
            spool_dir=spool_dir,
            direct_retries=direct_retries,
            registry=registry,
            dead_letters=not no_dead_letters,
            metrics_host=metrics_host,
            metrics_port=port,
        )
    except SettingsError as exc:
        click.echo("configuration is invalid:", err=True)
        for where, what in exc.problems:
            click.echo(f"  {where}: {what}", err=True)
        sys.exit(2)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    asyncio.run(serve(settings, config))


async def serve(settings: Any, config: Any) -> None:
    """Open InfluxDB clients, the spool, the registry (if configured) and the metrics server; run until a signal."""
    from careloop.influx import InfluxClient
    from careloop.registry.store import open_registry
    from ingest.directory import ResidentDirectory
    from ingest.metrics import MetricsServer
    from ingest.service import IngestService
    from ingest.spool import Spool

    log = logging.getLogger("ingest")
    registry = open_registry(settings.database.url, upgrade=False) if config.registry else None
    directory = ResidentDirectory(registry, refresh_s=config.registry_refresh_s) if registry is not None else None
    async with (
        # One request per batch: InfluxDB spends less CPU a point in requests of 10,000 lines than of 5,000.
        InfluxClient.from_settings(
            settings.influx, max_retries=config.direct_retries, batch_size=config.batch_points
        ) as influx,
        InfluxClient.from_settings(settings.influx, max_retries=0, batch_size=config.batch_points) as replay_influx,
        Spool(config.spool_path) as spool,
    ):
        service = IngestService(
            settings, config, influx=influx, replay_influx=replay_influx, spool=spool, directory=directory
        )
        metrics = MetricsServer(service.current_stats, config.metrics_host, config.metrics_port)
        await metrics.start()
        log.info("metrics at http://%s:%d/metrics, health at /health", metrics.host, metrics.port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, service.stop)
        try:
            await service.run()
        finally:
            await metrics.close()
            if registry is not None:
                registry.close()


def check_health(url: str, timeout_s: float = 5.0) -> int:
    """Print the health of the instance at `url` and return the exit status (0 ok, 1 degraded, 2 down)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            state = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: down, with the same JSON body
        try:
            state = json.loads(exc.read())
        except ValueError:
            click.echo(f"{url}: HTTP {exc.code}", err=True)
            return HEALTH_EXIT["down"]
    except (OSError, ValueError) as exc:
        click.echo(f"{url}: not answering ({exc}); is ingest running?", err=True)
        return HEALTH_EXIT["down"]
    click.echo(json.dumps(state, indent=2, sort_keys=True))
    return HEALTH_EXIT.get(str(state.get("status")), HEALTH_EXIT["down"])
