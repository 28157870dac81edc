"""The load publisher for tests and benches: every message acknowledged, in order on one connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest

from careloop.testing.mosquitto import Mosquitto
from careloop.testing.mqtt_publisher import _receive_maximum, publish_all
from careloop.testing.service_fixtures import _launch

WAIT_S = 10.0


class Counter:
    """A paho subscriber that records the payloads it receives."""

    def __init__(self, broker: Mosquitto, topic_filter: str, **auth: str) -> None:
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])
        self.client.on_message = lambda c, u, msg: self._add(msg.payload)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()
        assert subscribed.wait(WAIT_S)

    def _add(self, payload: bytes) -> None:
        with self.lock:
            self.payloads.append(payload)

    def wait_for(self, n: int) -> list[bytes]:
        deadline = time.monotonic() + WAIT_S
        while len(self.payloads) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        self.client.loop_stop()
        self.client.disconnect()
        return self.payloads


async def test_every_message_arrives_in_order_on_one_connection(mosquitto: Mosquitto, topic_root: str) -> None:
    counter = Counter(mosquitto, f"{topic_root}/#")
    messages = [(f"{topic_root}/a/{i % 7}", b"%d" % i) for i in range(2000)]
    result = await publish_all(mosquitto.host, mosquitto.port, messages, connections=1)
    assert result.acked == 2000
    assert result.started <= result.ended
    assert counter.wait_for(2000) == [payload for _, payload in messages]


async def test_several_connections_and_a_lazy_source(mosquitto: Mosquitto, topic_root: str) -> None:
    counter = Counter(mosquitto, f"{topic_root}/#")
    result = await publish_all(
        mosquitto.host, mosquitto.port, ((f"{topic_root}/x", b"%d" % i) for i in range(5000)), connections=3
    )
    assert result.acked == 5000
    assert sorted(counter.wait_for(5000), key=int) == [b"%d" % i for i in range(5000)]


@pytest.fixture
def locked() -> Iterator[Mosquitto]:
    yield from _launch(lambda: Mosquitto(users={"u": "p"}, allow_anonymous=False))


async def test_credentials_and_refusal(locked: Mosquitto) -> None:
    counter = Counter(locked, "t/#", username="u", password="p")
    result = await publish_all(locked.host, locked.port, [("t/1", b"x")], username="u", password="p")
    assert result.acked == 1
    assert counter.wait_for(1) == [b"x"]
    with pytest.raises(ConnectionRefusedError):
        await publish_all(locked.host, locked.port, [("t/1", b"x")], username="u", password="wrong")


def test_the_receive_maximum_is_read_from_connack_properties() -> None:
    # Mosquitto's CONNACK: topic alias maximum 10, maximum packet size 1 MiB, receive maximum 100.
    assert _receive_maximum(b"\x00\x00\x0b\x22\x00\x0a\x27\x00\x10\x00\x00\x21\x00\x64") == 100
    assert _receive_maximum(b"\x00\x00\x03\x12\x00\x00") is None  # an empty assigned client id, nothing else
    assert _receive_maximum(b"\x00\x00") is None
