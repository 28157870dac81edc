"""aiomqtt as every careloop component uses it: MQTT 5, persistent sessions, manual acknowledgement, dead letters.

A component acknowledges a QoS 1 message only once what it means is durable (``manual_ack=True``, then ``ack()``),
so the broker sends again whatever a crash interrupted; with a receive maximum the broker never has more than that
many unacknowledged messages in flight to us, which bounds the client's incoming queue.
"""

from __future__ import annotations

import asyncio
import base64
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from careloop import messages as m
from careloop.codec import PayloadError
from careloop.settings import MqttSettings

# paho leaves Nagle's algorithm on: a PUBLISH written right after a PUBACK then waits for the broker's delayed
# ACK of the PUBACK, up to 40 ms on Linux. Alarms are small messages that must not wait.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

# What a lost or refused connection raises; a link task catches these and reconnects.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (aiomqtt.MqttError, OSError, TimeoutError)


def mqtt_client(
    settings: MqttSettings,
    *,
    client_id: str,
    clean_start: bool,
    session_expiry_s: int = 0,
    will: aiomqtt.Will | None = None,
    receive_maximum: int | None = None,
    max_inflight: int | None = None,
    manual_ack: bool = False,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    """An MQTT 5 client for `settings`; with manual_ack, each received QoS 1 message waits for `ack()`."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    tls = aiomqtt.TLSParameters(ca_certs=str(settings.ca_file) if settings.ca_file else None) if settings.tls else None
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=client_id,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password is not None else None,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=clean_start,
        properties=properties,
        will=will,
        keepalive=settings.keepalive_s,
        tls_params=tls,
        max_inflight_messages=max_inflight,
        queue_type=queue_type,
        socket_options=NO_DELAY,
        timeout=15.0,
    )
    if manual_ack:
        # aiomqtt has no API for this yet (empicano/aiomqtt#345); paho's is public. Set before connecting, so the
        # messages a resumed session delivers right after the CONNACK wait for us too.
        client._client.manual_ack_set(True)
    return client


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK of a message received with manual acks (QoS 0 needs none)."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


def subscribe_options(qos: int = 1) -> SubscribeOptions:
    """QoS 1, and never our own publishes back (a component may publish on topics it also subscribes to)."""
    return SubscribeOptions(qos=qos, noLocal=True)


class SubscriptionRefused(aiomqtt.MqttError):
    """The broker refused a subscription (a SUBACK reason code of 0x80 or more), e.g. by ACL."""


def _is_refusal(code: object) -> bool:
    value = getattr(code, "value", code)  # paho's ReasonCode (MQTT 5) or a granted QoS (3.1.1)
    return isinstance(value, int) and value >= 0x80


async def subscribe_all(client: aiomqtt.Client, filters: Sequence[str], *, timeout_s: float = 15.0) -> None:
    """Subscribe to every filter at QoS 1 without our own publishes, 100 per SUBSCRIBE; raise if any is refused."""
    for start in range(0, len(filters), 100):
        chunk = list(filters[start : start + 100])
        codes = await client.subscribe([(f, subscribe_options()) for f in chunk], timeout=timeout_s)
        refused = [(f, c) for f, c in zip(chunk, codes, strict=False) if _is_refusal(c)]
        if refused:
            raise SubscriptionRefused(f"subscription refused: {refused[:3]}")


def payload_bytes(message: aiomqtt.Message) -> bytes:
    """The payload as bytes (aiomqtt types it loosely)."""
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def dead_letter(component: str, topic: str, payload: bytes, exc: PayloadError, now: float) -> m.DeadLetter:
    """A rejected message, with its reason and (truncated) payload, for operators."""
    return m.DeadLetter(
        ts=now,
        component=component,
        topic=topic[:1024],
        reason=exc.reason.value,
        detail=exc.detail[:2000],
        payload_b64=base64.b64encode(payload[:65_536]).decode(),
        payload_size=len(payload),
    )


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits between d/2 and d, d = min(cap, initial * 2**n)."""

    initial_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The wait before the next attempt (and count the attempt)."""
        ceiling = min(self.cap_s, self.initial_s * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """A connection succeeded: start again from the initial delay."""
        self.attempt = 0
