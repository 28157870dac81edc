"""`careloop ingest` as operators run it: separate processes killed with SIGKILL, two on one shared subscription,
and `--health`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from careloop.cli import cli
from careloop.ports import free_port
from careloop.testing.influxd import Influxd
from careloop.testing.mosquitto import Mosquitto
from careloop.testing.mqtt_publisher import publish_all
from careloop.testing.service_fixtures import InfluxTestDatabase
from ingest.cli import check_health

Readings = Callable[..., list[tuple[str, bytes]]]
Count = Callable[..., int]
Wait = Callable[..., Awaitable[None]]


def test_the_command_is_registered_with_careloop() -> None:
    result = CliRunner().invoke(cli, ["ingest", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--instance", "--group", "--batch-points", "--registry", "--health"):
        assert option in result.output


def test_a_bad_configuration_is_reported_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_MQTT__URL", "http://not-mqtt")
    result = CliRunner().invoke(cli, ["ingest"])
    assert result.exit_code == 2
    assert "mqtt.url" in result.output


@pytest.fixture
def health_server() -> Iterator[tuple[str, list[tuple[int, dict[str, Any]]]]]:
    """An HTTP server answering /health with the (status, body) at the end of the list."""
    answers: list[tuple[int, dict[str, Any]]] = [(200, {"status": "ok"})]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answers[-1]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/health", answers
    server.shutdown()


def test_health_exit_status_follows_the_state(
    health_server: tuple[str, list[tuple[int, dict[str, Any]]]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, answers = health_server
    assert check_health(url) == 0
    answers.append((200, {"status": "degraded", "spooling": True}))
    assert check_health(url) == 1
    assert '"spooling": true' in capsys.readouterr().out
    answers.append((503, {"status": "down"}))
    assert check_health(url) == 2
    assert check_health(f"http://127.0.0.1:{free_port()}/health") == 2
    assert "is ingest running?" in capsys.readouterr().err


# -- the command as operators run it, in separate processes ---------------------------------------------------------
async def test_kill_9_mid_run_then_restart_stores_every_point_once(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    influxd: Influxd,
    topic_root: str,
    tmp_path: Path,
    start_ingest: Callable[..., Any],
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    """200,000 readings; ingest is SIGKILLed a quarter of the way in and started again with the same client id."""
    total = 200_000
    messages = make_readings(topic_root, total, devices=1000)
    ingest = start_ingest(mosquitto, influx_db.url, influx_db.name, topic_root, tmp_path)
    publishing = asyncio.ensure_future(publish_all(mosquitto.host, mosquitto.port, messages[: total // 2]))

    def written() -> float:
        return ingest.metrics().get("careloop_ingest_points_written_total", 0.0)

    await wait_until(lambda: written() >= total // 4, what="a quarter of the points")
    ingest.kill()
    killed_at = count_points(influxd, influx_db.name)
    assert killed_at < total
    await publishing
    await publish_all(mosquitto.host, mosquitto.port, messages[total // 2 :])  # the session queues them meanwhile
    ingest.start()
    await wait_until(lambda: count_points(influxd, influx_db.name) >= total, timeout_s=120, what="every point")
    # Whatever the broker still had for it is in too: a point written twice under two times would show now.
    await wait_until(lambda: ingest.health().get("unacked_messages") == 0, what="nothing left unacknowledged")
    assert count_points(influxd, influx_db.name) == total
    per_device = influxd.query('SELECT count("hr_bpm") FROM "vitals" GROUP BY "device"', db=influx_db.name)["results"][
        0
    ]["series"]
    assert len(per_device) == 1000
    assert {s["values"][0][1] for s in per_device} == {total // 1000}
    after = ingest.metrics()
    assert after["careloop_ingest_messages_redelivered_total"] > 0  # the unacknowledged ones came again...
    assert after["careloop_ingest_messages_received_total"] >= total - killed_at  # ...and were rewritten, not added


async def test_two_processes_on_one_shared_subscription_store_every_point_once(
    mosquitto: Mosquitto,
    influx_db: InfluxTestDatabase,
    influxd: Influxd,
    topic_root: str,
    tmp_path: Path,
    start_ingest: Callable[..., Any],
    make_readings: Readings,
    count_points: Count,
    wait_until: Wait,
) -> None:
    total = 60_000
    first = start_ingest(mosquitto, influx_db.url, influx_db.name, topic_root, tmp_path, instance=0)
    second = start_ingest(mosquitto, influx_db.url, influx_db.name, topic_root, tmp_path, instance=1)
    await publish_all(mosquitto.host, mosquitto.port, make_readings(topic_root, total, devices=500))
    await wait_until(lambda: count_points(influxd, influx_db.name) >= total, what="every point")
    received = [p.metrics()["careloop_ingest_messages_received_total"] for p in (first, second)]
    assert sum(received) == total  # each message went to exactly one of them
    assert min(received) > 0
    assert count_points(influxd, influx_db.name) == total
    assert check_health(f"http://127.0.0.1:{first.metrics_port}/health") == 0
    assert first.stop() == 0
    assert second.stop() == 0
