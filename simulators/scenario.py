"""Scenarios as data: a home, its devices, a timeline of what the resident does, and what a correct system raises.

A scenario is a TOML file in `simulators/scenarios/` (see `fall-bathroom-night.toml` for a commented example),
validated into `ScenarioFile`, then built for a start time and a seed into a `BuiltScenario`: the person's
`Timeline`, the device simulators, and the ground truth. Offsets (`at`, `duration`) are written like `90s`,
`5m`, `1h30m`; `start` is the local time of day the scenario begins, in the home's `timezone`.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from careloop.topics import ID_PATTERN
from simulators.timeline import ROOM_NAMES, Activity, FallKind, Posture, Segment

SCENARIO_DIR = Path(__file__).parent / "scenarios"
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: Any) -> float:
    """Seconds from `1h30m`, `5m`, `90s`, `2.5s` (or a plain number of seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match and any(match.groups()):
            hours, minutes, seconds = match.groups()
            return int(hours or 0) * 3600.0 + int(minutes or 0) * 60.0 + float(seconds or 0)
    raise ValueError(f"{value!r} is not a duration such as 90s, 5m or 1h30m")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Id = Annotated[str, Field(pattern=ID_PATTERN)]

POSTURE_OF: Mapping[Activity, Posture] = MappingProxyType(
    {
        Activity.SLEEPING: Posture.LYING_BED,
        Activity.LYING: Posture.LYING_BED,
        Activity.RESTING: Posture.SITTING,
        Activity.SITTING_DOWN: Posture.SITTING,
        Activity.STANDING: Posture.STANDING,
        Activity.WALKING: Posture.STANDING,
        Activity.STAIRS: Posture.STANDING,
        Activity.CLAPPING: Posture.STANDING,
        Activity.HITTING_TABLE: Posture.STANDING,
        Activity.FALL: Posture.LYING_FLOOR,
        Activity.ON_FLOOR: Posture.LYING_FLOOR,
        Activity.GETTING_UP: Posture.STANDING,
        Activity.OUT: Posture.AWAY,
    }
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HomeSpec(_Spec):
    """The home: its rooms, which have a thermopile, whether there is a bed sensor, and where it is."""

    id: Id | None = None
    rooms: tuple[str, ...] = ("bedroom", "bathroom", "kitchen", "living_room", "hallway", "front_door")
    thermopiles: tuple[str, ...] = ("bedroom", "bathroom", "living_room")
    bed_sensor: bool = True
    lat: float = Field(31.2304, ge=-90, le=90)
    lon: float = Field(121.4737, ge=-180, le=180)
    radius_m: float = Field(100.0, gt=0)

    @field_validator("rooms", "thermopiles")
    @classmethod
    def _known_rooms(cls, rooms: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [room for room in rooms if room not in ROOM_NAMES]
        if unknown:
            raise ValueError(f"unknown rooms {unknown}; rooms are {list(ROOM_NAMES)}")
        return rooms


class ResidentSpec(_Spec):
    """The resident's baselines."""

    id: Id | None = None
    hr_rest_bpm: float = Field(68.0, ge=40, le=110)
    spo2_pct: float = Field(97.0, ge=85, le=100)
    skin_temp_c: float = Field(33.0, ge=28, le=37)
    bp_systolic_mmhg: int | None = Field(None, ge=80, le=220)
    bp_diastolic_mmhg: int | None = Field(None, ge=40, le=130)


class BraceletSpec(_Spec):
    """The resident's bracelet."""

    id: Id | None = None
    placement: Literal["wrist", "waist"] = "wrist"
    battery_pct: float = Field(80.0, ge=0, le=100)
    battery_drain_pct_per_h: float = Field(1.2, ge=0, le=100)
    vitals_interval_s: float = Field(5.0, ge=1, le=3600)
    worn_at_start: bool = True


class Step(_Spec):
    """From `at` until the next step, the resident does `activity` in `room`."""

    at: Duration
    activity: Activity
    room: str = "living_room"
    # activity parameters (see simulators.timeline.Activity)
    kind: FallKind | None = None  # fall
    hard: bool | None = None  # sitting_down
    moving: bool | None = None  # on_floor
    still: bool | None = None  # resting / lying without a single movement (unconscious, unwell)
    bearing_deg: float | None = Field(None, ge=0, lt=360)  # out
    speed_mps: float | None = Field(None, gt=0, le=3)  # out
    round_trip: bool | None = None  # out: comes back by the end of the step

    @model_validator(mode="after")
    def _room(self) -> Step:
        if self.activity is Activity.OUT:
            return self
        if self.room not in ROOM_NAMES:
            raise ValueError(f"unknown room {self.room!r}")
        if self.activity is Activity.FALL and self.kind is None:
            raise ValueError("a fall needs its kind: " + ", ".join(k.value for k in FallKind))
        return self

    def params(self) -> Mapping[str, Any]:
        """The activity parameters given for this step."""
        names = ("kind", "hard", "moving", "still", "bearing_deg", "speed_mps", "round_trip")
        values = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if "kind" in values:
            values["kind"] = FallKind(values["kind"])
        return MappingProxyType(values)


class EventStep(_Spec):
    """Something that happens to the bracelet: a button press, taken off / put on, the connection."""

    at: Duration
    press: Literal["sos", "ok"] | None = None
    worn: bool | None = None
    connection: Literal["lost", "reconnect"] | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> EventStep:
        if sum(x is not None for x in (self.press, self.worn, self.connection)) != 1:
            raise ValueError("an event is exactly one of: press, worn, connection")
        return self


class VitalsSpec(_Spec):
    """Force vital signs for a while (or a motion artefact spike)."""

    start: Duration = Field(alias="from")
    end: Duration = Field(alias="to")
    hr_bpm: float | None = Field(None, ge=30, le=240)
    spo2_pct: float | None = Field(None, ge=70, le=100)
    artefact: bool = False

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Expectation(_Spec):
    """What a correct system does about something that happens in the scenario (ground truth)."""

    what: str
    at: Duration | None = None  # when it happens; or:
    on: Literal["fall", "sos", "ok", "worn_off", "worn_on", "connection_lost", "battery_dead"] | None = None
    edge_events: tuple[str, ...] = ()  # events the edge agent must emit
    no_edge_events: tuple[str, ...] = ()  # events it must not emit
    alerts: tuple[str, ...] = ()  # alert kinds the alerts service must raise
    no_alerts: tuple[str, ...] = ()  # alert kinds it must not raise
    severity: Literal["high", "medium", "low", "reminder"] | None = None
    within_s: float = Field(120.0, gt=0)  # how long after `at` the system has (or the window for the "no_")
    note: str = ""

    @model_validator(mode="after")
    def _when(self) -> Expectation:
        if (self.at is None) == (self.on is None):
            raise ValueError("an expectation needs exactly one of `at` (an offset) or `on` (a happening)")
        return self


class ScenarioFile(_Spec):
    """A scenario as written in TOML."""

    name: Id
    title: str
    description: str = ""
    start: time
    timezone: str = "Asia/Shanghai"
    duration: Duration
    home: HomeSpec = HomeSpec()
    resident: ResidentSpec = ResidentSpec()
    bracelet: BraceletSpec | None = BraceletSpec()
    timeline: tuple[Step, ...] = Field(min_length=1)
    events: tuple[EventStep, ...] = ()
    vitals: tuple[VitalsSpec, ...] = ()
    expect: tuple[Expectation, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ScenarioFile:
        offsets = [step.at for step in self.timeline]
        if offsets[0] != 0:
            raise ValueError("the timeline must start at 0s")
        if any(b <= a for a, b in itertools.pairwise(offsets)):
            raise ValueError("timeline steps must be in increasing order of `at`")
        if offsets[-1] >= self.duration:
            raise ValueError("every timeline step must start before the scenario ends")
        for step in self.timeline:
            if step.activity is not Activity.OUT and step.room not in self.home.rooms:
                raise ValueError(f"step at {step.at:.0f}s is in {step.room!r}, which the home does not have")
        for item in (*self.events, *self.vitals, *self.expect):
            for offset in (getattr(item, "at", None), getattr(item, "end", None)):
                if offset is not None and offset > self.duration:
                    raise ValueError(f"{type(item).__name__} at {offset:.0f}s is after the scenario ends")
        return self

    @property
    def home_id(self) -> str:
        """The home's id (derived from the scenario name when not given)."""
        return self.home.id or f"H-{self.name}"[:64]

    @property
    def resident_id(self) -> str:
        """The resident's id."""
        return self.resident.id or f"R-{self.name}"[:64]

    @property
    def bracelet_id(self) -> str:
        """The bracelet's id."""
        return (self.bracelet.id if self.bracelet else None) or f"BR-{self.name}"[:64]


def load_scenario(name_or_path: str | Path) -> ScenarioFile:
    """A scenario by name (from simulators/scenarios/) or by path; raises ValueError naming what is wrong."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(scenario_names())
        raise ValueError(f"no scenario {str(name_or_path)!r}; known scenarios: {known}")
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    return ScenarioFile.model_validate(data)


def scenario_names() -> list[str]:
    """The shipped scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def anchor_start(scenario: ScenarioFile, now: float, speed: float | None) -> float:
    """The latest start (Unix time) at the scenario's time of day that keeps every timestamp at or before the clock.

    A run at `speed` x real time (None: as fast as possible) ends after duration / speed seconds of wall time; its
    last message then carries start + duration. Choosing the latest day on which that is not in the future keeps
    receivers (which refuse timestamps ahead of their clock) happy, and keeps the scenario's time of day.
    """
    tz = ZoneInfo(scenario.timezone)
    wall_s = 0.0 if speed is None else scenario.duration / speed
    latest = now + wall_s - scenario.duration
    day = datetime.fromtimestamp(latest, tz).date()
    for back in range(0, 3):
        candidate = datetime.combine(day - timedelta(days=back), scenario.start, tz).timestamp()
        if candidate <= latest:
            return candidate
    raise AssertionError("unreachable: a start within two days always exists")


def build_segments(scenario: ScenarioFile, start: float, fall_segment_s: float) -> list[Segment]:
    """The resident's segments: each step lasts until the next; a fall lasts `fall_segment_s`, then on the floor."""
    segments: list[Segment] = []
    steps = scenario.timeline
    for index, step in enumerate(steps):
        begin = start + step.at
        end = start + (steps[index + 1].at if index + 1 < len(steps) else scenario.duration)
        room = "outside" if step.activity is Activity.OUT else step.room
        posture = POSTURE_OF[step.activity]
        if step.activity is Activity.FALL and end - begin > fall_segment_s:
            split = begin + fall_segment_s
            segments.append(Segment(begin, split, step.activity, room, posture, step.params()))
            still = MappingProxyType({"moving": False})
            segments.append(Segment(split, end, Activity.ON_FLOOR, room, Posture.LYING_FLOOR, still))
        else:
            segments.append(Segment(begin, end, step.activity, room, posture, step.params()))
    return segments
