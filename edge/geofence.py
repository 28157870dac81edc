"""GPS geofence: the wearer left the home zone.

A fix is *beyond* the zone when its distance from the home exceeds the zone's radius plus the fix's own accuracy
radius: even the most favourable reading of the fix puts the wearer outside. One such fix could still be a
multipath outlier, so by day the exit is confirmed by two consecutive ones; at night (a person with dementia
leaving at 02:00) the first one is enough. One event per excursion: the fence re-arms when a fix puts the wearer
back inside the radius (its centre, not its whole accuracy circle, so that a poor indoor fix does not keep the
fence disarmed and miss the next exit).
"""

from __future__ import annotations

import math

from careloop import messages as m
from edge.models import GeoZone, event_id

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two WGS84 points, metres (spherical earth: 0.3 % at worst, plenty here)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


class Geofence:
    """The home zone as seen by one wearable's GPS fixes."""

    def __init__(self, zone: GeoZone, device_id: str, resident_id: str | None) -> None:
        self.zone = zone
        self.device_id = device_id
        self.resident_id = resident_id
        self.outside = False  # an exit was raised and no fix has put the wearer back inside since
        self._beyond_since: float | None = None  # first fix of the current run of beyond fixes
        self._last_ts = -math.inf
        self.stale_fixes = 0

    def update(self, fix: m.GpsFix, now: float, night: bool) -> m.GeofenceExitEvent | None:
        """Judge one fix (`night`: whether the fix's time is in the home's night window)."""
        if fix.ts <= self._last_ts:
            self.stale_fixes += 1  # out of order or repeated: the newer fix has already been judged
            return None
        self._last_ts = fix.ts
        distance = haversine_m(self.zone.lat, self.zone.lon, fix.lat, fix.lon)
        if distance <= self.zone.radius_m:
            self.outside = False
        if distance <= self.zone.radius_m + fix.accuracy_m:
            self._beyond_since = None
            return None
        first = self._beyond_since is None
        if first:
            self._beyond_since = fix.ts
        if self.outside or (first and not night):
            return None
        self.outside = True
        assert self._beyond_since is not None
        return m.GeofenceExitEvent(
            event_id=event_id("geofence_exit", self.device_id, self._beyond_since),
            ts=now,
            resident_id=self.resident_id,
            device_id=self.device_id,
            lat=fix.lat,
            lon=fix.lon,
            accuracy_m=fix.accuracy_m,
            distance_m=round(distance, 1),
        )
