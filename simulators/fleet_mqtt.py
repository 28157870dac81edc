"""A minimal MQTT 5 publisher on asyncio Protocols: what each of ten thousand simulated bracelets needs, no more.

One `PublisherConnection` per device: CONNECT (username, password, last will), CONNACK, PUBLISH at QoS 0 or 1,
PUBACK, PINGREQ / PINGRESP and DISCONNECT. No subscriptions, no QoS 2, no session resumption: every connection
starts clean, so a message in flight when its connection drops is counted as lost, never silently resent.

Why not paho-mqtt or aiomqtt: a paho client object costs about ten times the CPU per message (see the profile in
bench/fleet.py), and ten thousand of them cannot share one core with Mosquitto. Here a connection is one small
object; a publish is one bytes join and one `transport.write`; a PUBACK is read into one buffer shared by every
connection (`asyncio.BufferedProtocol`, no allocation per read) and counted in a `PublishCounters` shared by the
fleet, instead of resolving a future per message.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The wire encoding is the kernel's (careloop.mqtt5, the receiving client); this module adds the publishing side.
from careloop.mqtt5 import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    DISCONNECT_PACKET,
    MAX_PACKET_ID,
    PINGREQ_PACKET,
    PINGRESP,
    PROTOCOL_LEVEL,
    PUBACK,
    PUBLISH,
    MqttProtocolError,
    encode_binary,
    encode_remaining_length,
    encode_string,
    reason_name,
)
from careloop.mqtt5 import decode_varint as decode_remaining_length

#: "Disconnect with Will Message" (0x04): the broker publishes the last will, as a device going offline should.
DISCONNECT_WITH_WILL_PACKET = b"\xe0\x01\x04"


#: CONNACK refusals worth another try later; any other refusal (bad password, banned, ...) is final.
RETRYABLE_CONNECT_REASONS = frozenset({0x80, 0x83, 0x88, 0x89, 0x97, 0x9F})

# Property identifier -> how its value is encoded (MQTT 5, section 2.2.2.2).
_BYTE, _TWO, _FOUR, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: dict[int, int] = {
    0x01: _BYTE,  # payload format indicator
    0x02: _FOUR,  # message expiry interval
    0x03: _STRING,  # content type
    0x08: _STRING,  # response topic
    0x09: _BINARY,  # correlation data
    0x0B: _VARINT,  # subscription identifier
    0x11: _FOUR,  # session expiry interval
    0x12: _STRING,  # assigned client identifier
    0x13: _TWO,  # server keep alive
    0x15: _STRING,  # authentication method
    0x16: _BINARY,  # authentication data
    0x17: _BYTE,  # request problem information
    0x18: _FOUR,  # will delay interval
    0x19: _BYTE,  # request response information
    0x1A: _STRING,  # response information
    0x1C: _STRING,  # server reference
    0x1F: _STRING,  # reason string
    0x21: _TWO,  # receive maximum
    0x22: _TWO,  # topic alias maximum
    0x23: _TWO,  # topic alias
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property
    0x27: _FOUR,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifiers available
    0x2A: _BYTE,  # shared subscription available
}


class ConnectionClosed(ConnectionError):
    """The connection ended before the broker answered CONNECT; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection closed before CONNACK: {reason}")
        self.reason = reason


class ConnectRefused(Exception):
    """The broker answered CONNECT with a failure reason code."""

    def __init__(self, code: int, reason_string: str | None = None) -> None:
        self.code = code
        self.reason = reason_name(code)
        self.reason_string = reason_string
        super().__init__(f"connection refused: {self.reason}" + (f" ({reason_string})" if reason_string else ""))

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed (the broker is busy), as opposed to bad credentials."""
        return self.code in RETRYABLE_CONNECT_REASONS


# -- encoding -------------------------------------------------------------------------------------------------------
def connect_packet(
    *,
    client_id: str,
    username: str | None,
    password: str | None,
    keepalive_s: int,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    will_qos: int = 1,
    will_retain: bool = True,
) -> bytes:
    """An MQTT 5 CONNECT with clean start, no session kept after the connection, and an optional last will."""
    if not 0 <= keepalive_s <= 65_535:
        raise ValueError(f"keepalive {keepalive_s} s is outside 0..65535")
    if will_qos not in (0, 1, 2):
        raise ValueError(f"will QoS {will_qos} is not 0, 1 or 2")
    flags = 0x02  # clean start
    payload = [encode_string(client_id)]
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        # Will properties: payload format indicator = 1 (UTF-8 JSON).
        payload += [b"\x02\x01\x01", encode_string(will_topic), encode_binary(will_payload)]
    if username is not None:
        flags |= 0x80
        payload.append(encode_string(username))
    if password is not None:
        flags |= 0x40
        payload.append(encode_binary(password.encode()))
    variable = b"\x00\x04MQTT" + bytes((PROTOCOL_LEVEL, flags)) + keepalive_s.to_bytes(2, "big") + b"\x00"
    body = variable + b"".join(payload)
    return bytes((CONNECT,)) + encode_remaining_length(len(body)) + body


def publish_packet(topic_field: bytes, payload: bytes, *, qos: int, packet_id: int = 0, retain: bool = False) -> bytes:
    """A PUBLISH; `topic_field` is the topic as `encode_string` returns it (encode it once per topic)."""
    if qos == 0:
        body_len = len(topic_field) + 1 + len(payload)
        return b"".join((bytes((PUBLISH | retain,)), encode_remaining_length(body_len), topic_field, b"\x00", payload))
    if qos != 1:
        raise ValueError(f"QoS {qos} is not supported by this publisher (0 or 1)")
    if not 1 <= packet_id <= MAX_PACKET_ID:
        raise ValueError(f"packet id {packet_id} is outside 1..{MAX_PACKET_ID}")
    body_len = len(topic_field) + 3 + len(payload)
    return b"".join(
        (
            bytes((PUBLISH | 0x02 | retain,)),
            encode_remaining_length(body_len),
            topic_field,
            packet_id.to_bytes(2, "big"),
            b"\x00",
            payload,
        )
    )


# -- decoding -------------------------------------------------------------------------------------------------------
def parse_properties(data: bytes, pos: int) -> tuple[dict[int, Any], int]:
    """The property list at `pos` (its length first) as {identifier: value}, and the position after it."""
    decoded = decode_remaining_length(data, pos)
    if decoded is None:
        raise MqttProtocolError("truncated property length")
    length, pos = decoded
    end = pos + length
    if end > len(data):
        raise MqttProtocolError("property list runs past the packet")
    props: dict[int, Any] = {}
    while pos < end:
        ident = data[pos]
        pos += 1
        kind = _PROPERTY_TYPES.get(ident)
        value: Any
        if kind is None:
            raise MqttProtocolError(f"unknown property 0x{ident:02x}")
        if kind == _BYTE:
            value, pos = data[pos], pos + 1
        elif kind == _TWO:
            value, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif kind == _FOUR:
            value, pos = int.from_bytes(data[pos : pos + 4], "big"), pos + 4
        elif kind == _VARINT:
            decoded = decode_remaining_length(data, pos)
            if decoded is None:
                raise MqttProtocolError("truncated property")
            value, pos = decoded
        else:
            n = int.from_bytes(data[pos : pos + 2], "big")
            first = data[pos + 2 : pos + 2 + n]
            pos += 2 + n
            if kind == _PAIR:
                m = int.from_bytes(data[pos : pos + 2], "big")
                value = (first.decode(errors="replace"), data[pos + 2 : pos + 2 + m].decode(errors="replace"))
                pos += 2 + m
            else:
                value = first.decode(errors="replace") if kind == _STRING else bytes(first)
        if ident == 0x26:
            props.setdefault(ident, []).append(value)
        else:
            props[ident] = value
    if pos != end:
        raise MqttProtocolError("property list length does not match its content")
    return props, end


@dataclass(frozen=True, slots=True)
class Connack:
    """What the broker granted in its CONNACK."""

    session_present: bool
    receive_maximum: int = 65_535
    maximum_qos: int = 2
    retain_available: bool = True
    server_keepalive_s: int | None = None
    maximum_packet_size: int | None = None


def parse_connack(body: bytes) -> Connack:
    """Parse a CONNACK's body; raises ConnectRefused for a failure reason code."""
    if len(body) < 2:
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes")
    code = body[1]
    props: dict[int, Any] = {}
    if len(body) > 2:
        props, _ = parse_properties(body, 2)
    if code >= 0x80:
        raise ConnectRefused(code, props.get(0x1F))
    return Connack(
        session_present=bool(body[0] & 0x01),
        receive_maximum=props.get(0x21, 65_535),
        maximum_qos=props.get(0x24, 2),
        retain_available=bool(props.get(0x25, 1)),
        server_keepalive_s=props.get(0x13),
        maximum_packet_size=props.get(0x27),
    )


# -- counting -------------------------------------------------------------------------------------------------------
LATENCY_BUCKETS = 32


@dataclass(slots=True)
class PublishCounters:
    """Counts for one kind of message across all connections of a fleet (mutated in place by the connections).

    `sent = acked + in flight + lost_in_flight` at every moment (QoS 1); `rejected` is the part of `acked` whose
    PUBACK carried a failure reason code (e.g. not_authorized). Latency bucket k counts PUBACKs that came within
    2**k microseconds of the PUBLISH but not within 2**(k-1).
    """

    sent: int = 0
    acked: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    lost_in_flight: int = 0
    unknown_acks: int = 0
    latency_us: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)

    @property
    def unacked(self) -> int:
        """Sent at QoS 1 and not (yet) acknowledged: in flight now, or lost with a dropped connection."""
        return self.sent - self.acked

    def latency_quantile_ms(self, q: float) -> float | None:
        """Upper bound of the PUBACK latency quantile `q` (from the power-of-two buckets), in milliseconds."""
        total = sum(self.latency_us)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for k, count in enumerate(self.latency_us):
            seen += count
            if seen >= rank:
                return (1 << k) / 1000.0
        return (1 << (LATENCY_BUCKETS - 1)) / 1000.0


# -- the connection -------------------------------------------------------------------------------------------------
class ConnectionState:
    """Where a connection is in its life (plain ints: compared on every publish)."""

    CONNECTING = 0
    CONNECTED = 1
    CLOSING = 2
    CLOSED = 3


class PublisherConnection(asyncio.BufferedProtocol):
    """One device's MQTT 5 connection: sends CONNECT when the TCP connection is made, then publishes.

    `connack` resolves with the Connack (or fails with ConnectRefused / ConnectionError); `closed` resolves with the
    reason the connection ended. At QoS 1 at most `window` messages are in flight (fewer if the broker's receive
    maximum says so); `publish` returns False instead of sending when the window is full.
    """

    __slots__ = (
        "_closing_by_us",
        "_next_pid",
        "_pending",
        "_view",
        "closed",
        "connack",
        "connect_bytes",
        "control_counters",
        "control_inflight",
        "counters",
        "disconnect_reason",
        "inflight",
        "keepalive_s",
        "last_write",
        "on_lost",
        "ping_sent_at",
        "state",
        "tag",
        "transport",
        "window",
    )

    def __init__(
        self,
        connect_bytes: bytes,
        *,
        counters: PublishCounters,
        control_counters: PublishCounters | None = None,
        window: int = 10,
        keepalive_s: int = 60,
        read_buffer: bytearray | None = None,
        on_lost: Callable[[PublisherConnection, str], None] | None = None,
        tag: int = 0,
        first_packet_id: int = 1,
    ) -> None:
        if not 1 <= window <= MAX_PACKET_ID:
            raise ValueError(f"window {window} is outside 1..{MAX_PACKET_ID}")
        if not 1 <= first_packet_id <= MAX_PACKET_ID:
            raise ValueError(f"packet id {first_packet_id} is outside 1..{MAX_PACKET_ID}")
        loop = asyncio.get_running_loop()
        self.connect_bytes = connect_bytes
        self.counters = counters
        self.control_counters = control_counters if control_counters is not None else counters
        self.window = window
        self.keepalive_s = keepalive_s
        self.on_lost = on_lost
        self.tag = tag  # the owner's index for this connection (the device number in a fleet)
        self._view = memoryview(read_buffer if read_buffer is not None else bytearray(4096))
        self._pending = b""
        self._next_pid = first_packet_id
        self._closing_by_us = False
        self.transport: asyncio.Transport | None = None
        self.state = ConnectionState.CONNECTING
        self.inflight: dict[int, float] = {}
        self.control_inflight: dict[int, float] = {}
        self.last_write = 0.0
        self.ping_sent_at: float | None = None
        self.disconnect_reason: str | None = None
        self.connack: asyncio.Future[Connack] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()

    # -- asyncio callbacks ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send CONNECT at once."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.connect_bytes)
        self.last_write = time.monotonic()

    def get_buffer(self, sizehint: int) -> memoryview:
        """The read buffer (shared by all connections of a fleet: each read is parsed before the next)."""
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        """Parse what arrived: PUBACKs, mostly."""
        view = self._view
        # The common case, one successful PUBACK (40 02 id id), without copying anything.
        if nbytes == 4 and not self._pending and view[0] == 0x40 and view[1] == 0x02:
            self._puback((view[2] << 8) | view[3], 0)
            return
        data = self._pending + view[:nbytes].tobytes() if self._pending else view[:nbytes].tobytes()
        try:
            self._parse(data)
        except (MqttProtocolError, ConnectRefused, IndexError) as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        """The broker closed its side: close ours."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Count what was in flight as lost and tell the owner, unless we closed the connection ourselves."""
        was_connected = self.state in (ConnectionState.CONNECTED, ConnectionState.CLOSING)
        self.state = ConnectionState.CLOSED
        reason = self.disconnect_reason or (describe_error(exc) if exc is not None else "closed_by_broker")
        if self.inflight:
            self.counters.lost_in_flight += len(self.inflight)
            self.inflight.clear()
        if self.control_inflight:
            self.control_counters.lost_in_flight += len(self.control_inflight)
            self.control_inflight.clear()
        if not self.connack.done():
            self.connack.set_exception(ConnectionClosed(reason))
        if not self.closed.done():
            self.closed.set_result("closed_by_us" if self._closing_by_us else reason)
        if was_connected and not self._closing_by_us and self.on_lost is not None:
            self.on_lost(self, reason)

    # -- parsing ---------------------------------------------------------------------------------------------------
    def _parse(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        while pos < end:
            decoded = decode_remaining_length(data, pos + 1)
            if decoded is None:
                break
            length, start = decoded
            if start + length > end:
                break
            first = data[pos]
            kind = first & 0xF0
            pos = start + length
            if kind == PUBACK:
                if length < 2:
                    raise MqttProtocolError(f"PUBACK of {length} bytes")
                self._puback((data[start] << 8) | data[start + 1], data[start + 2] if length > 2 else 0)
            elif kind == CONNACK:
                if self.state != ConnectionState.CONNECTING:
                    raise MqttProtocolError("a second CONNACK")
                connack = parse_connack(data[start:pos])
                self.state = ConnectionState.CONNECTED
                self.window = min(self.window, connack.receive_maximum)
                if connack.server_keepalive_s is not None:
                    self.keepalive_s = connack.server_keepalive_s
                if not self.connack.done():
                    self.connack.set_result(connack)
            elif kind == PINGRESP:
                self.ping_sent_at = None
            elif kind == DISCONNECT:
                code = data[start] if length else 0
                self.disconnect_reason = reason_name(code)
            else:
                raise MqttProtocolError(f"unexpected packet type 0x{first:02x}")
        self._pending = data[pos:] if pos < end else b""

    def _puback(self, pid: int, code: int) -> None:
        sent_at = self.inflight.pop(pid, None)
        counters = self.counters
        if sent_at is None:
            sent_at = self.control_inflight.pop(pid, None)
            if sent_at is None:
                counters.unknown_acks += 1
                return
            counters = self.control_counters
        counters.acked += 1
        if code >= 0x80:
            name = reason_name(code)
            counters.rejected[name] = counters.rejected.get(name, 0) + 1
        latency_us = int((time.monotonic() - sent_at) * 1e6)
        counters.latency_us[min(latency_us.bit_length(), LATENCY_BUCKETS - 1)] += 1

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, ConnectRefused):
            self.disconnect_reason = exc.reason
            if not self.connack.done():
                self.connack.set_exception(exc)
        else:
            self.disconnect_reason = "protocol_error"
            if not self.connack.done():
                self.connack.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    # -- sending ---------------------------------------------------------------------------------------------------
    def publish(self, topic_field: bytes, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Send a PUBLISH (topic pre-encoded with `encode_string`); False if the QoS 1 window is full."""
        if qos == 0:
            transport = self._connected_transport()
            transport.write(publish_packet(topic_field, payload, qos=0, retain=retain))
            self.counters.sent += 1
            self.last_write = time.monotonic()
            return True
        return self._publish_qos1(topic_field, payload, retain, self.inflight, self.counters)

    def publish_control(self, topic_field: bytes, payload: bytes, *, retain: bool = True) -> bool:
        """Publish at QoS 1, counted in `control_counters` (availability, not vitals); False if the window is full."""
        return self._publish_qos1(topic_field, payload, retain, self.control_inflight, self.control_counters)

    def _connected_transport(self) -> asyncio.Transport:
        transport = self.transport
        if self.state != ConnectionState.CONNECTED or transport is None:
            raise ConnectionError("publish on a connection that is not connected")
        return transport

    def _publish_qos1(
        self, topic_field: bytes, payload: bytes, retain: bool, inflight: dict[int, float], counters: PublishCounters
    ) -> bool:
        transport = self._connected_transport()
        if len(self.inflight) + len(self.control_inflight) >= self.window:
            return False
        pid = self._next_pid
        while pid in self.inflight or pid in self.control_inflight:
            pid = pid % MAX_PACKET_ID + 1
        self._next_pid = pid % MAX_PACKET_ID + 1
        body_len = len(topic_field) + 3 + len(payload)
        # Vitals payloads are well below 16 KiB, so the remaining length takes one or two bytes.
        if body_len < 128:
            header = bytes((0x32 | retain, body_len))
        elif body_len < 16_384:
            header = bytes((0x32 | retain, (body_len & 0x7F) | 0x80, body_len >> 7))
        else:
            header = bytes((0x32 | retain,)) + encode_remaining_length(body_len)
        transport.write(b"".join((header, topic_field, pid.to_bytes(2, "big"), b"\x00", payload)))
        now = time.monotonic()
        inflight[pid] = now
        counters.sent += 1
        self.last_write = now
        return True

    def ping(self, now: float) -> None:
        """Send PINGREQ (keepalive) unless one is already waiting for its PINGRESP."""
        if self.transport is None or self.state != ConnectionState.CONNECTED or self.ping_sent_at is not None:
            return
        self.transport.write(PINGREQ_PACKET)
        self.ping_sent_at = now
        self.last_write = now

    def disconnect(self, *, publish_will: bool = False) -> None:
        """Send DISCONNECT and close; with `publish_will` the broker publishes the last will (going offline)."""
        transport = self.transport
        self._closing_by_us = True
        if transport is None or self.state == ConnectionState.CLOSED:
            return
        if self.state == ConnectionState.CONNECTED:
            transport.write(DISCONNECT_WITH_WILL_PACKET if publish_will else DISCONNECT_PACKET)
        self.state = ConnectionState.CLOSING
        transport.close()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crash or a lost radio link would (the will fires)."""
        if self.transport is not None and self.state != ConnectionState.CLOSED:
            self.disconnect_reason = "aborted"
            self.transport.abort()

    @property
    def in_flight(self) -> int:
        """Messages sent at QoS 1 and not acknowledged yet."""
        return len(self.inflight) + len(self.control_inflight)


def describe_error(exc: BaseException) -> str:
    """A short name for a connection error, for counting: "econnrefused", "timeouterror"."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, type(exc).__name__).lower()
    return type(exc).__name__.lower()
