"""Build a scenario into devices and ground truth, and play its emissions into a sink at a chosen speed.

    built = build(load_scenario("fall-bathroom-night"), seed=1, start=anchor_start(...))
    for emission in stream(built): ...                      # as fast as possible, in time order
    await play(stream(built), sink, speed=60.0, start=built.start)  # 60x real time

Determinism: given the scenario, the seed and the start time, the stream and the ground truth are identical on
every run (each device draws from its own generator, seeded from the run's seed and the device id).
"""

from __future__ import annotations

import asyncio
import heapq
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

from simulators.bracelet import Bracelet, BraceletPlan, HomeZone
from simulators.emission import Control, DeviceSimulator, Emission
from simulators.ground_truth import GroundTruth, expectations, happened
from simulators.infrared import home_infrared
from simulators.motion import FALL_SEGMENT_S, BraceletAccel, MotionSynth, impact_time
from simulators.scenario import ScenarioFile, build_segments
from simulators.timeline import Activity, Timeline
from simulators.vitals import Physiology, VitalsModel, VitalsOverride

#: Devices are asked for their emissions one window at a time (bounded memory for long scenarios).
WINDOW_S = 60.0


def device_rng(seed: int, device_id: str) -> np.random.Generator:
    """The generator of one device in one run: independent of the other devices and of window sizes."""
    return np.random.default_rng([seed, zlib.crc32(device_id.encode())])


@dataclass
class BuiltScenario:
    """A scenario ready to run: the person's timeline, the devices, and the ground truth."""

    scenario: ScenarioFile
    seed: int
    start: float
    timeline: Timeline
    devices: list[DeviceSimulator]
    ground_truth: list[GroundTruth]

    @property
    def end(self) -> float:
        """When the scenario ends (Unix time)."""
        return self.start + self.scenario.duration


def build(
    scenario: ScenarioFile,
    *,
    seed: int,
    start: float,
    accel_override: Callable[[str, float], Callable[[float, float], Iterator[Emission]]] | None = None,
) -> BuiltScenario:
    """Build a scenario starting at `start` (Unix time). `accel_override(device_id, start)` replaces the synthetic
    accelerometer of the bracelet (e.g. with a real recording, see `simulators.replay`)."""
    timeline = Timeline(build_segments(scenario, start, FALL_SEGMENT_S))
    tz = ZoneInfo(scenario.timezone)
    zone = HomeZone(scenario.home.lat, scenario.home.lon, scenario.home.radius_m)
    devices: list[DeviceSimulator] = list(
        home_infrared(
            rooms=scenario.home.rooms,
            thermopile_rooms=scenario.home.thermopiles,
            bed_sensor=scenario.home.bed_sensor,
            timeline=timeline,
            rng_for=lambda device_id: device_rng(seed, device_id),
        )
    )
    facts: list[GroundTruth] = []
    for segment in timeline.segments:
        if segment.activity is Activity.FALL:
            impact = impact_time(segment)
            facts.append(
                happened(
                    scenario,
                    seed,
                    impact,
                    "fall",
                    scenario.bracelet_id if scenario.bracelet else None,
                    room=segment.room,
                    fall_kind=str(segment.params.get("kind")),
                )
            )
    if scenario.bracelet is not None:
        spec, rid = scenario.bracelet, scenario.resident
        bracelet_id = scenario.bracelet_id
        plan = BraceletPlan(
            presses=tuple((start + e.at, e.press) for e in scenario.events if e.press is not None),
            wear_changes=tuple((start + e.at, e.worn) for e in scenario.events if e.worn is not None),
            worn_at_start=spec.worn_at_start,
            connection=tuple(
                (start + e.at, Control.CONNECTION_LOST if e.connection == "lost" else Control.RECONNECT)
                for e in scenario.events
                if e.connection is not None
            ),
            battery_start_pct=spec.battery_pct,
            battery_drain_pct_per_h=spec.battery_drain_pct_per_h,
            vitals_interval_s=spec.vitals_interval_s,
        )
        physiology = Physiology(
            hr_rest_bpm=rid.hr_rest_bpm,
            spo2_pct=rid.spo2_pct,
            skin_temp_c=rid.skin_temp_c,
            bp_systolic_mmhg=rid.bp_systolic_mmhg,
            bp_diastolic_mmhg=rid.bp_diastolic_mmhg,
        )
        overrides = tuple(
            VitalsOverride(start + v.start, start + v.end, v.hr_bpm, v.spo2_pct, v.artefact) for v in scenario.vitals
        )
        if accel_override is not None:
            accel = accel_override(bracelet_id, start)
        else:
            synth = MotionSynth(timeline, spec.placement, device_rng(seed, bracelet_id + "/accel"))
            accel = BraceletAccel(bracelet_id, synth).emissions
        bracelet = Bracelet(
            device_id=bracelet_id,
            timeline=timeline,
            vitals=VitalsModel(physiology, device_rng(seed, bracelet_id + "/vitals"), overrides),
            zone=zone,
            tz=tz,
            rng=device_rng(seed, bracelet_id),
            plan=plan,
            accel=accel,
        )
        devices.append(bracelet)
        facts += _bracelet_facts(scenario, seed, bracelet)
    facts.sort(key=lambda r: r.ts)
    records = facts + expectations(scenario, seed, start, facts)
    return BuiltScenario(scenario, seed, start, timeline, devices, sorted(records, key=lambda r: r.ts))


def _bracelet_facts(scenario: ScenarioFile, seed: int, bracelet: Bracelet) -> list[GroundTruth]:
    did, plan = bracelet.device_id, bracelet.plan
    facts = [happened(scenario, seed, t, "sos" if b == "sos" else "ok", did) for t, b in plan.presses]
    facts += [happened(scenario, seed, t, "worn_on" if w else "worn_off", did) for t, w in plan.wear_changes]
    facts += [
        happened(scenario, seed, t, "connection_lost" if c is Control.CONNECTION_LOST else "reconnect", did)
        for t, c in plan.connection
    ]
    if bracelet.dies_at is not None:
        facts.append(happened(scenario, seed, bracelet.dies_at, "battery_dead", did))
    return facts


def stream(built: BuiltScenario, window_s: float = WINDOW_S) -> Iterator[Emission]:
    """Every device's emissions, merged in time order (ties keep device order), window by window."""
    t = built.start
    while t < built.end:
        t1 = min(t + window_s, built.end)
        per_device = [list(device.emissions(t, t1)) for device in built.devices]
        yield from heapq.merge(*per_device, key=lambda e: e.ts)
        t = t1


class Sink(Protocol):
    """Where emissions go: an MQTT publisher, or a list in tests."""

    async def send(self, emission: Emission) -> None:
        """Deliver one emission."""
        ...


@dataclass
class ListSink:
    """Keeps every emission (for tests)."""

    emissions: list[Emission]

    async def send(self, emission: Emission) -> None:
        """Append."""
        self.emissions.append(emission)


async def play(
    emissions: Iterable[Emission],
    sink: Sink,
    *,
    speed: float | None,
    start: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Send emissions to the sink, `speed` x real time (None: as fast as possible); returns how many were sent."""
    wall0 = monotonic()
    sent = 0
    for emission in emissions:
        if speed is not None:
            delay = wall0 + (emission.ts - start) / speed - monotonic()
            if delay > 0:
                await sleep(delay)
        await sink.send(emission)
        sent += 1
    return sent


def write_ground_truth(built: BuiltScenario, path: Path) -> None:
    """Write the run's ground truth as JSON lines."""
    from simulators.ground_truth import write_jsonl

    write_jsonl(built.ground_truth, path)
