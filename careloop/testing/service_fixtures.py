"""Pytest fixtures for real services: Mosquitto and influxd on free ports, unique databases and topic roots.

Loaded as a plugin by tests/conftest.py. A missing binary fails the test with the install hint; it never skips,
so a machine without the services cannot pass the suite by accident.

- `mosquitto`: one anonymous broker for the session; share it by using a unique `topic_root` per test.
- `fresh_mosquitto`: a broker of the test's own, for tests that stop, kill or restart it.
- `influxd`: one InfluxDB 1.x server for the session.
- `fresh_influxd`: a server of the test's own, for outage tests.
- `influx_db`: a new, uniquely named database on `influxd` (its url and name), dropped after the test.
- `topic_root`: a per-test topic root such as `t3f9c...`, valid for `careloop.topics.TopicTree(root)`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from careloop.settings import InfluxSettings
from careloop.testing.falls_data import FallsDataMissing, falls_dataset
from careloop.testing.influxd import Influxd
from careloop.testing.mosquitto import Mosquitto
from careloop.testing.service_process import ServiceNotInstalled, ServiceProcess

S = TypeVar("S", bound=ServiceProcess)


@dataclass(frozen=True, slots=True)
class InfluxTestDatabase:
    """A database created for one test on the session's influxd."""

    url: str
    name: str

    def settings(self, **overrides: object) -> InfluxSettings:
        """InfluxSettings pointing at this database."""
        return InfluxSettings.model_validate({"url": self.url, "database": self.name, **overrides})


def _launch(factory: Callable[[], S]) -> Iterator[S]:
    try:
        service = factory()
    except ServiceNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        service.start()
        yield service
    finally:
        service.close()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto broker shared by the session (anonymous access); never stop it in a test."""
    yield from _launch(Mosquitto)


@pytest.fixture
def fresh_mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto broker of this test's own, free to stop, kill and restart."""
    yield from _launch(Mosquitto)


@pytest.fixture(scope="session")
def influxd() -> Iterator[Influxd]:
    """An InfluxDB 1.x server shared by the session (no auth); never stop it in a test."""
    yield from _launch(Influxd)


@pytest.fixture
def fresh_influxd() -> Iterator[Influxd]:
    """An InfluxDB 1.x server of this test's own, free to stop, kill and restart."""
    yield from _launch(Influxd)


@pytest.fixture
def influx_db(influxd: Influxd) -> Iterator[InfluxTestDatabase]:
    """A new database with a unique name on the session's influxd, dropped after the test."""
    name = f"t_{uuid.uuid4().hex}"
    influxd.create_database(name)
    try:
        yield InfluxTestDatabase(url=influxd.url, name=name)
    finally:
        if influxd.running:
            influxd.drop_database(name)


def require_falls_dataset(name: str) -> Path:
    """The folder of a shared fall dataset ("weda-fall", "sisfall"); fails the test (never skips) when missing."""
    try:
        return falls_dataset(name)
    except FallsDataMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def topic_root() -> str:
    """A topic root unique to this test, so tests sharing a broker never see each other's messages."""
    return f"t{uuid.uuid4().hex}"
