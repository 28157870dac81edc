"""Shared fixtures: real services on free ports, per-test unique topic roots, a home configuration built from a
simulator scenario and a scenario fed to a home monitor (for the edge and the alerts tests; edge/ itself never
imports simulators)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import pytest

from careloop import messages as m
from careloop.topics import Topic, TopicKind
from edge.models import DeviceConfig, GeoZone, HomeConfig, Outputs
from edge.monitor import HomeMonitor
from simulators.bracelet import Bracelet
from simulators.emission import Control, DeviceSimulator
from simulators.infrared import BedSensor, ChairSensor, PirSensor, ThermopileSensor
from simulators.runner import BuiltScenario, stream
from simulators.scenario import ScenarioFile

pytest_plugins = [
    "careloop.testing.service_fixtures",
    "careloop.testing.pg_fixtures",
]


def home_config_for(scenario: ScenarioFile, devices: Sequence[DeviceSimulator], **limits: object) -> HomeConfig:
    """The HomeConfig the registry would hold for a built scenario's home (`limits` override HomeConfig fields)."""
    configs: list[DeviceConfig] = []
    for device in devices:
        if isinstance(device, Bracelet):
            placement = scenario.bracelet.placement if scenario.bracelet else "wrist"
            kind = "belt" if placement == "waist" else "bracelet"
            configs.append(
                DeviceConfig(
                    device_id=device.device_id, kind=kind, resident_id=scenario.resident_id, placement=placement
                )
            )
        elif isinstance(device, PirSensor):
            configs.append(DeviceConfig(device_id=device.device_id, kind="pir", room=device.room))
        elif isinstance(device, ThermopileSensor):
            configs.append(DeviceConfig(device_id=device.device_id, kind="thermopile", room=device.room))
        elif isinstance(device, BedSensor):
            configs.append(DeviceConfig(device_id=device.device_id, kind="bed_sensor", room=device.room))
        elif isinstance(device, ChairSensor):
            configs.append(DeviceConfig(device_id=device.device_id, kind="chair_sensor", room=device.room))
        else:
            raise TypeError(f"no device kind for {type(device).__name__}")
    home = scenario.home
    return HomeConfig.model_validate(
        {
            "home_id": scenario.home_id,
            "timezone": scenario.timezone,
            "devices": tuple(configs),
            "zone": GeoZone(lat=home.lat, lon=home.lon, radius_m=home.radius_m),
            **limits,
        }
    )


@pytest.fixture(scope="session")
def scenario_home() -> Callable[..., HomeConfig]:
    """`home_config_for` as a fixture (test modules do not import conftest)."""
    return home_config_for


def feed_monitor(built: BuiltScenario, monitor: HomeMonitor, home_id: str) -> Iterator[tuple[float, Outputs]]:
    """A built scenario fed to a home's monitor as its agent feeds it: each message at its time, the monitor's tick
    every second between them and up to the scenario's end, a lost connection as the device's `offline`
    availability (its broker's last will). Yields what each call returned, with the monitor's time."""
    next_tick = math.floor(built.start) + 1.0
    for emission in stream(built):
        while next_tick <= emission.ts:
            yield next_tick, monitor.tick(next_tick)
            next_tick += 1.0
        if emission.control is Control.CONNECTION_LOST:
            kind: TopicKind | None = TopicKind.DEVICE_AVAILABILITY
            message: m.Message | None = m.Availability(online=False, since=emission.ts)
        else:
            kind, message = emission.kind, emission.message
        if kind is None or message is None:
            continue  # a reconnect: the device publishes its own `online`, which is in the stream
        topic = Topic(kind, home_id=home_id, device_id=emission.device_id)
        yield emission.ts, monitor.on_message(topic, message, emission.ts)
    while next_tick <= built.end:
        yield next_tick, monitor.tick(next_tick)
        next_tick += 1.0


@pytest.fixture(scope="session")
def monitor_feed() -> Callable[[BuiltScenario, HomeMonitor, str], Iterator[tuple[float, Outputs]]]:
    """`feed_monitor` as a fixture."""
    return feed_monitor
