"""What the simulated person is doing, as a timeline of segments; every simulated device renders it.

A scenario (or the daily-routine generator) produces a `Timeline`: consecutive `Segment`s, each an `Activity` in a
room with a posture. Devices are renderers over it: the bracelet's accelerometer renders the activity, its vitals
follow the effort, PIR sensors see motion in the person's room, the thermopile sees the posture, the bed sensor
sees sleep. So one fall in the timeline shows up consistently on every device.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType
from typing import Any

#: Rooms a home may have; PIR and thermopile sensors are placed in these.
ROOM_NAMES = ("bedroom", "bathroom", "kitchen", "living_room", "hallway", "front_door", "dining_room", "balcony")
OUTSIDE = "outside"


class Posture(StrEnum):
    """The body's position, as a thermopile or bed sensor sees it."""

    STANDING = "standing"
    SITTING = "sitting"
    LYING_BED = "lying_bed"  # in bed (or on a sofa)
    LYING_FLOOR = "lying_floor"  # on the floor: after a fall
    AWAY = "away"  # not at home


class Activity(StrEnum):
    """What the person does during a segment."""

    SLEEPING = "sleeping"  # in bed, mostly still, turns over now and then
    LYING = "lying"  # awake, lying down (bed or sofa)
    RESTING = "resting"  # sitting still: reading, watching TV
    SITTING_DOWN = "sitting_down"  # the transition from standing to sitting (a few seconds); `hard` param
    STANDING = "standing"  # standing still, small movements (cooking, washing)
    WALKING = "walking"
    STAIRS = "stairs"
    CLAPPING = "clapping"  # hard but harmless hand movement
    HITTING_TABLE = "hitting_table"  # hand strikes a table: a sharp impact that is not a fall
    FALL = "fall"  # the fall itself: pre-fall, free fall, impact, first seconds after; `kind` param
    ON_FLOOR = "on_floor"  # lying where the fall left the person (still, or feebly moving)
    GETTING_UP = "getting_up"  # recovering from the floor
    OUT = "out"  # away from home (walking outside); GPS moves, home sensors see nothing


class FallKind(StrEnum):
    """Kinds of fall the simulator can produce (see `simulators.motion`)."""

    TRIP_FORWARD = "trip_forward"
    SLIP_BACKWARD = "slip_backward"
    LATERAL = "lateral"
    SYNCOPE = "syncope"  # fainting from standing: slower collapse
    FROM_SITTING = "from_sitting"  # sliding off a chair or bed


#: Metabolic effort of each activity, 0 (asleep) to 1 (climbing stairs); drives heart rate and skin temperature.
EFFORT: Mapping[Activity, float] = MappingProxyType(
    {
        Activity.SLEEPING: 0.0,
        Activity.LYING: 0.05,
        Activity.RESTING: 0.1,
        Activity.SITTING_DOWN: 0.3,
        Activity.STANDING: 0.2,
        Activity.WALKING: 0.5,
        Activity.STAIRS: 0.9,
        Activity.CLAPPING: 0.3,
        Activity.HITTING_TABLE: 0.3,
        Activity.FALL: 0.7,
        Activity.ON_FLOOR: 0.35,  # stress keeps the heart rate up
        Activity.GETTING_UP: 0.8,
        Activity.OUT: 0.5,
    }
)

#: Activities during which a PIR sensor in the person's room sees motion.
MOVING: frozenset[Activity] = frozenset(
    {
        Activity.SITTING_DOWN,
        Activity.STANDING,
        Activity.WALKING,
        Activity.STAIRS,
        Activity.CLAPPING,
        Activity.HITTING_TABLE,
        Activity.FALL,
        Activity.GETTING_UP,
    }
)


@dataclass(frozen=True, slots=True)
class Segment:
    """The person does `activity` in `room` from `start` to `end` (Unix seconds). `params` tune the activity."""

    start: float
    end: float
    activity: Activity
    room: str
    posture: Posture
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


class Timeline:
    """Consecutive, non-overlapping segments; look up what happens at any time in O(log n)."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        if not segments:
            raise ValueError("a timeline needs at least one segment")
        for before, after in pairwise(segments):
            if after.start != before.end:
                raise ValueError(f"segments must be consecutive: {before.end} then {after.start}")
        for segment in segments:
            if segment.end <= segment.start:
                raise ValueError(f"segment {segment.activity} at {segment.start} has no duration")
        self.segments = tuple(segments)
        self._starts = [s.start for s in self.segments]

    @property
    def start(self) -> float:
        """When the first segment starts."""
        return self.segments[0].start

    @property
    def end(self) -> float:
        """When the last segment ends."""
        return self.segments[-1].end

    def at(self, t: float) -> Segment:
        """The segment in progress at time t (the last one for t at or after the end)."""
        index = bisect.bisect_right(self._starts, t) - 1
        return self.segments[max(0, min(index, len(self.segments) - 1))]

    def between(self, t0: float, t1: float) -> Iterator[Segment]:
        """Segments overlapping [t0, t1)."""
        index = max(0, bisect.bisect_right(self._starts, t0) - 1)
        for segment in self.segments[index:]:
            if segment.start >= t1:
                return
            if segment.end > t0:
                yield segment
