"""Wire messages from the central broker become the observations the rules see, whoever sent them."""

from __future__ import annotations

from alerts.directory import DeviceEntry, ResidentBook, Snapshot
from alerts.intake import PRIORITY, intake
from alerts.models import DeviceObservation, EventObservation, VitalsObservation
from careloop import messages as m
from careloop.topics import TopicKind, TopicTree

NOW = 1_790_000_000.0
TREE = TopicTree("careloop")
BOOK = ResidentBook(Snapshot(devices={"BR-1": DeviceEntry("H1", "R1", "bracelet")}))


def _topic(kind: TopicKind, device: str | None = "BR-1"):  # type: ignore[no-untyped-def]
    built = TREE.device(kind, "H1", device) if device else TREE.edge(kind, "H1")
    return TREE.parse(built)


def test_a_sim_bracelets_reading_keeps_its_quality_for_gating() -> None:
    reading = m.VitalsReading(ts=NOW, hr_bpm=130.0, spo2_pct=95.0, ppg_quality=0.3, motion_g=1.5)
    [obs] = intake(_topic(TopicKind.DEVICE_VITALS), reading, BOOK, NOW).observations
    assert obs == VitalsObservation("R1", "H1", "BR-1", NOW, hr_bpm=130.0, spo2_pct=95.0, ppg_quality=0.3,
                                    motion_g=1.5, summary=False)  # fmt: skip


def test_an_unregistered_device_stands_for_its_wearer() -> None:
    press = m.SosPress(ts=NOW)
    [obs] = intake(_topic(TopicKind.DEVICE_SOS, "BR-NEW"), press, BOOK, NOW).observations
    assert isinstance(obs, EventObservation)
    assert (obs.resident_id, obs.kind, obs.device_id) == ("BR-NEW", "sos", "BR-NEW")
    # the same press delivered twice has the same id, so the loop sees it once
    again = intake(_topic(TopicKind.DEVICE_SOS, "BR-NEW"), press, BOOK, NOW + 5).observations[0]
    assert isinstance(again, EventObservation)
    assert again.event_id == obs.event_id


def test_edge_batches_become_one_observation_per_item() -> None:
    batch = m.EventBatch.model_validate(
        {
            "msg_id": "m1",
            "seq": 1,
            "events": [
                {"kind": "fall", "event_id": "e1", "ts": NOW, "device_id": "BR-1", "impact_ts": NOW - 2,
                 "confidence": 0.9, "placement": "wrist"},
                {"kind": "geofence_exit", "event_id": "e2", "ts": NOW, "resident_id": "R1", "lat": 31.0,
                 "lon": 121.0, "accuracy_m": 10.0, "distance_m": 400.0},
            ],
        }
    )  # fmt: skip
    found = intake(_topic(TopicKind.EDGE_EVENTS, None), batch, BOOK, NOW)
    fall, exit_ = found.observations
    assert isinstance(fall, EventObservation)
    assert fall.resident_id == "R1"
    assert fall.value == 0.9
    assert isinstance(exit_, EventObservation)
    assert exit_.kind == "geofence_exit"
    assert exit_.value == 400.0
    assert [(r, loc.source) for r, loc in found.locations] == [("R1", "geofence_exit")]


def test_device_health_and_last_will() -> None:
    health = m.DeviceHealthBatch.model_validate(
        {"msg_id": "m2", "seq": 2, "devices": [{"device_id": "BR-1", "ts": NOW, "online": False,
                                                 "offline_reason": "no_data", "battery_pct": 4.0}]}
    )  # fmt: skip
    [obs] = intake(_topic(TopicKind.EDGE_DEVICE_HEALTH, None), health, BOOK, NOW).observations
    assert obs == DeviceObservation("R1", "H1", "BR-1", NOW, online=False, battery_pct=4.0, offline_reason="no_data")
    will = m.Availability(online=False)
    [gone] = intake(_topic(TopicKind.DEVICE_AVAILABILITY), will, BOOK, NOW).observations
    assert gone == DeviceObservation("R1", "H1", "BR-1", NOW, online=False, offline_reason="last_will")


def test_sos_and_events_outrank_vitals() -> None:
    assert PRIORITY[TopicKind.DEVICE_SOS] < PRIORITY[TopicKind.DEVICE_BATTERY] < PRIORITY[TopicKind.DEVICE_VITALS]
    assert PRIORITY[TopicKind.EDGE_EVENTS] < PRIORITY[TopicKind.EDGE_VITALS]
