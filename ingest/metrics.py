"""What ingest counts, in Prometheus text format at `/metrics`, and its health as JSON at `/health`.

The counters are plain integers on one `IngestStats` object that the service increments on its hot path (no locks,
no label look-ups per message); they are rendered when scraped. The HTTP server is a few lines on asyncio streams:
it serves two GET paths and nothing else, in the service's own event loop.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "careloop_ingest_"
#: Upper bounds of the write latency histogram, seconds.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class Histogram:
    """A Prometheus histogram: counts per upper bound (not cumulative here; rendered cumulative), sum and count."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class IngestStats:
    """Everything ingest counts. Counters only grow; the service sets the gauges."""

    received: int = 0
    redelivered: int = 0
    written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    refused_points: int = 0
    spooled: int = 0
    replayed: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    connects: dict[str, int] = field(default_factory=dict)
    pauses: int = 0
    write_latency: dict[str, Histogram] = field(default_factory=lambda: {"direct": Histogram(), "replay": Histogram()})
    # gauges
    queue_points: int = 0
    unacked_messages: int = 0
    spool_points: int = 0
    spooling: bool = False
    paused: bool = False
    mqtt_connected: bool = False

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        """Add `n` to `table[key]`."""
        table[key] = table.get(key, 0) + n


def _sample(name: str, value: float, labels: Mapping[str, str] | None = None) -> str:
    if labels:
        text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
        return f"{PREFIX}{name}{{{text}}} {_number(value)}"
    return f"{PREFIX}{name} {_number(value)}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}", *samples]


def render(stats: IngestStats) -> str:
    """The stats in Prometheus text exposition format (version 0.0.4)."""
    s = stats
    out: list[str] = []
    out += _family(
        "messages_received_total",
        "counter",
        "MQTT messages received.",
        [_sample("messages_received_total", s.received)],
    )
    out += _family(
        "messages_redelivered_total",
        "counter",
        "Messages the broker sent again (DUP flag): a point rewritten, never a second one.",
        [_sample("messages_redelivered_total", s.redelivered)],
    )
    out += _family(
        "points_written_total",
        "counter",
        "Points InfluxDB stored when first written.",
        [_sample("points_written_total", s.written)],
    )
    out += _family(
        "messages_rejected_total",
        "counter",
        "Messages not written because they break the wire contract, by reason (each is dead-lettered).",
        [_sample("messages_rejected_total", n, {"reason": r}) for r, n in sorted(s.rejected.items())],
    )
    out += _family(
        "messages_skipped_total",
        "counter",
        "Valid messages that yield no point, by reason (no_timestamp: an availability without 'since').",
        [_sample("messages_skipped_total", n, {"reason": r}) for r, n in sorted(s.skipped.items())],
    )
    out += _family(
        "points_refused_total",
        "counter",
        "Points InfluxDB refused (HTTP 400, e.g. a field type conflict); each is dead-lettered.",
        [_sample("points_refused_total", s.refused_points)],
    )
    out += _family(
        "points_spooled_total",
        "counter",
        "Points written to the local spool because InfluxDB was down or slow.",
        [_sample("points_spooled_total", s.spooled)],
    )
    out += _family(
        "points_replayed_total",
        "counter",
        "Points written from the spool to InfluxDB.",
        [_sample("points_replayed_total", s.replayed)],
    )
    out += _family(
        "dead_letters_total",
        "counter",
        "Dead letters published, by result (published, refused by the broker, failed: connection lost).",
        [_sample("dead_letters_total", n, {"result": r}) for r, n in sorted(s.dead_letters.items())],
    )
    out += _family(
        "mqtt_connects_total",
        "counter",
        "MQTT connection attempts, by result.",
        [_sample("mqtt_connects_total", n, {"result": r}) for r, n in sorted(s.connects.items())],
    )
    out += _family(
        "reading_pauses_total",
        "counter",
        "Times reading from the broker stopped because the in-memory queue was full.",
        [_sample("reading_pauses_total", s.pauses)],
    )
    out += _family(
        "queue_points",
        "gauge",
        "Points in memory, received and not yet durable.",
        [_sample("queue_points", s.queue_points)],
    )
    out += _family(
        "unacked_messages",
        "gauge",
        "Messages received and not yet acknowledged.",
        [_sample("unacked_messages", s.unacked_messages)],
    )
    out += _family(
        "spool_points",
        "gauge",
        "Points in the local spool, waiting for InfluxDB.",
        [_sample("spool_points", s.spool_points)],
    )
    out += _family(
        "spooling",
        "gauge",
        "1 while new points go to the spool instead of InfluxDB.",
        [_sample("spooling", s.spooling)],
    )
    out += _family(
        "reading_paused",
        "gauge",
        "1 while reading from the broker is paused.",
        [_sample("reading_paused", s.paused)],
    )
    out += _family(
        "mqtt_connected", "gauge", "1 while connected and subscribed.", [_sample("mqtt_connected", s.mqtt_connected)]
    )
    samples = []
    for path, histogram in s.write_latency.items():
        cumulative = 0
        for bound, n in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            samples.append(_sample("write_latency_seconds_bucket", cumulative, {"path": path, "le": le}))
        samples.append(_sample("write_latency_seconds_sum", histogram.total, {"path": path}))
        samples.append(_sample("write_latency_seconds_count", histogram.count, {"path": path}))
    out += _family(
        "write_latency_seconds",
        "histogram",
        "Time to write one batch to InfluxDB, retries included (direct writes and spool replay).",
        samples,
    )
    return "\n".join(out) + "\n"


# -- health ---------------------------------------------------------------------------------------------------------
OK, DEGRADED, DOWN = "ok", "degraded", "down"


def health(stats: IngestStats) -> dict[str, Any]:
    """The service's state for operators: `status` is ok, degraded (spooling or paused) or down (no broker)."""
    if not stats.mqtt_connected:
        status = DOWN
    elif stats.spooling or stats.paused:
        status = DEGRADED
    else:
        status = OK
    return {
        "status": status,
        "mqtt_connected": stats.mqtt_connected,
        "spooling": stats.spooling,
        "reading_paused": stats.paused,
        "queue_points": stats.queue_points,
        "unacked_messages": stats.unacked_messages,
        "spool_points": stats.spool_points,
        "received": stats.received,
        "written": stats.written,
        "rejected": sum(stats.rejected.values()),
        "spooled": stats.spooled,
        "replayed": stats.replayed,
    }


class MetricsServer:
    """Serves `GET /metrics` (Prometheus) and `GET /health` (JSON; HTTP 503 when down) on the event loop."""

    def __init__(self, stats_source: Callable[[], IngestStats], host: str = "127.0.0.1", port: int = 9464) -> None:
        self._stats = stats_source
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; with port 0 the system picks one, and `port` says which."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            if method != "GET":
                status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, content_type = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
                body = render(self._stats()).encode()
            elif path == "/health":
                state = health(self._stats())
                status = "503 Service Unavailable" if state["status"] == DOWN else "200 OK"
                content_type, body = "application/json", json.dumps(state).encode() + b"\n"
            else:
                status, content_type, body = "404 Not Found", "text/plain", b"try /metrics or /health\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
