"""GPS geofence: distance, confirmation by day, at once at night, once per excursion."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from careloop import messages as m
from edge.geofence import Geofence, haversine_m
from edge.models import GeoZone

ZONE = GeoZone(lat=31.2304, lon=121.4737, radius_m=100.0)
T0 = 1_790_000_000.0


def fix(ts: float, distance_m: float, accuracy_m: float = 8.0, bearing_deg: float = 60.0) -> m.GpsFix:
    """A fix `distance_m` from the home along `bearing_deg`."""
    bearing = math.radians(bearing_deg)
    dlat = distance_m * math.cos(bearing) / 6_371_008.8
    dlon = distance_m * math.sin(bearing) / (6_371_008.8 * math.cos(math.radians(ZONE.lat)))
    return m.GpsFix(ts=ts, lat=ZONE.lat + math.degrees(dlat), lon=ZONE.lon + math.degrees(dlon), accuracy_m=accuracy_m)


def test_haversine_matches_known_distances() -> None:
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(111_195, rel=1e-3)  # one degree of latitude
    assert haversine_m(31.2304, 121.4737, 39.9042, 116.4074) == pytest.approx(1_067_000, rel=0.01)  # to Beijing
    assert haversine_m(10.0, 20.0, 10.0, 20.0) == 0.0


@given(st.floats(0.0, 5000.0), st.floats(0.0, 359.9))
def test_the_test_fixes_are_where_they_say(distance: float, bearing: float) -> None:
    f = fix(T0, distance, bearing_deg=bearing)
    assert haversine_m(ZONE.lat, ZONE.lon, f.lat, f.lon) == pytest.approx(distance, abs=0.5)


def test_by_day_two_consecutive_fixes_beyond_radius_plus_accuracy_confirm_the_exit() -> None:
    fence = Geofence(ZONE, "br1", "r1")
    assert fence.update(fix(T0, 20, 30), T0, night=False) is None
    assert fence.update(fix(T0 + 10, 115, 8), T0 + 10, night=False) is None
    event = fence.update(fix(T0 + 20, 125, 8), T0 + 21, night=False)
    assert event is not None
    assert event.ts == T0 + 21
    assert event.device_id == "br1"
    assert event.resident_id == "r1"
    assert event.distance_m == pytest.approx(125, abs=0.5)
    assert event.accuracy_m == 8
    assert event.event_id == f"geofence_exit-br1-{round((T0 + 10) * 1000)}"  # named by the excursion's first fix
    assert fence.outside


def test_a_single_outlier_by_day_or_a_fix_within_its_accuracy_is_not_an_exit() -> None:
    fence = Geofence(ZONE, "br1", None)
    assert fence.update(fix(T0, 400, 10), T0, night=False) is None  # multipath outlier
    assert fence.update(fix(T0 + 10, 30, 20), T0 + 10, night=False) is None
    assert fence.update(fix(T0 + 20, 400, 10), T0 + 20, night=False) is None
    assert fence.update(fix(T0 + 30, 150, 60), T0 + 30, night=False) is None  # 150 m +- 60 m: maybe inside
    assert fence.update(fix(T0 + 40, 150, 60), T0 + 40, night=False) is None
    assert not fence.outside


def test_at_night_the_first_fix_beyond_is_enough() -> None:
    fence = Geofence(ZONE, "br1", None)
    event = fence.update(fix(T0, 113, 8), T0, night=True)
    assert event is not None
    assert event.distance_m == pytest.approx(113, abs=0.5)


def test_one_event_per_excursion_and_the_fence_rearms_when_back_inside() -> None:
    fence = Geofence(ZONE, "br1", None)
    events = [fence.update(fix(T0 + 10 * k, 100 + 20 * k, 8), T0 + 10 * k, night=False) for k in range(1, 40)]
    assert sum(e is not None for e in events) == 1
    assert fence.update(fix(T0 + 500, 90, 35), T0 + 500, night=False) is None  # home again (a poor indoor fix)
    assert not fence.outside
    assert fence.update(fix(T0 + 600, 200, 8), T0 + 600, night=False) is None
    assert fence.update(fix(T0 + 610, 210, 8), T0 + 610, night=False) is not None


def test_an_old_fix_is_not_judged_again() -> None:
    fence = Geofence(ZONE, "br1", None)
    assert fence.update(fix(T0 + 10, 300, 8), T0 + 10, night=False) is None
    assert fence.update(fix(T0 + 5, 300, 8), T0 + 11, night=False) is None  # late: not a second fix
    assert fence.stale_fixes == 1
    assert fence.update(fix(T0 + 20, 300, 8), T0 + 20, night=False) is not None
