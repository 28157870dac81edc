"""/metrics in Prometheus text format, /health for operators."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families

from ingest.metrics import IngestStats, MetricsServer, health, render


def stats() -> IngestStats:
    s = IngestStats(received=10, written=7, spooled=3, replayed=3, mqtt_connected=True, queue_points=2)
    s.count(s.rejected, "bad_json", 2)
    s.count(s.rejected, "out_of_range")
    s.write_latency["direct"].observe(0.003)
    s.write_latency["direct"].observe(0.2)
    s.write_latency["direct"].observe(100.0)
    return s


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_the_exposition_parses_and_says_what_happened() -> None:
    parsed = samples(render(stats()))
    assert parsed[("careloop_ingest_messages_received_total", ())] == 10
    assert parsed[("careloop_ingest_points_written_total", ())] == 7
    assert parsed[("careloop_ingest_messages_rejected_total", (("reason", "bad_json"),))] == 2
    assert parsed[("careloop_ingest_messages_rejected_total", (("reason", "out_of_range"),))] == 1
    assert parsed[("careloop_ingest_points_spooled_total", ())] == 3
    assert parsed[("careloop_ingest_points_replayed_total", ())] == 3
    assert parsed[("careloop_ingest_queue_points", ())] == 2
    bucket = "careloop_ingest_write_latency_seconds_bucket"
    assert parsed[(bucket, (("le", "0.005"), ("path", "direct")))] == 1
    assert parsed[(bucket, (("le", "0.25"), ("path", "direct")))] == 2
    assert parsed[(bucket, (("le", "30.0"), ("path", "direct")))] == 2
    assert parsed[(bucket, (("le", "+Inf"), ("path", "direct")))] == 3
    assert parsed[("careloop_ingest_write_latency_seconds_count", (("path", "direct"),))] == 3


def test_health_is_down_without_the_broker_and_degraded_while_spooling() -> None:
    s = stats()
    assert health(s)["status"] == "ok"
    s.spooling = True
    assert health(s)["status"] == "degraded"
    s.mqtt_connected = False
    assert health(s)["status"] == "down"


async def get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_the_server_answers_metrics_health_and_nothing_else() -> None:
    current = stats()
    server = MetricsServer(lambda: current, port=0)
    await server.start()
    try:
        status, body = await get(server.port, "/metrics")
        assert status == "HTTP/1.1 200 OK"
        assert samples(body.decode())[("careloop_ingest_messages_received_total", ())] == 10
        status, body = await get(server.port, "/health")
        assert status == "HTTP/1.1 200 OK"
        assert json.loads(body)["status"] == "ok"
        current.mqtt_connected = False
        status, body = await get(server.port, "/health")
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert json.loads(body)["status"] == "down"
        status, _ = await get(server.port, "/other")
        assert status == "HTTP/1.1 404 Not Found"
    finally:
        await server.close()
