"""Wire contract: one frozen pydantic model per MQTT stream, with units in the field names and physiological bounds.

Rules every model follows:
- `extra="forbid"`: an unknown field is an error, never silently dropped;
- every scalar is strict: a string is not a number, `true` is not a number and 1 is not `true`; integers are
  accepted where floats are (JSON does not tell 1 from 1.0); arrays are accepted where tuples are;
- `allow_inf_nan=False`: NaN and infinity are rejected;
- `v` is the schema version (1); a message of another version is rejected;
- times are Unix seconds (UTC) as floats. A timestamp must lie after 2020 and before 2100 whatever the context,
  and, when decoded through `careloop.codec` (which passes `now`), no further than `max_future_s` ahead of and no
  more than `max_age_s` behind the receiver's clock.

Units: bpm, percent, degrees Celsius, mmHg, g (1 g = 9.80665 m/s^2), metres, seconds, Hz.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from careloop.topics import ID_PATTERN

SCHEMA_VERSION = 1

#: Accelerometer batches: at most 10 s of 50 Hz signal per message (one message a second is normal).
MAX_ACCEL_SAMPLES = 500
#: A fall event's clip: +-10 s around the impact at 50 Hz, with some slack.
MAX_CLIP_SAMPLES = 1200
#: Readings, events or device reports carried by one edge batch.
MAX_BATCH_ITEMS = 1000
#: The accelerometer range of the supported devices (ADXL345 and smartwatch IMUs saturate at +-16 g).
ACCEL_LIMIT_G = 16.0

EARLIEST_TS = 1_577_836_800.0  # 2020-01-01T00:00:00Z: a device whose clock says earlier has not set its clock
LATEST_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z


def _check_timestamp(value: float, info: ValidationInfo) -> float:
    """Reject timestamps outside the sane range, and, given a receiver clock in the context, stale or future ones."""
    if not EARLIEST_TS <= value <= LATEST_TS:
        raise PydanticCustomError(
            "timestamp_out_of_range",
            "timestamp {ts} is not between 2020-01-01 and 2100-01-01 (Unix seconds): the device clock is not set",
            {"ts": value},
        )
    ctx = info.context
    if ctx is not None:
        now: float = ctx["now"]
        ahead = value - now
        if ahead > ctx["max_future_s"]:
            raise PydanticCustomError(
                "timestamp_in_future",
                f"timestamp is {ahead:.0f} s ahead of the receiver's clock "
                f"(at most {ctx['max_future_s']:.0f} s allowed)",
            )
        if -ahead > ctx["max_age_s"]:
            raise PydanticCustomError(
                "timestamp_too_old",
                f"timestamp is {-ahead:.0f} s behind the receiver's clock (at most {ctx['max_age_s']:.0f} s allowed)",
            )
    return value


def _check_sane_time(value: float) -> float:
    if not EARLIEST_TS <= value <= LATEST_TS:
        raise PydanticCustomError(
            "timestamp_out_of_range",
            "timestamp {ts} is not between 2020-01-01 and 2100-01-01 (Unix seconds)",
            {"ts": value},
        )
    return value


#: When something was measured or happened, checked against the receiver's clock.
Timestamp = Annotated[float, Strict(), Field(description="Unix time, seconds (UTC)"), AfterValidator(_check_timestamp)]
#: A time that may legitimately be old (a retained status, the last time a device was seen).
PastTime = Annotated[float, Strict(), Field(description="Unix time, seconds (UTC)"), AfterValidator(_check_sane_time)]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Identifier = Annotated[str, Strict(), StringConstraints(pattern=ID_PATTERN)]
RoomName = Annotated[str, Strict(), StringConstraints(pattern=ID_PATTERN)]
Fraction = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]
AccelValue = Annotated[float, Strict(), Field(ge=-ACCEL_LIMIT_G, le=ACCEL_LIMIT_G)]
AccelSample = tuple[AccelValue, AccelValue, AccelValue]
HeartRate = Annotated[float, Strict(), Field(ge=25.0, le=250.0, description="heart rate, beats per minute")]
SpO2 = Annotated[float, Strict(), Field(ge=50.0, le=100.0, description="peripheral oxygen saturation, percent")]
SkinTemp = Annotated[
    float, Strict(), Field(ge=20.0, le=44.0, description="skin temperature at the wrist, degrees Celsius")
]
Systolic = Annotated[int, Strict(), Field(ge=50, le=260, description="systolic blood pressure, mmHg")]
Diastolic = Annotated[int, Strict(), Field(ge=25, le=160, description="diastolic blood pressure, mmHg")]
Latitude = Annotated[float, Strict(), Field(ge=-90.0, le=90.0, description="WGS84 latitude, degrees")]
Longitude = Annotated[float, Strict(), Field(ge=-180.0, le=180.0, description="WGS84 longitude, degrees")]
ShortText = Annotated[str, Strict(), StringConstraints(max_length=500)]


class Frozen(BaseModel):
    """Base of every wire model and of the items nested in them."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Message(Frozen):
    """A whole MQTT payload. `v` is the schema version."""

    v: Literal[1] = 1  # SCHEMA_VERSION
    #: A valid payload (as parsed JSON) for documentation and round-trip tests; every subclass sets one.
    EXAMPLE: ClassVar[dict[str, Any]]

    @classmethod
    def example(cls) -> Self:
        """The documented example payload of this model, validated."""
        return cls.model_validate(cls.EXAMPLE)


def _check_bp_pair(systolic: int | None, diastolic: int | None) -> None:
    if (systolic is None) != (diastolic is None):
        raise PydanticCustomError("bp_incomplete", "blood pressure needs both systolic and diastolic values")
    if systolic is not None and diastolic is not None and systolic <= diastolic:
        raise PydanticCustomError(
            "bp_inconsistent",
            "systolic pressure {s} mmHg must be higher than diastolic {d} mmHg",
            {"s": systolic, "d": diastolic},
        )


# ---------------------------------------------------------------------------------------------------------------
# device -> edge (home broker)
# ---------------------------------------------------------------------------------------------------------------
_T = 1_790_000_000.0  # the examples' time: 2026-09-21


class VitalsReading(Message):
    """One bracelet measurement. At least one vital sign is present; `ppg_quality` says how far to trust HR/SpO2."""

    ts: Timestamp
    hr_bpm: HeartRate | None = None
    spo2_pct: SpO2 | None = None
    skin_temp_c: SkinTemp | None = None
    bp_systolic_mmhg: Systolic | None = None
    bp_diastolic_mmhg: Diastolic | None = None
    ppg_quality: Fraction = Field(description="PPG signal quality index, 0 (unusable) to 1 (clean)")
    motion_g: Annotated[float, Strict(), Field(ge=0.0, le=ACCEL_LIMIT_G)] | None = Field(
        None, description="movement during the measurement, g (RMS of acceleration minus gravity)"
    )

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "ts": _T,
        "hr_bpm": 72,
        "spo2_pct": 97,
        "skin_temp_c": 33.1,
        "ppg_quality": 0.93,
        "motion_g": 0.02,
    }

    @model_validator(mode="after")
    def _some_vital(self) -> Self:
        signs = (self.hr_bpm, self.spo2_pct, self.skin_temp_c, self.bp_systolic_mmhg, self.bp_diastolic_mmhg)
        if all(sign is None for sign in signs):
            raise PydanticCustomError("no_vitals", "a vitals reading needs at least one vital sign")
        _check_bp_pair(self.bp_systolic_mmhg, self.bp_diastolic_mmhg)
        return self


class AccelBatch(Message):
    """Accelerometer samples in g: sample i was taken at `t0 + i / rate_hz`."""

    t0: Timestamp = Field(description="time of the first sample")
    rate_hz: Annotated[float, Strict(), Field(ge=10.0, le=200.0)] = 50.0
    samples_g: Annotated[tuple[AccelSample, ...], Field(min_length=1, max_length=MAX_ACCEL_SAMPLES)]

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "t0": _T,
        "rate_hz": 50,
        "samples_g": [[0.01, -0.98, 0.05], [0.02, -0.99, 0.04], [0.0, -1.01, 0.06]],
    }


class SosPress(Message):
    """The resident pressed the SOS button."""

    ts: Timestamp

    EXAMPLE: ClassVar[dict[str, Any]] = {"ts": _T}


class OkPress(Message):
    """The resident pressed "I'm OK" (cancels a fall alarm still in its cancel window)."""

    ts: Timestamp

    EXAMPLE: ClassVar[dict[str, Any]] = {"ts": _T}


class GpsFix(Message):
    """A position fix from the bracelet."""

    ts: Timestamp
    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Strict(), Field(gt=0.0, le=10_000.0, description="horizontal accuracy radius, metres")]
    speed_mps: Annotated[float, Strict(), Field(ge=0.0, le=100.0)] | None = None

    EXAMPLE: ClassVar[dict[str, Any]] = {"ts": _T, "lat": 31.2304, "lon": 121.4737, "accuracy_m": 8.5}


class BatteryStatus(Message):
    """Battery charge of a device."""

    ts: Timestamp
    level_pct: Annotated[float, Strict(), Field(ge=0.0, le=100.0)]
    charging: Bool = False

    EXAMPLE: ClassVar[dict[str, Any]] = {"ts": _T, "level_pct": 64, "charging": False}


class WearStatus(Message):
    """Whether the bracelet is on the wrist (skin contact)."""

    ts: Timestamp
    worn: Bool

    EXAMPLE: ClassVar[dict[str, Any]] = {"ts": _T, "worn": True}


class MotionReport(Message):
    """Infrared (PIR) motion in one room, zone or doorway."""

    ts: Timestamp
    room: RoomName
    motion: Bool

    EXAMPLE: ClassVar[dict[str, Any]] = {"ts": _T, "room": "bathroom", "motion": True}


ThermalRow = Annotated[
    tuple[Annotated[float, Strict(), Field(ge=-20.0, le=100.0)], ...], Field(min_length=8, max_length=8)
]


class ThermalFrame(Message):
    """One 8x8 thermopile frame, degrees Celsius, row-major as the sensor reports it."""

    ts: Timestamp
    room: RoomName
    pixels_c: Annotated[tuple[ThermalRow, ...], Field(min_length=8, max_length=8)]

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "ts": _T,
        "room": "living_room",
        "pixels_c": [[21.5] * 8] * 3 + [[21.5, 21.5, 29.8, 30.4, 21.5, 21.5, 21.5, 21.5]] + [[21.5] * 8] * 4,
    }


class OccupancyReport(Message):
    """A bed or chair pressure sensor."""

    ts: Timestamp
    place: Literal["bed", "chair"]
    occupied: Bool
    room: RoomName | None = None

    EXAMPLE: ClassVar[dict[str, Any]] = {"ts": _T, "place": "bed", "occupied": False, "room": "bedroom"}


class Availability(Message):
    """Retained online / offline status; the device (or edge) sets `online: false` as its MQTT last will."""

    online: Bool
    since: PastTime | None = Field(None, description="when this status began (an old retained value is normal)")

    EXAMPLE: ClassVar[dict[str, Any]] = {"online": False, "since": _T}


# ---------------------------------------------------------------------------------------------------------------
# central -> device
# ---------------------------------------------------------------------------------------------------------------
class BraceletCommand(Message):
    """A reminder text and / or a vibration for the bracelet."""

    command_id: Identifier
    ts: Timestamp
    action: Literal["reminder", "vibrate"]
    text: Annotated[str, Strict(), StringConstraints(max_length=160)] | None = None
    vibrate_ms: Annotated[int, Strict(), Field(ge=0, le=10_000)] = 0

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "command_id": "cmd-7f3a",
        "ts": _T,
        "action": "reminder",
        "text": "Please put your bracelet on",
        "vibrate_ms": 400,
    }

    @model_validator(mode="after")
    def _text_for_reminder(self) -> Self:
        if self.action == "reminder" and not self.text:
            raise PydanticCustomError("reminder_without_text", "a reminder command needs text")
        return self


# ---------------------------------------------------------------------------------------------------------------
# edge -> central (batched; `msg_id` makes redelivery idempotent, `seq` orders one home's uplink)
# ---------------------------------------------------------------------------------------------------------------
class UplinkMessage(Message):
    """An edge -> central message: `msg_id` is unique per home and stable across retries; `seq` rises per home."""

    msg_id: Identifier
    seq: Annotated[int, Strict(), Field(ge=0)]


class VitalsSummary(Frozen):
    """Vital signs of one resident over one interval ending at `ts`, after signal-quality gating."""

    ts: Timestamp
    device_id: Identifier
    resident_id: Identifier | None = None
    interval_s: Annotated[float, Strict(), Field(gt=0.0, le=3600.0)]
    hr_bpm: HeartRate | None = None
    hr_min_bpm: HeartRate | None = None
    hr_max_bpm: HeartRate | None = None
    spo2_pct: SpO2 | None = None
    spo2_min_pct: SpO2 | None = None
    skin_temp_c: SkinTemp | None = None
    bp_systolic_mmhg: Systolic | None = None
    bp_diastolic_mmhg: Diastolic | None = None
    n_readings: Annotated[int, Strict(), Field(ge=0)] = Field(description="readings that passed quality gating")
    n_rejected: Annotated[int, Strict(), Field(ge=0)] = Field(
        0, description="readings dropped for low quality or motion"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_bp_pair(self.bp_systolic_mmhg, self.bp_diastolic_mmhg)
        lo, mean, hi = self.hr_min_bpm, self.hr_bpm, self.hr_max_bpm
        if lo is not None and hi is not None and lo > hi:
            raise PydanticCustomError(
                "range_inverted", "hr_min_bpm {lo} is above hr_max_bpm {hi}", {"lo": lo, "hi": hi}
            )
        if mean is not None and ((lo is not None and mean < lo) or (hi is not None and mean > hi)):
            raise PydanticCustomError("range_inverted", "hr_bpm {m} lies outside its min / max", {"m": mean})
        return self


class VitalsBatch(UplinkMessage):
    """Several residents' or intervals' vitals summaries in one message."""

    readings: Annotated[tuple[VitalsSummary, ...], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "msg_id": "h0001-000000001042",
        "seq": 1042,
        "readings": [
            {
                "ts": _T,
                "device_id": "br-0001",
                "resident_id": "r-0001",
                "interval_s": 60,
                "hr_bpm": 71.5,
                "hr_min_bpm": 66,
                "hr_max_bpm": 78,
                "spo2_pct": 97.2,
                "spo2_min_pct": 96,
                "skin_temp_c": 33.0,
                "n_readings": 58,
                "n_rejected": 2,
            },
        ],
    }


class AccelClip(Frozen):
    """Raw accelerometer signal around an event (the only raw signal that leaves the home)."""

    t0: Timestamp
    rate_hz: Annotated[float, Strict(), Field(ge=10.0, le=200.0)] = 50.0
    samples_g: Annotated[tuple[AccelSample, ...], Field(min_length=1, max_length=MAX_CLIP_SAMPLES)]


FeatureName = Annotated[str, Strict(), StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]


class _Event(Frozen):
    event_id: Identifier = Field(description="unique and stable across retries")
    ts: Timestamp = Field(description="when the event was detected")
    resident_id: Identifier | None = None
    device_id: Identifier | None = None
    room: RoomName | None = None


class FallEvent(_Event):
    """A fall, from the bracelet, the infrared, or both."""

    kind: Literal["fall"] = "fall"
    impact_ts: Timestamp
    confidence: Fraction
    placement: Literal["wrist", "waist", "infrared"]
    sources: Annotated[tuple[Literal["bracelet", "belt", "thermal"], ...], Field(min_length=1, max_length=3)] = (
        "bracelet",
    )
    features: Annotated[dict[FeatureName, Float], Field(max_length=32)] = Field(default_factory=dict)
    clip: AccelClip | None = None


class InactivityEvent(_Event):
    """No motion anywhere in the home for longer than the home's limit."""

    kind: Literal["inactivity"] = "inactivity"
    duration_s: Annotated[float, Strict(), Field(gt=0.0)]
    last_motion_ts: PastTime | None = None
    last_room: RoomName | None = None


class BedExitEvent(_Event):
    """Left the bed at night and did not return within the allowed time."""

    kind: Literal["bed_exit"] = "bed_exit"
    left_ts: Timestamp
    away_s: Annotated[float, Strict(), Field(ge=0.0)]


class NightWanderingEvent(_Event):
    """Door or hallway motion during the home's night window."""

    kind: Literal["night_wandering"] = "night_wandering"
    zone: RoomName


class GeofenceExitEvent(_Event):
    """The bracelet left the home zone."""

    kind: Literal["geofence_exit"] = "geofence_exit"
    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Strict(), Field(gt=0.0, le=10_000.0)]
    distance_m: Annotated[float, Strict(), Field(ge=0.0)]


class SosEvent(_Event):
    """The SOS button, forwarded at once."""

    kind: Literal["sos"] = "sos"
    pressed_ts: Timestamp


class OkEvent(_Event):
    """The "I'm OK" button, forwarded so that a pending fall alarm can be cancelled."""

    kind: Literal["ok"] = "ok"
    pressed_ts: Timestamp


class PresenceEvent(_Event):
    """Somebody is (or is no longer) detected at home by the infrared sensors."""

    kind: Literal["presence"] = "presence"
    present: Bool


Event = Annotated[
    FallEvent
    | InactivityEvent
    | BedExitEvent
    | NightWanderingEvent
    | GeofenceExitEvent
    | SosEvent
    | OkEvent
    | PresenceEvent,
    Field(discriminator="kind"),
]


class EventBatch(UplinkMessage):
    """Detected events, in the order they were detected."""

    events: Annotated[tuple[Event, ...], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "msg_id": "h0001-000000001043",
        "seq": 1043,
        "events": [
            {
                "kind": "fall",
                "event_id": "ev-h0001-88",
                "ts": _T + 2.1,
                "resident_id": "r-0001",
                "device_id": "br-0001",
                "room": "bathroom",
                "impact_ts": _T,
                "confidence": 0.94,
                "placement": "wrist",
                "sources": ["bracelet", "thermal"],
                "features": {"peak_g": 3.8, "stillness_s": 9.5},
            },
        ],
    }


class DeviceHealth(Frozen):
    """What the edge knows about one device."""

    device_id: Identifier
    ts: Timestamp
    online: Bool
    last_seen_ts: PastTime | None = None
    battery_pct: Annotated[float, Strict(), Field(ge=0.0, le=100.0)] | None = None
    low_battery: Bool = False
    worn: Bool | None = None
    offline_reason: Literal["last_will", "no_data", "disconnected"] | None = None


class DeviceHealthBatch(UplinkMessage):
    """Health of several devices of one home."""

    devices: Annotated[tuple[DeviceHealth, ...], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "msg_id": "h0001-000000001044",
        "seq": 1044,
        "devices": [
            {
                "device_id": "br-0001",
                "ts": _T,
                "online": True,
                "last_seen_ts": _T - 1,
                "battery_pct": 18,
                "low_battery": True,
                "worn": True,
            }
        ],
    }


CounterName = Annotated[str, Strict(), StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Count = Annotated[int, Strict(), Field(ge=0)]


class EdgeHeartbeat(Message):
    """The edge agent is alive; with the state of its store-and-forward outbox."""

    ts: Timestamp
    uptime_s: Annotated[float, Strict(), Field(ge=0.0)]
    devices: Annotated[int, Strict(), Field(ge=0)]
    outbox_depth: Annotated[int, Strict(), Field(ge=0)]
    outbox_oldest_ts: PastTime | None = None
    outbox_bytes: Annotated[int, Strict(), Field(ge=0)] | None = Field(
        None, description="bytes the home's messages waiting in the outbox take"
    )
    outbox_evicted: Annotated[dict[CounterName, Count], Field(max_length=8)] = Field(
        default_factory=dict,
        description="messages of this home the outbox's size bound removed since it was created, per stream "
        "(data lost by policy: never an alarm)",
    )
    rejected: Annotated[dict[CounterName, Count], Field(max_length=32)] = Field(
        default_factory=dict, description="device messages of this home rejected since the agent started, per reason"
    )
    software: Annotated[str, Strict(), StringConstraints(max_length=64)]

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "ts": _T,
        "uptime_s": 86_400,
        "devices": 5,
        "outbox_depth": 0,
        "outbox_bytes": 0,
        "outbox_evicted": {"vitals": 0},
        "rejected": {"out_of_range": 2},
        "software": "careloop-edge 0.1.0",
    }


# ---------------------------------------------------------------------------------------------------------------
# central -> dashboards
# ---------------------------------------------------------------------------------------------------------------
Severity = Literal["high", "medium", "low", "reminder"]
AlertState = Literal["pending", "open", "acknowledged", "in_handling", "resolved", "cancelled"]
Outcome = Literal["false_alarm", "handled_at_home", "taken_to_hospital", "other"]


class AlertStateChange(Message):
    """An alert (reminder or alarm) changed state."""

    alert_id: Identifier
    ts: Timestamp
    home_id: Identifier
    resident_id: Identifier
    kind: Identifier = Field(description="what the alert is about, e.g. fall, sos, hr_high")
    severity: Severity
    state: AlertState
    previous_state: AlertState | None = None
    actor: ShortText | None = Field(None, description="who made the change: a staff id, or 'system'")
    reason: ShortText | None = None
    count: Annotated[int, Strict(), Field(ge=1)] = 1
    value: Float | None = Field(None, description="latest value of the condition, in the rule's unit")
    outcome: Outcome | None = None

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "alert_id": "al-000123",
        "ts": _T + 31,
        "home_id": "h0001",
        "resident_id": "r-0001",
        "kind": "fall",
        "severity": "high",
        "state": "open",
        "previous_state": "pending",
        "actor": "system",
        "reason": "no 'I'm OK' within 30 s",
        "count": 1,
    }


# ---------------------------------------------------------------------------------------------------------------
# any component -> operators
# ---------------------------------------------------------------------------------------------------------------
class DeadLetter(Message):
    """A message a component rejected, with the reason; the payload is kept (base64, truncated) for inspection."""

    ts: PastTime
    component: Identifier
    topic: Annotated[str, Strict(), StringConstraints(max_length=1024)]
    reason: Identifier
    detail: Annotated[str, Strict(), StringConstraints(max_length=2000)]
    payload_b64: Annotated[str, Strict(), StringConstraints(max_length=90_000)]
    payload_size: Annotated[int, Strict(), Field(ge=0)]

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "ts": _T,
        "component": "ingest",
        "topic": "careloop/v1/home/h0001/device/br-0001/vitals",
        "reason": "out_of_range",
        "detail": "hr_bpm: Input should be less than or equal to 250",
        "payload_b64": "eyJ0cyI6MTc5MDAwMDAwMCwiaHJfYnBtIjo0MDAsInBwZ19xdWFsaXR5IjoxfQ==",
        "payload_size": 46,
    }
