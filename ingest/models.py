"""Ingest's configuration: how it batches, how much it holds in memory, where it spools, what it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from careloop.topics import ID_PATTERN

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]


class IngestConfig(BaseModel):
    """Tuning of one ingest process (the broker, InfluxDB and site come from `CareloopSettings`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: Identifier = Field(
        "careloop-ingest-0",
        description="MQTT client id; stable across restarts, so the broker keeps the session and what it queued",
    )
    group: Identifier = Field("ingest", description="shared subscription group: processes in it split the messages")
    batch_points: Annotated[int, Field(ge=1, le=100_000)] = Field(
        20_000,
        description="a batch is written when it holds this many points (or a quarter of receive_maximum messages)",
    )
    batch_delay_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.2, description="... or when its first message is this old"
    )
    write_concurrency: Annotated[int, Field(ge=1, le=64)] = Field(3, description="batches written at once")
    max_pending_points: Annotated[int, Field(ge=1)] = Field(
        300_000, description="points in memory before reading from the broker pauses (resumes at half)"
    )
    receive_maximum: Annotated[int, Field(ge=1, le=65_535)] = Field(
        60_000, description="unacknowledged messages the broker may send at once"
    )
    spool_dir: Path = Field(Path("ingest-spool"), description="where the spool file lives (one per client id)")
    direct_retries: Annotated[int, Field(ge=0, le=20)] = Field(
        2, description="retries of a direct write before its batch goes to the spool"
    )
    replay_interval_s: Annotated[float, Field(gt=0, le=600)] = Field(
        1.0, description="pause between attempts to replay the spool while InfluxDB is unreachable"
    )
    dead_letters: bool = Field(True, description="publish every rejected message to the dead-letter topic")
    registry: bool = Field(
        False, description="tag device topics with the resident from the registry, reject unknown devices"
    )
    registry_refresh_s: Annotated[float, Field(gt=0)] = Field(60.0, description="reload the registry's devices")
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = Field(9464, description="0: pick a free port")
    drain_timeout_s: Annotated[float, Field(ge=0)] = Field(
        10.0, description="on stop, how long to wait for batches in flight to be stored and acknowledged"
    )

    @property
    def spool_path(self) -> Path:
        """This process's spool file."""
        return self.spool_dir / f"{self.client_id}.sqlite3"
