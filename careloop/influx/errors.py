"""What can go wrong talking to InfluxDB, as exceptions that carry InfluxDB's own words.

InfluxError
├── InfluxUnavailable      5xx, 429, refused connection or timeout, still failing after every retry
└── InfluxRequestError     any other 4xx: retrying would not help
    ├── InfluxAuthError    401/403: wrong or missing credentials, or no permission
    ├── InfluxWriteError   /write refused some or all lines (`rejected` says which)
    └── InfluxQueryError   /query refused the query, or a statement in it failed
"""

from __future__ import annotations

from dataclasses import dataclass


class InfluxError(Exception):
    """Base class of every InfluxDB adapter error."""


class InfluxUnavailable(InfluxError):
    """InfluxDB could not be reached or kept failing (5xx, 429, connection error, timeout) after `attempts` tries.

    Writes are idempotent in InfluxDB (the same series and timestamp overwrite), so the whole write may be retried.
    """

    def __init__(self, message: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        #: The last HTTP status, or None when the last attempt got no response at all.
        self.status = status


class InfluxRequestError(InfluxError):
    """InfluxDB answered with a 4xx that retrying will not fix; `message` is InfluxDB's error text."""

    def __init__(self, status: int, body: str, message: str | None = None) -> None:
        self.status = status
        self.body = body
        self.message = message if message is not None else body
        super().__init__(f"InfluxDB answered {status}: {self.message}")


class InfluxAuthError(InfluxRequestError):
    """InfluxDB refused the credentials (401) or the permission (403)."""


@dataclass(slots=True, frozen=True)
class RejectedLine:
    """A line InfluxDB did not store: its position in the input given to `write()`, its text, and why."""

    index: int
    line: str
    reason: str


class InfluxWriteError(InfluxRequestError):
    """`/write` refused lines. Every line not in `rejected` was stored, except `unidentified` more.

    InfluxDB 1.x writes the lines it can parse and answers 400 "partial write: ..." naming the lines it could not
    parse and the first field type conflict; `rejected` lists every line that can be matched to that text.
    `unidentified` counts the points InfluxDB says it dropped that could not be matched to a line (a second type
    conflict in one batch, or a conflict in lines given as plain strings).
    """

    def __init__(
        self,
        status: int,
        body: str,
        message: str | None = None,
        *,
        rejected: tuple[RejectedLine, ...] = (),
        unidentified: int = 0,
    ) -> None:
        super().__init__(status, body, message)
        self.rejected = rejected
        self.unidentified = unidentified

    def __str__(self) -> str:
        count = f"{len(self.rejected)} line(s) rejected"
        if self.unidentified:
            count += f" and {self.unidentified} more dropped"
        return f"{super().__str__()} ({count})"


class InfluxQueryError(InfluxRequestError):
    """A query InfluxDB refused (HTTP 400) or a statement that failed inside a 200 answer (`statement_id`)."""

    def __init__(self, status: int, body: str, message: str | None = None, *, statement_id: int | None = None) -> None:
        super().__init__(status, body, message)
        self.statement_id = statement_id

    def __str__(self) -> str:
        where = "" if self.statement_id is None else f" (statement {self.statement_id})"
        return f"InfluxDB refused the query{where}: {self.message}"
