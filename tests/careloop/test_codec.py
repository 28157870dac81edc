"""Wire contract: every payload model round-trips, and malformed payloads are refused with a specific reason.

For every model the malformed cases are generated from its documented example (wrong types, missing and
unknown fields, NaN and infinity, stale and future timestamps, non-UTF-8 bytes, empty and oversized payloads),
plus hand-written physiological cases (heart rate 0 or 400, SpO2 101, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from careloop import messages as m
from careloop.codec import PayloadError, RejectReason, decode, encode
from careloop.contract import SPECS, decode_message
from careloop.topics import TopicKind, TopicTree

NOW = 1_790_000_100.0  # 100 s after the examples' timestamps
MODELS: list[type[m.Message]] = list(dict.fromkeys(spec.model for spec in SPECS.values()))
MAX_BYTES = {spec.model: spec.max_bytes for spec in SPECS.values()}

Case = tuple[str, bytes, RejectReason, str]
#: Times that may legitimately be old (retained statuses, "last seen"): only the 2020-2100 sanity bound applies.
PAST_TIMES = {"since", "last_seen_ts", "last_motion_ts", "outbox_oldest_ts"}


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:1]):  # the first item stands for the rest
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def _with(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _without(doc: Any, path: tuple[Any, ...]) -> Any:
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def _is_timestamp(path: tuple[Any, ...]) -> bool:
    return isinstance(path[-1], str) and (path[-1] in ("ts", "t0", "since") or path[-1].endswith("_ts"))


def malformed_cases(model: type[m.Message]) -> list[Case]:
    """Malformed payloads derived from the model's example: (name, payload, expected reason, text in detail)."""
    example = json.loads(encode(model.example()))
    fields = model.model_fields
    cases: list[Case] = [
        ("empty payload", b"", RejectReason.EMPTY, "empty"),
        ("not UTF-8", b'{"v": 1, "x": "\xff\xfe"}', RejectReason.NOT_UTF8, "not UTF-8"),
        ("latin-1 bytes", '{"room": "salle \u00e0 manger"}'.encode("latin-1"), RejectReason.NOT_UTF8, "byte"),
        ("truncated JSON", _dumps(example)[:-3], RejectReason.BAD_JSON, "Invalid JSON"),
        ("JSON array", b"[1, 2, 3]", RejectReason.NOT_OBJECT, "object"),
        ("JSON string", b'"hello"', RejectReason.NOT_OBJECT, "object"),
        ("schema version 2", _dumps({**example, "v": 2}), RejectReason.UNSUPPORTED_VERSION, "v:"),
        ("unknown field", _dumps({**example, "heart": 1}), RejectReason.UNKNOWN_FIELD, "heart"),
        (
            "oversized payload",
            _dumps({**example, "pad": "x" * MAX_BYTES[model]}),
            RejectReason.TOO_LARGE,
            "limit",
        ),
    ]
    for name, field in fields.items():
        if field.is_required():
            cases.append((f"missing {name}", _dumps(_without(example, (name,))), RejectReason.MISSING_FIELD, name))
    for path, value in _leaves(example):
        where = ".".join(str(p) for p in path)
        if path == ("v",) or path[-1] == "kind":  # the version and event kinds have cases of their own
            continue
        if isinstance(value, bool):
            cases.append((f"{where} as number", _dumps(_with(example, path, 1)), RejectReason.WRONG_TYPE, where))
            cases.append((f"{where} as string", _dumps(_with(example, path, "true")), RejectReason.WRONG_TYPE, where))
        elif isinstance(value, int | float):
            as_text = _dumps(_with(example, path, str(value)))
            cases.append((f"{where} as string", as_text, RejectReason.WRONG_TYPE, where))
            cases.append((f"{where} as boolean", _dumps(_with(example, path, True)), RejectReason.WRONG_TYPE, where))
            cases.append((f"{where} NaN", _dumps(_with(example, path, float("nan"))), RejectReason.NOT_FINITE, where))
            inf = _dumps(_with(example, path, float("inf")))
            cases.append((f"{where} infinity", inf, RejectReason.NOT_FINITE, where))
            if _is_timestamp(path):
                for label, ts, reason in (
                    ("1970 (clock not set)", 1000.0, RejectReason.CLOCK_NOT_SET),
                    ("in the year 2200", 7_258_118_400.0, RejectReason.CLOCK_NOT_SET),
                ):
                    cases.append((f"{where} {label}", _dumps(_with(example, path, ts)), reason, where))
                if path[-1] not in PAST_TIMES and model is not m.DeadLetter:
                    future = _dumps(_with(example, path, NOW + 3600))
                    cases.append((f"{where} an hour ahead", future, RejectReason.TIMESTAMP_IN_FUTURE, where))
                    stale = _dumps(_with(example, path, NOW - 30 * 86_400))
                    cases.append((f"{where} a month old", stale, RejectReason.TIMESTAMP_TOO_OLD, where))
        elif isinstance(value, str):
            cases.append((f"{where} as number", _dumps(_with(example, path, 7)), RejectReason.WRONG_TYPE, where))
    return cases


SPECIFIC: list[tuple[type[m.Message], str, dict[str, Any], RejectReason, str]] = [
    (m.VitalsReading, "heart rate 0", {"hr_bpm": 0}, RejectReason.OUT_OF_RANGE, "hr_bpm"),
    (m.VitalsReading, "heart rate 400", {"hr_bpm": 400}, RejectReason.OUT_OF_RANGE, "hr_bpm"),
    (m.VitalsReading, "SpO2 101", {"spo2_pct": 101}, RejectReason.OUT_OF_RANGE, "spo2_pct"),
    (m.VitalsReading, "SpO2 -5", {"spo2_pct": -5}, RejectReason.OUT_OF_RANGE, "spo2_pct"),
    (m.VitalsReading, "skin 60 C", {"skin_temp_c": 60}, RejectReason.OUT_OF_RANGE, "skin_temp_c"),
    (m.VitalsReading, "quality 1.5", {"ppg_quality": 1.5}, RejectReason.OUT_OF_RANGE, "ppg_quality"),
    (m.VitalsReading, "systolic alone", {"bp_systolic_mmhg": 120}, RejectReason.INVALID_VALUE, "both"),
    (
        m.VitalsReading,
        "systolic below diastolic",
        {"bp_systolic_mmhg": 70, "bp_diastolic_mmhg": 90},
        RejectReason.INVALID_VALUE,
        "higher than diastolic",
    ),
    (
        m.VitalsReading,
        "no vital sign",
        {"hr_bpm": None, "spo2_pct": None, "skin_temp_c": None},
        RejectReason.INVALID_VALUE,
        "at least one vital sign",
    ),
    (
        m.VitalsReading,
        "BP as float",
        {"bp_systolic_mmhg": 120.5, "bp_diastolic_mmhg": 80},
        RejectReason.WRONG_TYPE,
        "bp_systolic_mmhg",
    ),
    (m.AccelBatch, "17 g", {"samples_g": [[17.0, 0.0, 0.0]]}, RejectReason.OUT_OF_RANGE, "samples_g.0.0"),
    (m.AccelBatch, "two axes", {"samples_g": [[0.0, 1.0]]}, RejectReason.TOO_SHORT, "samples_g.0"),
    (m.AccelBatch, "four axes", {"samples_g": [[0.0, 1.0, 0.0, 0.0]]}, RejectReason.TOO_LONG, "samples_g.0"),
    (m.AccelBatch, "no samples", {"samples_g": []}, RejectReason.TOO_SHORT, "samples_g"),
    (m.AccelBatch, "11 s of samples", {"samples_g": [[0, 0, 1]] * 550}, RejectReason.TOO_LONG, "samples_g"),
    (m.AccelBatch, "rate 1000 Hz", {"rate_hz": 1000}, RejectReason.OUT_OF_RANGE, "rate_hz"),
    (m.GpsFix, "latitude 91", {"lat": 91}, RejectReason.OUT_OF_RANGE, "lat"),
    (m.GpsFix, "accuracy 0 m", {"accuracy_m": 0}, RejectReason.OUT_OF_RANGE, "accuracy_m"),
    (m.BatteryStatus, "battery 120 %", {"level_pct": 120}, RejectReason.OUT_OF_RANGE, "level_pct"),
    (m.MotionReport, "room with a slash", {"room": "a/b"}, RejectReason.INVALID_VALUE, "room"),
    (m.ThermalFrame, "seven rows", {"pixels_c": [[20.0] * 8] * 7}, RejectReason.TOO_SHORT, "pixels_c"),
    (m.ThermalFrame, "nine columns", {"pixels_c": [[20.0] * 9] * 8}, RejectReason.TOO_LONG, "pixels_c.0"),
    (
        m.ThermalFrame,
        "500 C pixel",
        {"pixels_c": [[500.0] * 8] * 8},
        RejectReason.OUT_OF_RANGE,
        "pixels_c.0.0",
    ),
    (m.OccupancyReport, "sofa", {"place": "sofa"}, RejectReason.INVALID_VALUE, "place"),
    (m.BraceletCommand, "reminder without text", {"text": None}, RejectReason.INVALID_VALUE, "needs text"),
    (m.BraceletCommand, "text of 500 chars", {"text": "x" * 500}, RejectReason.TOO_LONG, "text"),
    (m.BraceletCommand, "vibrate 1 min", {"vibrate_ms": 60_000}, RejectReason.OUT_OF_RANGE, "vibrate_ms"),
    (m.VitalsBatch, "no readings", {"readings": []}, RejectReason.TOO_SHORT, "readings"),
    (m.VitalsBatch, "negative seq", {"seq": -1}, RejectReason.OUT_OF_RANGE, "seq"),
    (
        m.EventBatch,
        "unknown event kind",
        {"events": [{"kind": "explosion", "event_id": "e1", "ts": NOW}]},
        RejectReason.INVALID_VALUE,
        "kind",
    ),
    (
        m.EventBatch,
        "event without kind",
        {"events": [{"event_id": "e1", "ts": NOW}]},
        RejectReason.INVALID_VALUE,
        "kind",
    ),
    (m.AlertStateChange, "unknown state", {"state": "forgotten"}, RejectReason.INVALID_VALUE, "state"),
    (
        m.AlertStateChange,
        "severity critical",
        {"severity": "critical"},
        RejectReason.INVALID_VALUE,
        "severity",
    ),
]


def _all_cases() -> list[Any]:
    params = []
    for model in MODELS:
        for name, payload, reason, needle in malformed_cases(model):
            params.append(pytest.param(model, payload, reason, needle, id=f"{model.__name__}-{name}"))
    for model, name, change, reason, needle in SPECIFIC:
        doc = {**json.loads(encode(model.example())), **change}
        doc = {k: v for k, v in doc.items() if v is not None}
        params.append(pytest.param(model, _dumps(doc), reason, needle, id=f"{model.__name__}-{name}"))
    return params


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_example_round_trips(model: type[m.Message]) -> None:
    message = model.example()
    payload = encode(message)
    assert decode(model, payload, now=NOW) == message
    assert encode(decode(model, payload, now=NOW)) == payload


@pytest.mark.parametrize(("model", "payload", "reason", "needle"), _all_cases())
def test_malformed_payload_is_rejected_with_a_clear_reason(
    model: type[m.Message], payload: bytes, reason: RejectReason, needle: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        decode(model, payload, now=NOW, max_bytes=MAX_BYTES[model])
    assert caught.value.reason is reason, caught.value.detail
    # the field path is named; an item of a tagged union (an event) also names its kind: events.0.fall.ts
    path = r"\.(?:[a-z_]+\.)?".join(re.escape(part) for part in needle.split("."))
    assert re.search(path, str(caught.value)), str(caught.value)
    assert not re.search(r"\{[a-z_]+(:[^}]*)?\}", caught.value.detail)  # no unfilled message template


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_model_has_at_least_ten_distinct_kinds_of_malformed_example(model: type[m.Message]) -> None:
    reasons = {case[2] for case in malformed_cases(model)}
    assert len(malformed_cases(model)) >= 10
    assert {
        RejectReason.EMPTY,
        RejectReason.NOT_UTF8,
        RejectReason.UNKNOWN_FIELD,
        RejectReason.WRONG_TYPE,
        RejectReason.NOT_FINITE,
        RejectReason.TOO_LARGE,
        RejectReason.CLOCK_NOT_SET,
    } <= reasons


def test_timestamps_are_judged_against_the_receivers_clock() -> None:
    payload = encode(m.SosPress(ts=NOW))
    assert decode(m.SosPress, payload, now=NOW).ts == NOW
    assert decode(m.SosPress, payload, now=NOW + 6 * 86_400).ts == NOW  # a day-long outage drains fine
    with pytest.raises(PayloadError) as caught:
        decode(m.SosPress, payload, now=NOW - 301)
    assert caught.value.reason is RejectReason.TIMESTAMP_IN_FUTURE
    assert decode(m.SosPress, payload, now=NOW - 301, max_future_s=600).ts == NOW


def test_timestamps_inside_batches_are_checked_too() -> None:
    doc = json.loads(encode(m.VitalsBatch.example()))
    doc["readings"].append({**doc["readings"][0], "ts": NOW + 86_400})
    with pytest.raises(PayloadError) as caught:
        decode(m.VitalsBatch, _dumps(doc), now=NOW, max_bytes=MAX_BYTES[m.VitalsBatch])
    assert caught.value.reason is RejectReason.TIMESTAMP_IN_FUTURE
    assert "readings.1.ts" in caught.value.detail


def test_a_retained_status_may_be_old_but_not_from_1970() -> None:
    old = encode(m.Availability(online=False, since=NOW - 90 * 86_400))
    assert decode(m.Availability, old, now=NOW).online is False


def test_every_error_is_named_not_just_the_first() -> None:
    payload = b'{"v": 1, "ts": "soon", "hr_bpm": 400, "spo2_pct": 101, "ppg_quality": 1}'
    with pytest.raises(PayloadError) as caught:
        decode(m.VitalsReading, payload, now=NOW)
    assert all(field in caught.value.detail for field in ("ts", "hr_bpm", "spo2_pct"))


def test_decode_by_topic_picks_the_model_and_limits_of_the_topic() -> None:
    tree = TopicTree()
    topic = tree.device(TopicKind.DEVICE_VITALS, "h1", "br-1")
    parsed, message = decode_message(tree, topic, encode(m.VitalsReading.example()), now=NOW)
    assert parsed.device_id == "br-1"
    assert isinstance(message, m.VitalsReading)
    with pytest.raises(PayloadError) as caught:
        decode_message(tree, "careloop/v1/home/h1/device/br-1/pulse", b"{}", now=NOW)
    assert caught.value.reason is RejectReason.UNKNOWN_TOPIC
    with pytest.raises(PayloadError) as caught:
        decode_message(tree, topic, b" " * 5000, now=NOW)
    assert caught.value.reason is RejectReason.TOO_LARGE
