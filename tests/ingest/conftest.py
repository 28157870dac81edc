"""Fixtures for the ingest tests: generated readings, InfluxDB counts, polling, ingest as a separate process.

Test modules get the helpers through fixtures (`make_readings`, `count_points`, `wait_until`, `start_ingest`);
fast publishing is `careloop.testing.mqtt_publisher.publish_all`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from careloop.ports import free_port
from careloop.testing.influxd import Influxd
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import TopicKind, TopicTree

WAIT_S = 60.0
#: A bracelet reading as the fleet formats it; %.3f keeps the timestamps on whole milliseconds.
READING = b'{"v":1,"ts":%.3f,"hr_bpm":%.1f,"spo2_pct":97.0,"skin_temp_c":33.2,"ppg_quality":0.9,"motion_g":0.01}'


def readings(root: str, count: int, *, devices: int = 100, t0: float | None = None) -> list[tuple[str, bytes]]:
    """`count` distinct bracelet readings (device i % devices, one millisecond apart per device)."""
    tree = TopicTree(root)
    start = time.time() - 600 if t0 is None else t0
    topics = [tree.device(TopicKind.DEVICE_VITALS, f"H{d:04d}", f"BR-{d:04d}") for d in range(devices)]
    return [
        (topics[i % devices], READING % (start + (i // devices) * 0.001, 60.0 + i % 400 / 10)) for i in range(count)
    ]


def influx_count(influxd: Influxd, database: str, query: str = 'SELECT count("hr_bpm") FROM "vitals"') -> int:
    """The single number a count() query returns (0 when the measurement is empty or missing)."""
    result = influxd.query(query, db=database)
    series = result["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


async def wait_for(predicate: Any, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    """Poll `predicate()` (sync) every 50 ms until true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


class IngestProcess:
    """`python -m ingest` as an operator runs it, for tests that kill it or run several."""

    def __init__(
        self,
        broker: Mosquitto,
        influx_url: str,
        database: str,
        root: str,
        spool_dir: Path,
        *,
        instance: int = 0,
        extra: Iterable[str] = (),
    ) -> None:
        self.metrics_port = free_port("127.0.0.1")
        self.log_path = spool_dir / f"ingest-{instance}-{self.metrics_port}.log"
        self.env = dict(
            os.environ,
            CARELOOP_MQTT__URL=broker.url,
            CARELOOP_MQTT__TOPIC_ROOT=root,
            CARELOOP_INFLUX__URL=influx_url,
            CARELOOP_INFLUX__DATABASE=database,
            CARELOOP_SITE_ID="test",
            CARELOOP_LOG_LEVEL="INFO",
        )
        self.env.pop("CARELOOP_CONFIG", None)
        self.args = [
            sys.executable,
            "-m",
            "ingest",
            "--instance",
            str(instance),
            "--client-id-prefix",
            f"test-{root}",
            "--spool-dir",
            str(spool_dir),
            "--metrics-port",
            str(self.metrics_port - instance),
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        """Start the process and wait until it is connected and subscribed."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.health().get("mqtt_connected"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ingest did not come up:\n{self.log()}")
            time.sleep(0.05)
        return self

    def health(self) -> dict[str, Any]:
        """The /health answer ({} while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health", timeout=2) as response:
                state: dict[str, Any] = json.loads(response.read())
                return state
        except urllib.error.HTTPError as exc:
            state = json.loads(exc.read())
            return state
        except (OSError, ValueError):
            return {}

    def metrics(self) -> dict[str, float]:
        """The /metrics samples by their full name with labels ({} while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def kill(self) -> None:
        """SIGKILL: no drain, no DISCONNECT, nothing saved on the way out."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM (drain, then disconnect); the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        """The process's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def make_readings() -> Callable[..., list[tuple[str, bytes]]]:
    """`readings(root, count, devices=100, t0=None)`: distinct bracelet readings."""
    return readings


@pytest.fixture
def count_points() -> Callable[..., int]:
    """`influx_count(influxd, database, query=...)`: the number a count() query returns."""
    return influx_count


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[None]]:
    """`await wait_for(predicate, timeout_s=60, what=...)`: poll until true or fail the test."""
    return wait_for


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[Callable[..., IngestProcess]]:
    """Start `python -m ingest` processes (see IngestProcess); every one is stopped after the test."""
    started: list[IngestProcess] = []

    def start(*args: Any, **kwargs: Any) -> IngestProcess:
        process = IngestProcess(*args, **kwargs).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
