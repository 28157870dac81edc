"""InfluxClient against a real influxd (round trips, errors, outages, auth) and a mock transport (retry policy)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from careloop.influx import (
    InfluxAuthError,
    InfluxClient,
    InfluxQueryError,
    InfluxUnavailable,
    InfluxWriteError,
    LineProtocolError,
    Point,
)
from careloop.settings import InfluxSettings
from careloop.testing.influxd import Influxd
from careloop.testing.service_fixtures import InfluxTestDatabase

T0 = 1_767_225_600_000_000_000
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class RecordedSleep:
    """An injected backoff sleep: records the delays, returns at once (optionally running a hook)."""

    def __init__(self, hook: Callable[[], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self._hook = hook

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self._hook is not None:
            await self._hook()


def mock_client(handler: Handler, sleep: RecordedSleep | None = None, **kwargs: object) -> InfluxClient:
    options: dict[str, object] = {"database": "db", "jitter": lambda: 1.0, "sleep": sleep or RecordedSleep()}
    options.update(kwargs)
    return InfluxClient("http://influx.test", transport=httpx.MockTransport(handler), **options)  # type: ignore[arg-type]


def vitals(n: int, *, home: str = "h1") -> list[Point]:
    return [
        Point("vitals", {"home": home, "device": f"d{i % 3}"}, {"hr_bpm": 60.5 + i % 40, "spo2_pct": 97.25}, T0 + i)
        for i in range(n)
    ]


# -- against the real influxd ------------------------------------------------------------------------------------
async def test_round_trip_keeps_types_tags_and_times(influx_db: InfluxTestDatabase) -> None:
    tricky_tags = {
        "site": "north wing, floor 2",
        "home": "a=b",
        "resident": 'Zoë "Nan" O\'Brien',
        "device": "back\\slash and ünïcode 温度",
    }
    points = [
        Point(
            "vitals, raw",
            tricky_tags,
            {
                "hr_bpm": 72.5,
                "steps": -(2**63),
                "worn": True,
                "note": 'says "hi"\\n, then\na new line; emoji 🙂',
                "temp c": 36.6000000000001,
            },
            T0 + 123_456_789,
        ),
        Point("vitals, raw", tricky_tags, {"hr_bpm": 0.1, "steps": 2**63 - 1, "worn": False, "note": ""}, T0 + 1),
    ]
    async with InfluxClient.from_settings(influx_db.settings()) as influx:
        result = await influx.write(points)
        assert (result.lines, result.batches) == (2, 1)
        [series] = await influx.query(
            'SELECT * FROM "vitals, raw" WHERE resident = $r GROUP BY *', params={"r": tricky_tags["resident"]}
        )
        assert series.tags == tricky_tags
        rows = series.rows()
        assert [row["time"] for row in rows] == [T0 + 1, T0 + 123_456_789]
        assert rows[0] == {"time": T0 + 1, "hr_bpm": 0.1, "steps": 2**63 - 1, "worn": False, "note": "", "temp c": None}
        assert rows[1] == {
            "time": T0 + 123_456_789,
            "hr_bpm": 72.5,
            "steps": -(2**63),
            "worn": True,
            "note": 'says "hi"\\n, then\na new line; emoji 🙂',
            "temp c": 36.6000000000001,
        }
        # JSON cannot tell a float from an int, so the stored types are checked where InfluxDB states them.
        field_types = await influx.query('SHOW FIELD KEYS FROM "vitals, raw"')
        assert dict(field_types[0].values) == {  # type: ignore[arg-type]
            "hr_bpm": "float",
            "steps": "integer",
            "worn": "boolean",
            "note": "string",
            "temp c": "float",
        }


async def test_empty_tag_is_the_same_as_no_tag(influx_db: InfluxTestDatabase) -> None:
    """Why the serialiser drops empty tag values: InfluxDB matches a missing tag with `= ''`."""
    async with InfluxClient.from_settings(influx_db.settings()) as influx:
        await influx.write([Point("m", {"site": ""}, {"f": 1.5}, T0), Point("m", {"site": "s1"}, {"f": 2.5}, T0)])
        [series] = await influx.query("SELECT f FROM m WHERE site = ''")
        assert series.values == ((T0, 1.5),)


async def test_large_write_is_split_into_batches(influx_db: InfluxTestDatabase) -> None:
    async with InfluxClient.from_settings(influx_db.settings(batch_size=100, max_concurrency=3)) as influx:
        result = await influx.write(vitals(1050))
        assert (result.lines, result.batches) == (1050, 11)
        [count] = await influx.query("SELECT count(hr_bpm) FROM vitals")
        assert count.values[0][1] == 1050


async def test_unparsable_line_is_reported_and_the_rest_stored(influx_db: InfluxTestDatabase) -> None:
    lines = ["m,k=a f=1.5 1", "m,k=b f= 2", "m,k=c f=3.5 3", "not line protocol", "m,k=d f=4.5 4"]
    async with InfluxClient.from_settings(influx_db.settings(batch_size=2)) as influx:
        with pytest.raises(InfluxWriteError) as caught:
            await influx.write(lines)
        error = caught.value
        assert error.status == 400
        assert [(r.index, r.line) for r in error.rejected] == [(1, "m,k=b f= 2"), (3, "not line protocol")]
        assert all("invalid" in r.reason or "missing" in r.reason for r in error.rejected)
        assert "unable to parse" in error.message
        assert error.unidentified == 0
        [series] = await influx.query("SELECT f FROM m")
        assert [row[1] for row in series.values] == [1.5, 3.5, 4.5]


async def test_field_type_conflict_names_the_rejected_points(influx_db: InfluxTestDatabase) -> None:
    async with InfluxClient.from_settings(influx_db.settings()) as influx:
        await influx.write(Point("vitals", {"home": "h1"}, {"hr_bpm": 70.5}, T0))
        batch = [
            Point("vitals", {"home": "h1"}, {"hr_bpm": 71.5}, T0 + 1),
            Point("vitals", {"home": "h1"}, {"hr_bpm": 72}, T0 + 2),  # an int: InfluxDB has it as float
            Point("vitals", {"home": "h1"}, {"hr_bpm": 73.5}, T0 + 3),
        ]
        with pytest.raises(InfluxWriteError) as caught:
            await influx.write(batch)
        assert [r.index for r in caught.value.rejected] == [1]
        assert "already exists as type float" in caught.value.rejected[0].reason
        assert caught.value.unidentified == 0
        [series] = await influx.query("SELECT hr_bpm FROM vitals")
        assert [row[1] for row in series.values] == [70.5, 71.5, 73.5]


async def test_point_line_protocol_cannot_carry_is_refused_before_sending(influx_db: InfluxTestDatabase) -> None:
    async with InfluxClient.from_settings(influx_db.settings()) as influx:
        with pytest.raises(LineProtocolError, match="NaN"):
            await influx.write([Point("m", {}, {"f": 1.5}, 1), Point("m", {}, {"f": float("nan")}, 2)])
        assert await influx.query("SELECT * FROM m") == []


async def test_query_errors_carry_influxdbs_text(influx_db: InfluxTestDatabase) -> None:
    async with InfluxClient.from_settings(influx_db.settings()) as influx:
        await influx.write(Point("m", {}, {"f": 1.5}, 1))
        with pytest.raises(InfluxQueryError, match="error parsing query") as parse_error:
            await influx.query("SELEC * FROM m")
        assert parse_error.value.status == 400
        with pytest.raises(InfluxQueryError, match="database not found") as in_result:
            await influx.query("SELECT * FROM m", db="no_such_db")
        assert in_result.value.status == 200
        assert in_result.value.statement_id == 0
        with pytest.raises(InfluxQueryError) as second:
            await influx.query("SELECT f FROM m; SELECT nosuchfunc(f) FROM m")
        assert second.value.statement_id == 1


async def test_ping_create_and_drop_database(influxd: Influxd) -> None:
    async with InfluxClient(influxd.url) as influx:
        assert (await influx.ping()).startswith("1.")
        await influx.create_database('odd "name"')
        databases = await influx.query("SHOW DATABASES")
        assert ('odd "name"',) in databases[0].values
        await influx.drop_database('odd "name"')
        databases = await influx.query("SHOW DATABASES")
        assert ('odd "name"',) not in databases[0].values


async def test_write_completes_after_influxd_comes_back(fresh_influxd: Influxd) -> None:
    fresh_influxd.create_database("outage")
    fresh_influxd.stop()

    async def bring_it_back() -> None:
        if not fresh_influxd.running:
            await asyncio.to_thread(fresh_influxd.start)

    sleep = RecordedSleep(bring_it_back)
    async with InfluxClient(fresh_influxd.url, database="outage", sleep=sleep) as influx:
        with pytest.raises(InfluxUnavailable):
            await influx.ping()
        result = await influx.write(vitals(10))
        assert result.lines == 10
        assert len(sleep.delays) == 1  # refused once, then the restarted server took it
        [count] = await influx.query("SELECT count(hr_bpm) FROM vitals")
        assert count.values[0][1] == 10


async def test_auth_wrong_password_is_refused_right_one_works() -> None:
    with Influxd(admin=("admin", "correct horse")) as server:
        server.create_database("secure")
        wrong = InfluxClient(server.url, database="secure", username="admin", password="battery staple")
        async with wrong:
            with pytest.raises(InfluxAuthError, match="authorization failed") as caught:
                await wrong.write(vitals(1))
            assert caught.value.status == 401
        anonymous = InfluxClient(server.url, database="secure")
        async with anonymous:
            with pytest.raises(InfluxAuthError):
                await anonymous.query("SELECT * FROM vitals")
        settings = InfluxSettings.model_validate(
            {"url": server.url, "database": "secure", "username": "admin", "password": "correct horse"}
        )
        async with InfluxClient.from_settings(settings) as right:
            await right.write(vitals(3))
            [count] = await right.query("SELECT count(hr_bpm) FROM vitals")
            assert count.values[0][1] == 3


# -- retry policy, against a mock transport ------------------------------------------------------------------------
async def test_503_is_retried_with_backoff() -> None:
    answers = [httpx.Response(503, json={"error": "busy"}), httpx.Response(204)]
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    sleep = RecordedSleep()
    async with mock_client(handler, sleep) as influx:
        assert (await influx.write(vitals(2))).lines == 2
    assert len(seen) == 2
    assert seen[0].content == seen[1].content
    assert sleep.delays == [0.25]


async def test_429_waits_at_least_retry_after() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(204)]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    sleep = RecordedSleep()
    async with mock_client(handler, sleep) as influx:
        await influx.write(vitals(1))
    assert sleep.delays == [7.0]


async def test_connection_errors_are_retried_then_give_up() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    sleep = RecordedSleep()
    async with mock_client(handler, sleep, max_retries=6, backoff_max_s=4.0, jitter=lambda: 0.0) as influx:
        with pytest.raises(InfluxUnavailable, match="connection refused") as caught:
            await influx.write(vitals(1))
    assert calls == 7
    assert caught.value.attempts == 7
    assert caught.value.status is None
    # exponential, halved by the jitter at 0, capped at backoff_max_s
    assert sleep.delays == [0.125, 0.25, 0.5, 1.0, 2.0, 2.0]


async def test_timeouts_and_5xx_are_retried_until_success() -> None:
    answers: list[httpx.Response | type[httpx.TransportError]] = [
        httpx.ReadTimeout,
        httpx.Response(500, text="oops"),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(204),
    ]

    async def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("timed out", request=request)

    sleep = RecordedSleep()
    async with mock_client(handler, sleep) as influx:
        await influx.write(vitals(1))
    assert len(sleep.delays) == 3
    assert not answers


@pytest.mark.parametrize(
    ("status", "error"), [(400, InfluxWriteError), (401, InfluxAuthError), (404, InfluxWriteError)]
)
async def test_other_4xx_are_not_retried(status: int, error: type[Exception]) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"error": f"refused with {status}"})

    sleep = RecordedSleep()
    async with mock_client(handler, sleep) as influx:
        with pytest.raises(error, match=f"refused with {status}"):
            await influx.write(vitals(1))
    assert calls == 1
    assert sleep.delays == []


async def test_influxdb_2_error_text_is_read_from_message() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": "invalid", "message": "partial write error (1 written)"})

    async with mock_client(handler) as influx:
        with pytest.raises(InfluxWriteError, match=r"partial write error \(1 written\)"):
            await influx.write(vitals(2))


async def test_at_most_max_concurrency_requests_in_flight() -> None:
    in_flight = peak = 0
    bodies: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):  # stay in flight across several event-loop turns
            await asyncio.sleep(0)
        in_flight -= 1
        bodies.append(request.content)
        return httpx.Response(204)

    async with mock_client(handler, batch_size=10, max_concurrency=3) as influx:
        result = await influx.write(vitals(95))
    assert (result.lines, result.batches) == (95, 10)
    assert peak == 3
    lines = sorted(line for body in bodies for line in body.decode().split("\n"))
    assert lines == sorted(p.to_line_protocol() for p in vitals(95))


async def test_outage_stops_further_batches() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    async with mock_client(handler, batch_size=1, max_concurrency=1, max_retries=2) as influx:
        with pytest.raises(InfluxUnavailable) as caught:
            await influx.write(vitals(50))
    assert calls == 3  # the first batch's three attempts; the other 49 batches were not tried
    assert caught.value.status == 503
    assert any("0 batch(es)" in note for note in caught.value.__notes__)


async def test_auth_headers_and_write_parameters() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/query":
            return httpx.Response(200, json={"results": [{"statement_id": 0}]})
        return httpx.Response(204)

    async with mock_client(handler, token="t0ken", retention_policy="week") as influx:
        await influx.write("m f=1 1")
        await influx.query("SHOW MEASUREMENTS", epoch=None, params={"x": 1})
    assert seen[0].headers["Authorization"] == "Token t0ken"
    assert dict(seen[0].url.params) == {"db": "db", "precision": "ns", "rp": "week"}
    assert seen[0].content == b"m f=1 1"
    assert dict(seen[1].url.params) == {"db": "db"}
    form = dict(httpx.QueryParams(seen[1].content.decode()))
    assert form == {"q": "SHOW MEASUREMENTS", "params": json.dumps({"x": 1})}

    seen.clear()
    async with mock_client(handler, username="u", password="p w") as influx:
        await influx.write("m f=1 1")
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"u:p w").decode()
    assert "p" not in seen[0].url.params  # the password never goes into the URL


def test_settings_and_arguments_are_checked() -> None:
    settings = InfluxSettings.model_validate(
        {"url": "http://x:8086/", "database": "d", "token": "tok", "batch_size": 7}
    )
    client = InfluxClient.from_settings(settings, max_retries=0)
    assert (client.url, client.database, client.batch_size, client.max_retries) == ("http://x:8086", "d", 7, 0)
    with pytest.raises(ValueError, match="not both"):
        InfluxClient(token="t", username="u", password="p")
    with pytest.raises(ValueError, match="go together"):
        InfluxClient(username="u")


async def test_rejected_lines_are_matched_even_when_they_contain_the_separator() -> None:
    tricky = "m,k=it's': f 1"  # contains "': ", as the error text's own separator
    body = {
        "error": f"partial write: unable to parse '{tricky}': invalid field format\nunable to parse 'x': bad dropped=0"
    }

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=body)

    async with mock_client(handler) as influx:
        with pytest.raises(InfluxWriteError) as caught:
            await influx.write(["m f=1 1", tricky, "x"])
    assert [(r.index, r.reason) for r in caught.value.rejected] == [(1, "invalid field format"), (2, "bad")]


async def test_a_400_without_partial_write_rejects_the_whole_batch() -> None:
    """InfluxDB 1.6 answers a bare "field type conflict" when a new field gets two types in one batch, and
    stores nothing of that batch."""

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "field type conflict"})

    async with mock_client(handler, batch_size=2) as influx:
        with pytest.raises(InfluxWriteError) as caught:
            await influx.write(vitals(3))
    assert [r.index for r in caught.value.rejected] == [0, 1, 2]
    assert {r.reason for r in caught.value.rejected} == {"field type conflict"}
