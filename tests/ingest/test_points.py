"""Messages -> points: measurement, tags, typed fields and deterministic times; the fast lines match the Points."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop import messages as m
from careloop.contract import SPECS
from careloop.influx.lineprotocol import Point, to_line_protocol
from careloop.topics import TopicKind
from ingest.points import (
    DEVICE_HEALTH,
    EVENTS,
    FIELD_TYPES,
    STORED_KINDS,
    VITALS,
    LineEncoder,
    NoTimestamp,
    Origin,
    event_time_ns,
    points_for,
    time_ns,
)

T = 1_790_000_000.0
DEVICE_ORIGIN = Origin("site-1", "H0001", "BR-0001", "R0001")
EDGE_ORIGIN = Origin("site-1", "H0001")
INFLUX_TYPE = {bool: "bool", int: "int", float: "float", str: "str"}


def origin_for(kind: TopicKind) -> Origin:
    return DEVICE_ORIGIN if kind.is_device_topic else EDGE_ORIGIN


def example(kind: TopicKind) -> m.Message:
    """The contract's example for a kind, with `since` set where it is optional (availability)."""
    model = SPECS[kind].model
    if model is m.Availability:
        return m.Availability(online=False, since=T)
    return model.example()


@pytest.mark.parametrize("kind", STORED_KINDS, ids=lambda k: k.name)
def test_fast_lines_are_the_points_serialised(kind: TopicKind) -> None:
    message = example(kind)
    points = points_for(kind, message, origin_for(kind))
    assert points
    assert LineEncoder().lines(kind, message, origin_for(kind)) == [to_line_protocol(p) for p in points]


@pytest.mark.parametrize("kind", STORED_KINDS, ids=lambda k: k.name)
def test_every_field_has_the_type_its_measurement_declares(kind: TopicKind) -> None:
    for point in points_for(kind, example(kind), origin_for(kind)):
        for key, value in point.fields.items():
            declared = "float" if key.startswith("feature_") else FIELD_TYPES[point.measurement][key]
            assert INFLUX_TYPE[type(value)] == declared, f"{point.measurement}.{key}"


def test_a_bracelet_reading_is_one_vitals_point_at_its_own_millisecond() -> None:
    reading = m.VitalsReading(ts=T + 0.1234, hr_bpm=72, spo2_pct=97.5, ppg_quality=0.9)
    [point] = points_for(TopicKind.DEVICE_VITALS, reading, DEVICE_ORIGIN)
    assert point == Point(
        VITALS,
        {"site": "site-1", "home": "H0001", "device": "BR-0001", "resident": "R0001", "source": "device"},
        {"hr_bpm": 72.0, "spo2_pct": 97.5, "ppg_quality": 0.9},
        1_790_000_000_123_000_000,
    )


def test_without_a_known_resident_the_tag_is_absent() -> None:
    reading = m.VitalsReading(ts=T, hr_bpm=72, ppg_quality=0.9)
    [point] = points_for(TopicKind.DEVICE_VITALS, reading, Origin("s", "H1", "BR-1"))
    assert "resident" not in point.tags
    assert "resident=" not in to_line_protocol(point)


def test_the_same_message_twice_gives_the_same_point() -> None:
    """A redelivered message rewrites its point (same series and time) instead of adding one."""
    payload = b'{"ts":1790000000.5,"hr_bpm":70,"ppg_quality":1}'
    first = points_for(TopicKind.DEVICE_VITALS, m.VitalsReading.model_validate_json(payload), DEVICE_ORIGIN)
    again = points_for(TopicKind.DEVICE_VITALS, m.VitalsReading.model_validate_json(payload), DEVICE_ORIGIN)
    assert first == again


def test_each_item_of_an_edge_batch_is_a_point_tagged_with_its_own_device_and_resident() -> None:
    item = m.VitalsBatch.EXAMPLE["readings"][0]
    batch = m.VitalsBatch.model_validate(
        {
            **m.VitalsBatch.EXAMPLE,
            "readings": [
                {**item, "device_id": "BR-1", "resident_id": "R1", "ts": T},
                {**item, "device_id": "BR-1", "resident_id": "R1", "ts": T + 60},
                {**item, "device_id": "BR-2", "resident_id": None, "ts": T},
            ],
        }
    )
    points = points_for(TopicKind.EDGE_VITALS, batch, EDGE_ORIGIN)
    assert [(p.tags["device"], p.tags.get("resident"), p.time_ns) for p in points] == [
        ("BR-1", "R1", time_ns(T)),
        ("BR-1", "R1", time_ns(T + 60)),
        ("BR-2", None, time_ns(T)),
    ]
    assert {p.tags["source"] for p in points} == {"edge"}
    assert points[0].fields["n_readings"] == 58
    assert isinstance(points[0].fields["n_readings"], int)


def test_two_events_in_the_same_millisecond_are_two_points() -> None:
    """Same kind, resident, device and millisecond: distinct ids give distinct times, each within that ms."""
    event = {"kind": "sos", "ts": T, "pressed_ts": T, "resident_id": "R1", "device_id": "BR-1"}
    batch = m.EventBatch.model_validate(
        {"msg_id": "m1", "seq": 1, "events": [{**event, "event_id": "ev-1"}, {**event, "event_id": "ev-2"}]}
    )
    first, second = points_for(TopicKind.EDGE_EVENTS, batch, EDGE_ORIGIN)
    assert first.tags == second.tags
    assert first.time_ns != second.time_ns
    for point in (first, second):
        assert time_ns(T) <= point.time_ns < time_ns(T) + 1_000_000
    assert first.fields["event_id"] == "ev-1"


def test_an_event_keeps_its_time_when_sent_again() -> None:
    assert event_time_ns(T, "ev-h0001-88") == event_time_ns(T, "ev-h0001-88")
    batch = m.EventBatch.example()
    assert points_for(TopicKind.EDGE_EVENTS, batch, EDGE_ORIGIN) == points_for(
        TopicKind.EDGE_EVENTS, batch, EDGE_ORIGIN
    )


def test_a_fall_keeps_its_features_sources_and_clip_length() -> None:
    event = {
        **m.EventBatch.EXAMPLE["events"][0],
        "clip": {"t0": T, "rate_hz": 50, "samples_g": [[0.0, -1.0, 0.0]] * 7},
    }
    batch = m.EventBatch.model_validate({"msg_id": "m1", "seq": 1, "events": [event]})
    [point] = points_for(TopicKind.EDGE_EVENTS, batch, EDGE_ORIGIN)
    assert point.measurement == EVENTS
    assert point.tags["kind"] == "fall"
    assert point.tags["room"] == "bathroom"
    assert point.fields["sources"] == "bracelet,thermal"
    assert point.fields["feature_peak_g"] == 3.8
    assert point.fields["clip_samples"] == 7
    assert LineEncoder().lines(TopicKind.EDGE_EVENTS, batch, EDGE_ORIGIN) == [to_line_protocol(point)]


def test_device_sos_is_an_event_of_the_device() -> None:
    [point] = points_for(TopicKind.DEVICE_SOS, m.SosPress(ts=T), DEVICE_ORIGIN)
    assert (point.measurement, point.tags["kind"], point.tags["device"]) == (EVENTS, "sos", "BR-0001")
    assert point.fields == {"pressed_ts": T}


def test_availability_without_since_has_no_time_of_its_own() -> None:
    with pytest.raises(NoTimestamp):
        points_for(TopicKind.DEVICE_AVAILABILITY, m.Availability(online=False), DEVICE_ORIGIN)
    [point] = points_for(TopicKind.EDGE_AVAILABILITY, m.Availability(online=True, since=T), EDGE_ORIGIN)
    assert (point.measurement, point.tags.get("device"), point.fields) == (DEVICE_HEALTH, None, {"online": True})


def test_a_free_text_field_is_escaped() -> None:
    heartbeat = m.EdgeHeartbeat.model_validate({**m.EdgeHeartbeat.EXAMPLE, "software": 'edge "beta" \\ 2'})
    [line] = LineEncoder().lines(TopicKind.EDGE_HEARTBEAT, heartbeat, EDGE_ORIGIN)
    assert 'software="edge \\"beta\\" \\\\ 2"' in line
    assert line == to_line_protocol(points_for(TopicKind.EDGE_HEARTBEAT, heartbeat, EDGE_ORIGIN)[0])


# -- the unrolled hot paths against the generic conversion ------------------------------------------------------------
_ts = st.floats(T - 86_400, T + 86_400, allow_nan=False)
_bp = st.one_of(st.none(), st.tuples(st.integers(90, 200), st.integers(40, 89)))


@st.composite
def _readings(draw: Any) -> m.VitalsReading:
    bp = draw(_bp)
    return m.VitalsReading(
        ts=draw(_ts),
        hr_bpm=draw(st.floats(25, 250)),
        spo2_pct=draw(st.one_of(st.none(), st.floats(50, 100))),
        skin_temp_c=draw(st.one_of(st.none(), st.floats(20, 44))),
        bp_systolic_mmhg=bp[0] if bp else None,
        bp_diastolic_mmhg=bp[1] if bp else None,
        ppg_quality=draw(st.floats(0, 1)),
        motion_g=draw(st.one_of(st.none(), st.floats(0, 16))),
    )


@st.composite
def _summaries(draw: Any) -> m.VitalsSummary:
    bp = draw(_bp)
    hr = draw(st.one_of(st.none(), st.floats(30, 200)))
    return m.VitalsSummary(
        ts=draw(_ts),
        device_id=draw(st.sampled_from(["BR-1", "BR-2", "belt_7"])),
        resident_id=draw(st.sampled_from([None, "R1", "R2"])),
        interval_s=draw(st.floats(1, 3600)),
        hr_bpm=hr,
        hr_min_bpm=None if hr is None else max(25.0, hr - draw(st.floats(0, 5))),
        hr_max_bpm=None if hr is None else min(250.0, hr + draw(st.floats(0, 5))),
        spo2_pct=draw(st.one_of(st.none(), st.floats(50, 100))),
        spo2_min_pct=draw(st.one_of(st.none(), st.floats(50, 100))),
        skin_temp_c=draw(st.one_of(st.none(), st.floats(20, 44))),
        bp_systolic_mmhg=bp[0] if bp else None,
        bp_diastolic_mmhg=bp[1] if bp else None,
        n_readings=draw(st.integers(0, 10_000)),
        n_rejected=draw(st.integers(0, 100)),
    )


SHARED = LineEncoder()  # one encoder across examples, as in the service: its caches fill up as they go


@settings(max_examples=300)
@given(_readings())
def test_reading_line_matches_the_point(reading: m.VitalsReading) -> None:
    encoder = SHARED
    [point] = points_for(TopicKind.DEVICE_VITALS, reading, DEVICE_ORIGIN)
    assert encoder.reading_line(encoder.reading_series(DEVICE_ORIGIN), reading) == to_line_protocol(point)


@settings(max_examples=200)
@given(st.lists(_summaries(), min_size=1, max_size=20))
def test_summary_lines_match_the_points(items: list[m.VitalsSummary]) -> None:
    batch = m.VitalsBatch(msg_id="m-1", seq=1, readings=tuple(items))
    expected = [to_line_protocol(p) for p in points_for(TopicKind.EDGE_VITALS, batch, EDGE_ORIGIN)]
    encoder = SHARED
    assert encoder.summary_lines(EDGE_ORIGIN, batch) == expected
    assert encoder.lines(TopicKind.EDGE_VITALS, batch, EDGE_ORIGIN) == expected


def test_the_common_shapes_drop_the_zero_of_whole_floats_like_the_points_do() -> None:
    encoder = LineEncoder()
    reading = m.VitalsReading(ts=T, hr_bpm=72, spo2_pct=97.0, skin_temp_c=33.5, ppg_quality=1, motion_g=0.0)
    line = encoder.reading_line(encoder.reading_series(DEVICE_ORIGIN), reading)
    assert line.split(" ")[1] == "hr_bpm=72,motion_g=0,ppg_quality=1,skin_temp_c=33.5,spo2_pct=97"
    assert line == to_line_protocol(points_for(TopicKind.DEVICE_VITALS, reading, DEVICE_ORIGIN)[0])
    batch = m.VitalsBatch.example()
    [summary] = encoder.summary_lines(EDGE_ORIGIN, batch)
    assert "interval_s=60,n_readings=58i,n_rejected=2i,skin_temp_c=33,spo2_min_pct=96,spo2_pct=97.2" in summary
    assert [summary] == [to_line_protocol(p) for p in points_for(TopicKind.EDGE_VITALS, batch, EDGE_ORIGIN)]


def test_zero_and_negative_zero_keep_their_own_text() -> None:
    """-0.0 == 0.0, so a cache keyed by value would write one for the other; line protocol writes "0" and "-0"."""
    encoder = LineEncoder()
    series = encoder.reading_series(DEVICE_ORIGIN)
    for motion in (0.0, -0.0, 0.0, -0.0):
        reading = m.VitalsReading(ts=T, hr_bpm=60.0, spo2_pct=97.0, skin_temp_c=33.0, ppg_quality=1.0, motion_g=motion)
        point = points_for(TopicKind.DEVICE_VITALS, reading, DEVICE_ORIGIN)[0]
        assert encoder.reading_line(series, reading) == to_line_protocol(point)


def test_the_float_cache_stays_bounded() -> None:
    encoder = LineEncoder()
    encoder.float_cache_limit = 10
    for k in range(25):
        assert encoder.float_text(1.5 + k) == repr(1.5 + k)
    assert len(encoder._floats) <= 10
