"""The InfluxDB adapter: line protocol and an async client for the v1-compatible HTTP API."""

from careloop.influx.client import InfluxClient, Series, WriteResult, quote_identifier
from careloop.influx.errors import (
    InfluxAuthError,
    InfluxError,
    InfluxQueryError,
    InfluxRequestError,
    InfluxUnavailable,
    InfluxWriteError,
    RejectedLine,
)
from careloop.influx.lineprotocol import LineProtocolError, Point, to_line_protocol

__all__ = [
    "InfluxAuthError",
    "InfluxClient",
    "InfluxError",
    "InfluxQueryError",
    "InfluxRequestError",
    "InfluxUnavailable",
    "InfluxWriteError",
    "LineProtocolError",
    "Point",
    "RejectedLine",
    "Series",
    "WriteResult",
    "quote_identifier",
    "to_line_protocol",
]
