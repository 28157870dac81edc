"""Shared fixtures: real services on free ports, per-test unique topic roots, a home configuration built from a
simulator scenario (for the edge and the alerts tests; edge/ itself never imports simulators)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from edge.models import DeviceConfig, GeoZone, HomeConfig
from simulators.bracelet import Bracelet
from simulators.emission import DeviceSimulator
from simulators.infrared import BedSensor, ChairSensor, PirSensor, ThermopileSensor
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
