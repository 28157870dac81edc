"""Device health: last seen, offline by last will or silence, low battery, worn, periodic reports."""

from __future__ import annotations

from careloop import messages as m
from careloop.clock import ManualClock
from edge.health import DeviceHealthTracker
from edge.models import DeviceConfig, HomeConfig

T0 = 1_790_000_000.0
HOME = HomeConfig(
    home_id="h1",
    devices=(
        DeviceConfig(device_id="br1", kind="bracelet", resident_id="r1", placement="wrist"),
        DeviceConfig(device_id="pir1", kind="pir", room="hallway"),
        DeviceConfig(device_id="th1", kind="thermopile", room="bathroom"),
    ),
    offline_after_s=600,
    low_battery_pct=20,
)


def run(tracker: DeviceHealthTracker, clock: ManualClock, seconds: int) -> list[m.DeviceHealth]:
    out: list[m.DeviceHealth] = []
    for _ in range(seconds):
        out += tracker.tick(clock.advance(1.0))
    return out


def test_the_last_will_takes_a_device_offline_and_its_next_message_brings_it_back() -> None:
    tracker = DeviceHealthTracker(HOME)
    [online] = tracker.availability("br1", m.Availability(online=True, since=T0), T0)
    assert online.online
    assert online.offline_reason is None
    assert tracker.seen("br1", T0 + 1) == []
    [gone] = tracker.availability("br1", m.Availability(online=False, since=T0 + 50), T0 + 50)
    assert not gone.online
    assert gone.offline_reason == "last_will"
    assert gone.last_seen_ts == T0 + 1
    [back] = tracker.seen("br1", T0 + 90)
    assert back.online
    assert back.offline_reason is None
    assert back.last_seen_ts == T0 + 90


def test_silence_makes_a_scheduled_device_offline_but_never_a_pir() -> None:
    clock = ManualClock(T0)
    tracker = DeviceHealthTracker(HOME)
    tracker.seen("br1", T0)
    tracker.seen("pir1", T0)
    tracker.seen("th1", T0)
    out = run(tracker, clock, 3 * 3600)
    offline = [h for h in out if not h.online]
    assert {h.device_id for h in offline} == {"br1", "th1"}
    first = min(h.ts for h in offline if h.device_id == "br1")
    assert T0 + 600 <= first <= T0 + 611  # the scan runs every 10 s
    assert all(h.offline_reason == "no_data" for h in offline)
    assert all(h.online for h in out if h.device_id == "pir1")


def test_low_battery_is_reported_on_change_and_not_while_charging() -> None:
    tracker = DeviceHealthTracker(HOME)
    tracker.seen("br1", T0)
    assert tracker.battery("br1", m.BatteryStatus(ts=T0, level_pct=40), T0) == []
    [low] = tracker.battery("br1", m.BatteryStatus(ts=T0 + 1, level_pct=19.5), T0 + 1)
    assert low.low_battery
    assert low.battery_pct == 19.5
    assert tracker.battery("br1", m.BatteryStatus(ts=T0 + 2, level_pct=18), T0 + 2) == []  # still low: no news
    [charging] = tracker.battery("br1", m.BatteryStatus(ts=T0 + 3, level_pct=18, charging=True), T0 + 3)
    assert not charging.low_battery


def test_worn_and_not_worn() -> None:
    tracker = DeviceHealthTracker(HOME)
    tracker.seen("br1", T0)
    [on] = tracker.wear("br1", m.WearStatus(ts=T0, worn=True), T0)
    assert on.worn is True
    [off] = tracker.wear("br1", m.WearStatus(ts=T0 + 5, worn=False), T0 + 5)
    assert off.worn is False
    assert off.online
    assert tracker.worn("br1") is False


def test_every_device_heard_from_is_reported_every_five_minutes() -> None:
    clock = ManualClock(T0)
    tracker = DeviceHealthTracker(HOME)
    tracker.seen("pir1", T0)
    out = []
    for _ in range(1800):
        t = clock.advance(1.0)
        tracker.seen("br1", t)  # a chatty bracelet
        out += tracker.tick(t)
    per_device = {d: [h.ts for h in out if h.device_id == d] for d in ("br1", "pir1", "th1")}
    assert len(per_device["br1"]) in (5, 6)
    assert len(per_device["pir1"]) in (5, 6)
    assert per_device["th1"] == []  # never heard from: nothing to say
    assert all(b - a >= 300 for a, b in zip(per_device["br1"], per_device["br1"][1:], strict=False))
    assert max(h.last_seen_ts or 0 for h in out if h.device_id == "br1") > T0 + 1400


def test_unknown_devices_are_ignored_unless_added() -> None:
    tracker = DeviceHealthTracker(HOME)
    assert tracker.seen("stranger", T0) == []
    tracker.add("stranger", "bracelet")
    [first] = tracker.seen("stranger", T0 + 1)
    assert first.device_id == "stranger"
    assert first.online
