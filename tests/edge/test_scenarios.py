"""Every shipped scenario, played through a HomeMonitor, against its ground truth.

Each scenario is built and streamed (simulators.runner) and every emission's message is fed to the monitor in
time order (`now` = the emission's time), with a tick every second of sim time. A CONNECTION_LOST control is
what makes the broker publish the device's last will: the monitor gets `Availability(online=False)` for that
device at that moment. The real accelerometer fall detector (`edge.falls.FallDetector`) runs on the bracelet.

Checked: every expectation's `edge_events` appear within `within_s` of its time (a fall event's impact near the
ground truth's impact), its `no_edge_events` do not; and beyond the expectations, no fall, wandering, bed exit,
geofence exit or inactivity event in a scenario that does not call for it, and each one that is called for comes
once. Device health (low battery then offline, not worn, nobody else offline) and vitals (valid summaries, the
artefact gated, the tachycardia and the desaturation kept) are checked where the scenarios exercise them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from careloop import messages as m
from edge import falls  # the real accelerometer fall detector (edge/falls.py)
from edge.models import HomeConfig, Outputs
from edge.monitor import HomeMonitor
from simulators.ground_truth import GroundTruth
from simulators.runner import BuiltScenario, build
from simulators.scenario import anchor_start, load_scenario, scenario_names

NOW = 1_790_000_000.0
#: Events a home must not raise unless its ground truth calls for them.
WATCHED = ("fall", "night_wandering", "bed_exit", "geofence_exit", "inactivity")
#: How far a fall event's impact may be from the true impact: the wrist detector's estimate is within a second;
#: the thermopile's is its first floor-shaped frame, a frame or two early in the simulation (the body is drawn on
#: the floor from the start of the fall segment) and a frame late in life.
IMPACT_TOLERANCE_S = 6.0


@dataclass
class Played:
    """A scenario run through a monitor: what went in, what came out (with the time it came out)."""

    built: BuiltScenario
    config: HomeConfig
    monitor: HomeMonitor
    events: list[m.FallEvent | m.InactivityEvent | m.BedExitEvent | m.NightWanderingEvent | m.GeofenceExitEvent
                 | m.SosEvent | m.OkEvent | m.PresenceEvent] = field(default_factory=list)  # fmt: skip
    vitals: list[m.VitalsSummary] = field(default_factory=list)
    health: list[m.DeviceHealth] = field(default_factory=list)

    def take(self, out: Outputs) -> None:
        self.events += out.events
        self.vitals += out.vitals
        self.health += out.health

    def at(self, offset_s: float) -> float:
        return self.built.start + offset_s

    def expectations(self) -> list[GroundTruth]:
        return [g for g in self.built.ground_truth if g.kind == "expect"]

    def happened(self, what: str) -> list[GroundTruth]:
        return [g for g in self.built.ground_truth if g.kind == "happened" and g.what == what]


Play = Callable[[str], Played]
MonitorFeed = Callable[[BuiltScenario, HomeMonitor, str], Iterator[tuple[float, Outputs]]]  # tests/conftest.py


@pytest.fixture(scope="session")
def played(scenario_home: Callable[..., HomeConfig], monitor_feed: MonitorFeed) -> Play:
    """Each scenario played once per session (several tests look at the same run)."""
    return functools.cache(lambda name: _play(name, scenario_home, monitor_feed))


def _play(name: str, home_config_for: Callable[..., HomeConfig], feed: MonitorFeed) -> Played:
    """Build, stream and feed one scenario."""
    scenario = load_scenario(name)
    built = build(scenario, seed=1, start=anchor_start(scenario, NOW, None))
    config = home_config_for(scenario, list(built.devices))
    run = Played(built, config, HomeMonitor(config, falls.fall_detector))
    for _t, outputs in feed(built, run.monitor, config.home_id):
        run.take(outputs)
    return run


def _called_for(run: Played) -> set[str]:
    return {kind for g in run.expectations() for kind in g.edge_events}


@pytest.mark.parametrize("name", scenario_names())
def test_the_edge_raises_what_the_ground_truth_expects_within_its_window(name: str, played: Play) -> None:
    run = played(name)
    for expect in run.expectations():
        assert expect.within_s is not None
        window = (expect.ts, expect.ts + expect.within_s)
        for kind in expect.edge_events:
            found = [e for e in run.events if e.kind == kind and window[0] <= e.ts <= window[1]]
            assert found, f"{name}: {expect.what!r} expects {kind!r} within {expect.within_s:.0f} s, got none"
            if kind == "fall":
                assert any(
                    isinstance(e, m.FallEvent) and abs(e.impact_ts - expect.ts) <= IMPACT_TOLERANCE_S for e in found
                ), f"{name}: no fall event with its impact near {expect.ts}"
        for kind in expect.no_edge_events:
            wrong = [e for e in run.events if e.kind == kind and window[0] <= e.ts <= window[1]]
            assert not wrong, f"{name}: {expect.what!r} must not raise {kind!r}, got {wrong}"


@pytest.mark.parametrize("name", scenario_names())
def test_no_event_the_ground_truth_does_not_call_for_and_each_called_for_once(name: str, played: Play) -> None:
    run = played(name)
    called = _called_for(run)
    for kind in WATCHED:
        raised = [e for e in run.events if e.kind == kind]
        if kind not in called:
            assert not raised, f"{name}: unexpected {kind} events {raised}"
        elif kind == "fall":
            assert len(raised) == len(run.happened("fall")), f"{name}: one fall event per fall, got {raised}"
        else:
            assert len(raised) == 1, f"{name}: one {kind} event per episode, got {raised}"
    presses = {g.what for g in run.built.ground_truth if g.what in ("sos", "ok")}
    assert {e.kind for e in run.events if e.kind in ("sos", "ok")} == presses


@pytest.mark.parametrize("name", scenario_names())
def test_everything_raised_satisfies_the_uplink_contract(name: str, played: Play) -> None:
    run = played(name)
    for start in range(0, len(run.events), m.MAX_BATCH_ITEMS):
        m.EventBatch.model_validate(
            {"msg_id": "x-1", "seq": 1, "events": [e.model_dump() for e in run.events[start : start + 1000]]}
        )
    for start in range(0, len(run.vitals), m.MAX_BATCH_ITEMS):
        readings = [v.model_dump() for v in run.vitals[start : start + 1000]]
        m.VitalsBatch.model_validate({"msg_id": "x-2", "seq": 2, "readings": readings})
    for start in range(0, len(run.health), m.MAX_BATCH_ITEMS):
        devices = [h.model_dump() for h in run.health[start : start + 1000]]
        m.DeviceHealthBatch.model_validate({"msg_id": "x-3", "seq": 3, "devices": devices})
    assert len({e.event_id for e in run.events}) == len(run.events)
    assert not run.monitor.stats, f"{name}: messages dropped: {dict(run.monitor.stats)}"


def test_the_bathroom_thermopile_sees_the_night_fall(played: Play) -> None:
    run = played("fall-bathroom-night")
    [fall] = [e for e in run.events if isinstance(e, m.FallEvent)]
    assert "thermal" in fall.sources
    assert fall.room == "bathroom"
    if "bracelet" in fall.sources:  # the wrist detector saw it too: one event, more sure than either
        assert fall.placement == "wrist"
        assert fall.confidence > 0.75
        assert fall.clip is not None


def test_a_fall_the_person_gets_up_from_is_the_bracelet_s(played: Play) -> None:
    run = played("fall-then-ok")
    [fall] = [e for e in run.events if isinstance(e, m.FallEvent)]
    assert fall.sources[0] == "bracelet"
    assert fall.clip is not None


@pytest.mark.parametrize("name", scenario_names())
def test_no_device_goes_offline_except_the_bracelet_whose_battery_dies(name: str, played: Play) -> None:
    run = played(name)
    offline = {h.device_id for h in run.health if not h.online}
    expected = {run.built.scenario.bracelet_id} if name == "battery-dies" else set()
    assert offline == expected
    seen = {h.device_id for h in run.health}
    assert seen == {d.device_id for d in run.config.devices}  # every device reports


def test_battery_dies_shows_low_battery_then_offline_by_last_will(played: Play) -> None:
    run = played("battery-dies")
    bracelet = run.built.scenario.bracelet_id
    [dead] = run.happened("battery_dead")
    reports = [h for h in run.health if h.device_id == bracelet]
    low = [h for h in reports if h.low_battery]
    assert low
    assert low[0].ts <= run.at(600)  # 12 % from the start: a reminder right away
    offline = [h for h in reports if not h.online]
    assert offline
    assert dead.ts <= offline[0].ts <= dead.ts + 900
    assert offline[0].offline_reason == "last_will"
    assert all(not h.online for h in reports if h.ts >= offline[0].ts)


def test_bracelet_off_night_shows_not_worn_and_stays_connected(played: Play) -> None:
    run = played("bracelet-off-night")
    bracelet = run.built.scenario.bracelet_id
    [off] = run.happened("worn_off")
    [on] = run.happened("worn_on")
    reports = [h for h in run.health if h.device_id == bracelet]
    overnight = [h for h in reports if off.ts <= h.ts < on.ts]
    assert overnight
    assert all(h.worn is False and h.online for h in overnight)
    assert any(h.worn is False and h.ts <= off.ts + 60 for h in reports)
    assert any(h.worn is True and on.ts <= h.ts <= on.ts + 60 for h in reports)
    assert not [v for v in run.vitals if off.ts + 60 < v.ts < on.ts]  # nothing measured off the wrist


def test_vitals_drop_the_artefact_and_keep_the_real_changes(played: Play) -> None:
    spike = played("hr-artefact-spike")
    assert max(v.hr_max_bpm or 0 for v in spike.vitals) < 130
    assert sum(v.n_rejected for v in spike.vitals) >= 4  # the 20 s artefact at one reading per 5 s
    tachy = played("tachycardia")
    during = [v for v in tachy.vitals if tachy.at(6 * 60) <= v.ts <= tachy.at(15 * 60)]
    assert during
    assert all(v.hr_bpm is not None and v.hr_bpm >= 125 for v in during)
    dip = played("spo2-88")
    low = [v.spo2_min_pct for v in dip.vitals if dip.at(5 * 60) < v.ts <= dip.at(8 * 60)]
    assert min(x for x in low if x is not None) <= 89


@pytest.mark.parametrize("name", scenario_names())
def test_one_vitals_summary_per_minute_while_the_bracelet_is_worn(name: str, played: Play) -> None:
    run = played(name)
    interval = run.config.vitals_interval_s
    stamps = [v.ts for v in run.vitals]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    assert all(v.interval_s == interval for v in run.vitals)
    if name not in ("bracelet-off-night", "battery-dies"):
        assert len(stamps) >= run.built.scenario.duration // interval - 1
