"""The bracelet device: what it sends while worn, off the wrist, out of the house, and when its battery dies."""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo

import numpy as np

from careloop.codec import decode, encode
from careloop.contract import SPECS
from careloop.messages import GpsFix
from careloop.topics import TopicKind
from simulators.bracelet import Bracelet, BraceletPlan, HomeZone, offset_position
from simulators.emission import Control, Emission
from simulators.timeline import Activity, Posture, Segment, Timeline
from simulators.vitals import Physiology, VitalsModel

T0 = 1_790_000_000.0
ZONE = HomeZone(31.2304, 121.4737, 100.0)


def _bracelet(segments: list[Segment], plan: BraceletPlan, seed: int = 1) -> Bracelet:
    return Bracelet(
        device_id="BR-1",
        timeline=Timeline(segments),
        vitals=VitalsModel(Physiology(), np.random.default_rng(seed)),
        zone=ZONE,
        tz=ZoneInfo("Asia/Shanghai"),
        rng=np.random.default_rng(seed + 100),
        plan=plan,
    )


def _run(bracelet: Bracelet, window: float) -> list[Emission]:
    out: list[Emission] = []
    t = bracelet.timeline.start
    while t < bracelet.timeline.end:
        out += bracelet.emissions(t, min(t + window, bracelet.timeline.end))
        t += window
    return out


def _resting(duration: float) -> list[Segment]:
    return [Segment(T0, T0 + duration, Activity.RESTING, "living_room", Posture.SITTING)]


def _distance_m(fix: GpsFix) -> float:
    dlat = math.radians(fix.lat - ZONE.lat) * 6_371_000
    dlon = math.radians(fix.lon - ZONE.lon) * 6_371_000 * math.cos(math.radians(ZONE.lat))
    return math.hypot(dlat, dlon)


def test_no_vitals_while_off_the_wrist_and_wear_changes_are_reported() -> None:
    plan = BraceletPlan(wear_changes=((T0 + 600, False), (T0 + 1800, True)), vitals_interval_s=5)
    out = _run(_bracelet(_resting(2400), plan), 60)
    vitals = [e.ts for e in out if e.kind is TopicKind.DEVICE_VITALS]
    assert not [t for t in vitals if T0 + 600 <= t < T0 + 1800]
    assert len(vitals) == 1200 // 5 - 1 or len(vitals) == 1200 // 5  # every 5 s while worn (phase-dependent)
    wear = [(e.ts, e.message.worn) for e in out if e.kind is TopicKind.DEVICE_WEAR]  # type: ignore[union-attr]
    assert wear == [(T0, True), (T0 + 600, False), (T0 + 1800, True)]


def test_a_dead_battery_drops_the_connection_and_silences_the_device() -> None:
    plan = BraceletPlan(battery_start_pct=5, battery_drain_pct_per_h=10)  # dead after 30 min
    bracelet = _bracelet(_resting(3600), plan)
    out = _run(bracelet, 60)
    dead = T0 + 1800
    assert bracelet.dies_at == dead
    lost = [e for e in out if e.control is Control.CONNECTION_LOST]
    assert [e.ts for e in lost] == [dead]
    assert not [e for e in out if e.ts > dead]
    battery = [e.message.level_pct for e in out if e.kind is TopicKind.DEVICE_BATTERY]  # type: ignore[union-attr]
    assert battery[0] == 5
    assert battery[-1] < 0.1


def test_gps_walks_away_from_home_when_out() -> None:
    segments = [
        Segment(T0, T0 + 300, Activity.RESTING, "living_room", Posture.SITTING),
        Segment(T0 + 300, T0 + 1100, Activity.OUT, "outside", Posture.AWAY, {"bearing_deg": 60.0, "speed_mps": 1.0}),
    ]
    out = _run(_bracelet(segments, BraceletPlan()), 60)
    fixes = [e.message for e in out if e.kind is TopicKind.DEVICE_GPS]
    home = [f for f in fixes if isinstance(f, GpsFix) and f.ts < T0 + 300]
    away = [f for f in fixes if isinstance(f, GpsFix) and f.ts >= T0 + 300]
    assert home
    assert all(_distance_m(f) < 40 for f in home)
    assert len(away) >= 75  # every 10 s out
    assert abs(_distance_m(away[-1]) - 790) < 15


def test_connection_loss_sends_nothing_until_reconnect() -> None:
    plan = BraceletPlan(connection=((T0 + 100, Control.CONNECTION_LOST), (T0 + 400, Control.RECONNECT)))
    out = _run(_bracelet(_resting(600), plan), 60)
    during = [e for e in out if T0 + 100 < e.ts < T0 + 400]
    assert not during
    online = [e for e in out if e.kind is TopicKind.DEVICE_AVAILABILITY]
    assert [e.ts for e in online] == [T0, T0 + 400]


def test_the_stream_does_not_depend_on_window_size_and_every_message_is_valid() -> None:
    plan = BraceletPlan(presses=((T0 + 42, "sos"), (T0 + 50, "ok")))
    small = _run(_bracelet(_resting(900), plan, seed=9), 1)
    large = _run(_bracelet(_resting(900), plan, seed=9), 300)
    assert small == large
    for emission in small:
        if emission.message is not None and emission.kind is not None:
            decode(SPECS[emission.kind].model, encode(emission.message), now=emission.ts)
    assert [e.kind for e in small if e.ts in (T0 + 42, T0 + 50)] == [TopicKind.DEVICE_SOS, TopicKind.DEVICE_OK]


def test_offset_position_is_the_right_distance() -> None:
    lat, lon = offset_position(ZONE, 800.0, 60.0)
    fix = GpsFix(ts=T0, lat=lat, lon=lon, accuracy_m=5)
    assert abs(_distance_m(fix) - 800.0) < 1.0
