"""From validated wire messages to what the rules observe: one function per topic kind, no I/O.

The central broker carries two shapes of the same facts: SIM bracelets publish their own readings and button
presses on device topics, and edge gateways publish quality-gated summaries and detected events in batches. Both
become the same observations; the resident is the one the message names, else the device's registered wearer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alerts.context import Location
from alerts.directory import ResidentBook
from alerts.models import DeviceObservation, EventObservation, Observation, VitalsObservation
from careloop import messages as m
from careloop.topics import Topic, TopicKind

# What the alerts service subscribes to on the central broker, most urgent first (the receive queue serves them in
# this order, so an SOS never waits behind a backlog of vitals).
PRIORITY: dict[TopicKind, int] = {
    TopicKind.DEVICE_SOS: 0,
    TopicKind.EDGE_EVENTS: 0,
    TopicKind.DEVICE_OK: 0,
    TopicKind.EDGE_DEVICE_HEALTH: 1,
    TopicKind.DEVICE_AVAILABILITY: 1,
    TopicKind.DEVICE_BATTERY: 1,
    TopicKind.DEVICE_WEAR: 1,
    TopicKind.DEVICE_GPS: 1,
    TopicKind.EDGE_VITALS: 2,
    TopicKind.DEVICE_VITALS: 2,
}
SUBSCRIBED = tuple(PRIORITY)


@dataclass(slots=True)
class Intake:
    """What one message says, for the rules (observations) and for alarm context (locations)."""

    observations: list[Observation] = field(default_factory=list)
    locations: list[tuple[str, Location]] = field(default_factory=list)


def _event(ev: m.Event, home_id: str, book: ResidentBook) -> EventObservation:
    resident = ev.resident_id or (book.wearer(ev.device_id, home_id) if ev.device_id else None) or home_id
    value: float | None = None
    detail: dict[str, object] = {}
    match ev:
        case m.FallEvent():
            value = ev.confidence
            detail = {"impact_ts": ev.impact_ts, "placement": ev.placement, "sources": list(ev.sources)}
        case m.InactivityEvent():
            value = ev.duration_s
            detail = {"last_room": ev.last_room, "last_motion_ts": ev.last_motion_ts}
        case m.BedExitEvent():
            value = ev.away_s
            detail = {"left_ts": ev.left_ts}
        case m.NightWanderingEvent():
            detail = {"zone": ev.zone}
        case m.GeofenceExitEvent():
            value = ev.distance_m
            detail = {"lat": ev.lat, "lon": ev.lon, "accuracy_m": ev.accuracy_m}
        case m.SosEvent() | m.OkEvent():
            detail = {"pressed_ts": ev.pressed_ts}
        case m.PresenceEvent():
            value = 1.0 if ev.present else 0.0
    return EventObservation(
        resident_id=resident,
        home_id=home_id,
        kind=ev.kind,
        event_id=ev.event_id,
        ts=ev.ts,
        device_id=ev.device_id,
        room=ev.room,
        value=value,
        detail=detail,
    )


def intake(topic: Topic, message: m.Message, book: ResidentBook, now: float) -> Intake:
    """The observations (and locations) in one validated message from the central broker, received at `now`."""
    out = Intake()
    home = topic.home_id or ""
    device = topic.device_id or ""
    match message:
        case m.VitalsReading():
            out.observations.append(
                VitalsObservation(
                    resident_id=book.wearer(device, home),
                    home_id=home,
                    device_id=device,
                    ts=message.ts,
                    hr_bpm=message.hr_bpm,
                    spo2_pct=message.spo2_pct,
                    skin_temp_c=message.skin_temp_c,
                    bp_systolic_mmhg=message.bp_systolic_mmhg,
                    bp_diastolic_mmhg=message.bp_diastolic_mmhg,
                    ppg_quality=message.ppg_quality,
                    motion_g=message.motion_g,
                )
            )
        case m.VitalsBatch():
            for s in message.readings:
                out.observations.append(
                    VitalsObservation(
                        resident_id=s.resident_id or book.wearer(s.device_id, home),
                        home_id=home,
                        device_id=s.device_id,
                        ts=s.ts,
                        hr_bpm=s.hr_bpm,
                        spo2_pct=s.spo2_pct,
                        skin_temp_c=s.skin_temp_c,
                        bp_systolic_mmhg=s.bp_systolic_mmhg,
                        bp_diastolic_mmhg=s.bp_diastolic_mmhg,
                        summary=True,
                    )
                )
        case m.SosPress() | m.OkPress():
            kind = "sos" if isinstance(message, m.SosPress) else "ok"
            out.observations.append(
                EventObservation(
                    resident_id=book.wearer(device, home),
                    home_id=home,
                    kind=kind,
                    # a SIM bracelet's press has no id: the device and the press time make one, stable on redelivery
                    event_id=f"{device}-{kind}-{int(message.ts * 1000)}",
                    ts=message.ts,
                    device_id=device,
                    detail={"pressed_ts": message.ts},
                )
            )
        case m.EventBatch():
            for ev in message.events:
                obs = _event(ev, home, book)
                out.observations.append(obs)
                if isinstance(ev, m.GeofenceExitEvent):
                    out.locations.append(
                        (obs.resident_id, Location(ev.lat, ev.lon, ev.accuracy_m, ev.ts, "geofence_exit"))
                    )
        case m.GpsFix():
            out.locations.append(
                (book.wearer(device, home), Location(message.lat, message.lon, message.accuracy_m, message.ts, "gps"))
            )
        case m.BatteryStatus():
            out.observations.append(
                DeviceObservation(book.wearer(device, home), home, device, message.ts, battery_pct=message.level_pct)
            )
        case m.WearStatus():
            out.observations.append(
                DeviceObservation(book.wearer(device, home), home, device, message.ts, worn=message.worn)
            )
        case m.Availability():
            out.observations.append(
                DeviceObservation(
                    book.wearer(device, home),
                    home,
                    device,
                    message.since if message.since is not None else now,
                    online=message.online,
                    offline_reason=None if message.online else "last_will",
                )
            )
        case m.DeviceHealthBatch():
            for h in message.devices:
                out.observations.append(
                    DeviceObservation(
                        book.wearer(h.device_id, home),
                        home,
                        h.device_id,
                        h.ts,
                        online=h.online,
                        battery_pct=h.battery_pct,
                        worn=h.worn,
                        offline_reason=h.offline_reason,
                    )
                )
    return out
