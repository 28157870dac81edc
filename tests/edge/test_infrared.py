"""Infrared detectors: the night window, presence and inactivity, bed exit, night wandering, the thermopile's fall."""

from __future__ import annotations

import math
from datetime import datetime, time
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from careloop import messages as m
from edge.infrared import (
    ActivityTracker,
    BedExitDetector,
    NightWanderingDetector,
    NightWindow,
    ThermalFall,
    ThermalFallDetector,
    ThermalScene,
)
from edge.models import HomeConfig
from simulators.infrared import LAYOUTS, frame_for
from simulators.timeline import Posture

TZ = ZoneInfo("Asia/Shanghai")
HOME = HomeConfig(home_id="h1")


def at(hour: int, minute: int = 0, second: float = 0.0, day: int = 21) -> float:
    """Unix time of a local time in the test home (Shanghai), September 2026."""
    return datetime(2026, 9, day, hour, minute, tzinfo=TZ).timestamp() + second


# ---------------------------------------------------------------------------------------------------------------
# night window
# ---------------------------------------------------------------------------------------------------------------
def test_night_is_judged_in_the_home_s_local_time_across_midnight() -> None:
    night = NightWindow(time(22, 0), time(6, 0), "Asia/Shanghai")
    assert not night.is_night(at(21, 59, 59))
    assert night.is_night(at(22, 0))
    assert night.is_night(at(23, 59))
    assert night.is_night(at(2, 0, day=22))
    assert night.is_night(at(5, 59, 59, day=22))
    assert not night.is_night(at(6, 0, day=22))
    assert not night.is_night(at(14, 0, day=22))
    assert night.is_night(at(3, 0))  # going back in time works too (the cache is only a cache)


def test_a_night_window_that_does_not_cross_midnight_and_an_empty_one() -> None:
    early = NightWindow(time(0, 30), time(5, 0), "Asia/Shanghai")
    assert not early.is_night(at(23, 0))
    assert early.is_night(at(1, 0))
    assert not early.is_night(at(5, 30))
    never = NightWindow(time(3, 0), time(3, 0), "Asia/Shanghai")
    assert not any(never.is_night(at(h)) for h in range(24))


def test_the_night_window_follows_daylight_saving_time() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    night = NightWindow(time(22, 0), time(6, 0), "Europe/Berlin")
    # 2026-10-25: clocks go back at 03:00 CEST; 05:30 local is still night, 06:30 local is day, in winter time.
    assert night.is_night(datetime(2026, 10, 25, 5, 30, tzinfo=berlin).timestamp())
    assert not night.is_night(datetime(2026, 10, 25, 6, 30, tzinfo=berlin).timestamp())
    # 2026-03-29: clocks go forward; 22:00 local is 20:00 UTC in summer
    assert night.is_night(datetime(2026, 3, 29, 22, 0, tzinfo=berlin).timestamp())
    assert not night.is_night(datetime(2026, 3, 29, 21, 59, tzinfo=berlin).timestamp())


# ---------------------------------------------------------------------------------------------------------------
# presence and inactivity
# ---------------------------------------------------------------------------------------------------------------
def _run(
    tracker: ActivityTracker, t0: float, t1: float, night: NightWindow | None = None
) -> list[m.PresenceEvent | m.InactivityEvent]:
    out: list[m.PresenceEvent | m.InactivityEvent] = []
    for t in np.arange(t0, t1, 1.0):
        out += tracker.tick(float(t), night.is_night(float(t)) if night else False)
    return out


def test_inactivity_after_the_daytime_limit_once_then_rearmed_by_movement() -> None:
    tracker = ActivityTracker(HOME, "r1")
    t0 = at(8, 0)
    tracker.tick(t0, False)
    assert tracker.infrared_motion(t0, "living_room", t0) == []
    events = _run(tracker, t0, t0 + 4 * 3600 + 5)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, m.InactivityEvent)
    assert event.ts == pytest.approx(t0 + 4 * 3600, abs=1.5)
    assert event.last_motion_ts == t0
    assert event.last_room == "living_room"
    assert event.resident_id == "r1"
    assert event.event_id == f"inactivity-h1-{round(t0 * 1000)}"
    assert _run(tracker, t0 + 4 * 3600 + 5, t0 + 6 * 3600) == []  # once per quiet stretch
    tracker.movement(t0 + 6 * 3600)
    assert _run(tracker, t0 + 6 * 3600, t0 + 9 * 3600) == []
    assert len(_run(tracker, t0 + 9 * 3600, t0 + 10 * 3600 + 5)) == 1


def test_a_movement_between_ticks_starts_the_quiet_stretch_at_the_movement_not_at_the_tick_before() -> None:
    tracker = ActivityTracker(HOME, "r1")
    t0 = at(8, 0)
    tracker.tick(t0, False)
    tracker.movement(t0 + 0.9)  # between the ticks at t0 and t0 + 1
    events = _run(tracker, t0 + 1, t0 + 4 * 3600 + 5)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, m.InactivityEvent)
    # raised at the first tick at least 4 h after the movement, saying so: a rule's ">= 4 h" holds
    assert event.duration_s >= 4 * 3600
    assert event.ts == pytest.approx(t0 + 0.9 + 4 * 3600, abs=1.0)


def test_quiet_nights_are_allowed_longer_and_mixed_stretches_count_in_proportion() -> None:
    night = NightWindow(HOME.night_start, HOME.night_end, HOME.timezone)
    tracker = ActivityTracker(HOME, None)
    t0 = at(22, 30)
    tracker.tick(t0, True)
    tracker.movement(t0)
    # 7.5 h of night quiet spend 0.75 of the budget; the remaining quarter is one daytime hour: 07:00
    events = _run(tracker, t0, at(8, 0, day=22), night)
    assert len(events) == 1
    assert events[0].ts == pytest.approx(at(7, 0, day=22), abs=2)


def test_a_person_who_left_by_the_front_door_is_not_inactive_and_presence_says_so() -> None:
    tracker = ActivityTracker(HOME, "r1", empty_after_s=600)
    t0 = at(10, 0)
    tracker.tick(t0, False)
    tracker.infrared_motion(t0, "hallway", t0)
    tracker.infrared_motion(t0 + 20, "front_door", t0 + 20)
    events = _run(tracker, t0, t0 + 8 * 3600)
    assert [type(e) for e in events] == [m.PresenceEvent]
    gone = events[0]
    assert isinstance(gone, m.PresenceEvent)
    assert not gone.present
    assert gone.ts == pytest.approx(t0 + 620, abs=1.5)
    assert gone.event_id == f"absent-h1-{round((t0 + 20) * 1000)}"  # named by the last sign, not the tick
    back = tracker.infrared_motion(t0 + 8 * 3600, "front_door", t0 + 8 * 3600)
    assert len(back) == 1
    assert back[0].present
    tracker.infrared_motion(t0 + 8 * 3600 + 30, "living_room", t0 + 8 * 3600 + 30)
    # at home again: the quiet clock runs from the return
    later = _run(tracker, t0 + 8 * 3600 + 30, t0 + 12 * 3600 + 40)
    assert [type(e) for e in later] == [m.InactivityEvent]


def test_a_person_at_the_door_who_stays_in_view_is_still_at_home() -> None:
    tracker = ActivityTracker(HOME, None, empty_after_s=600)
    t0 = at(10, 0)
    tracker.tick(t0, False)
    tracker.infrared_motion(t0, "front_door", t0)
    for k in range(1, 1800, 2):  # a thermopile keeps seeing somebody: not gone
        tracker.infrared_presence(t0 + k, t0 + k)
        assert tracker.tick(t0 + k, False) == []
    assert tracker.present


def test_the_wearer_outside_the_geofence_pauses_inactivity() -> None:
    tracker = ActivityTracker(HOME, None)
    t0 = at(9, 0)
    tracker.tick(t0, False)
    tracker.movement(t0)
    tracker.set_wearer_outside(True)
    assert not any(isinstance(e, m.InactivityEvent) for e in _run(tracker, t0, t0 + 6 * 3600))


def test_seeing_a_still_person_is_presence_not_movement() -> None:
    tracker = ActivityTracker(HOME, None)
    t0 = at(8, 0)
    tracker.tick(t0, False)
    tracker.movement(t0)
    events: list[object] = []
    for k in range(0, 4 * 3600 + 10, 2):
        events += tracker.infrared_presence(t0 + k, t0 + k)
        events += tracker.tick(t0 + k, False)
    assert [type(e) for e in events] == [m.InactivityEvent]


# ---------------------------------------------------------------------------------------------------------------
# bed exit
# ---------------------------------------------------------------------------------------------------------------
def _bed_run(detector: BedExitDetector, t0: float, t1: float) -> list[m.BedExitEvent]:
    return [e for t in range(int(t0), int(t1)) for e in detector.tick(float(t))]


def test_out_of_bed_at_night_without_return_raises_one_bed_exit() -> None:
    bed = BedExitDetector(HOME, "r1")
    bed.occupancy("bed1", "bedroom", True, at(1, 0), True)
    left = at(2, 0, 15)
    bed.occupancy("bed1", "bedroom", False, left, True)
    for k in range(1, 10):  # the mat refreshes its state every 5 minutes
        bed.occupancy("bed1", "bedroom", False, left + 300 * k, True)
    events = _bed_run(bed, left, left + 3600)
    assert len(events) == 1
    event = events[0]
    assert event.ts == left + 1800
    assert event.away_s == 1800
    assert event.left_ts == left
    assert event.room == "bedroom"
    assert event.device_id == "bed1"
    assert event.resident_id == "r1"
    assert event.event_id == f"bed_exit-bed1-{round(left * 1000)}"


def test_back_in_bed_in_time_or_getting_up_by_day_raises_nothing() -> None:
    bed = BedExitDetector(HOME, None)
    bed.occupancy("bed1", None, True, at(1, 0), True)
    bed.occupancy("bed1", None, False, at(2, 0), True)
    bed.occupancy("bed1", None, True, at(2, 20), True)  # the bathroom and back
    assert _bed_run(bed, at(2, 0), at(3, 0)) == []
    bed.occupancy("bed1", None, False, at(7, 0), False)  # up for the day
    assert _bed_run(bed, at(7, 0), at(8, 0)) == []


def test_an_empty_bed_at_start_is_not_an_exit() -> None:
    bed = BedExitDetector(HOME, None)
    bed.occupancy("bed1", None, False, at(2, 0), True)
    assert _bed_run(bed, at(2, 0), at(3, 0)) == []


# ---------------------------------------------------------------------------------------------------------------
# night wandering
# ---------------------------------------------------------------------------------------------------------------
def test_motion_at_the_front_door_at_night_is_wandering_at_once_and_once_per_episode() -> None:
    wandering = NightWanderingDetector(HOME, "r1")
    t = at(2, 0)
    assert wandering.motion("hallway", t, True, t) == []
    events = wandering.motion("front_door", t + 40, True, t + 41)
    assert len(events) == 1
    assert events[0].zone == "front_door"
    assert events[0].ts == t + 41
    assert events[0].event_id == f"night_wandering-h1-{round(t * 1000)}"
    for k in range(1, 10):  # the PIR re-reports every minute while she stands there
        assert wandering.motion("front_door", t + 40 + 60 * k, True, t + 40 + 60 * k) == []
    assert [e for k in range(600, 1200) for e in wandering.tick(t + k)] == []
    # an hour later, another episode
    assert len(wandering.motion("front_door", t + 3600, True, t + 3600)) == 1


def test_a_hallway_on_the_way_to_the_bathroom_is_not_wandering() -> None:
    wandering = NightWanderingDetector(HOME, None)
    t = at(2, 10)
    wandering.motion("hallway", t, True, t)
    wandering.motion("bathroom", t + 40, True, t + 40)
    assert [e for k in range(0, 900) for e in wandering.tick(t + k)] == []
    wandering.motion("hallway", t + 600, True, t + 600)  # and back to bed
    wandering.motion("bedroom", t + 630, True, t + 630)
    assert [e for k in range(600, 1500) for e in wandering.tick(t + k)] == []


def test_lingering_in_the_hallway_at_night_is_wandering() -> None:
    wandering = NightWanderingDetector(HOME, None, pass_through_s=120)
    t = at(3, 0)
    wandering.motion("hallway", t, True, t)
    wandering.motion("hallway", t + 60, True, t + 60)
    events = [e for k in range(0, 600) for e in wandering.tick(t + k)]
    assert len(events) == 1
    assert events[0].zone == "hallway"
    assert events[0].ts == t + 120


def test_the_hallway_and_the_door_by_day_are_not_wandering() -> None:
    wandering = NightWanderingDetector(HOME, None)
    t = at(10, 0)
    assert wandering.motion("hallway", t, False, t) == []
    assert wandering.motion("front_door", t + 30, False, t + 30) == []
    assert [e for k in range(0, 600) for e in wandering.tick(t + k)] == []


# ---------------------------------------------------------------------------------------------------------------
# thermopile
# ---------------------------------------------------------------------------------------------------------------
def _room(rng: np.random.Generator) -> np.ndarray:
    """A room's empty view: 22 C, a gradient of up to 0.6 C across it, the pixels' own offsets."""
    rows, cols = np.mgrid[0:8, 0:8] - 3.5
    angle = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(0, 0.6) / 8
    view = 22.0 + slope * (cols * math.cos(angle) + rows * math.sin(angle)) + rng.normal(0, 0.2, (8, 8))
    return np.asarray(view, dtype=np.float64)


def _learned(background: np.ndarray, rng: np.random.Generator) -> ThermalScene:
    scene = ThermalScene()
    for k in range(150):  # five minutes of the empty room
        scene.update(frame_for(Posture.AWAY, (0, 0), rng, background=background).ravel(), k * 2.0)
    return scene


@pytest.mark.parametrize(
    ("posture", "floor_share"),
    [(Posture.STANDING, 0.0), (Posture.SITTING, 0.0), (Posture.LYING_BED, 0.0), (Posture.LYING_FLOOR, 0.9)],
)
def test_only_a_person_lying_on_the_floor_has_the_floor_shape(posture: Posture, floor_share: float) -> None:
    rng = np.random.default_rng(7)
    floor = person = 0
    trials = 150
    for _ in range(trials):
        background = _room(rng)
        scene = _learned(background, rng)
        position = (float(rng.uniform(2.0, 6.0)), float(rng.uniform(2.0, 6.0)))
        frame = frame_for(posture, position, rng, heading_rad=rng.uniform(0, 2 * math.pi), background=background)
        features = scene.update(frame.ravel(), 300.0)
        floor += features.on_floor
        person += features.person
    if floor_share == 0.0:
        assert floor == 0
    else:
        assert floor >= floor_share * trials
    if posture is not Posture.LYING_BED:  # a sleeper under a duvet may be too faint: the bed mat sees them
        assert person == trials


def test_the_usual_seats_and_beds_are_never_floor_shaped() -> None:
    rng = np.random.default_rng(3)
    for layout in LAYOUTS.values():
        background = _room(rng)
        scene = _learned(background, rng)
        places = [(Posture.SITTING, layout.seat, layout.seat_heading_rad)]
        if layout.bed is not None:
            places.append((Posture.LYING_BED, layout.bed, layout.bed_heading_rad))
        else:
            places.append((Posture.LYING_BED, layout.seat, layout.seat_heading_rad + math.pi / 2))
        for posture, where, heading in places:
            for k in range(100):
                frame = frame_for(posture, where, rng, heading_rad=heading, background=background)
                assert not scene.update(frame.ravel(), 300.0 + 2 * k).on_floor


def test_an_empty_room_shows_nothing_and_a_person_present_from_the_start_is_seen() -> None:
    rng = np.random.default_rng(11)
    background = _room(rng)
    scene = ThermalScene()
    first = scene.update(frame_for(Posture.SITTING, (3.0, 3.0), rng, background=background).ravel(), 0.0)
    assert first.person
    empty = _learned(background, rng)
    features = empty.update(frame_for(Posture.AWAY, (0, 0), rng, background=background).ravel(), 1000.0)
    assert not features.person
    assert features.warm_px == 0


def test_the_background_follows_a_warming_room() -> None:
    rng = np.random.default_rng(5)
    background = _room(rng)
    scene = _learned(background, rng)
    t = 600.0
    for k in range(1800):  # the heating comes on: +2 C over an hour
        t += 2.0
        warmer = background + 2.0 * min(1.0, k / 1800)
        features = scene.update(frame_for(Posture.AWAY, (0, 0), rng, background=warmer).ravel(), t)
        assert not features.person


def _frames(
    detector: ThermalFallDetector,
    posture: Posture,
    seconds: float,
    t: float,
    rng: np.random.Generator,
    background: np.ndarray,
    position: tuple[float, float] = (4.0, 4.0),
) -> tuple[float, list[ThermalFall]]:
    falls: list[ThermalFall] = []
    end = t + seconds
    while t < end:
        frame = frame_for(posture, position, rng, heading_rad=0.6, background=background)
        fall = detector.update(frame, t)
        if fall is not None:
            falls.append(fall)
        t += 2.0
    return t, falls


def test_a_thermopile_fall_is_raised_once_after_the_person_stays_on_the_floor() -> None:
    rng = np.random.default_rng(1)
    background = _room(rng)
    detector = ThermalFallDetector("th1", "bathroom")
    t, falls = _frames(detector, Posture.AWAY, 600, 0.0, rng, background)
    t, falls = _frames(detector, Posture.STANDING, 60, t, rng, background)
    assert falls == []
    fell = t
    t, falls = _frames(detector, Posture.LYING_FLOOR, 1800, t, rng, background)
    assert len(falls) == 1
    fall = falls[0]
    assert fall.device_id == "th1"
    assert fall.room == "bathroom"
    assert fall.impact_ts == pytest.approx(fell, abs=4)
    assert fell + 15 <= fall.detected_ts <= fell + 25
    assert set(fall.features) >= {"thermal_mass_c", "thermal_elongation"}
    # she gets up, stays about for a few minutes, and falls again nearby: a new fall
    t, falls = _frames(detector, Posture.STANDING, 300, t, rng, background, (5.0, 3.0))
    assert falls == []
    t, falls = _frames(detector, Posture.LYING_FLOOR, 60, t, rng, background, (4.5, 3.5))
    assert len(falls) == 1


def test_a_short_time_on_the_floor_is_not_a_thermopile_fall() -> None:
    rng = np.random.default_rng(2)
    background = _room(rng)
    detector = ThermalFallDetector("th1", "living_room")
    t, _ = _frames(detector, Posture.AWAY, 600, 0.0, rng, background)
    t, falls = _frames(detector, Posture.STANDING, 30, t, rng, background)
    t, more = _frames(detector, Posture.LYING_FLOOR, 10, t, rng, background)  # tying a shoe, a quick get-up
    t, rest = _frames(detector, Posture.STANDING, 60, t, rng, background)
    assert falls + more + rest == []


def test_hours_in_a_chair_or_in_bed_are_not_thermopile_falls() -> None:
    rng = np.random.default_rng(4)
    layout = LAYOUTS["bedroom"]
    assert layout.bed is not None
    background = _room(rng)
    detector = ThermalFallDetector("th1", "bedroom")
    t, _ = _frames(detector, Posture.AWAY, 600, 0.0, rng, background)
    t, falls = _frames(detector, Posture.SITTING, 3600, t, rng, background, layout.seat)
    t, more = _frames(detector, Posture.LYING_BED, 8 * 3600, t, rng, background, layout.bed)
    assert falls + more == []
