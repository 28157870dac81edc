"""An async InfluxDB client that speaks only the v1-compatible HTTP API: `/write`, `/query`, `/ping`.

InfluxDB 1.x, 2.x (with a DBRP mapping) and 3.x all serve these endpoints, so one adapter covers them. Writes are
split into batches of `batch_size` lines, at most `max_concurrency` requests are in flight per client, and a
request that meets a 5xx, a 429, a refused connection or a timeout is retried with exponential backoff and jitter
up to `max_retries` times. Any other 4xx is not retried: it raises an `InfluxRequestError` carrying InfluxDB's
error text. The backoff sleep and its randomness are injected, so tests do not wait on the wall clock.

    async with InfluxClient.from_settings(settings.influx) as influx:
        await influx.write([Point("vitals", {"home": "h1"}, {"hr_bpm": 72.0}, time_ns)])
        series = await influx.query("SELECT * FROM vitals WHERE home = $home", params={"home": "h1"})
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import Any, Self

import httpx

from careloop.influx.errors import (
    InfluxAuthError,
    InfluxError,
    InfluxQueryError,
    InfluxUnavailable,
    InfluxWriteError,
    RejectedLine,
)
from careloop.influx.lineprotocol import LineProtocolError, Point, to_line_protocol
from careloop.settings import InfluxSettings

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
JsonScalar = str | int | float | bool | None
EPOCHS = frozenset({"ns", "u", "µ", "ms", "s", "m", "h"})


@dataclass(slots=True, frozen=True)
class Series:
    """One series of a query result: measurement `name`, the GROUP BY `tags`, and rows of `values`."""

    name: str
    tags: Mapping[str, str]
    columns: tuple[str, ...]
    values: tuple[tuple[JsonScalar, ...], ...]
    statement_id: int = 0

    def rows(self) -> list[dict[str, JsonScalar]]:
        """Each row as a column -> value dict."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.values]


@dataclass(slots=True, frozen=True)
class WriteResult:
    """What a successful `write()` sent: how many lines, in how many requests."""

    lines: int
    batches: int


def quote_identifier(name: str) -> str:
    """An InfluxQL identifier (database, measurement, tag key) in double quotes, safe to put in a query."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxClient:
    """An async client for one InfluxDB; open it with `async with`, or call `aclose()` when done."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8086",
        *,
        database: str = "careloop",
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        batch_size: int = 5000,
        max_concurrency: int = 4,
        timeout_s: float = 10.0,
        max_retries: int = 8,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if token is not None and (username is not None or password is not None):
            raise ValueError("give either a token or a username and password, not both")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if batch_size < 1 or max_concurrency < 1 or max_retries < 0:
            raise ValueError("batch_size and max_concurrency must be >= 1, max_retries >= 0")
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._jitter = jitter
        self._slots = asyncio.Semaphore(max_concurrency)
        headers = {"Authorization": f"Token {token}"} if token is not None else {}
        # Basic auth rather than `u`/`p` query parameters keeps the password out of URLs, and so out of logs.
        auth = httpx.BasicAuth(username, password) if username is not None and password is not None else None
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency + 2, max_keepalive_connections=max_concurrency),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: InfluxSettings, **overrides: Any) -> InfluxClient:
        """A client configured from `InfluxSettings`; keyword arguments override (e.g. `sleep` in tests)."""
        kwargs: dict[str, Any] = {
            "url": settings.url,
            "database": settings.database,
            "retention_policy": settings.retention_policy,
            "username": settings.username,
            "password": settings.password.get_secret_value() if settings.password is not None else None,
            "token": settings.token.get_secret_value() if settings.token is not None else None,
            "batch_size": settings.batch_size,
            "max_concurrency": settings.max_concurrency,
            "timeout_s": settings.timeout_s,
            "max_retries": settings.max_retries,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- writing ------------------------------------------------------------------------------------------------
    async def write(
        self,
        data: Iterable[Point | str] | Point | str,
        *,
        database: str | None = None,
        retention_policy: str | None = None,
    ) -> WriteResult:
        """Write points (or ready lines of line protocol, one per str) in batches; see the module docstring.

        Raises InfluxWriteError when InfluxDB refused lines (every other line was stored), InfluxAuthError,
        InfluxUnavailable when InfluxDB stayed unreachable (the write may be repeated as a whole: InfluxDB
        overwrites a point with the same series and timestamp), or LineProtocolError for a point line protocol
        cannot carry (then nothing of that batch was sent).
        """
        items: Iterable[Point | str] = (data,) if isinstance(data, Point | str) else data
        params = {"db": database or self.database, "precision": "ns"}
        rp = retention_policy or self.retention_policy
        if rp:
            params["rp"] = rp
        batches = _batches(items, self.batch_size)
        write_errors: list[InfluxWriteError] = []
        fatal: list[Exception] = []
        sent_lines = sent_batches = 0

        async def worker() -> None:
            nonlocal sent_lines, sent_batches
            # Workers pull batches from one shared iterator, so at most `max_concurrency` batches are encoded
            # and in memory at once, and the event loop is blocked for one batch's encoding at a time.
            for start, batch in batches:
                if fatal:
                    return  # InfluxDB is down, refuses us, or a point is bad: stop sending more
                try:
                    await self._write_batch(start, batch, params)
                except InfluxWriteError as exc:
                    write_errors.append(exc)  # those lines are bad; the next batch may be fine
                    continue
                except (InfluxError, LineProtocolError) as exc:
                    fatal.append(exc)
                    return
                sent_lines += len(batch)
                sent_batches += 1

        async with asyncio.TaskGroup() as group:
            for n in range(self.max_concurrency):
                group.create_task(worker(), name=f"influx-write-{n}")
        if fatal:
            error = fatal[0]
            error.add_note(f"{sent_batches} batch(es) with {sent_lines} line(s) of this write were stored")
            raise error
        if write_errors:
            raise _merge_write_errors(write_errors)
        return WriteResult(lines=sent_lines, batches=sent_batches)

    async def _write_batch(self, start: int, batch: Sequence[Point | str], params: Mapping[str, str]) -> None:
        lines = []
        for i, item in enumerate(batch):
            try:
                lines.append(item if isinstance(item, str) else to_line_protocol(item))
            except LineProtocolError as exc:
                exc.add_note(f"point {start + i} of the write; nothing of its batch was sent")
                raise
        body = "\n".join(lines).encode()
        response = await self._request(
            "POST", "/write", params=params, content=body, headers={"Content-Type": "text/plain; charset=utf-8"}
        )
        if response.is_success:
            return
        message = _error_text(response)
        if response.status_code in (401, 403):
            raise InfluxAuthError(response.status_code, response.text, message)
        if response.status_code != 400:
            raise InfluxWriteError(
                response.status_code,
                response.text,
                message,
                rejected=tuple(RejectedLine(start + i, line, message) for i, line in enumerate(lines)),
            )
        rejected, unidentified = _rejected_lines(message, start, lines, batch)
        raise InfluxWriteError(400, response.text, message, rejected=rejected, unidentified=unidentified)

    # -- reading ------------------------------------------------------------------------------------------------
    async def query(
        self,
        influxql: str,
        db: str | None = None,
        epoch: str | None = "ns",
        *,
        params: Mapping[str, JsonScalar] | None = None,
    ) -> list[Series]:
        """Run InfluxQL and return the series of every statement, in order; raises InfluxQueryError on an error.

        `db` defaults to the client's database; `epoch` ("ns", "ms", ..., or None for RFC 3339 strings) sets
        how times come back; `params` binds `$name` placeholders (InfluxDB quotes them, so no injection).
        InfluxDB's JSON writes whole floats without a fraction (2.0 as `2`), so a float column may hold ints;
        `SHOW FIELD KEYS` tells the stored type.
        """
        if epoch is not None and epoch not in EPOCHS:
            raise ValueError(f"epoch must be one of {sorted(EPOCHS)} or None, not {epoch!r}")
        query_params = {"db": db or self.database}
        if epoch is not None:
            query_params["epoch"] = epoch
        form = {"q": influxql}
        if params:
            form["params"] = json.dumps(dict(params))
        response = await self._request("POST", "/query", params=query_params, data=form)
        if response.status_code in (401, 403):
            raise InfluxAuthError(response.status_code, response.text, _error_text(response))
        if not response.is_success:
            raise InfluxQueryError(response.status_code, response.text, _error_text(response))
        try:
            payload = response.json()
        except ValueError:
            raise InfluxQueryError(response.status_code, response.text, "the answer is not JSON") from None
        if not isinstance(payload, dict):
            raise InfluxQueryError(response.status_code, response.text, "the answer is not a JSON object")
        if "error" in payload:
            raise InfluxQueryError(response.status_code, response.text, str(payload["error"]))
        series: list[Series] = []
        for result in payload.get("results", []):
            statement_id = int(result.get("statement_id", 0))
            if "error" in result:
                raise InfluxQueryError(
                    response.status_code, response.text, str(result["error"]), statement_id=statement_id
                )
            for s in result.get("series", []):
                series.append(
                    Series(
                        name=s.get("name", ""),
                        tags=s.get("tags") or {},
                        columns=tuple(s.get("columns", ())),
                        values=tuple(tuple(row) for row in s.get("values", ())),
                        statement_id=statement_id,
                    )
                )
        return series

    async def create_database(self, name: str) -> None:
        """Create database `name` (InfluxDB 1.x; a no-op if it exists). InfluxDB 2.x/3.x create buckets otherwise."""
        await self.query(f"CREATE DATABASE {quote_identifier(name)}", db=name)

    async def drop_database(self, name: str) -> None:
        """Drop database `name` and all its data (InfluxDB 1.x; no error if it does not exist)."""
        await self.query(f"DROP DATABASE {quote_identifier(name)}", db=name)

    async def ping(self) -> str:
        """Check InfluxDB answers `/ping` (one attempt, no retry); returns its version, "" if it does not say."""
        try:
            async with self._slots:
                response = await self._http.get("/ping")
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.url} is unreachable: {_describe(exc)}", attempts=1) from exc
        if response.status_code in (401, 403):
            raise InfluxAuthError(response.status_code, response.text, _error_text(response))
        if not response.is_success:
            raise InfluxUnavailable(
                f"InfluxDB at {self.url} answered /ping with {response.status_code}: {_error_text(response)}",
                attempts=1,
                status=response.status_code,
            )
        return str(response.headers.get("X-Influxdb-Version", ""))

    # -- transport ----------------------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request, retrying 5xx, 429, connection errors and timeouts with backoff; other answers return."""
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            status: int | None = None
            try:
                async with self._slots:
                    response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:  # refused, reset, timed out, protocol error
                problem = _describe(exc)
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                status = response.status_code
                problem = f"{status} {_error_text(response)}"
                retry_after = _retry_after(response)
            if attempt > self.max_retries:
                raise InfluxUnavailable(
                    f"InfluxDB at {self.url} still failing after {attempt} attempt(s) of {method} {path}: {problem}",
                    attempts=attempt,
                    status=status,
                )
            delay = self._backoff(attempt, retry_after)
            log.warning("InfluxDB %s %s failed (%s); retry %d in %.2f s", method, path, problem, attempt, delay)
            await self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with "equal jitter": between half and all of base * 2^(attempt-1), capped."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0 ** (attempt - 1))
        delay = ceiling * (0.5 + 0.5 * self._jitter())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._backoff_max_s))
        return delay


def _batches(items: Iterable[Point | str], size: int) -> Iterator[tuple[int, list[Point | str]]]:
    """(index of the first item, items) for consecutive slices of at most `size` items."""
    iterator = iter(items)
    start = 0
    while batch := list(islice(iterator, size)):
        yield start, batch
        start += len(batch)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_text(response: httpx.Response) -> str:
    """InfluxDB's error message: `error` (1.x, 3.x) or `message` (2.x) of a JSON body, else the body itself."""
    text = response.text
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(payload, dict):
        for key in ("error", "message"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    return text.strip()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff stands in for it


_UNABLE_TO_PARSE = "unable to parse '"
_TYPE_CONFLICT = re.compile(
    r'input field "(?P<field>.*?)" on measurement "(?P<measurement>.*?)" is type (?P<type>\w+), '
    r"already exists as type (?P<existing>\w+)"
)
_DROPPED = re.compile(r"dropped=(\d+)")
_INFLUX_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}


def _rejected_lines(
    message: str, start: int, lines: list[str], batch: Sequence[Point | str]
) -> tuple[tuple[RejectedLine, ...], int]:
    """Match a 400 answer's text to the lines of the batch: (rejected lines, dropped points not matched)."""
    reasons: dict[int, str] = {}
    # "unable to parse '<line>': <reason>", one per line that failed to parse (the line may contain "': ").
    if _UNABLE_TO_PARSE in message:
        by_text: dict[str, int] = {}
        for i, line in enumerate(lines):
            by_text.setdefault(line, i)
        segments = message.split(_UNABLE_TO_PARSE)[1:]
        for segment in segments:
            cut = segment.find("': ")
            while cut != -1:
                index = by_text.get(segment[:cut])
                if index is not None:
                    reason = _DROPPED.sub("", segment[cut + 3 :]).strip().rstrip(";").strip()
                    reasons[index] = reason
                    break
                cut = segment.find("': ", cut + 1)
    # A type conflict names one field of one measurement; every point writing that field as another type fails.
    conflicts = 0
    for match in _TYPE_CONFLICT.finditer(message):
        field, measurement, existing = match["field"], match["measurement"], match["existing"]
        for i, item in enumerate(batch):
            if isinstance(item, Point) and item.measurement == measurement and field in item.fields:
                value_type = _INFLUX_TYPES.get(type(item.fields[field]))
                if value_type is not None and value_type != existing and i not in reasons:
                    reasons[i] = match.group(0)
                    conflicts += 1
    dropped_match = _DROPPED.search(message)
    dropped = int(dropped_match.group(1)) if dropped_match else 0
    if not message.startswith("partial write"):
        # No "partial write": InfluxDB stored nothing of this batch (1.x says only "field type conflict" when a
        # new field gets two types in one batch, and drops the whole batch).
        for i in range(len(lines)):
            reasons.setdefault(i, message)
        dropped = conflicts = 0
    rejected = tuple(RejectedLine(start + i, lines[i], reason) for i, reason in sorted(reasons.items()))
    return rejected, max(0, dropped - conflicts)


def _merge_write_errors(errors: list[InfluxWriteError]) -> InfluxWriteError:
    """One InfluxWriteError for the refusals of several batches, rejected lines in input order."""
    if len(errors) == 1:
        return errors[0]
    rejected = tuple(sorted((line for e in errors for line in e.rejected), key=lambda r: r.index))
    return InfluxWriteError(
        errors[0].status,
        "\n".join(e.body for e in errors),
        "; ".join(dict.fromkeys(e.message for e in errors)),
        rejected=rejected,
        unidentified=sum(e.unidentified for e in errors),
    )
