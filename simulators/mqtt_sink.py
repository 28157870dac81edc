"""Publish a scenario's emissions to a real broker: each device on its own MQTT connection, with its last will.

A device connects on its first emission (username = device id and, given a fleet secret, the password derived
from it, as `careloop simulate fleet-credentials` writes them for the broker). `connection_lost` drops the TCP
connection without DISCONNECT, so the broker publishes the device's last will (`availability` offline,
retained), exactly as a bracelet whose radio or battery dies; `reconnect` connects again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from careloop.codec import encode
from careloop.contract import SPECS
from careloop.messages import Availability
from careloop.mqtt5 import encode_string
from careloop.topics import TopicKind, TopicTree
from simulators.emission import Control, Emission
from simulators.fleet import device_password
from simulators.fleet_mqtt import ConnectionState, PublishCounters, PublisherConnection, connect_packet

#: Messages a device may have unacknowledged before `send` waits.
WINDOW = 20
KEEPALIVE_S = 60


class SinkError(ConnectionError):
    """The broker refused a device or the messages could not all be delivered."""


@dataclass
class MqttSink:
    """Publishes emissions of the devices of one home; use `async with`."""

    broker_url: str
    home_id: str
    tree: TopicTree = field(default_factory=TopicTree)
    secret: str | None = None
    connect_timeout_s: float = 10.0
    counters: PublishCounters = field(default_factory=PublishCounters)
    _connections: dict[str, PublisherConnection] = field(default_factory=dict)
    _topics: dict[tuple[str, TopicKind], bytes] = field(default_factory=dict)
    _keepalive: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttSink:
        self._keepalive = asyncio.create_task(self._ping_idle(), name="mqtt-sink-keepalive")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.close()
        finally:
            if self._keepalive is not None:
                self._keepalive.cancel()

    async def _ping_idle(self) -> None:
        """A PIR may stay silent for hours: ping so the broker does not take it for dead and fire its will."""
        while True:
            await asyncio.sleep(KEEPALIVE_S / 4)
            now = time.monotonic()
            for connection in self._connections.values():
                if now - connection.last_write > KEEPALIVE_S / 2:
                    connection.ping(now)

    async def send(self, emission: Emission) -> None:
        """Publish a message (QoS and retain flag from the contract), or carry out a connection event."""
        if emission.control is Control.CONNECTION_LOST:
            connection = self._connections.pop(emission.device_id, None)
            if connection is not None:
                await self._drain(connection)
                connection.abort()
            return
        if emission.control is Control.RECONNECT:
            return  # the next message connects again
        assert emission.message is not None
        assert emission.kind is not None
        connection = await self._connection(emission.device_id)
        spec = SPECS[emission.kind]
        topic = self._topic(emission.device_id, emission.kind)
        payload = encode(emission.message)
        while not connection.publish(topic, payload, qos=spec.qos, retain=spec.retain):
            if connection.state != ConnectionState.CONNECTED:
                raise SinkError(f"{emission.device_id}: connection lost ({connection.disconnect_reason})")
            await asyncio.sleep(0.002)  # the window is full: wait for PUBACKs (back-pressure, never drop)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Wait until every message is acknowledged, then disconnect every device cleanly (no last will)."""
        async with asyncio.timeout(timeout_s):
            for connection in self._connections.values():
                await self._drain(connection)
        for connection in self._connections.values():
            connection.disconnect()
        self._connections.clear()

    async def _drain(self, connection: PublisherConnection) -> None:
        # The connection counts PUBACKs rather than signalling them (it is built for 10,000 devices): poll.
        while connection.in_flight and connection.state == ConnectionState.CONNECTED:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    def _topic(self, device_id: str, kind: TopicKind) -> bytes:
        key = (device_id, kind)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = encode_string(self.tree.device(kind, self.home_id, device_id))
        return topic

    async def _connection(self, device_id: str) -> PublisherConnection:
        connection = self._connections.get(device_id)
        if connection is not None and connection.state == ConnectionState.CONNECTED:
            return connection
        parts = urlsplit(self.broker_url)
        will = encode(Availability(online=False))
        packet = connect_packet(
            client_id=f"sim-{device_id}",
            username=device_id if self.secret is not None else None,
            password=device_password(self.secret, device_id) if self.secret is not None else None,
            keepalive_s=KEEPALIVE_S,
            will_topic=self.tree.device(TopicKind.DEVICE_AVAILABILITY, self.home_id, device_id),
            will_payload=will,
        )
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, connection = await loop.create_connection(
                lambda: PublisherConnection(packet, counters=self.counters, window=WINDOW),
                parts.hostname or "127.0.0.1",
                parts.port or 1883,
            )
            try:
                await connection.connack
            except Exception as exc:
                raise SinkError(f"{device_id}: the broker refused the connection: {exc}") from exc
        self._connections[device_id] = connection
        return connection
