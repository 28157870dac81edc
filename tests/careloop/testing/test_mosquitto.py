"""The Mosquitto launcher and fixtures: a real broker that delivers, shares, retains, wills, authenticates and keeps
every queued QoS 1 message."""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import paho.mqtt.client as paho
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from careloop.testing.mosquitto import INSTALL_HINT, Mosquitto
from careloop.testing.service_fixtures import _launch
from careloop.testing.service_process import ServiceNotInstalled
from careloop.topics import TopicKind, TopicTree

WAIT_S = 10.0  # for a network event that should take milliseconds


@asynccontextmanager
async def mqtt(broker: Mosquitto, identifier: str | None = None, **kwargs: object) -> AsyncIterator[aiomqtt.Client]:
    """An aiomqtt MQTT 5 client connected to `broker`."""
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=identifier or f"c-{uuid.uuid4().hex[:12]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        **kwargs,  # type: ignore[arg-type]
    )
    async with client:
        yield client


async def next_messages(client: aiomqtt.Client, n: int) -> list[aiomqtt.Message]:
    """The next `n` messages, or a timeout."""
    received = []
    async with asyncio.timeout(WAIT_S):
        async for message in client.messages:
            received.append(message)
            if len(received) == n:
                break
    return received


def paho_client(broker: Mosquitto, client_id: str, **credentials: str) -> paho.Client:
    """A connected paho MQTT 5 client with its network loop running in a thread."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if credentials:
        client.username_pw_set(credentials["username"], credentials["password"])
    connected = threading.Event()
    client.on_connect = lambda c, userdata, flags, reason, props: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(WAIT_S), "no CONNACK"
    return client


def test_publish_subscribe_qos1_with_paho(mosquitto: Mosquitto, topic_root: str) -> None:
    topic = TopicTree(topic_root).device(TopicKind.DEVICE_VITALS, "h1", "band-1")
    inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    subscriber = paho_client(mosquitto, "paho-sub")
    subscriber.on_message = lambda c, userdata, message: inbox.put(message)
    subscriber.on_subscribe = lambda c, userdata, mid, reasons, props: subscribed.set()
    publisher = paho_client(mosquitto, "paho-pub")
    try:
        subscriber.subscribe(topic, qos=1)
        assert subscribed.wait(WAIT_S)
        info = publisher.publish(topic, b'{"hr_bpm": 72}', qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()
        message = inbox.get(timeout=WAIT_S)
        assert (message.topic, message.payload, message.qos) == (topic, b'{"hr_bpm": 72}', 1)
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()


async def test_publish_subscribe_qos1_with_aiomqtt(mosquitto: Mosquitto, topic_root: str) -> None:
    topic = TopicTree(topic_root).device(TopicKind.DEVICE_SOS, "h1", "band-1")
    async with mqtt(mosquitto) as subscriber, mqtt(mosquitto) as publisher:
        await subscriber.subscribe(topic, qos=1)
        for n in range(3):
            await publisher.publish(topic, f"sos {n}", qos=1)
        messages = await next_messages(subscriber, 3)
    assert [m.payload for m in messages] == [b"sos 0", b"sos 1", b"sos 2"]
    assert {m.qos for m in messages} == {1}


async def test_shared_subscription_splits_messages(mosquitto: Mosquitto, topic_root: str) -> None:
    tree = TopicTree(topic_root)
    shared = tree.shared("ingest", tree.filter(TopicKind.DEVICE_VITALS))
    n = 20
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    all_in = asyncio.Event()

    async def collect(client: aiomqtt.Client, name: str) -> None:
        async for message in client.messages:
            got[name].append(bytes(message.payload))  # type: ignore[arg-type]
            if len(got["a"]) + len(got["b"]) == n:
                all_in.set()

    async with mqtt(mosquitto) as a, mqtt(mosquitto) as b, mqtt(mosquitto) as publisher:
        await a.subscribe(shared, qos=1)
        await b.subscribe(shared, qos=1)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(collect(a, "a")), group.create_task(collect(b, "b"))]
            for i in range(n):
                await publisher.publish(tree.device(TopicKind.DEVICE_VITALS, "h1", f"band-{i % 4}"), str(i), qos=1)
            await asyncio.wait_for(all_in.wait(), WAIT_S)
            for task in tasks:
                task.cancel()
    assert got["a"]
    assert got["b"]
    assert sorted(got["a"] + got["b"], key=int) == [str(i).encode() for i in range(n)]


async def test_retained_message_reaches_a_late_subscriber(mosquitto: Mosquitto, topic_root: str) -> None:
    topic = TopicTree(topic_root).device(TopicKind.DEVICE_AVAILABILITY, "h1", "band-1")
    async with mqtt(mosquitto) as publisher:
        await publisher.publish(topic, "online", qos=1, retain=True)
    async with mqtt(mosquitto) as late:
        await late.subscribe(topic, qos=1)
        [message] = await next_messages(late, 1)
    assert (message.payload, message.retain) == (b"online", True)


async def test_last_will_is_published_when_a_client_drops(mosquitto: Mosquitto, topic_root: str) -> None:
    topic = TopicTree(topic_root).edge(TopicKind.EDGE_AVAILABILITY, "h1")
    async with mqtt(mosquitto) as watcher:
        await watcher.subscribe(topic, qos=1)
        edge = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge-h1", protocol=paho.MQTTv5)
        edge.will_set(topic, b"offline", qos=1)
        connected = threading.Event()
        edge.on_connect = lambda c, userdata, flags, reason, props: connected.set()
        edge.connect(mosquitto.host, mosquitto.port)
        edge.loop_start()
        assert await asyncio.to_thread(connected.wait, WAIT_S)
        edge.loop_stop()
        sock = edge.socket()
        assert sock is not None
        sock.close()  # no DISCONNECT packet: to the broker this is a crash or a lost link
        [will] = await next_messages(watcher, 1)
    assert will.payload == b"offline"


async def test_password_file_and_acl(topic_root: str) -> None:
    tree = TopicTree(topic_root)
    acl = (
        "# each device may use only its own topics: the username is the device id\n"
        f"pattern readwrite {topic_root}/v1/home/+/device/%u/#\n"
        "user ops\n"
        f"topic read {topic_root}/#\n"
    )
    users = {"ops": "ops-pw", "band-1": "pw-1", "band-2": "pw-2"}
    with Mosquitto(users=users, acl=acl, allow_anonymous=False) as broker:
        with pytest.raises(MqttConnectError) as refused:
            async with mqtt(broker, username="band-1", password="wrong"):
                pass
        # Mosquitto 2.0 refuses a wrong password with CONNACK 135 "Not authorized" (134 would also be allowed).
        assert isinstance(refused.value.rc, paho.ReasonCode)
        assert refused.value.rc.value in (134, 135)
        with pytest.raises(MqttConnectError):
            async with mqtt(broker):  # anonymous
                pass

        outcomes: dict[int, int] = {}
        published = threading.Event()

        def on_publish(c: paho.Client, userdata: object, mid: int, reason: paho.ReasonCode, props: object) -> None:
            outcomes[mid] = reason.value
            if len(outcomes) == 2:
                published.set()

        async with mqtt(broker, username="ops", password="ops-pw") as ops:
            await ops.subscribe(f"{topic_root}/#", qos=1)
            band1 = paho_client(broker, "band-1", username="band-1", password="pw-1")
            band1.on_publish = on_publish
            try:
                other = band1.publish(tree.device(TopicKind.DEVICE_SOS, "h1", "band-2"), b"forged", qos=1)
                own = band1.publish(tree.device(TopicKind.DEVICE_SOS, "h1", "band-1"), b"real", qos=1)
                assert await asyncio.to_thread(published.wait, WAIT_S)
            finally:
                band1.disconnect()
                band1.loop_stop()
            # MQTT 5 tells the publisher: PUBACK 135 "Not authorized" for the other device's topic.
            assert outcomes == {other.mid: 135, own.mid: 0}
            [message] = await next_messages(ops, 1)
            assert message.payload == b"real"


async def test_persistent_session_keeps_every_queued_message_across_a_restart(
    fresh_mosquitto: Mosquitto, topic_root: str
) -> None:
    """1500 QoS 1 messages for an offline subscriber: Mosquitto's default queue limit (1000) would drop 500."""
    topic = TopicTree(topic_root).edge(TopicKind.EDGE_VITALS, "h1")
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 3600
    persistent = {"identifier": "ingest-1", "clean_start": False, "properties": session}
    async with mqtt(fresh_mosquitto, **persistent) as ingest:
        await ingest.subscribe(topic, qos=1)
    n = 1500
    async with mqtt(fresh_mosquitto) as publisher:
        for i in range(n):
            await publisher.publish(topic, str(i), qos=1)
    fresh_mosquitto.restart()  # a graceful stop saves sessions and queues; same port after
    async with mqtt(fresh_mosquitto, **persistent) as ingest:
        messages = await next_messages(ingest, n)
    assert [int(m.payload) for m in messages] == list(range(n))  # type: ignore[arg-type]


async def test_kill_and_start_again_on_the_same_port(fresh_mosquitto: Mosquitto, topic_root: str) -> None:
    url = fresh_mosquitto.url
    fresh_mosquitto.kill()
    assert not fresh_mosquitto.running
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt(fresh_mosquitto):
            pass
    fresh_mosquitto.start()
    assert fresh_mosquitto.url == url
    topic = TopicTree(topic_root).edge(TopicKind.EDGE_HEARTBEAT, "h1")
    async with mqtt(fresh_mosquitto) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, "beat", qos=1)
        [message] = await next_messages(client, 1)
    assert message.payload == b"beat"


def test_missing_binary_gives_the_install_hint() -> None:
    with pytest.raises(ServiceNotInstalled) as caught:
        Mosquitto(binary="/nonexistent/mosquitto")
    assert str(caught.value) == INSTALL_HINT
    with pytest.raises(pytest.fail.Exception, match="apt-get install mosquitto"):
        next(_launch(lambda: Mosquitto(binary="/nonexistent/mosquitto")))


def test_topic_root_fixture_is_a_valid_unique_root(topic_root: str) -> None:
    assert TopicTree(topic_root).root == topic_root
    assert topic_root.startswith("t")
