"""The alerts component's internal data: what rules see, what they say, who is told and how it went.

Boundaries (MQTT payloads, config files, HTTP bodies) are parsed into frozen pydantic models elsewhere; inside the
component values are frozen dataclasses. Four parts meet here and nowhere else:

- ``rules.py`` turns *observations* (vitals, events, device health) into *signals* (raise / clear / cancel a
  condition for a resident);
- ``lifecycle.py`` / ``service.py`` turn signals and people's actions into alert state, persisted with an audit
  trail, and into *notifications* for recipients chosen by ``escalation.py``;
- ``notify/`` delivers a notification over one channel and says how it went (:class:`DeliveryError` when not);
- ``app.py`` wires them to MQTT and the registry.

Times are UNIX seconds (float, UTC); the caller passes ``now``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

# ---------------------------------------------------------------------------------------------------------------
# severities, states, outcomes (values match the wire contract's AlertStateChange literals)
# ---------------------------------------------------------------------------------------------------------------


class Severity(enum.StrEnum):
    """IEC 60601-1-8 style priorities, plus reminders that go to the resident (and family) rather than staff."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    REMINDER = "reminder"

    @property
    def rank(self) -> int:
        """3 for high ... 0 for a reminder; a larger rank wins when a condition worsens."""
        return _SEVERITY_RANK[self]

    @property
    def is_alarm(self) -> bool:
        """Alarms page staff and break through quiet hours; reminders do neither."""
        return self is not Severity.REMINDER


_SEVERITY_RANK = {Severity.REMINDER: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3}


class AlertState(enum.StrEnum):
    """Where an alert is in the reminder -> alarm -> handling loop."""

    PENDING = "pending"  # a fall in its cancel window: the resident may still press "I'm OK"
    OPEN = "open"  # raised and notified, nobody has taken it yet
    ACKNOWLEDGED = "acknowledged"  # a person has seen it and taken it
    IN_HANDLING = "in_handling"  # someone is going / working on it
    RESOLVED = "resolved"  # closed by a person, with an outcome
    CANCELLED = "cancelled"  # closed without paging: "I'm OK" in the window, or a reminder whose condition cleared

    @property
    def is_closed(self) -> bool:
        """Closed alerts take no more actions; a new signal of the same kind opens a new alert."""
        return self in (AlertState.RESOLVED, AlertState.CANCELLED)


class Outcome(enum.StrEnum):
    """How a resolved alarm ended, for the false-alarm rate per rule."""

    FALSE_ALARM = "false_alarm"
    HANDLED_AT_HOME = "handled_at_home"
    TAKEN_TO_HOSPITAL = "taken_to_hospital"
    OTHER = "other"


# ---------------------------------------------------------------------------------------------------------------
# rules: observations in, signals out
# ---------------------------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ResidentProfile:
    """What the rules need to know about one resident, read from the registry's resident and health profile.

    Limits left ``None`` fall back to the rule set's defaults; ``conditions`` select condition-specific overrides
    (e.g. "atrial_fibrillation", "copd"). ``status`` other than "active" (e.g. "away", "in_hospital") snoozes
    every rule except SOS.
    """

    resident_id: str
    home_id: str
    status: str = "active"
    conditions: tuple[str, ...] = ()
    spo2_scale: int = 1  # NEWS2 SpO2 scale 2 for hypercapnic respiratory failure (target 88-92 %)
    hr_min_bpm: float | None = None
    hr_max_bpm: float | None = None
    spo2_min_pct: float | None = None
    skin_temp_min_c: float | None = None
    skin_temp_max_c: float | None = None
    bp_systolic_min_mmhg: float | None = None
    bp_systolic_max_mmhg: float | None = None
    bp_diastolic_min_mmhg: float | None = None
    bp_diastolic_max_mmhg: float | None = None
    timezone: str = "UTC"  # IANA name of the home's zone: day/night windows and baselines by time of day


@dataclass(slots=True, frozen=True)
class VitalsObservation:
    """One vitals reading (a SIM bracelet's own) or one edge interval summary, for one resident."""

    resident_id: str
    home_id: str
    device_id: str
    ts: float
    hr_bpm: float | None = None
    spo2_pct: float | None = None
    skin_temp_c: float | None = None
    bp_systolic_mmhg: float | None = None
    bp_diastolic_mmhg: float | None = None
    ppg_quality: float | None = None  # raw readings only; summaries were gated by the edge already
    motion_g: float | None = None  # raw readings only
    summary: bool = False  # True for an edge interval summary (already quality-gated and smoothed)


@dataclass(slots=True, frozen=True)
class EventObservation:
    """A detected event: from the edge's event batches, or a SIM bracelet's own SOS / "I'm OK" press.

    ``kind`` is the wire contract's event kind: fall, sos, ok, inactivity, bed_exit, night_wandering,
    geofence_exit, presence. ``event_id`` is stable across redeliveries (signals carry it for idempotency).
    """

    resident_id: str
    home_id: str
    kind: str
    event_id: str
    ts: float
    device_id: str | None = None
    room: str | None = None
    value: float | None = None  # e.g. fall confidence, inactivity duration_s, geofence distance_m
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class DeviceObservation:
    """A device's health: from the edge's device-health batches or a SIM bracelet's battery / wear / availability."""

    resident_id: str
    home_id: str
    device_id: str
    ts: float
    online: bool | None = None
    battery_pct: float | None = None
    worn: bool | None = None
    offline_reason: str | None = None


Observation = VitalsObservation | EventObservation | DeviceObservation


class SignalAction(enum.StrEnum):
    """What a rule says about a condition."""

    RAISE = "raise"  # the condition holds (again): open an alert, or update the open one (count, latest value)
    CLEAR = "clear"  # the condition no longer holds: recorded; closes only a reminder nobody has to take
    CANCEL = "cancel"  # the resident said "I'm OK": cancels a fall still in its cancel window


@dataclass(slots=True, frozen=True)
class Signal:
    """A rule's verdict about one condition of one resident; the loop turns it into alert state.

    ``kind`` names the condition and is the alert's kind: one open alert per (resident_id, kind).
    ``cancel_window_s`` > 0 makes a raised alarm wait PENDING that long for a CANCEL (falls).
    ``promote_after_s`` / ``promote_to`` make an unanswered reminder whose condition persists an alarm.
    ``source_id`` (an event id, or rule id + time) makes a redelivered signal a no-op.
    """

    resident_id: str
    home_id: str
    kind: str
    action: SignalAction
    severity: Severity
    ts: float
    rule_id: str
    source_id: str
    value: float | None = None
    unit: str | None = None
    reason: str = ""
    detail: Mapping[str, object] = field(default_factory=dict)
    cancel_window_s: float = 0.0
    promote_after_s: float | None = None
    promote_to: Severity | None = None


# ---------------------------------------------------------------------------------------------------------------
# notification: who is told what, and how it went
# ---------------------------------------------------------------------------------------------------------------


class RecipientKind(enum.StrEnum):
    """Who a recipient is to the resident."""

    STAFF = "staff"
    FAMILY = "family"
    RESIDENT = "resident"  # the resident's own bracelet


class ChannelName(enum.StrEnum):
    """How a notification travels."""

    LIVE = "live"  # MQTT alert topic -> dashboard WebSocket
    EMAIL = "email"  # SMTP
    WEBHOOK = "webhook"  # signed HTTP POST to an SMS / messaging gateway
    BRACELET = "bracelet"  # a command to the resident's bracelet (text, vibration)


@dataclass(slots=True, frozen=True)
class QuietHours:
    """A daily window, in the recipient's own time zone, in which reminders wait and alarms still break through.

    ``start`` and ``end`` are "HH:MM"; a window may wrap midnight (22:00-07:00).
    """

    start: str
    end: str
    timezone: str = "UTC"


@dataclass(slots=True, frozen=True)
class Recipient:
    """A person (or bracelet) to notify, with their addresses and preferences."""

    recipient_id: str  # staff code, "family:<id>", or "resident:<code>"
    kind: RecipientKind
    name: str
    role: str | None = None  # staff role, or the family member's relation
    email: str | None = None
    phone: str | None = None
    device_id: str | None = None  # for the bracelet channel
    channels: tuple[ChannelName, ...] = (ChannelName.EMAIL,)
    quiet_hours: QuietHours | None = None
    min_severity: Severity = Severity.REMINDER  # below this, nothing is sent to them
    language: str = "en"


@dataclass(slots=True, frozen=True)
class Notification:
    """One message to one recipient over one channel, created (and persisted) before it is sent.

    ``notification_id`` is unique and stable: a retry sends the same id (webhook receivers de-duplicate on it).
    """

    notification_id: str
    alert_id: str
    resident_id: str
    home_id: str
    kind: str
    severity: Severity
    state: AlertState
    recipient: Recipient
    channel: ChannelName
    title: str
    body: str
    created_ts: float
    link: str | None = None  # the alert in the web console
    escalation_level: int = 0
    context: Mapping[str, object] = field(default_factory=dict)  # the alarm context (conditions, vitals, address...)
    # channel-specific content: for LIVE the fields of the wire contract's AlertStateChange, for BRACELET the
    # BraceletCommand's action / text / vibrate_ms
    payload: Mapping[str, object] = field(default_factory=dict)


class DeliveryStatus(enum.StrEnum):
    """The recorded outcome of one notification."""

    PENDING = "pending"  # not yet sent (or waiting for quiet hours to end)
    DELIVERED = "delivered"  # the channel accepted it (SMTP 250, webhook 2xx, MQTT PUBACK)
    RETRYING = "retrying"  # a transient failure; another attempt is scheduled
    FAILED = "failed"  # gave up (permanent failure or attempts exhausted): shown to staff
    SUPPRESSED = "suppressed"  # deliberately not sent (alert closed before a reminder's quiet hours ended)


class DeliveryError(Exception):
    """A channel could not deliver a notification; ``transient`` failures are retried with backoff.

    ``retry_after_s``, when set, is how long the channel asked us to wait (an HTTP gateway's Retry-After): the
    next attempt should come no sooner.
    """

    def __init__(self, detail: str, *, transient: bool, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.retry_after_s = retry_after_s


class Notifier(Protocol):
    """One channel's sender. Returns when the channel accepted the notification; raises DeliveryError if not."""

    channel: ChannelName

    async def send(self, notification: Notification) -> str:
        """Deliver; return a short receipt (e.g. the SMTP reply or the HTTP status) for the delivery record."""
        ...
