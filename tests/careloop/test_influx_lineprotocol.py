"""Line protocol: agrees with influxdb-client where both accept a point, and refuses what cannot be carried."""

from __future__ import annotations

import math
import string
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point as _ClientPoint

from careloop.influx.lineprotocol import (
    MAX_TIME_NS,
    MIN_TIME_NS,
    FieldValue,
    LineProtocolError,
    Point,
    to_body,
    to_line_protocol,
    to_lines,
)

ClientPoint: Any = _ClientPoint  # influxdb-client has no type hints

T = 1_767_225_600_123_456_789


def client_line(point: Point) -> str:
    """influxdb-client's serialisation of the same point."""
    p = ClientPoint(point.measurement)
    for key, tag in point.tags.items():
        p.tag(key, tag)
    for key, value in point.fields.items():
        p.field(key, value)
    return str(p.time(point.time_ns).to_line_protocol())


# Text with every character line protocol escapes, some unicode, and the characters we refuse.
_special = ",= \"\\'#"
_alphabet = st.sampled_from(string.ascii_letters + string.digits + _special + "é温\n\t")
_text = st.text(alphabet=_alphabet, max_size=12)
_name = st.text(alphabet=_alphabet, min_size=1, max_size=12)
_field_value: st.SearchStrategy[FieldValue] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    _text,
)


@given(
    measurement=_name,
    tags=st.dictionaries(_name, _text, max_size=4),
    fields=st.dictionaries(_name, _field_value, min_size=1, max_size=5),
    time_ns=st.integers(min_value=MIN_TIME_NS, max_value=MAX_TIME_NS),
)
def test_agrees_with_influxdb_client(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ns: int
) -> None:
    point = Point(measurement, tags, fields, time_ns)
    try:
        ours = to_line_protocol(point)
    except LineProtocolError:
        assume(False)
    assert ours == client_line(point)


@pytest.mark.parametrize(
    ("point", "line"),
    [
        (Point("vitals", {"home": "h1"}, {"hr_bpm": 72.5}, T), f"vitals,home=h1 hr_bpm=72.5 {T}"),
        # measurement: comma and space escaped, '=' not
        (Point("a,b c=d", {}, {"f": 1.5}, 1), "a\\,b\\ c=d f=1.5 1"),
        # tag keys and values, field keys: comma, equals sign and space escaped
        (Point("m", {"k ,=": "v ,=x"}, {"f ,=": 1.5}, 1), "m,k\\ \\,\\==v\\ \\,\\=x f\\ \\,\\==1.5 1"),
        # quotes and inner backslashes in tag values need no escape
        (Point("m", {"k": 'say "hi" \\o/'}, {"f": 1.5}, 1), 'm,k=say\\ "hi"\\ \\o/ f=1.5 1'),
        # string field values: double quote and backslash escaped, newline kept
        (Point("m", {}, {"s": 'a "b" c\\d\ne'}, 1), 'm s="a \\"b\\" c\\\\d\ne" 1'),
        # integers get an `i`; booleans are true/false; whole floats lose ".0" but stay floats
        (Point("m", {}, {"b": True, "c": False, "i": -3, "x": 2.0}, 1), "m b=true,c=false,i=-3i,x=2 1"),
        # tags and fields sorted by key
        (Point("m", {"z": "1", "a": "2"}, {"y": 1.5, "b": 2.5}, 1), "m,a=2,z=1 b=2.5,y=1.5 1"),
        # an empty tag value is the same as no tag to InfluxDB: dropped
        (Point("m", {"a": "", "b": "x"}, {"f": 1.5}, 1), "m,b=x f=1.5 1"),
        (Point("温度", {"房间": "客厅"}, {"值": 21.5}, 1), "温度,房间=客厅 值=21.5 1"),
        (Point("m", {}, {"f": 1.5}, MIN_TIME_NS), f"m f=1.5 {MIN_TIME_NS}"),
    ],
)
def test_escaping(point: Point, line: str) -> None:
    assert to_line_protocol(point) == line
    assert point.to_line_protocol() == line


@pytest.mark.parametrize(
    "value", [0.1, 1 / 3, -2.2250738585072014e-308, 5e-324, 1.7976931348623157e308, 1e16, 123456789.12345678]
)
def test_floats_round_trip_exactly(value: float) -> None:
    text = to_line_protocol(Point("m", {}, {"f": value}, 1)).split(" ")[1].removeprefix("f=")
    assert float(text) == value
    assert not text.endswith("i")


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (Point("", {}, {"f": 1.0}, 1), "measurement is empty"),
        (Point("#m", {}, {"f": 1.0}, 1), "comment"),
        (Point("m\n", {}, {"f": 1.0}, 1), "cannot carry"),
        (Point("m\\", {}, {"f": 1.0}, 1), "backslash"),
        (Point("m", {"k": "a\nb"}, {"f": 1.0}, 1), "cannot carry"),
        (Point("m", {"k": "a\rb"}, {"f": 1.0}, 1), "cannot carry"),
        (Point("m", {"k": "a\tb"}, {"f": 1.0}, 1), "cannot carry"),
        (Point("m", {"k\n": "v"}, {"f": 1.0}, 1), "cannot carry"),
        (Point("m", {"k": "v\\"}, {"f": 1.0}, 1), "backslash"),
        (Point("m", {"": "v"}, {"f": 1.0}, 1), "tag key is empty"),
        (Point("m", {"time": "v"}, {"f": 1.0}, 1), "reserved"),
        (Point("m", {"k": 1}, {"f": 1.0}, 1), "must be a str"),  # type: ignore[dict-item]
        (Point("m", {}, {}, 1), "no fields"),
        (Point("m", {}, {"": 1.0}, 1), "field key is empty"),
        (Point("m", {}, {"time": 1.0}, 1), "reserved"),
        (Point("m", {}, {"f\\": 1.0}, 1), "backslash"),
        (Point("m", {}, {"f": math.nan}, 1), "NaN"),
        (Point("m", {}, {"f": math.inf}, 1), "NaN or infinity"),
        (Point("m", {}, {"f": -math.inf}, 1), "NaN or infinity"),
        (Point("m", {}, {"f": 2**63}, 1), "64-bit"),
        (Point("m", {}, {"f": None}, 1), "type NoneType"),  # type: ignore[dict-item]
        (Point("m", {}, {"f": 1.0}, MAX_TIME_NS + 1), "outside"),
        (Point("m", {}, {"f": 1.0}, 1.5), "must be an int"),  # type: ignore[arg-type]
        (Point("m", {}, {"f": 1.0}, True), "must be an int"),
    ],
)
def test_refuses_what_line_protocol_cannot_carry(point: Point, reason: str) -> None:
    with pytest.raises(LineProtocolError, match=reason):
        to_line_protocol(point)


def test_refusal_is_not_cached_away() -> None:
    bad = Point("m", {"k": "v\\"}, {"f": 1.0}, 1)
    for _ in range(2):
        with pytest.raises(LineProtocolError):
            to_line_protocol(bad)


def test_batch_helpers() -> None:
    points = [Point("m", {"k": "v"}, {"f": float(i) + 0.5}, i) for i in range(3)]
    assert to_lines(points) == ["m,k=v f=0.5 0", "m,k=v f=1.5 1", "m,k=v f=2.5 2"]
    assert to_body(points) == b"m,k=v f=0.5 0\nm,k=v f=1.5 1\nm,k=v f=2.5 2"
