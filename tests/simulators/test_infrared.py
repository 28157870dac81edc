"""Infrared and pressure sensors: what the edge would see of a night, a fall, a day in a chair, an outing."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest

from careloop.codec import decode, encode
from careloop.contract import SPECS
from careloop.messages import MotionReport, OccupancyReport, ThermalFrame
from careloop.topics import ID_PATTERN, TopicKind
from simulators.emission import DeviceSimulator, Emission
from simulators.infrared import (
    BedSensor,
    ChairSensor,
    PirSensor,
    ThermopileSensor,
    frame_for,
    home_infrared,
)
from simulators.timeline import Activity, Posture, Segment, Timeline

T0 = 1_790_000_000.0
H = 3600.0
ROOMS = ("bedroom", "bathroom", "kitchen", "living_room", "hallway", "front_door")
POSTURE = {
    Activity.SLEEPING: Posture.LYING_BED,
    Activity.RESTING: Posture.SITTING,
    Activity.SITTING_DOWN: Posture.SITTING,
    Activity.STANDING: Posture.STANDING,
    Activity.WALKING: Posture.STANDING,
    Activity.FALL: Posture.LYING_FLOOR,
    Activity.ON_FLOOR: Posture.LYING_FLOOR,
    Activity.OUT: Posture.AWAY,
}


def _timeline(
    *steps: tuple[float, Activity, str] | tuple[float, Activity, str, dict[str, Any]], end: float
) -> Timeline:
    """Steps (offset, activity, room[, params]) each lasting until the next; the last one until `end`."""
    segments = []
    for index, step in enumerate(steps):
        at, activity, room = step[0], step[1], step[2]
        params = step[3] if len(step) > 3 else {}
        until = steps[index + 1][0] if index + 1 < len(steps) else end
        segments.append(Segment(T0 + at, T0 + until, activity, room, POSTURE[activity], params))
    return Timeline(segments)


def _run(device: DeviceSimulator, until: float, window: float = 60.0, start: float = T0) -> list[Emission]:
    out: list[Emission] = []
    t = start
    while t < until:
        out += device.emissions(t, min(t + window, until))
        t += window
    return out


def _motion(emissions: Iterable[Emission]) -> list[tuple[float, bool]]:
    """(offset from T0, motion) of every motion report."""
    return [(e.ts - T0, e.message.motion) for e in emissions if isinstance(e.message, MotionReport)]


def _occupancy(emissions: Iterable[Emission]) -> list[tuple[float, bool]]:
    return [(e.ts - T0, e.message.occupied) for e in emissions if isinstance(e.message, OccupancyReport)]


def _frames(emissions: Iterable[Emission]) -> list[tuple[float, np.ndarray]]:
    return [(e.ts - T0, np.array(e.message.pixels_c)) for e in emissions if isinstance(e.message, ThermalFrame)]


def _flips(reports: Sequence[tuple[float, bool]]) -> list[tuple[float, bool]]:
    """The reports that changed the state (the first report sets it)."""
    out: list[tuple[float, bool]] = []
    for ts, value in reports:
        if not out or out[-1][1] != value:
            out.append((ts, value))
    return out[1:]


def _time_in_motion(reports: Sequence[tuple[float, bool]]) -> float:
    """Seconds between a motion=True report and the next report."""
    return sum(b - a for (a, motion), (b, _) in itertools.pairwise(reports) if motion)


def _blob(frame: np.ndarray, background: np.ndarray, threshold_c: float = 1.5) -> tuple[int, float, np.ndarray]:
    """Pixels warmer than the background by `threshold_c`: how many, how elongated (axis ratio), the centroid.

    The frame's median excess is taken off first, as a detector follows the room's slow drift."""
    excess = frame - background
    excess -= np.median(excess)
    warm = excess > threshold_c
    area = int(warm.sum())
    if area < 2:
        return area, 1.0, np.array([math.nan, math.nan])
    rows, cols = np.nonzero(warm)
    weights = excess[warm]
    eigen = np.linalg.eigvalsh(np.cov(np.vstack([rows, cols]), aweights=weights))
    elongation = math.sqrt(eigen[1] / max(eigen[0], 1e-3))
    return area, elongation, np.array([np.average(rows, weights=weights), np.average(cols, weights=weights)])


def _assert_valid(emissions: Sequence[Emission]) -> None:
    for e in emissions:
        assert e.kind is not None
        assert e.message is not None
        model = SPECS[e.kind].model
        assert isinstance(e.message, model)
        payload = encode(e.message)
        assert decode(model, payload, now=e.ts + 1.0, max_bytes=SPECS[e.kind].max_bytes) == e.message


# ---------------------------------------------------------------------------------------------------------------
# A night: asleep, to the bathroom, back to bed
# ---------------------------------------------------------------------------------------------------------------
EXIT, BACK = 4 * H, 4 * H + 420.0
NIGHT = _timeline(
    (0, Activity.SLEEPING, "bedroom"),
    (EXIT, Activity.WALKING, "hallway"),
    (EXIT + 30, Activity.RESTING, "bathroom"),  # on the toilet
    (EXIT + 270, Activity.STANDING, "bathroom"),  # washing hands
    (EXIT + 360, Activity.WALKING, "hallway"),
    (EXIT + 390, Activity.WALKING, "bedroom"),
    (BACK, Activity.SLEEPING, "bedroom"),
    end=EXIT + 3 * H,
)


def test_bed_sensor_shows_the_night_exit_and_the_return_within_its_debounce() -> None:
    bed = BedSensor("BED-bedroom", NIGHT)
    reports = _occupancy(_run(bed, NIGHT.end, window=600.0))

    assert reports[0] == (0.0, True)
    flips = _flips(reports)
    assert [value for _, value in flips] == [False, True]
    (left, _), (returned, _) = flips
    assert EXIT < left <= EXIT + bed.debounce_s
    assert BACK < returned <= BACK + bed.debounce_s
    gaps = np.diff([ts for ts, _ in reports])
    assert gaps.max() <= bed.refresh_s  # a refresh at least every 5 minutes, so the edge knows the mat is alive


def test_a_momentary_shift_does_not_flip_the_bed_sensor() -> None:
    timeline = _timeline(
        (0, Activity.SLEEPING, "bedroom"),
        (H, Activity.SITTING_DOWN, "bedroom"),  # sits up on the edge for 5 s, lies down again
        (H + 5, Activity.SLEEPING, "bedroom"),
        end=2 * H,
    )
    assert _flips(_occupancy(_run(BedSensor("BED-1", timeline), timeline.end, window=600.0))) == []


def test_pir_sees_the_walk_to_the_bathroom_and_little_of_the_sleep() -> None:
    rng = np.random.default_rng(7)
    pirs = {room: PirSensor(f"PIR-{room}", room, NIGHT, rng) for room in ("bedroom", "hallway", "bathroom")}
    motion = {room: _motion(_run(pir, NIGHT.end, window=600.0)) for room, pir in pirs.items()}

    hallway_on = [ts for ts, m in motion["hallway"] if m]
    assert hallway_on[0] == pytest.approx(EXIT, abs=1.0)  # night wandering starts here for the edge
    assert any(EXIT + 360 <= ts <= EXIT + 361 for ts in hallway_on)  # and on the way back
    assert all(EXIT <= ts < EXIT + 390 for ts in hallway_on)

    bathroom = motion["bathroom"]
    assert [m for _, m in bathroom[:2]] == [False, True]
    assert bathroom[1][0] == pytest.approx(EXIT + 30, abs=1.0)
    assert bathroom[-1] == (EXIT + 360 + 30.0, False)  # hold_s after she walked out

    # Asleep: a few short triggers an hour (turning over), mostly no motion.
    asleep = [(ts, m) for ts, m in motion["bedroom"] if 10.0 < ts < EXIT - 60]
    episodes = [ts for ts, m in asleep if m]
    assert 0 < len(episodes) <= 20  # 1.5 an hour expected
    assert _time_in_motion(asleep) < 0.05 * EXIT


# ---------------------------------------------------------------------------------------------------------------
# A fall in the bathroom, then lying still on the floor for 30 minutes
# ---------------------------------------------------------------------------------------------------------------
FALL_AT = 180.0
FALL = _timeline(
    (0, Activity.WALKING, "hallway"),
    (60, Activity.WALKING, "bathroom"),
    (75, Activity.STANDING, "bathroom"),
    (FALL_AT, Activity.FALL, "bathroom", {"kind": "slip_backward"}),
    (FALL_AT + 3, Activity.ON_FLOOR, "bathroom", {"moving": False}),
    end=FALL_AT + 3 + 1800,
)


def test_after_a_fall_the_bathroom_pir_goes_quiet_and_stays_quiet() -> None:
    devices = home_infrared(ROOMS, FALL, np.random.default_rng(11), thermopile_rooms=())
    motion = {d.device_id: _motion(_run(d, FALL.end)) for d in devices if d.device_id.startswith("PIR-")}

    bathroom = motion["PIR-bathroom"]
    first_on = next(ts for ts, m in bathroom if m)
    assert 60.0 < first_on <= 61.0
    assert max(ts for ts, m in bathroom if m) <= FALL_AT + 3
    assert bathroom[-1] == (FALL_AT + 3 + 30.0, False)  # hold_s after the fall's movement
    # The whole home is silent while she lies on the floor: what inactivity detection relies on.
    for device_id, reports in motion.items():
        assert not [ts for ts, m in reports if m and ts > FALL_AT + 3], device_id
        assert reports[-1][1] is False, device_id


def test_thermopile_sees_a_compact_blob_standing_then_a_long_one_on_the_floor_that_stays() -> None:
    sensor = ThermopileSensor("THERMO-bathroom", "bathroom", FALL, np.random.default_rng(5))
    frames = _frames(_run(sensor, FALL.end))
    background = np.mean([f for ts, f in frames if ts < 55], axis=0)  # the empty room, as a detector learns it

    standing = [_blob(f, background) for ts, f in frames if 80 < ts < FALL_AT]
    floor = [_blob(f, background) for ts, f in frames if ts > FALL_AT + 5]
    assert len(floor) > 800
    standing_area = np.median([area for area, _, _ in standing])
    floor_area = np.median([area for area, _, _ in floor])
    assert 2 <= standing_area <= 6
    assert floor_area >= 1.4 * standing_area
    assert np.median([e for _, e, _ in standing]) < 1.8
    assert np.median([e for _, e, _ in floor]) > 2.2
    assert min(area for area, _, _ in floor) >= 5  # never lost in 30 minutes
    centroids = np.array([c for _, _, c in floor])
    assert centroids.std(axis=0).max() < 0.3  # and it does not move
    peak = max(f.max() for ts, f in frames if ts > FALL_AT + 5)
    assert peak < 30.0  # a clothed body on the floor, 2.5 m away, fills its pixels only partly


def test_walking_moves_the_blob() -> None:
    timeline = _timeline((0, Activity.WALKING, "hallway"), (30, Activity.WALKING, "living_room"), end=150)
    sensor = ThermopileSensor("THERMO-living_room", "living_room", timeline, np.random.default_rng(2))
    frames = _frames(_run(sensor, timeline.end))
    background = np.mean([f for ts, f in frames if ts < 28], axis=0)
    centroids = np.array([_blob(f, background)[2] for ts, f in frames if ts > 40])
    path = np.nansum(np.abs(np.diff(centroids, axis=0)))
    assert path > 20.0  # pixels travelled in 110 s


# ---------------------------------------------------------------------------------------------------------------
# 14 hours in a chair
# ---------------------------------------------------------------------------------------------------------------
def _chair_day(still: bool) -> Timeline:
    return _timeline(
        (0, Activity.WALKING, "kitchen"),
        (300, Activity.WALKING, "living_room"),
        (320, Activity.SITTING_DOWN, "living_room"),
        (325, Activity.RESTING, "living_room", {"still": True} if still else {}),
        end=325 + 14 * H,
    )


def test_fourteen_hours_motionless_in_a_chair_leave_every_pir_silent() -> None:
    timeline = _chair_day(still=True)
    devices = home_infrared(ROOMS, timeline, np.random.default_rng(3), thermopile_rooms=(), chair_room="living_room")
    out = {d.device_id: _run(d, timeline.end, window=900.0) for d in devices}

    for device_id, emissions in out.items():
        if device_id.startswith("PIR-"):
            assert not [ts for ts, m in _motion(emissions) if m and ts > 325], device_id
    assert _motion(out["PIR-living_room"])[-1] == (325 + 30.0, False)
    chair = _occupancy(out["CHAIR-living_room"])
    assert _flips(chair) == [(320 + 15.0, True)]
    assert chair[-1][1] is True
    assert _flips(_occupancy(out["BED-bedroom"])) == []


def test_an_ordinary_long_sit_shows_only_sparse_short_triggers() -> None:
    timeline = _chair_day(still=False)
    pir = PirSensor("PIR-living_room", "living_room", timeline, np.random.default_rng(4))
    reports = [(ts, m) for ts, m in _motion(_run(pir, timeline.end, window=900.0)) if ts > 400]
    triggers = [ts for ts, m in reports if m]
    assert 20 <= len(triggers) <= 110  # about 4 an hour
    assert _time_in_motion(reports) < 0.1 * 14 * H


def test_the_thermopile_sees_a_medium_blob_at_the_seat_all_day() -> None:
    timeline = _chair_day(still=True)
    sensor = ThermopileSensor("THERMO-living_room", "living_room", timeline, np.random.default_rng(6), interval_s=60.0)
    frames = _frames(_run(sensor, timeline.end, window=3600.0))
    background = np.mean([f for ts, f in frames if ts < 290], axis=0)
    blobs = [_blob(f, background) for ts, f in frames if ts > 400]
    areas = [area for area, _, _ in blobs]
    assert 4 <= np.median(areas) <= 9
    seat = np.array(sensor.layout.seat)
    assert max(np.abs(c - seat).max() for _, _, c in blobs) < 1.5


# ---------------------------------------------------------------------------------------------------------------
# Going out
# ---------------------------------------------------------------------------------------------------------------
OUT_AT, HOME_AT = 350.0, 350.0 + 3 * H
OUTING = _timeline(
    (0, Activity.RESTING, "living_room"),
    (300, Activity.WALKING, "hallway"),
    (330, Activity.WALKING, "front_door"),
    (OUT_AT, Activity.OUT, "outside", {"bearing_deg": 90.0, "speed_mps": 1.0}),
    (HOME_AT, Activity.WALKING, "front_door"),
    (HOME_AT + 20, Activity.WALKING, "hallway"),
    (HOME_AT + 50, Activity.RESTING, "living_room"),
    end=HOME_AT + 1800,
)


def test_nothing_in_the_home_moves_while_the_person_is_out() -> None:
    devices = home_infrared(ROOMS, OUTING, np.random.default_rng(8), chair_room="living_room", thermal_interval_s=10.0)
    out = {d.device_id: _run(d, OUTING.end, window=300.0) for d in devices}

    for device_id, emissions in out.items():
        if device_id.startswith("PIR-"):
            motion = _motion(emissions)
            assert not [ts for ts, m in motion if m and OUT_AT < ts < HOME_AT], device_id
            assert [m for ts, m in motion if OUT_AT + 30 < ts <= HOME_AT] in ([], [False]), device_id
    front_door = _motion(out["PIR-front_door"])
    assert next(ts for ts, m in front_door if m and ts > HOME_AT) == pytest.approx(HOME_AT, abs=1.0)
    assert [(round(ts), m) for ts, m in _flips(_occupancy(out["CHAIR-living_room"]))] == [
        (300 + 15, False),
        (round(HOME_AT) + 50 + 15, True),
    ]
    frames = _frames(out["THERMO-living_room"])
    background = np.mean([f for ts, f in frames if HOME_AT - 600 < ts < HOME_AT], axis=0)
    # Half an hour after she left, the seat's residual warmth is gone and nobody is in view.
    assert all(_blob(f, background)[0] <= 1 for ts, f in frames if OUT_AT + 1800 < ts < HOME_AT)
    assert all(_blob(f, background)[0] >= 4 for ts, f in frames if ts > HOME_AT + 60)


def test_false_triggers_are_off_by_default_and_rare_when_asked_for() -> None:
    timeline = _timeline((0, Activity.OUT, "outside"), end=4 * 24 * H)
    quiet = PirSensor("PIR-kitchen", "kitchen", timeline, np.random.default_rng(1))
    noisy = PirSensor("PIR-kitchen", "kitchen", timeline, np.random.default_rng(1), false_triggers_per_day=2.0)
    assert [m for _, m in _motion(_run(quiet, timeline.end, window=H))] == [False]
    triggers = [ts for ts, m in _motion(_run(noisy, timeline.end, window=H)) if m]
    assert 1 <= len(triggers) <= 20


# ---------------------------------------------------------------------------------------------------------------
# Frames, messages, determinism, windows
# ---------------------------------------------------------------------------------------------------------------
def _shape_stats(posture: Posture, seed: int = 1, n: int = 60) -> tuple[float, float, float]:
    """Median blob area, elongation and peak over random places and orientations near the middle of the view."""
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        position = (float(rng.uniform(3.0, 5.0)), float(rng.uniform(3.0, 5.0)))
        frame = frame_for(posture, position, rng, heading_rad=float(rng.uniform(0, 2 * math.pi)))
        area, elongation, _ = _blob(frame, np.full((8, 8), 22.0))
        stats.append((area, elongation, frame.max()))
    area, elongation, peak = np.median(np.array(stats), axis=0)
    return float(area), float(elongation), float(peak)


def test_frame_shapes_follow_the_posture() -> None:
    standing = _shape_stats(Posture.STANDING)
    sitting = _shape_stats(Posture.SITTING)
    in_bed = _shape_stats(Posture.LYING_BED)
    on_floor = _shape_stats(Posture.LYING_FLOOR)

    assert standing[0] < sitting[0] < on_floor[0]  # compact, medium, large
    assert standing[1] < 1.6 < 2.2 < on_floor[1]  # round from above; long on the floor
    assert 26.0 <= standing[2] <= 31.0
    assert in_bed[2] < on_floor[2] < standing[2]  # the duvet hides most of the warmth; the floor is far
    empty = frame_for(Posture.AWAY, (4.0, 4.0), np.random.default_rng(0))
    assert np.abs(empty - 22.0).max() <= 1.25


def test_frames_are_in_sensor_steps_and_within_the_contract() -> None:
    rng = np.random.default_rng(0)
    for posture in Posture:
        frame = frame_for(posture, (4.0, 4.0), rng, ambient_c=99.0)
        assert frame.shape == (8, 8)
        assert frame.max() <= 100.0
        assert np.all(frame * 4 == np.round(frame * 4))
        assert frame_for(posture, (4.0, 4.0), rng, ambient_c=-30.0).min() >= -20.0


def _all(seed: int, window: float, timeline: Timeline = FALL, until: float | None = None) -> list[Emission]:
    devices = home_infrared(ROOMS, timeline, np.random.default_rng(seed), chair_room="bathroom")
    return [e for d in devices for e in _run(d, until or timeline.end, window=window)]


def test_every_message_validates_against_the_contract() -> None:
    night = home_infrared(ROOMS, NIGHT, np.random.default_rng(2))
    around_exit = [e for d in night for e in _run(d, T0 + EXIT + 900, start=T0 + EXIT - 600)]
    emissions = _all(1, 60.0) + around_exit
    kinds = {e.kind for e in emissions}
    assert kinds == {
        TopicKind.DEVICE_AVAILABILITY,
        TopicKind.DEVICE_MOTION,
        TopicKind.DEVICE_THERMAL,
        TopicKind.DEVICE_OCCUPANCY,
    }
    _assert_valid(emissions)


def test_each_device_announces_itself_online_first() -> None:
    for device in home_infrared(ROOMS, NIGHT, np.random.default_rng(2)):
        first = next(iter(device.emissions(T0 + 100, T0 + 160)))
        assert first.kind is TopicKind.DEVICE_AVAILABILITY
        assert first.ts == T0 + 100
        assert first.message is not None
        assert first.message.model_dump(exclude={"v"}) == {"online": True, "since": T0 + 100}


def test_a_device_started_late_reports_the_state_it_finds() -> None:
    bed = BedSensor("BED-1", NIGHT)
    pir = PirSensor("PIR-hallway", "hallway", NIGHT, np.random.default_rng(0))
    assert _occupancy(bed.emissions(T0 + EXIT + 100, T0 + EXIT + 160)) == [(EXIT + 100, False)]
    assert _motion(pir.emissions(T0 + EXIT + 10, T0 + EXIT + 11)) == [(EXIT + 10, True)]


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    until = T0 + 900.0
    assert _all(3, 60.0, until=until) == _all(3, 60.0, until=until)
    assert _all(3, 60.0, until=until) != _all(4, 60.0, until=until)


def test_window_sizes_do_not_change_the_stream() -> None:
    until = T0 + 600.0
    assert _all(9, 1.0, until=until) == _all(9, 60.0, until=until) == _all(9, 7.3, until=until)


def test_windows_may_not_go_back_in_time() -> None:
    pir = PirSensor("PIR-x", "kitchen", NIGHT, np.random.default_rng(0))
    list(pir.emissions(T0, T0 + 60))
    with pytest.raises(ValueError, match="before the previous one ended"):
        pir.emissions(T0 + 30, T0 + 90)


def test_home_infrared_names_its_devices_and_checks_rooms() -> None:
    devices = home_infrared(ROOMS, NIGHT, np.random.default_rng(0), chair_room="living_room", id_prefix="H1-")
    ids = [d.device_id for d in devices]
    assert ids == [f"H1-PIR-{room}" for room in ROOMS] + [
        "H1-THERMO-bedroom",
        "H1-THERMO-bathroom",
        "H1-THERMO-living_room",
        "H1-BED-bedroom",
        "H1-CHAIR-living_room",
    ]
    assert all(re.fullmatch(ID_PATTERN, device_id) for device_id in ids)
    assert isinstance(devices[-1], ChairSensor)
    with pytest.raises(ValueError, match="not rooms of the home"):
        home_infrared(("kitchen",), NIGHT, np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly one"):
        home_infrared(ROOMS, NIGHT)


def test_generators_per_device_id_make_each_device_independent_of_the_others() -> None:
    def rng_for(device_id: str) -> np.random.Generator:
        return np.random.default_rng([1, sum(device_id.encode())])

    whole = home_infrared(ROOMS, FALL, rng_for=rng_for)
    alone = home_infrared(("bathroom",), FALL, rng_for=rng_for, thermopile_rooms=(), bed_sensor=False)
    assert _run(alone[0], T0 + 600) == _run(whole[1], T0 + 600)
