"""The bracelet channel: a reminder text or a vibration on the resident's own bracelet.

A ``BraceletCommand`` goes QoS 1, not retained, to the recipient's device command topic
(``home/<home>/device/<device>/command``); the home's edge relays it to the bracelet. ``send`` returns after
the central broker's PUBACK: that the broker took it, not that the resident saw it.

``payload`` may set ``action`` ("reminder" or "vibrate"), ``text`` and ``vibrate_ms``; a reminder without text
shows the notification's title (or body), cut to the bracelet's 160 characters. ``command_id`` is derived from the
notification id, so a retried notification is the same command and the bracelet can drop the repeat.
"""

from __future__ import annotations

import hashlib
import re
import time

import aiomqtt
from pydantic import ValidationError

from alerts.models import ChannelName, DeliveryError, Notification
from careloop.codec import describe, encode
from careloop.contract import SPECS
from careloop.messages import BraceletCommand
from careloop.topics import ID_PATTERN, TopicError, TopicKind, TopicTree

_SPEC = SPECS[TopicKind.DEVICE_COMMAND]
_ID_RE = re.compile(ID_PATTERN)
#: The longest reminder text a bracelet shows (BraceletCommand.text).
MAX_TEXT = 160


def command_id_for(notification_id: str) -> str:
    """The notification id when it is a valid wire identifier, else "n-" and 32 hex digits of its SHA-256."""
    if _ID_RE.fullmatch(notification_id):
        return notification_id
    return "n-" + hashlib.sha256(notification_id.encode()).hexdigest()[:32]


def fit_text(text: str, limit: int = MAX_TEXT) -> str:
    """`text` on one line, cut at a word boundary with an ellipsis when longer than `limit` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    if flat[limit - 1] != " " and space >= limit // 2:  # mid-word: back to the last word boundary
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"


class BraceletNotifier:
    """Sends reminders and vibrations to residents' bracelets over the central broker (one shared MQTT client)."""

    channel = ChannelName.BRACELET

    def __init__(self, client: aiomqtt.Client, topics: TopicTree) -> None:
        self.client = client
        self.topics = topics

    def command_for(self, notification: Notification, *, now: float) -> BraceletCommand:
        """The command a notification becomes; DeliveryError(transient=False) when it cannot be one."""
        payload = notification.payload
        action = payload.get("action", "reminder")
        text = payload.get("text")
        if text is None and action == "reminder":
            text = notification.title or notification.body
        fields: dict[str, object] = {
            "command_id": command_id_for(notification.notification_id),
            "ts": now,
            "action": action,
        }
        if isinstance(text, str) and text.strip():
            fields["text"] = fit_text(text)
        elif text is not None:
            fields["text"] = text  # not a usable text: let the contract say why
        if "vibrate_ms" in payload:
            fields["vibrate_ms"] = payload["vibrate_ms"]
        try:
            return BraceletCommand.model_validate(fields)
        except ValidationError as exc:
            raise DeliveryError(f"not a valid BraceletCommand: {describe(exc)}", transient=False) from None

    async def send(self, notification: Notification) -> str:
        """Publish the command QoS 1 to the recipient's bracelet and return after the broker's PUBACK."""
        device_id = notification.recipient.device_id
        if device_id is None:
            raise DeliveryError(f"recipient {notification.recipient.recipient_id} has no bracelet", transient=False)
        try:
            topic = self.topics.device(TopicKind.DEVICE_COMMAND, notification.home_id, device_id)
        except TopicError as exc:
            raise DeliveryError(str(exc), transient=False) from None
        command = self.command_for(notification, now=time.time())
        try:
            await self.client.publish(topic, encode(command), qos=_SPEC.qos, retain=_SPEC.retain)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise DeliveryError(f"MQTT publish to {topic} failed: {exc}", transient=True) from exc
        return f"PUBACK {topic} command {command.command_id}"
