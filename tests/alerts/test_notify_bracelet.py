"""alerts/notify/bracelet.py through a real Mosquitto: the bracelet's command topic gets a command its edge accepts."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiomqtt
import pytest

from alerts.models import ChannelName, DeliveryError, Recipient, RecipientKind, Severity
from alerts.notify.bracelet import BraceletNotifier, command_id_for, fit_text
from careloop.contract import decode_message
from careloop.messages import BraceletCommand
from careloop.testing.mosquitto import Mosquitto
from careloop.topics import ID_PATTERN, TopicKind, TopicTree

WAIT_S = 10.0
RESIDENT = Recipient(
    recipient_id="resident-r-0001",
    kind=RecipientKind.RESIDENT,
    name="Anna Berg",
    device_id="br-0001",
    channels=(ChannelName.BRACELET,),
)


def reminder(make_notification: Any, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "channel": ChannelName.BRACELET,
        "recipient": RESIDENT,
        "kind": "battery_low",
        "severity": Severity.REMINDER,
        "title": "Battery low: please charge your bracelet tonight",
        "payload": {"vibrate_ms": 400},
    }
    fields.update(overrides)
    return make_notification(**fields)


async def received_by_bracelet(
    broker: Mosquitto, topic_root: str, notification: Any, device_id: str = "br-0001"
) -> tuple[str, BraceletCommand]:
    """Send through a BraceletNotifier; return its receipt and the command as the home's edge decodes it."""
    tree = TopicTree(topic_root)
    topic = tree.device(TopicKind.DEVICE_COMMAND, "h0001", device_id)
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"edge-{topic_root}") as edge:
        await edge.subscribe(tree.filter(TopicKind.DEVICE_COMMAND, home_id="h0001"), qos=1)
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"alerts-{topic_root}") as alerts:
            receipt = await BraceletNotifier(alerts, tree).send(notification)
        async with asyncio.timeout(WAIT_S):
            message = await anext(edge.messages)
    assert message.topic.value == topic
    assert message.qos == 1
    assert isinstance(message.payload, bytes)
    parsed, command = decode_message(tree, topic, message.payload, now=time.time())
    assert parsed.device_id == device_id
    assert isinstance(command, BraceletCommand)
    return receipt, command


async def test_a_reminder_reaches_the_residents_bracelet(
    mosquitto: Mosquitto, topic_root: str, make_notification: Any
) -> None:
    receipt, command = await received_by_bracelet(mosquitto, topic_root, reminder(make_notification))
    assert command.command_id == "ntf-000042"
    assert command.action == "reminder"
    assert command.text == "Battery low: please charge your bracelet tonight"
    assert command.vibrate_ms == 400
    assert abs(command.ts - time.time()) < 60
    assert receipt.startswith("PUBACK ")
    assert receipt.endswith("command ntf-000042")


async def test_a_vibration_needs_no_text(mosquitto: Mosquitto, topic_root: str, make_notification: Any) -> None:
    notification = reminder(make_notification, payload={"action": "vibrate", "vibrate_ms": 1500})
    _, command = await received_by_bracelet(mosquitto, topic_root, notification)
    assert (command.action, command.text, command.vibrate_ms) == ("vibrate", None, 1500)


async def test_a_long_text_is_cut_to_what_the_bracelet_shows_and_odd_ids_are_hashed(
    mosquitto: Mosquitto, topic_root: str, make_notification: Any
) -> None:
    text = "Your heart rate has been high for 30 minutes. " * 8
    notification = reminder(make_notification, notification_id="ntf:42/retry", payload={"text": text})
    _, command = await received_by_bracelet(mosquitto, topic_root, notification)
    assert command.text is not None
    assert len(command.text) <= 160
    assert command.text.endswith("…")
    assert command.text.startswith("Your heart rate has been high for 30 minutes. Your heart")
    assert command.command_id == command_id_for("ntf:42/retry")


def test_command_ids_are_valid_and_stable() -> None:
    assert command_id_for("ntf-000042") == "ntf-000042"
    odd = command_id_for("ntf:42/retry")
    assert re.fullmatch(ID_PATTERN, odd)
    assert odd == command_id_for("ntf:42/retry")
    assert odd != command_id_for("ntf:43/retry")
    assert re.fullmatch(ID_PATTERN, command_id_for("x" * 65))


def test_fit_text() -> None:
    assert fit_text("  Wear\nyour   bracelet ") == "Wear your bracelet"
    assert fit_text("word " * 50, limit=20) == "word word word word…"
    assert fit_text("x" * 200, limit=10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("recipient", "payload", "why"),
    [
        (Recipient("family-7", RecipientKind.FAMILY, "Eva Berg", email="eva@x.example"), {}, "no bracelet"),
        (RESIDENT, {"action": "shout"}, "action"),
        (RESIDENT, {"vibrate_ms": 60_000}, "vibrate_ms"),
        (RESIDENT, {"text": 42}, "text"),
    ],
)
async def test_what_cannot_be_a_bracelet_command_is_permanent(
    make_notification: Any, recipient: Recipient, payload: dict[str, object], why: str
) -> None:
    notification = reminder(make_notification, recipient=recipient, payload=payload)
    # never connected: had it tried to publish, the error would have been a transient one
    notifier = BraceletNotifier(aiomqtt.Client("127.0.0.1", 1), TopicTree("t"))
    with pytest.raises(DeliveryError) as caught:
        await notifier.send(notification)
    assert caught.value.transient is False
    assert why in caught.value.detail


async def test_a_stopped_broker_is_a_transient_failure(
    fresh_mosquitto: Mosquitto, topic_root: str, make_notification: Any
) -> None:
    notification = reminder(make_notification)
    async with aiomqtt.Client(fresh_mosquitto.host, fresh_mosquitto.port, identifier=f"a-{topic_root}") as alerts:
        notifier = BraceletNotifier(alerts, TopicTree(topic_root))
        assert (await notifier.send(notification)).startswith("PUBACK")
        fresh_mosquitto.kill()
        with pytest.raises(aiomqtt.MqttError):  # the client notices the lost connection
            async with asyncio.timeout(WAIT_S):
                await anext(alerts.messages)
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(notification)
    assert caught.value.transient is True
