"""careloop.mqtt5: the bytes it sends, and what a real Mosquitto does with its session and its PUBACKs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import careloop.mqtt5 as mqtt
from careloop.mqtt5 import (
    ConnectRefused,
    MqttClient,
    Received,
    SessionOptions,
    SubscribeRefused,
    connect_packet,
    decode_varint,
    parse_connack,
    puback_packets,
    subscribe_packet,
)
from careloop.testing.mosquitto import Mosquitto
from careloop.testing.mqtt_publisher import publish_all
from careloop.testing.service_fixtures import _launch


async def publish(broker: Mosquitto, messages: Any, **options: Any) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    await publish_all(broker.host, broker.port, messages, **options)


WAIT_S = 10.0


# -- bytes ----------------------------------------------------------------------------------------------------------
def test_connect_resumes_the_session_and_says_how_much_may_be_in_flight() -> None:
    packet = connect_packet(
        SessionOptions(client_id="ing-0", keepalive_s=30, session_expiry_s=3600, receive_maximum=500)
    )
    assert packet[0] == 0x10
    length, start = decode_varint(packet, 1) or (0, 0)
    body = packet[start:]
    assert len(body) == length
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0x00  # clean start off, no will, no credentials
    assert body[8:10] == (30).to_bytes(2, "big")
    assert body[10:19] == b"\x08\x11\x00\x00\x0e\x10\x21\x01\xf4"  # session expiry 3600 s, receive max 500
    assert body.endswith(b"\x00\x05ing-0")


def test_connect_with_credentials_and_clean_start() -> None:
    packet = connect_packet(SessionOptions(client_id="c", username="u", password="p", clean_start=True))
    flags = packet[packet.index(b"MQTT\x05") + 5]
    assert flags == 0x80 | 0x40 | 0x02
    assert packet.endswith(b"\x00\x01u\x00\x01p")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="receive maximum"):
        SessionOptions(client_id="c", receive_maximum=0)


def test_pubacks_of_a_batch_are_four_bytes_each_in_order() -> None:
    assert puback_packets([1, 258, 65_535]) == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff"
    assert puback_packets([]) == b""


def test_subscribe_packet_layout() -> None:
    assert subscribe_packet(7, ["a/b"], qos=1) == b"\x82\x09\x00\x07\x00\x00\x03a/b\x01"


def test_connack_refusal_carries_the_reason() -> None:
    with pytest.raises(ConnectRefused) as caught:
        parse_connack(b"\x00\x86\x00")
    assert caught.value.reason == "bad_username_or_password"
    info = parse_connack(b"\x01\x00\x06\x21\x00\x64\x13\x00\x3c")
    assert (info.session_present, info.receive_maximum, info.server_keepalive_s) == (True, 100, 60)


# -- against Mosquitto ----------------------------------------------------------------------------------------------
class Inbox:
    """Collects what a client receives; acknowledges only when told."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.arrived = asyncio.Event()

    def __call__(self, messages: list[Received]) -> None:
        self.received += messages
        self.arrived.set()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.received) < n:
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def connected(
    broker: Mosquitto, client_id: str, inbox: Callable[[list[Received]], None], **options: object
) -> AsyncIterator[MqttClient]:
    client = MqttClient(SessionOptions(client_id=client_id, **options), inbox)  # type: ignore[arg-type]
    await client.open(broker.host, broker.port)
    try:
        yield client
    finally:
        await client.disconnect()


def messages(root: str, n: int) -> list[tuple[str, bytes]]:
    return [(f"{root}/t/{i % 3}", f"m{i}".encode()) for i in range(n)]


async def test_unacknowledged_messages_come_again_after_a_reconnect(mosquitto: Mosquitto, topic_root: str) -> None:
    inbox = Inbox()
    async with connected(mosquitto, f"{topic_root}-c", inbox) as client:
        await client.subscribe([f"$share/g/{topic_root}/t/#"])
        await publish(mosquitto, messages(topic_root, 10), connections=1)
        await inbox.wait_for(10)
        client.ack([pid for _, _, pid in inbox.received[:4]])  # the first four are durable, the rest are not
        payloads = [payload for _, payload, _ in inbox.received]
        assert payloads == [f"m{i}".encode() for i in range(10)]
    again = Inbox()
    async with connected(mosquitto, f"{topic_root}-c", again) as client:
        assert client.connack_info is not None
        assert client.connack_info.session_present
        await again.wait_for(6)
        assert [p for _, p, _ in again.received] == payloads[4:]
        assert client.redelivered == 6
        client.ack([pid for _, _, pid in again.received])


async def test_disconnect_returns_once_the_broker_has_every_puback(mosquitto: Mosquitto, topic_root: str) -> None:
    """Acknowledge a backlog, disconnect at once and come straight back: the broker sends nothing again.

    Mosquitto takes a while to work through 20,000 PUBACKs; a client that closed its socket right after sending them
    would let the next connection of its client id take the session over before they were read, and every message
    whose PUBACK was still unread would come again.
    """
    client_id = f"{topic_root}-c"
    inbox = Inbox()
    async with connected(mosquitto, client_id, inbox) as client:
        await client.subscribe([f"$share/g/{topic_root}/t/#"])
    await publish(mosquitto, messages(topic_root, 20_000), connections=1)  # queued for the session meanwhile
    async with connected(mosquitto, client_id, inbox, receive_maximum=20_000) as client:
        await inbox.wait_for(20_000)
        client.ack([pid for _, _, pid in inbox.received])
    again = Inbox()
    async with connected(mosquitto, client_id, again) as client:
        await asyncio.sleep(1.0)
        assert again.received == []
        assert client.redelivered == 0


async def test_the_broker_sends_no_more_than_the_receive_maximum(mosquitto: Mosquitto, topic_root: str) -> None:
    inbox = Inbox()
    async with connected(mosquitto, f"{topic_root}-c", inbox, receive_maximum=5, clean_start=True) as client:
        await client.subscribe([f"{topic_root}/t/#"])
        await publish(mosquitto, messages(topic_root, 12))
        await inbox.wait_for(5)
        await asyncio.sleep(0.3)
        assert len(inbox.received) == 5
        client.ack([pid for _, _, pid in inbox.received])
        await inbox.wait_for(10)
        client.ack([pid for _, _, pid in inbox.received[5:10]])
        await inbox.wait_for(12)


async def test_nothing_is_read_while_paused(mosquitto: Mosquitto, topic_root: str) -> None:
    inbox = Inbox()
    async with connected(mosquitto, f"{topic_root}-c", inbox, clean_start=True) as client:
        await client.subscribe([f"{topic_root}/t/#"])
        client.pause_reading()
        assert client.paused
        await publish(mosquitto, messages(topic_root, 20))
        await asyncio.sleep(0.3)
        assert inbox.received == []
        client.resume_reading()
        await inbox.wait_for(20)
        client.ack([pid for _, _, pid in inbox.received])


async def test_a_packet_larger_than_the_read_buffer_arrives_whole(
    mosquitto: Mosquitto, topic_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "READ_BUFFER_BYTES", 1024)
    big = bytes(range(256)) * 2000  # 512,000 bytes
    inbox = Inbox()
    async with connected(mosquitto, f"{topic_root}-c", inbox, clean_start=True) as client:
        await client.subscribe([f"{topic_root}/t/#"])
        await publish(mosquitto, [(f"{topic_root}/t/big", big), (f"{topic_root}/t/small", b"x")] * 3, connections=1)
        await inbox.wait_for(6)
        assert [p for _, p, _ in inbox.received] == [big, b"x"] * 3
        client.ack([pid for _, _, pid in inbox.received])


async def test_publish_waits_for_the_puback(mosquitto: Mosquitto, topic_root: str) -> None:
    inbox = Inbox()
    async with connected(mosquitto, f"{topic_root}-c", inbox, clean_start=True) as client:
        await client.subscribe([f"{topic_root}/dl"])
        codes = await asyncio.gather(*(client.publish(f"{topic_root}/dl", b"letter %d" % i) for i in range(300)))
        assert set(codes) == {0}
        await inbox.wait_for(300)
        client.ack([pid for _, _, pid in inbox.received])


@pytest.fixture
def locked_broker() -> Iterator[Mosquitto]:
    """A broker with one user who may read `allowed/#` only."""
    yield from _launch(
        lambda: Mosquitto(users={"ingest": "secret"}, acl="user ingest\ntopic read allowed/#\n", allow_anonymous=False)
    )


async def test_refusals_say_why(locked_broker: Mosquitto) -> None:
    with pytest.raises(ConnectRefused) as caught:
        await MqttClient.connect(
            locked_broker.host, locked_broker.port, SessionOptions("c1", username="ingest", password="wrong"), Inbox()
        )
    assert caught.value.reason in ("bad_username_or_password", "not_authorized")
    client = await MqttClient.connect(
        locked_broker.host, locked_broker.port, SessionOptions("c2", username="ingest", password="secret"), Inbox()
    )
    try:
        await client.subscribe(["allowed/x"])
        with pytest.raises(mqtt.ConnectionLost) as lost:
            await client.subscribe(["allowed/y", "$share/g/a/#/b"])
        assert lost.value.reason == "malformed_packet"  # Mosquitto's DISCONNECT reason for a bad filter
    finally:
        await client.disconnect()


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


async def test_a_refused_or_downgraded_subscription_raises() -> None:
    client = MqttClient(SessionOptions("c"), Inbox())
    protocol = mqtt._Protocol(client)
    protocol.connection_made(_Transport())

    def feed(data: bytes) -> None:
        buffer = protocol.get_buffer(len(data))
        buffer[: len(data)] = data
        protocol.buffer_updated(len(data))

    feed(b"\x20\x03\x00\x00\x00")  # CONNACK, success, no properties
    subscribing = asyncio.ensure_future(client.subscribe(["a", "b", "c"]))
    await asyncio.sleep(0)
    feed(b"\x90\x06\x00\x01\x00\x01\x87\x00")  # SUBACK: granted QoS 1, not authorized, granted QoS 0
    with pytest.raises(SubscribeRefused) as refused:
        await subscribing
    assert refused.value.refused == {"b": "not_authorized", "c": "granted_qos_0"}


async def test_closed_resolves_when_the_broker_goes(fresh_mosquitto: Mosquitto) -> None:
    client = await MqttClient.connect(fresh_mosquitto.host, fresh_mosquitto.port, SessionOptions("c"), Inbox())
    fresh_mosquitto.kill()
    async with asyncio.timeout(WAIT_S):
        reason = await client.closed
    assert reason
    with pytest.raises(mqtt.ConnectionLost):
        await client.publish("a", b"b")
