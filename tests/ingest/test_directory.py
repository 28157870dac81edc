"""The device -> (home, wearer) cache over the registry: full reloads, single look-ups, unknown devices remembered."""

from __future__ import annotations

from pathlib import Path

import pytest

from careloop.clock import ManualClock
from careloop.registry.importer import import_csv
from careloop.registry.store import Registry, open_registry
from careloop.testing.registry_csv import generate_registry_csv
from ingest.directory import DeviceEntry, ResidentDirectory

DEVICES_HEADER = "device_code,kind,home_code,resident_code,room"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    data = generate_registry_csv(3, seed=2)
    reg = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    report = import_csv(reg.engine, [("r.csv", data.residents.encode()), ("d.csv", data.devices.encode())])
    assert report.ok, report.errors
    return reg


def add_bracelet(registry: Registry, code: str, home: str, resident: str) -> None:
    row = f"{code},bracelet,{home},{resident},"
    report = import_csv(registry.engine, [("more.csv", f"{DEVICES_HEADER}\n{row}\n".encode())])
    assert report.ok, report.errors


async def test_a_reload_knows_every_device_with_its_home_and_wearer(registry: Registry) -> None:
    directory = ResidentDirectory(registry)
    assert directory.get("BR-R00001") is None
    await directory.refresh()
    assert directory.get("BR-R00001") == DeviceEntry("H00001", "R00001")
    assert directory.get("PIR-H00001") == DeviceEntry("H00001", None)  # a home sensor has no wearer
    assert directory.size == 9  # three homes, each with a bracelet, a gateway and a PIR sensor
    registry.close()


async def test_a_device_registered_since_is_looked_up_and_a_stranger_remembered_for_a_while(
    registry: Registry,
) -> None:
    clock = ManualClock(1_790_000_000.0)
    directory = ResidentDirectory(registry, clock=clock, negative_ttl_s=10)
    await directory.refresh()
    add_bracelet(registry, "BR-NEW", "H00003", "R00003")
    await directory.resolve(["BR-NEW", "BR-NOBODY"])
    assert directory.get("BR-NEW") == DeviceEntry("H00003", "R00003")
    assert directory.get("BR-NOBODY") is None
    assert directory.is_unknown("BR-NOBODY")
    add_bracelet(registry, "BR-NOBODY", "H00001", "R00001")
    await directory.resolve(["BR-NOBODY"])  # still within the 10 s: not asked again
    assert directory.get("BR-NOBODY") is None
    clock.advance(11)
    assert not directory.is_unknown("BR-NOBODY")
    await directory.resolve(["BR-NOBODY"])
    assert directory.get("BR-NOBODY") == DeviceEntry("H00001", "R00001")
    registry.close()
