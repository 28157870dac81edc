"""The live channel: an alert's state change on the home's alert topic, which the dashboard pushes to consoles.

The notification's ``payload`` holds the fields of the wire contract's ``AlertStateChange``; they are validated
against the contract here (the dashboard would dead-letter anything else), encoded by the one codec, and
published QoS 1, not retained, to ``TopicTree.alert_state(home_id)``. ``send`` returns once the broker's PUBACK
arrived: aiomqtt's ``publish`` waits for it at QoS 1 (at most the client's timeout).

A retry after a lost connection may publish the same change twice (paho keeps an unacknowledged QoS 1 message
and sends it again when the same client reconnects); consoles de-duplicate on (alert_id, state, ts).

Known limit: aiomqtt does not expose an MQTT 5 PUBACK's reason code, so a broker that acknowledges with a
refusal (e.g. 0x87 not authorised by its ACL) is reported as delivered. The alerts service's broker account must
be allowed to publish to every home's alert topic.
"""

from __future__ import annotations

import time

import aiomqtt
from pydantic import ValidationError

from alerts.models import ChannelName, DeliveryError, Notification
from careloop.codec import DEFAULT_MAX_AGE_S, DEFAULT_MAX_FUTURE_S, describe, encode
from careloop.contract import SPECS
from careloop.messages import AlertStateChange
from careloop.topics import TopicError, TopicKind, TopicTree

_SPEC = SPECS[TopicKind.ALERT_STATE]


class LiveNotifier:
    """Publishes alert state changes for the dashboard's WebSocket pushes (one shared MQTT client)."""

    channel = ChannelName.LIVE

    def __init__(self, client: aiomqtt.Client, topics: TopicTree) -> None:
        self.client = client
        self.topics = topics

    def message_for(self, notification: Notification, *, now: float) -> AlertStateChange:
        """The wire message of a live notification; DeliveryError(transient=False) when it breaks the contract."""
        try:
            message = AlertStateChange.model_validate(
                dict(notification.payload),
                context={"now": now, "max_future_s": DEFAULT_MAX_FUTURE_S, "max_age_s": DEFAULT_MAX_AGE_S},
            )
        except ValidationError as exc:
            raise DeliveryError(f"payload is not a valid AlertStateChange: {describe(exc)}", transient=False) from None
        # The topic is the home's: a payload about another home or alert would reach the wrong consoles.
        if message.home_id != notification.home_id or message.alert_id != notification.alert_id:
            raise DeliveryError(
                f"payload is about alert {message.alert_id} of home {message.home_id}, the notification about "
                f"alert {notification.alert_id} of home {notification.home_id}",
                transient=False,
            )
        return message

    async def send(self, notification: Notification) -> str:
        """Publish the state change QoS 1 and return after the broker's PUBACK."""
        message = self.message_for(notification, now=time.time())
        try:
            topic = self.topics.alert_state(notification.home_id)
        except TopicError as exc:
            raise DeliveryError(str(exc), transient=False) from None
        payload = encode(message)
        if len(payload) > _SPEC.max_bytes:
            raise DeliveryError(f"payload is {len(payload)} bytes, the limit is {_SPEC.max_bytes}", transient=False)
        try:
            await self.client.publish(topic, payload, qos=_SPEC.qos, retain=_SPEC.retain)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise DeliveryError(f"MQTT publish to {topic} failed: {exc}", transient=True) from exc
        return f"PUBACK {topic}"
