"""The wire contract as one table: for every topic kind, its payload model, QoS, retain flag, direction and size limit.

`docs/protocol.md` is generated from this table (`careloop contract docs`), and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from careloop import messages as m
from careloop.codec import DEFAULT_MAX_AGE_S, DEFAULT_MAX_FUTURE_S, PayloadError, RejectReason, decode
from careloop.topics import Topic, TopicError, TopicKind, TopicTree


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one kind of topic is used on the wire."""

    kind: TopicKind
    model: type[m.Message]
    direction: str
    qos: int
    retain: bool
    max_bytes: int
    purpose: str


_DEV = "device -> edge"
_KIB = 1024

SPECS: dict[TopicKind, TopicSpec] = {
    s.kind: s
    for s in (
        TopicSpec(TopicKind.DEVICE_VITALS, m.VitalsReading, _DEV, 1, False, 4 * _KIB, "bracelet vital signs"),
        TopicSpec(TopicKind.DEVICE_ACCEL, m.AccelBatch, _DEV, 1, False, 32 * _KIB, "accelerometer batch, 50 Hz"),
        TopicSpec(TopicKind.DEVICE_SOS, m.SosPress, _DEV, 1, False, 4 * _KIB, "SOS button pressed"),
        TopicSpec(TopicKind.DEVICE_OK, m.OkPress, _DEV, 1, False, 4 * _KIB, '"I\'m OK" button pressed'),
        TopicSpec(TopicKind.DEVICE_GPS, m.GpsFix, _DEV, 1, False, 4 * _KIB, "GPS fix"),
        TopicSpec(TopicKind.DEVICE_BATTERY, m.BatteryStatus, _DEV, 1, False, 4 * _KIB, "battery level"),
        TopicSpec(TopicKind.DEVICE_WEAR, m.WearStatus, _DEV, 1, False, 4 * _KIB, "bracelet worn / not worn"),
        TopicSpec(TopicKind.DEVICE_MOTION, m.MotionReport, _DEV, 1, False, 4 * _KIB, "PIR motion in a room"),
        TopicSpec(TopicKind.DEVICE_THERMAL, m.ThermalFrame, _DEV, 1, False, 8 * _KIB, "8x8 thermopile frame"),
        TopicSpec(TopicKind.DEVICE_OCCUPANCY, m.OccupancyReport, _DEV, 1, False, 4 * _KIB, "bed / chair occupancy"),
        TopicSpec(
            TopicKind.DEVICE_AVAILABILITY,
            m.Availability,
            _DEV,
            1,
            True,
            4 * _KIB,
            "online / offline (retained; the device's last will)",
        ),
        TopicSpec(
            TopicKind.DEVICE_COMMAND,
            m.BraceletCommand,
            "central -> device",
            1,
            False,
            4 * _KIB,
            "reminder text / vibration for a bracelet",
        ),
        TopicSpec(TopicKind.EDGE_VITALS, m.VitalsBatch, "edge -> central", 1, False, 1024 * _KIB, "vitals summaries"),
        TopicSpec(
            TopicKind.EDGE_EVENTS,
            m.EventBatch,
            "edge -> central",
            1,
            False,
            1024 * _KIB,
            "detected events: fall, inactivity, bed exit, night wandering, geofence exit, SOS, I'm OK, presence",
        ),
        TopicSpec(
            TopicKind.EDGE_DEVICE_HEALTH,
            m.DeviceHealthBatch,
            "edge -> central",
            1,
            False,
            1024 * _KIB,
            "device health: last seen, offline, battery, worn",
        ),
        TopicSpec(TopicKind.EDGE_HEARTBEAT, m.EdgeHeartbeat, "edge -> central", 1, False, 4 * _KIB, "edge is alive"),
        TopicSpec(
            TopicKind.EDGE_AVAILABILITY,
            m.Availability,
            "edge -> central",
            1,
            True,
            4 * _KIB,
            "edge online / offline (retained; a one-home edge's last will; many homes' online expires unless renewed)",
        ),
        TopicSpec(
            TopicKind.ALERT_STATE,
            m.AlertStateChange,
            "central -> dashboards",
            1,
            False,
            16 * _KIB,
            "an alert changed state",
        ),
        TopicSpec(
            TopicKind.DEAD_LETTER,
            m.DeadLetter,
            "any -> operators",
            1,
            False,
            128 * _KIB,
            "a rejected message with the reason",
        ),
    )
}


def spec_for(kind: TopicKind) -> TopicSpec:
    """The spec of a topic kind."""
    return SPECS[kind]


def decode_message(
    tree: TopicTree,
    topic: str,
    payload: bytes,
    *,
    now: float,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> tuple[Topic, m.Message]:
    """Parse the topic, then validate the payload against the model that topic carries."""
    try:
        parsed = tree.parse(topic)
    except TopicError as exc:
        raise PayloadError(RejectReason.UNKNOWN_TOPIC, str(exc)) from None
    spec = SPECS[parsed.kind]
    message = decode(
        spec.model, payload, now=now, max_future_s=max_future_s, max_age_s=max_age_s, max_bytes=spec.max_bytes
    )
    return parsed, message
