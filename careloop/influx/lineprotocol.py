"""InfluxDB line protocol: the `Point` value and a fast, strict serialiser.

`measurement[,tag=value...] field=value[,field=value...] time_ns`, one point per line. Escaping follows the
InfluxDB reference: `,` and space in measurement names; `,`, `=` and space in tag keys, tag values and field
keys; `"` and `\\` inside string field values. Tags are written sorted by key (byte order), as InfluxDB
recommends for its index, and so are fields, so a point always serialises to the same bytes (the same bytes as
influxdb-client's `Point.to_line_protocol()`, for every point both accept).

What line protocol cannot carry is refused with `LineProtocolError` instead of being written wrongly:

- a newline, carriage return or tab in a measurement, tag key, tag value or field key (InfluxDB has no escape
  for them; influxdb-client writes `\\n`, which InfluxDB stores as a backslash and an `n`);
- a trailing backslash in any of those (it would escape the separator after it);
- an empty measurement, tag key or field key, a measurement starting with `#` (a comment line), a tag or field
  key named `time` (InfluxDB drops the point);
- a point without fields, a float that is NaN or infinite, an integer outside int64, a timestamp outside
  InfluxDB's range.

An empty tag value is dropped, not refused: InfluxDB treats an empty tag exactly like a missing one
(`WHERE site = ''` matches the points that lack the tag), so leaving it out loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import isfinite

FieldValue = float | int | bool | str

#: InfluxDB refuses timestamps outside this range ("time outside range").
MIN_TIME_NS = -9_223_372_036_854_775_806
MAX_TIME_NS = 9_223_372_036_854_775_806
_MIN_INT = -(2**63)
_MAX_INT = 2**63 - 1

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_FORBIDDEN = ("\n", "\r", "\t")

# Escaped names and tag sets repeat on nearly every point (a handful of measurements, one tag set per device),
# so they are computed once and looked up after. Each cache is cleared when it reaches this many entries.
_CACHE_LIMIT = 100_000
_measurement_cache: dict[str, str] = {}
_field_key_cache: dict[str, str] = {}
_series_cache: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}


class LineProtocolError(ValueError):
    """A point that line protocol cannot carry faithfully; the message says which part and why."""


@dataclass(slots=True, frozen=True)
class Point:
    """One InfluxDB point: measurement, tags, fields and a timestamp in nanoseconds since the Unix epoch."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int

    def to_line_protocol(self) -> str:
        """This point as one line of line protocol (no trailing newline)."""
        return to_line_protocol(self)


def _check_name(value: str, what: str) -> None:
    if not value:
        raise LineProtocolError(f"{what} is empty")
    for char in _FORBIDDEN:
        if char in value:
            raise LineProtocolError(f"{what} {value!r} contains {char!r}, which line protocol cannot carry")
    if value[-1] == "\\":
        raise LineProtocolError(f"{what} {value!r} ends with a backslash, which would escape the separator")


def _escape_measurement(name: str) -> str:
    if not isinstance(name, str):
        raise LineProtocolError(f"measurement must be a str, not {type(name).__name__}")
    _check_name(name, "measurement")
    if name[0] == "#":
        raise LineProtocolError(f"measurement {name!r} starts with '#', which makes the line a comment")
    escaped = name.translate(_MEASUREMENT_ESCAPES)
    if len(_measurement_cache) >= _CACHE_LIMIT:
        _measurement_cache.clear()
    _measurement_cache[name] = escaped
    return escaped


def _escape_key(key: str, what: str) -> str:
    if not isinstance(key, str):
        raise LineProtocolError(f"{what} must be a str, not {type(key).__name__}")
    _check_name(key, what)
    if key == "time":
        raise LineProtocolError(f"{what} 'time' is reserved; InfluxDB drops the point")
    return key.translate(_KEY_ESCAPES)


def _series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """`measurement,k=v,...` with tags sorted by key; the result is cached per (measurement, tags)."""
    parts = [_measurement_cache.get(measurement) or _escape_measurement(measurement)]
    for key, value in sorted(tags):
        if not isinstance(value, str):
            raise LineProtocolError(f"tag {key!r} must be a str, not {type(value).__name__}")
        if value == "":
            continue  # an empty tag is the same as no tag to InfluxDB (see the module docstring)
        escaped_key = _escape_key(key, "tag key")
        _check_name(value, f"tag {key!r} value")
        parts.append(f"{escaped_key}={value.translate(_KEY_ESCAPES)}")
    series = ",".join(parts)
    if len(_series_cache) >= _CACHE_LIMIT:
        _series_cache.clear()
    _series_cache[(measurement, tags)] = series
    return series


def _field_key(key: str) -> str:
    escaped = _escape_key(key, "field key") + "="
    if len(_field_key_cache) >= _CACHE_LIMIT:
        _field_key_cache.clear()
    _field_key_cache[key] = escaped
    return escaped


def _field_value(key: str, value: object) -> str:
    kind = type(value)
    if kind is float or (isinstance(value, float) and kind is not bool):
        number: float = value  # type: ignore[assignment]
        if not isfinite(number):
            raise LineProtocolError(f"field {key!r} is {number!r}; line protocol has no NaN or infinity")
        text = repr(float(number))
        # Whole floats are written without ".0", as influxdb-client does; InfluxDB still reads them as floats
        # because only a trailing `i` makes an integer.
        return text[:-2] if text.endswith(".0") else text
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, int) and not isinstance(value, bool):
        if not _MIN_INT <= value <= _MAX_INT:
            raise LineProtocolError(f"field {key!r} = {value} does not fit a signed 64-bit integer")
        return f"{int(value)}i"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise LineProtocolError(f"field {key!r} has type {kind.__name__}; use float, int, bool or str")


def to_line_protocol(point: Point) -> str:
    """One point as one line of line protocol; raises LineProtocolError for what line protocol cannot carry."""
    tags = tuple(point.tags.items())
    series = _series_cache.get((point.measurement, tags)) or _series_key(point.measurement, tags)
    fields = point.fields
    if not fields:
        raise LineProtocolError(f"a point of {point.measurement!r} has no fields; InfluxDB needs at least one")
    parts = []
    key_cache = _field_key_cache
    for key, value in sorted(fields.items()):
        prefix = key_cache.get(key) or _field_key(key)
        # Fast path for the common case, a finite float (NaN and infinity fail `value - value == 0.0`).
        if type(value) is float and value - value == 0.0:
            text = repr(value)
            parts.append(prefix + (text[:-2] if text[-2:] == ".0" else text))
        else:
            parts.append(prefix + _field_value(key, value))
    time_ns = point.time_ns
    if type(time_ns) is not int:
        if not isinstance(time_ns, int) or isinstance(time_ns, bool):
            raise LineProtocolError(f"time_ns must be an int (nanoseconds), not {type(time_ns).__name__}")
        time_ns = int(time_ns)
    if not MIN_TIME_NS <= time_ns <= MAX_TIME_NS:
        raise LineProtocolError(f"time_ns {time_ns} is outside InfluxDB's range {MIN_TIME_NS}..{MAX_TIME_NS}")
    return f"{series} {','.join(parts)} {time_ns}"


def to_lines(points: Iterable[Point]) -> list[str]:
    """Each point as a line of line protocol, in order."""
    return [to_line_protocol(point) for point in points]


def to_body(points: Iterable[Point]) -> bytes:
    """A `/write` request body: the points' lines joined by newlines, UTF-8 encoded."""
    return "\n".join(to_line_protocol(point) for point in points).encode()
