"""Messages -> InfluxDB points: which measurement, which tags, which typed fields, and at what time. Pure; no I/O.

Measurements (docs/ingest.md lists every field):
- `vitals`: a bracelet's `VitalsReading`; each `VitalsSummary` of an edge `VitalsBatch`;
- `activity`: PIR `MotionReport`, bed / chair `OccupancyReport`;
- `events`: `SosPress`, `OkPress`; each event of an edge `EventBatch`;
- `device_health`: `BatteryStatus`, `WearStatus`, a device's `Availability`; each `DeviceHealth` of an edge
  `DeviceHealthBatch`; the edge's own `EdgeHeartbeat` and `Availability`;
- `location`: `GpsFix`.

Tags: `site` (the deployment), `home` (from the topic), `device` (from the topic, or the batch item), `resident`
(from the batch item, or looked up for a device topic; absent when unknown), `source` (`device`: sent by the device
itself; `edge`: reported by the home's edge gateway), plus `kind` on events, `room` and `place` where the message
has them. Every identifier in a tag matches `careloop.topics.ID_PATTERN`, so no tag needs escaping.

Time: the reading's own timestamp at millisecond precision, never the time of arrival, so that a message delivered
twice writes the same point twice (same series, same time: InfluxDB keeps one). Edge events carry an `event_id`
that is stable across retries; two different events of one kind, one resident and one device in the same
millisecond would share series and time, so an event's time is its millisecond plus a nanosecond offset below one
millisecond derived from its `event_id` (CRC-32 mod 10**6): deterministic, and distinct for distinct ids except
with probability 10**-6 per pair of such events. The id is also stored, as the `event_id` field. A tag per event id
would distinguish them exactly but would make every event its own series, which InfluxDB's index does not afford.

Messages that carry no timestamp cannot be written idempotently: an `Availability` without `since` yields no point
(`NoTimestamp`; the service counts it as skipped).

`points_for` builds `Point` values; `LineEncoder.lines` writes the same points straight to line protocol (what the
service uses: about three times faster than serialising `Point`s). A test holds the two to the same bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from careloop import messages as m
from careloop.influx.lineprotocol import FieldValue, Point
from careloop.topics import TopicKind

VITALS: Final = "vitals"
ACTIVITY: Final = "activity"
EVENTS: Final = "events"
DEVICE_HEALTH: Final = "device_health"
LOCATION: Final = "location"

SOURCE_DEVICE: Final = "device"
SOURCE_EDGE: Final = "edge"

#: Topic kinds ingest stores; the service subscribes to exactly these. Raw signal (accelerometer batches, thermal
#: frames) is for the detectors, commands go to devices, alerts and dead letters are other components' business.
STORED_KINDS: Final = (
    TopicKind.DEVICE_VITALS,
    TopicKind.DEVICE_SOS,
    TopicKind.DEVICE_OK,
    TopicKind.DEVICE_GPS,
    TopicKind.DEVICE_BATTERY,
    TopicKind.DEVICE_WEAR,
    TopicKind.DEVICE_MOTION,
    TopicKind.DEVICE_OCCUPANCY,
    TopicKind.DEVICE_AVAILABILITY,
    TopicKind.EDGE_VITALS,
    TopicKind.EDGE_EVENTS,
    TopicKind.EDGE_DEVICE_HEALTH,
    TopicKind.EDGE_HEARTBEAT,
    TopicKind.EDGE_AVAILABILITY,
)

_NS_PER_MS: Final = 1_000_000


class NoTimestamp(ValueError):
    """The message carries no time of its own, so it cannot be written idempotently."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from: the tags its points share."""

    site: str
    home: str
    #: The device of a per-device topic (None for edge topics, whose items name their devices).
    device: str | None = None
    #: The resident wearing the device, when known (per-device topics only; edge items carry their own).
    resident: str | None = None


def time_ns(ts: float) -> int:
    """A timestamp in Unix seconds as InfluxDB nanoseconds, rounded to the millisecond."""
    return round(ts * 1000) * _NS_PER_MS


def event_time_ns(ts: float, event_id: str) -> int:
    """An edge event's time: its millisecond plus an offset below 1 ms derived from its stable id."""
    return time_ns(ts) + zlib.crc32(event_id.encode()) % _NS_PER_MS


# -- field tables: (attribute, field key, type), sorted by field key as line protocol is written ------------------
_F, _I, _B, _S = "float", "int", "bool", "str"
FieldSpec = tuple[tuple[str, str, str], ...]

_READING_FIELDS: FieldSpec = (
    ("bp_diastolic_mmhg", "bp_diastolic_mmhg", _I),
    ("bp_systolic_mmhg", "bp_systolic_mmhg", _I),
    ("hr_bpm", "hr_bpm", _F),
    ("motion_g", "motion_g", _F),
    ("ppg_quality", "ppg_quality", _F),
    ("skin_temp_c", "skin_temp_c", _F),
    ("spo2_pct", "spo2_pct", _F),
)
_SUMMARY_FIELDS: FieldSpec = (
    ("bp_diastolic_mmhg", "bp_diastolic_mmhg", _I),
    ("bp_systolic_mmhg", "bp_systolic_mmhg", _I),
    ("hr_bpm", "hr_bpm", _F),
    ("hr_max_bpm", "hr_max_bpm", _F),
    ("hr_min_bpm", "hr_min_bpm", _F),
    ("interval_s", "interval_s", _F),
    ("n_readings", "n_readings", _I),
    ("n_rejected", "n_rejected", _I),
    ("skin_temp_c", "skin_temp_c", _F),
    ("spo2_min_pct", "spo2_min_pct", _F),
    ("spo2_pct", "spo2_pct", _F),
)
_GPS_FIELDS: FieldSpec = (
    ("accuracy_m", "accuracy_m", _F),
    ("lat", "lat", _F),
    ("lon", "lon", _F),
    ("speed_mps", "speed_mps", _F),
)
_BATTERY_FIELDS: FieldSpec = (("level_pct", "battery_pct", _F), ("charging", "charging", _B))
_WEAR_FIELDS: FieldSpec = (("worn", "worn", _B),)
_MOTION_FIELDS: FieldSpec = (("motion", "motion", _B),)
_OCCUPANCY_FIELDS: FieldSpec = (("occupied", "occupied", _B),)
_AVAILABILITY_FIELDS: FieldSpec = (("online", "online", _B),)
_PRESS_FIELDS: FieldSpec = (("ts", "pressed_ts", _F),)
_HEALTH_FIELDS: FieldSpec = (
    ("battery_pct", "battery_pct", _F),
    ("last_seen_ts", "last_seen_ts", _F),
    ("low_battery", "low_battery", _B),
    ("offline_reason", "offline_reason", _S),
    ("online", "online", _B),
    ("worn", "worn", _B),
)
_HEARTBEAT_FIELDS: FieldSpec = (
    ("devices", "devices", _I),
    ("outbox_depth", "outbox_depth", _I),
    ("outbox_oldest_ts", "outbox_oldest_ts", _F),
    ("software", "software", _S),
    ("uptime_s", "uptime_s", _F),
)
_EVENT_FIELDS: dict[str, FieldSpec] = {
    "fall": (
        ("confidence", "confidence", _F),
        ("event_id", "event_id", _S),
        ("impact_ts", "impact_ts", _F),
        ("placement", "placement", _S),
    ),
    "inactivity": (
        ("duration_s", "duration_s", _F),
        ("event_id", "event_id", _S),
        ("last_motion_ts", "last_motion_ts", _F),
        ("last_room", "last_room", _S),
    ),
    "bed_exit": (("away_s", "away_s", _F), ("event_id", "event_id", _S), ("left_ts", "left_ts", _F)),
    "night_wandering": (("event_id", "event_id", _S), ("zone", "zone", _S)),
    "geofence_exit": (
        ("accuracy_m", "accuracy_m", _F),
        ("distance_m", "distance_m", _F),
        ("event_id", "event_id", _S),
        ("lat", "lat", _F),
        ("lon", "lon", _F),
    ),
    "sos": (("event_id", "event_id", _S), ("pressed_ts", "pressed_ts", _F)),
    "ok": (("event_id", "event_id", _S), ("pressed_ts", "pressed_ts", _F)),
    "presence": (("event_id", "event_id", _S), ("present", "present", _B)),
}

#: Every field each measurement can have, with its InfluxDB type (a field keeps one type for ever in InfluxDB).
FIELD_TYPES: dict[str, dict[str, str]] = {}


def _register(measurement: str, spec: FieldSpec) -> None:
    types = FIELD_TYPES.setdefault(measurement, {})
    for _, key, kind in spec:
        if types.setdefault(key, kind) != kind:
            raise AssertionError(f"{measurement}.{key} would be both {types[key]} and {kind}")


for _measurement, _spec in (
    (VITALS, _READING_FIELDS),
    (VITALS, _SUMMARY_FIELDS),
    (LOCATION, _GPS_FIELDS),
    (DEVICE_HEALTH, _BATTERY_FIELDS),
    (DEVICE_HEALTH, _WEAR_FIELDS),
    (DEVICE_HEALTH, _AVAILABILITY_FIELDS),
    (DEVICE_HEALTH, _HEALTH_FIELDS),
    (DEVICE_HEALTH, _HEARTBEAT_FIELDS),
    (ACTIVITY, _MOTION_FIELDS),
    (ACTIVITY, _OCCUPANCY_FIELDS),
    (EVENTS, _PRESS_FIELDS),
    *((EVENTS, spec) for spec in _EVENT_FIELDS.values()),
    (EVENTS, (("clip_samples", "clip_samples", _I), ("sources", "sources", _S))),
):
    _register(_measurement, _spec)
# Fall features become fields named feature_<name>, all floats.


# -- one shape for both outputs -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Row:
    """One point before it is given a form: a Point, or a line."""

    measurement: str
    tags: tuple[tuple[str, str], ...]  # sorted by key, None values left out
    obj: Any  # the model whose attributes the spec reads
    spec: FieldSpec
    extra: tuple[tuple[str, FieldValue], ...]  # fields computed from the message, sorted into place when written
    time_ns: int


def _tags(**tags: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in tags.items() if v is not None))


def _device_row(
    measurement: str, origin: Origin, obj: Any, spec: FieldSpec, t_ns: int, **extra_tags: str | None
) -> _Row:
    tags = _tags(
        site=origin.site,
        home=origin.home,
        device=origin.device,
        resident=origin.resident,
        source=SOURCE_DEVICE,
        **extra_tags,
    )
    return _Row(measurement, tags, obj, spec, (), t_ns)


def _rows(kind: TopicKind, message: m.Message, origin: Origin) -> list[_Row]:
    """The points of one message, as rows; raises NoTimestamp or TypeError (a kind ingest does not store)."""
    if isinstance(message, m.VitalsReading):
        return [_device_row(VITALS, origin, message, _READING_FIELDS, time_ns(message.ts))]
    if isinstance(message, m.VitalsBatch):
        return [
            _Row(
                VITALS,
                _tags(
                    site=origin.site,
                    home=origin.home,
                    device=r.device_id,
                    resident=r.resident_id,
                    source=SOURCE_EDGE,
                ),
                r,
                _SUMMARY_FIELDS,
                (),
                time_ns(r.ts),
            )
            for r in message.readings
        ]
    if isinstance(message, m.EventBatch):
        return [_event_row(e, origin) for e in message.events]
    if isinstance(message, m.DeviceHealthBatch):
        return [
            _Row(
                DEVICE_HEALTH,
                _tags(site=origin.site, home=origin.home, device=d.device_id, source=SOURCE_EDGE),
                d,
                _HEALTH_FIELDS,
                (),
                time_ns(d.ts),
            )
            for d in message.devices
        ]
    if isinstance(message, m.GpsFix):
        return [_device_row(LOCATION, origin, message, _GPS_FIELDS, time_ns(message.ts))]
    if isinstance(message, m.BatteryStatus):
        return [_device_row(DEVICE_HEALTH, origin, message, _BATTERY_FIELDS, time_ns(message.ts))]
    if isinstance(message, m.WearStatus):
        return [_device_row(DEVICE_HEALTH, origin, message, _WEAR_FIELDS, time_ns(message.ts))]
    if isinstance(message, m.MotionReport):
        return [_device_row(ACTIVITY, origin, message, _MOTION_FIELDS, time_ns(message.ts), room=message.room)]
    if isinstance(message, m.OccupancyReport):
        return [
            _device_row(
                ACTIVITY,
                origin,
                message,
                _OCCUPANCY_FIELDS,
                time_ns(message.ts),
                place=message.place,
                room=message.room,
            )
        ]
    if isinstance(message, m.SosPress | m.OkPress):
        press = "sos" if isinstance(message, m.SosPress) else "ok"
        return [_device_row(EVENTS, origin, message, _PRESS_FIELDS, time_ns(message.ts), kind=press)]
    if isinstance(message, m.Availability):
        if message.since is None:
            raise NoTimestamp(f"{kind.name}: an availability message without 'since' has no time of its own")
        if kind is TopicKind.EDGE_AVAILABILITY:
            tags = _tags(site=origin.site, home=origin.home, source=SOURCE_EDGE)
            return [_Row(DEVICE_HEALTH, tags, message, _AVAILABILITY_FIELDS, (), time_ns(message.since))]
        return [_device_row(DEVICE_HEALTH, origin, message, _AVAILABILITY_FIELDS, time_ns(message.since))]
    if isinstance(message, m.EdgeHeartbeat):
        tags = _tags(site=origin.site, home=origin.home, source=SOURCE_EDGE)
        return [_Row(DEVICE_HEALTH, tags, message, _HEARTBEAT_FIELDS, (), time_ns(message.ts))]
    raise TypeError(f"ingest does not store {type(message).__name__} ({kind.name})")


def _event_row(event: Any, origin: Origin) -> _Row:
    extra: tuple[tuple[str, FieldValue], ...] = ()
    if isinstance(event, m.FallEvent):
        fields: list[tuple[str, FieldValue]] = [("sources", ",".join(event.sources))]
        fields += [(f"feature_{name}", float(value)) for name, value in event.features.items()]
        if event.clip is not None:
            fields.append(("clip_samples", len(event.clip.samples_g)))
        extra = tuple(sorted(fields))
    tags = _tags(
        site=origin.site,
        home=origin.home,
        kind=event.kind,
        device=event.device_id,
        resident=event.resident_id,
        room=event.room,
        source=SOURCE_EDGE,
    )
    return _Row(EVENTS, tags, event, _EVENT_FIELDS[event.kind], extra, event_time_ns(event.ts, event.event_id))


# -- Points ---------------------------------------------------------------------------------------------------------
def points_for(kind: TopicKind, message: m.Message, origin: Origin) -> list[Point]:
    """The InfluxDB points of one validated message; raises NoTimestamp when it has no time of its own."""
    points = []
    for row in _rows(kind, message, origin):
        fields: dict[str, FieldValue] = {}
        values = row.obj.__dict__
        for attr, key, kind_name in row.spec:
            value = values[attr]
            if value is not None:
                fields[key] = float(value) if kind_name == _F else value
        fields.update(row.extra)
        points.append(Point(row.measurement, dict(row.tags), fields, row.time_ns))
    return points


# -- line protocol --------------------------------------------------------------------------------------------------
def _float_text(value: float) -> str:
    text = repr(value)
    return text[:-2] if text[-2:] == ".0" else text


def _field_text(value: FieldValue) -> str:
    kind = type(value)
    if kind is float:
        return _float_text(value)  # type: ignore[arg-type]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return f"{value}i"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


_FORMATTERS: dict[str, Callable[[Any], str]] = {
    _F: lambda v: _float_text(float(v)),
    _I: lambda v: f"{v}i",
    _B: lambda v: "true" if v else "false",
    _S: lambda v: '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"',
}


class LineEncoder:
    """Writes the points of messages as lines of line protocol, caching each series' `measurement,tags` prefix."""

    #: The series cache is cleared when it reaches this many entries (one entry per device and measurement).
    cache_limit = 200_000
    #: The float text cache is cleared when it reaches this many entries.
    float_cache_limit = 100_000

    def __init__(self) -> None:
        self._floats: dict[float, str] = {}
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._summary_series: dict[tuple[str, str, str, str | None], str] = {}
        self._specs: dict[FieldSpec, tuple[tuple[str, str, Callable[[Any], str]], ...]] = {}

    def series(self, measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
        """`measurement,k=v,...` for tags already sorted by key."""
        key = (measurement, tags)
        text = self._series.get(key)
        if text is None:
            if len(self._series) >= self.cache_limit:
                self._series.clear()
            text = self._series[key] = ",".join([measurement, *(f"{k}={v}" for k, v in tags)])
        return text

    def _compiled(self, spec: FieldSpec) -> tuple[tuple[str, str, Callable[[Any], str]], ...]:
        compiled = self._specs.get(spec)
        if compiled is None:
            compiled = self._specs[spec] = tuple((attr, key + "=", _FORMATTERS[kind]) for attr, key, kind in spec)
        return compiled

    def lines(self, kind: TopicKind, message: m.Message, origin: Origin) -> list[str]:
        """The points of one validated message as lines (no newlines); raises NoTimestamp like `points_for`."""
        out = []
        for row in _rows(kind, message, origin):
            values = row.obj.__dict__
            spec = self._compiled(row.spec)
            parts = [prefix + fmt(values[attr]) for attr, prefix, fmt in spec if values[attr] is not None]
            if row.extra:
                parts += [f"{key}={_field_text(value)}" for key, value in row.extra]
                parts.sort(key=lambda part: part.split("=", 1)[0])
            out.append(f"{self.series(row.measurement, row.tags)} {','.join(parts)} {row.time_ns}")
        return out

    # The hot paths below write a float as to_line_protocol() does, repr() without the ".0" of a whole number, but
    # look the text up first: vital signs take few distinct values (0.1 steps within physiological bounds), and a
    # dict look-up costs a quarter of repr(). The cache is bounded and never holds zero (-0.0 == 0.0 would share an
    # entry). tests/ingest/test_points.py holds these paths to the Points, byte for byte.

    def float_text(self, value: float) -> str:
        """`value` as line protocol writes a float field, remembered for next time."""
        text = repr(value)
        if text[-2:] == ".0":
            text = text[:-2]
        if value != 0.0:
            cache = self._floats
            if len(cache) >= self.float_cache_limit:
                cache.clear()
            cache[value] = text
        return text

    def reading_line(self, series: str, reading: m.VitalsReading) -> str:
        """The line of a bracelet's vitals reading, given its series prefix: the hot path."""
        v = reading.__dict__
        ft = self._floats.get
        fl = self.float_text
        hr, motion, ppg, skin, spo2 = v["hr_bpm"], v["motion_g"], v["ppg_quality"], v["skin_temp_c"], v["spo2_pct"]
        ts_ns = round(v["ts"] * 1000) * _NS_PER_MS
        common = hr is not None and motion is not None and skin is not None and spo2 is not None
        if common and v["bp_systolic_mmhg"] is None:
            return (
                f"{series} hr_bpm={ft(hr) or fl(hr)},motion_g={ft(motion) or fl(motion)},"
                f"ppg_quality={ft(ppg) or fl(ppg)},skin_temp_c={ft(skin) or fl(skin)},"
                f"spo2_pct={ft(spo2) or fl(spo2)} {ts_ns}"
            )
        parts: list[str] = []
        add = parts.append
        if v["bp_diastolic_mmhg"] is not None:
            add(f"bp_diastolic_mmhg={v['bp_diastolic_mmhg']}i")
        if v["bp_systolic_mmhg"] is not None:
            add(f"bp_systolic_mmhg={v['bp_systolic_mmhg']}i")
        if hr is not None:
            add(f"hr_bpm={ft(hr) or fl(hr)}")
        if motion is not None:
            add(f"motion_g={ft(motion) or fl(motion)}")
        add(f"ppg_quality={ft(ppg) or fl(ppg)}")
        if skin is not None:
            add(f"skin_temp_c={ft(skin) or fl(skin)}")
        if spo2 is not None:
            add(f"spo2_pct={ft(spo2) or fl(spo2)}")
        return f"{series} {','.join(parts)} {ts_ns}"

    def reading_series(self, origin: Origin) -> str:
        """The series prefix of a bracelet's vitals readings (see `reading_line`)."""
        return self.series(
            VITALS,
            _tags(
                site=origin.site, home=origin.home, device=origin.device, resident=origin.resident, source=SOURCE_DEVICE
            ),
        )

    def summary_lines(self, origin: Origin, batch: m.VitalsBatch) -> list[str]:
        """The lines of an edge's vitals batch: the batched hot path."""
        out = []
        cache = self._summary_series
        ft = self._floats.get
        fl = self.float_text
        site, home = origin.site, origin.home
        for reading in batch.readings:
            v = reading.__dict__
            key = (site, home, v["device_id"], v["resident_id"])
            series = cache.get(key)
            if series is None:
                if len(cache) >= self.cache_limit:
                    cache.clear()
                tags = _tags(site=site, home=home, device=key[2], resident=key[3], source=SOURCE_EDGE)
                series = cache[key] = self.series(VITALS, tags)
            ts_ns = round(v["ts"] * 1000) * _NS_PER_MS
            hr, hr_max, hr_min = v["hr_bpm"], v["hr_max_bpm"], v["hr_min_bpm"]
            skin, spo2_min, spo2 = v["skin_temp_c"], v["spo2_min_pct"], v["spo2_pct"]
            interval = v["interval_s"]
            counts = f"n_readings={v['n_readings']}i,n_rejected={v['n_rejected']}i"
            if (
                hr is not None
                and hr_max is not None
                and hr_min is not None
                and skin is not None
                and spo2_min is not None
                and spo2 is not None
                and v["bp_systolic_mmhg"] is None
            ):
                out.append(
                    f"{series} hr_bpm={ft(hr) or fl(hr)},hr_max_bpm={ft(hr_max) or fl(hr_max)},"
                    f"hr_min_bpm={ft(hr_min) or fl(hr_min)},interval_s={ft(interval) or fl(interval)},{counts},"
                    f"skin_temp_c={ft(skin) or fl(skin)},spo2_min_pct={ft(spo2_min) or fl(spo2_min)},"
                    f"spo2_pct={ft(spo2) or fl(spo2)} {ts_ns}"
                )
                continue
            parts: list[str] = []
            add = parts.append
            if v["bp_diastolic_mmhg"] is not None:
                add(f"bp_diastolic_mmhg={v['bp_diastolic_mmhg']}i")
            if v["bp_systolic_mmhg"] is not None:
                add(f"bp_systolic_mmhg={v['bp_systolic_mmhg']}i")
            if hr is not None:
                add(f"hr_bpm={ft(hr) or fl(hr)}")
            if hr_max is not None:
                add(f"hr_max_bpm={ft(hr_max) or fl(hr_max)}")
            if hr_min is not None:
                add(f"hr_min_bpm={ft(hr_min) or fl(hr_min)}")
            add(f"interval_s={ft(interval) or fl(interval)}")
            add(counts)
            if skin is not None:
                add(f"skin_temp_c={ft(skin) or fl(skin)}")
            if spo2_min is not None:
                add(f"spo2_min_pct={ft(spo2_min) or fl(spo2_min)}")
            if spo2 is not None:
                add(f"spo2_pct={ft(spo2) or fl(spo2)}")
            out.append(f"{series} {','.join(parts)} {ts_ns}")
        return out
