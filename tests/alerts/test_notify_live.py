"""alerts/notify/live.py through a real Mosquitto: consoles get the state change as the contract says."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiomqtt
import pytest

from alerts.models import AlertState, ChannelName, DeliveryError, Severity
from alerts.notify.live import LiveNotifier
from careloop.contract import decode_message
from careloop.messages import AlertStateChange
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import TopicKind, TopicTree

WAIT_S = 10.0


def state_change(**overrides: Any) -> dict[str, object]:
    payload: dict[str, object] = {
        "alert_id": "al-000123",
        "ts": time.time(),
        "home_id": "h0001",
        "resident_id": "r-0001",
        "kind": "fall",
        "severity": Severity.HIGH,
        "state": AlertState.OPEN,
        "previous_state": AlertState.PENDING,
        "actor": "system",
        "reason": 'no "I\'m OK" within 30 s',
        "count": 1,
        "value": 0.93,
    }
    payload.update(overrides)
    return payload


def client(broker: Mosquitto, name: str, **options: Any) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, identifier=name, **options)


async def next_message(subscriber: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(WAIT_S):
        return await anext(subscriber.messages)


async def test_the_state_change_reaches_the_consoles_of_that_home(
    mosquitto: Mosquitto, topic_root: str, make_notification: Any
) -> None:
    tree = TopicTree(topic_root)
    payload = state_change()
    notification = make_notification(channel=ChannelName.LIVE, payload=payload)
    async with client(mosquitto, f"console-{topic_root}") as console:
        await console.subscribe(tree.filter(TopicKind.ALERT_STATE), qos=1)
        async with client(mosquitto, f"alerts-{topic_root}") as alerts:
            receipt = await LiveNotifier(alerts, tree).send(notification)
        message = await next_message(console)

    assert receipt == f"PUBACK {tree.alert_state('h0001')}"
    assert message.topic.value == tree.alert_state("h0001")
    assert message.qos == 1
    assert isinstance(message.payload, bytes)
    topic, decoded = decode_message(tree, message.topic.value, message.payload, now=time.time())
    assert topic.kind is TopicKind.ALERT_STATE
    assert topic.home_id == "h0001"
    assert decoded == AlertStateChange.model_validate(payload)
    assert isinstance(decoded, AlertStateChange)
    assert (decoded.severity, decoded.state, decoded.previous_state) == ("high", "open", "pending")
    assert decoded.value == 0.93


async def test_state_changes_are_not_retained(mosquitto: Mosquitto, topic_root: str, make_notification: Any) -> None:
    tree = TopicTree(topic_root)
    topic = tree.alert_state("h0001")
    async with client(mosquitto, f"alerts-{topic_root}") as alerts:
        await LiveNotifier(alerts, tree).send(make_notification(channel=ChannelName.LIVE, payload=state_change()))
        async with client(mosquitto, f"late-{topic_root}") as late:
            await late.subscribe(topic, qos=1)
            # A retained message would be delivered right after the SUBACK, before anything published later.
            await alerts.publish(topic, b"marker", qos=1)
            message = await next_message(late)
    assert message.payload == b"marker"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"state": "escalated"}, "state"),
        ({"severity": "critical"}, "severity"),
        ({"alert_id": None}, "alert_id"),
        ({"ts": 1_000.0}, "ts"),
        ({"unexpected": 1}, "unexpected"),
        ({"home_id": "h0002"}, "home h0002"),
        ({"alert_id": "al-000999"}, "alert al-000999"),
    ],
)
async def test_a_payload_that_breaks_the_contract_is_permanent(
    make_notification: Any, payload: dict[str, object], why: str
) -> None:
    fields = {k: v for k, v in state_change(**payload).items() if v is not None}
    # never connected: had it tried to publish, the error would have been a transient one
    notifier = LiveNotifier(aiomqtt.Client("127.0.0.1", 1), TopicTree("t"))
    with pytest.raises(DeliveryError) as caught:
        await notifier.send(make_notification(channel=ChannelName.LIVE, payload=fields))
    assert caught.value.transient is False
    assert why in caught.value.detail


async def test_a_stopped_broker_is_a_transient_failure(
    fresh_mosquitto: Mosquitto, topic_root: str, make_notification: Any
) -> None:
    tree = TopicTree(topic_root)
    notification = make_notification(channel=ChannelName.LIVE, payload=state_change())
    async with client(fresh_mosquitto, f"alerts-{topic_root}") as alerts:
        notifier = LiveNotifier(alerts, tree)
        assert (await notifier.send(notification)).startswith("PUBACK")
        fresh_mosquitto.kill()
        with pytest.raises(aiomqtt.MqttError):  # the client notices the lost connection
            await next_message(alerts)
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(notification)
    assert caught.value.transient is True
    assert tree.alert_state("h0001") in caught.value.detail
