"""What simulated devices produce: time-stamped MQTT messages (and connection events), in time order.

Every device simulator implements `DeviceSimulator.emissions(t0, t1)`; the scenario runner merges the streams
of all devices by time and hands them to a sink: an MQTT publisher (real or accelerated time) or a list (tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from careloop.messages import Message
from careloop.topics import TopicKind


class Control(StrEnum):
    """Connection events of a device, carried in the stream beside its messages."""

    CONNECTION_LOST = "connection_lost"  # the link drops without DISCONNECT: the broker publishes the last will
    RECONNECT = "reconnect"  # the device connects again (and publishes `online`)


@dataclass(frozen=True, slots=True)
class Emission:
    """One thing a device does at sim time `ts`: publish `message` on its `kind` topic, or a connection event."""

    ts: float
    device_id: str
    kind: TopicKind | None = None
    message: Message | None = None
    control: Control | None = None

    def __post_init__(self) -> None:
        if (self.message is None) == (self.control is None):
            raise ValueError("an emission is either a message (with its kind) or a control event")
        if self.message is not None and self.kind is None:
            raise ValueError("a message emission needs its topic kind")


class DeviceSimulator(Protocol):
    """A simulated device of one home."""

    device_id: str

    def emissions(self, t0: float, t1: float) -> Iterator[Emission]:
        """What the device emits in [t0, t1), in time order. Called with consecutive, increasing windows."""
        ...
