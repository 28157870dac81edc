"""A minimal MQTT 5 client: one persistent session that receives at QoS 1 and acknowledges when told.

What it speaks: CONNECT (clean start off, a session expiry interval, a receive maximum), CONNACK, SUBSCRIBE and
SUBACK, PUBLISH in both directions (received at QoS 0 or 1; sent at QoS 1, for dead letters), PUBACK in both
directions, PINGREQ / PINGRESP, DISCONNECT. No QoS 2, no topic aliases, no AUTH exchange.

The point is when a PUBACK leaves: never on receipt. Received PUBLISH packets are handed to `on_messages` as a list
of `(topic, payload, packet_id)` per read from the socket, in arrival order; the owner calls `ack(packet_ids)` once
their points are durable, and one write carries all those PUBACKs. The broker sends at most `receive_maximum`
unacknowledged messages, and `pause_reading()` stops reading the socket altogether, so a slow consumer slows the
broker down instead of growing a queue.

Why not paho-mqtt: a paho subscriber process that only counts spends about 48 us of CPU per received message (its
`MQTTMessage`, `Properties`, callback dispatch, logging checks, and a PUBACK written per message under a lock);
one on this client 5-7 us, socket reads included (bench/ingest.py's MQTT ceilings), of which parsing the
PUBLISH and packing its PUBACK are 1.3 us. On a 2-core machine that shares its cores with Mosquitto and InfluxDB
that difference is most of the ingest budget. Incoming bytes land in one reusable buffer
(`asyncio.BufferedProtocol`), a PUBLISH is parsed with a few index operations, and the PUBACKs of a whole batch are
packed with one `struct.pack`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROTOCOL_LEVEL = 5
MAX_PACKET_ID = 65_535
MAX_REMAINING_LENGTH = 268_435_455
#: Initial size of the read buffer; it grows for a packet that does not fit (the broker's limit is usually 1 MiB).
READ_BUFFER_BYTES = 1 << 20

# First byte of each packet type (the flags of PUBLISH and SUBSCRIBE are or-ed in).
CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

#: A received message: topic (UTF-8 bytes, as on the wire), payload, packet id (0 for QoS 0).
Received = tuple[bytes, bytes, int]

#: MQTT 5 reason codes, as names used for counting and errors (CONNACK, PUBACK, SUBACK and DISCONNECT share one
#: table; the receiving clients here and the fleet publisher both use it).
REASON_NAMES: dict[int, str] = {
    0x00: "success",
    0x01: "granted_qos_1",
    0x02: "granted_qos_2",
    0x04: "disconnect_with_will",
    0x10: "no_matching_subscribers",
    0x80: "unspecified_error",
    0x81: "malformed_packet",
    0x82: "protocol_error",
    0x83: "implementation_specific_error",
    0x84: "unsupported_protocol_version",
    0x85: "client_identifier_not_valid",
    0x86: "bad_username_or_password",
    0x87: "not_authorized",
    0x88: "server_unavailable",
    0x89: "server_busy",
    0x8A: "banned",
    0x8B: "server_shutting_down",
    0x8C: "bad_authentication_method",
    0x8D: "keep_alive_timeout",
    0x8E: "session_taken_over",
    0x8F: "topic_filter_invalid",
    0x90: "topic_name_invalid",
    0x91: "packet_identifier_in_use",
    0x93: "receive_maximum_exceeded",
    0x95: "packet_too_large",
    0x97: "quota_exceeded",
    0x98: "administrative_action",
    0x99: "payload_format_invalid",
    0x9A: "retain_not_supported",
    0x9B: "qos_not_supported",
    0x9C: "use_another_server",
    0x9D: "server_moved",
    0x9E: "shared_subscriptions_not_supported",
    0x9F: "connection_rate_exceeded",
    0xA1: "subscription_identifiers_not_supported",
    0xA2: "wildcard_subscriptions_not_supported",
}


def reason_name(code: int) -> str:
    """The name of an MQTT 5 reason code, e.g. 0x87 -> "not_authorized"."""
    return REASON_NAMES.get(code, f"reason_0x{code:02x}")


class MqttError(Exception):
    """Base of this client's errors."""


class MqttProtocolError(MqttError):
    """The broker sent something this client cannot parse or did not expect."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a failure reason code."""

    def __init__(self, code: int, reason_string: str | None = None) -> None:
        self.code = code
        self.reason = reason_name(code)
        super().__init__(f"connection refused: {self.reason}" + (f" ({reason_string})" if reason_string else ""))


class SubscribeRefused(MqttError):
    """The broker refused (or downgraded below QoS 1) one or more of the subscriptions; `refused` says which."""

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = refused
        super().__init__("subscription refused: " + ", ".join(f"{f} ({r})" for f, r in refused.items()))


class ConnectionLost(MqttError):
    """The connection ended; `reason` says how (a DISCONNECT reason, an OS error, or a keepalive timeout)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"MQTT connection lost: {reason}")


# -- encoding -------------------------------------------------------------------------------------------------------
def encode_remaining_length(n: int) -> bytes:
    """The variable byte integer MQTT uses for lengths: 7 bits a byte, least significant first."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} is outside 0..{MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """(value, position after it) of the variable byte integer at `pos`, or None when `data` ends inside it."""
    value = 0
    for k in range(4):
        if pos + k >= len(data):
            return None
        byte = data[pos + k]
        value |= (byte & 0x7F) << (7 * k)
        if not byte & 0x80:
            return value, pos + k + 1
    raise MqttProtocolError("a variable byte integer longer than 4 bytes")


def encode_string(text: str) -> bytes:
    """A UTF-8 string with its two-byte length."""
    return encode_binary(text.encode())


def encode_binary(data: bytes) -> bytes:
    """Binary data with its two-byte length."""
    if len(data) > 65_535:
        raise ValueError(f"{len(data)} bytes do not fit a two-byte length")
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_remaining_length(len(body)) + body


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How to open the session: who we are and how much the broker may send before we acknowledge."""

    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    #: False resumes the session the broker kept for `client_id` (and what it queued for it meanwhile).
    clean_start: bool = False
    #: How long the broker keeps the session (subscriptions, queued messages) after we disconnect.
    session_expiry_s: int = 7 * 86_400
    #: Unacknowledged QoS 1 messages the broker may send us at once (1..65535).
    receive_maximum: int = 10_000

    def __post_init__(self) -> None:
        if not 1 <= self.receive_maximum <= MAX_PACKET_ID:
            raise ValueError(f"receive maximum {self.receive_maximum} is outside 1..{MAX_PACKET_ID}")
        if not 0 <= self.keepalive_s <= 65_535:
            raise ValueError(f"keepalive {self.keepalive_s} s is outside 0..65535")
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise ValueError(f"session expiry {self.session_expiry_s} s does not fit four bytes")


def connect_packet(options: SessionOptions) -> bytes:
    """An MQTT 5 CONNECT with the session expiry interval and receive maximum properties."""
    flags = 0x02 if options.clean_start else 0x00
    payload = [encode_string(options.client_id)]
    if options.username is not None:
        flags |= 0x80
        payload.append(encode_string(options.username))
    if options.password is not None:
        flags |= 0x40
        payload.append(encode_binary(options.password.encode()))
    props = b"\x11" + options.session_expiry_s.to_bytes(4, "big") + b"\x21" + options.receive_maximum.to_bytes(2, "big")
    variable = (
        b"\x00\x04MQTT"
        + bytes((PROTOCOL_LEVEL, flags))
        + options.keepalive_s.to_bytes(2, "big")
        + encode_remaining_length(len(props))
        + props
    )
    return _packet(CONNECT, variable + b"".join(payload))


def subscribe_packet(packet_id: int, filters: Sequence[str], qos: int = 1) -> bytes:
    """A SUBSCRIBE for `filters` at `qos`, retained messages sent as usual, no-local off (shared subscriptions)."""
    if not filters:
        raise ValueError("nothing to subscribe to")
    if qos not in (0, 1):
        raise ValueError(f"QoS {qos} is not supported (0 or 1)")
    body = packet_id.to_bytes(2, "big") + b"\x00" + b"".join(encode_string(f) + bytes((qos,)) for f in filters)
    return _packet(SUBSCRIBE, body)


def publish_packet(topic: str, payload: bytes, packet_id: int, *, retain: bool = False) -> bytes:
    """A QoS 1 PUBLISH without properties."""
    if not 1 <= packet_id <= MAX_PACKET_ID:
        raise ValueError(f"packet id {packet_id} is outside 1..{MAX_PACKET_ID}")
    body = encode_string(topic) + packet_id.to_bytes(2, "big") + b"\x00" + payload
    return _packet(PUBLISH | 0x02 | int(retain), body)


def puback_packets(packet_ids: Sequence[int]) -> bytes:
    """The PUBACKs (success, short form) of `packet_ids`, in order, as one byte string.

    A short PUBACK is `40 02 <id>`: four bytes that read as one big-endian integer, so a batch packs in one call.
    """
    return struct.pack(f">{len(packet_ids)}I", *[0x4002_0000 | pid for pid in packet_ids])


# -- decoding -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connack:
    """What the broker granted in its CONNACK."""

    session_present: bool
    #: How many unacknowledged QoS 1 messages we may send the broker at once.
    receive_maximum: int = 65_535
    server_keepalive_s: int | None = None
    session_expiry_s: int | None = None
    shared_subscriptions: bool = True


def _skip_properties(data: bytes | bytearray, pos: int) -> tuple[dict[int, int | str], int]:
    """The integer and string properties at `pos` (others are skipped), and the position after the list."""
    decoded = decode_varint(data, pos)
    if decoded is None:
        raise MqttProtocolError("truncated property length")
    length, pos = decoded
    end = pos + length
    if end > len(data):
        raise MqttProtocolError("property list runs past the packet")
    props: dict[int, int | str] = {}
    while pos < end:
        ident = data[pos]
        pos += 1
        if ident in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):  # one byte
            props[ident] = data[pos]
            pos += 1
        elif ident in (0x13, 0x21, 0x22, 0x23):  # two bytes
            props[ident] = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif ident in (0x02, 0x11, 0x18, 0x27):  # four bytes
            props[ident] = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
        elif ident == 0x0B:  # subscription identifier: variable byte integer
            decoded = decode_varint(data, pos)
            if decoded is None:
                raise MqttProtocolError("truncated property")
            props[ident], pos = decoded
        elif ident in (0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F):  # string or binary
            n = int.from_bytes(data[pos : pos + 2], "big")
            props[ident] = bytes(data[pos + 2 : pos + 2 + n]).decode(errors="replace")
            pos += 2 + n
        elif ident == 0x26:  # user property: a string pair
            n = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2 + n
            m = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2 + m
        else:
            raise MqttProtocolError(f"unknown property 0x{ident:02x}")
    if pos != end:
        raise MqttProtocolError("property list length does not match its content")
    return props, end


def parse_connack(body: bytes) -> Connack:
    """Parse a CONNACK's body; raises ConnectRefused for a failure reason code."""
    if len(body) < 2:
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes")
    code = body[1]
    props: dict[int, int | str] = {}
    if len(body) > 2:
        props, _ = _skip_properties(body, 2)
    if code >= 0x80:
        reason_string = props.get(0x1F)
        raise ConnectRefused(code, reason_string if isinstance(reason_string, str) else None)

    def number(ident: int) -> int | None:
        value = props.get(ident)
        return value if isinstance(value, int) else None

    return Connack(
        session_present=bool(body[0] & 0x01),
        receive_maximum=number(0x21) or 65_535,
        server_keepalive_s=number(0x13),
        session_expiry_s=number(0x11),
        shared_subscriptions=number(0x2A) != 0,
    )


# -- the connection -------------------------------------------------------------------------------------------------
class _Protocol(asyncio.BufferedProtocol):
    """Parses what the broker sends; PUBLISH packets go to `on_messages`, the rest resolve the client's futures."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray(READ_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._fill = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.client._connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._fill == len(self._buf):
            self._grow(2 * len(self._buf))
        return self._view[self._fill :]

    def _grow(self, size: int) -> None:
        buf = bytearray(size)
        buf[: self._fill] = self._view[: self._fill]
        self._view.release()
        self._buf = buf
        self._view = memoryview(buf)

    def buffer_updated(self, nbytes: int) -> None:
        end = self._fill + nbytes
        buf = self._buf
        view = self._view
        pos = 0
        received: list[Received] = []
        append = received.append
        client = self.client
        try:
            while end - pos >= 2:
                first = buf[pos]
                length = buf[pos + 1]
                if length < 0x80:
                    start = pos + 2
                else:
                    decoded = decode_varint(buf, pos + 1)
                    if decoded is None or decoded[1] > end:
                        break
                    length, start = decoded
                stop = start + length
                if stop > end:
                    if stop - pos > len(buf):  # a packet larger than the buffer: make room for all of it
                        self._fill = end
                        self._grow(stop - pos + READ_BUFFER_BYTES)
                        buf, view = self._buf, self._view
                    break
                if first & 0xF0 == PUBLISH:
                    p = start + 2 + ((buf[start] << 8) | buf[start + 1])
                    topic = view[start + 2 : p].tobytes()
                    if first & 0x06:
                        pid = (buf[p] << 8) | buf[p + 1]
                        p += 2
                        if first & 0x08:
                            client.redelivered += 1
                    else:
                        pid = 0
                    props = buf[p]
                    if props < 0x80:
                        p += 1 + props
                    else:
                        decoded = decode_varint(buf, p)
                        if decoded is None:
                            raise MqttProtocolError("truncated PUBLISH properties")
                        p = decoded[1] + decoded[0]
                    append((topic, view[p:stop].tobytes(), pid))
                else:
                    client._control(first, view[start:stop].tobytes())
                pos = stop
        except (MqttProtocolError, IndexError, ConnectRefused) as exc:
            client._fail(exc)
            return
        rest = end - pos
        if pos and rest:
            buf[:rest] = buf[pos:end]
        self._fill = rest
        client.last_read = time.monotonic()
        if received and not client._closing:  # after DISCONNECT: not ours to take any more (see disconnect())
            client.received += len(received)
            client.on_messages(received)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost(exc)


class MqttClient:
    """One MQTT 5 connection: `await MqttClient.connect(...)`, `subscribe()`, then messages flow to `on_messages`.

    A client is one connection; after it is lost make a new one (the session, with its unacknowledged messages,
    lives on in the broker). `closed` resolves with the reason when the connection ends.
    """

    def __init__(self, options: SessionOptions, on_messages: Callable[[list[Received]], None]) -> None:
        loop = asyncio.get_running_loop()
        self.options = options
        self.on_messages = on_messages
        self.transport: asyncio.Transport | None = None
        self.connack_info: Connack | None = None
        self.received = 0
        self.redelivered = 0
        self.last_read = time.monotonic()
        self.closed: asyncio.Future[str] = loop.create_future()
        self._connack: asyncio.Future[Connack] = loop.create_future()
        self._waiting: dict[int, asyncio.Future[bytes]] = {}  # our packet id -> its SUBACK / PUBACK body
        self._next_pid = 1
        self._window: asyncio.Semaphore | None = None
        self._paused = False
        self._closing = False
        self._keepalive_task: asyncio.Task[None] | None = None
        self._disconnect_reason: str | None = None

    # -- opening --------------------------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        options: SessionOptions,
        on_messages: Callable[[list[Received]], None],
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
    ) -> MqttClient:
        """A new client, connected (see `open`)."""
        client = cls(options, on_messages)
        await client.open(host, port, ssl_context=ssl_context, timeout_s=timeout_s)
        return client

    async def open(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, timeout_s: float = 10.0
    ) -> Connack:
        """Open the connection and wait for CONNACK; raises ConnectRefused, ConnectionLost, OSError or TimeoutError.

        Messages the broker kept for the session may arrive (and reach `on_messages`) before this returns.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(
                    lambda: _Protocol(self),
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None,
                )
                info = await self._connack
        except BaseException:
            self.abort()
            raise
        self.connack_info = info
        self._window = asyncio.Semaphore(info.receive_maximum)
        keepalive = info.server_keepalive_s if info.server_keepalive_s is not None else self.options.keepalive_s
        if keepalive:
            self._keepalive_task = asyncio.create_task(self._keepalive(keepalive), name="mqtt-keepalive")
        return info

    async def subscribe(self, filters: Sequence[str], *, qos: int = 1, timeout_s: float = 10.0) -> None:
        """Subscribe to `filters` at `qos`; raises SubscribeRefused if any is refused or granted a lower QoS."""
        pid, answer = self._reserve_packet_id()
        self._write(subscribe_packet(pid, filters, qos))
        async with asyncio.timeout(timeout_s):
            body = await answer
        _, pos = _skip_properties(body, 2)
        codes = body[pos:]
        if len(codes) != len(filters):
            raise MqttProtocolError(f"SUBACK with {len(codes)} reason codes for {len(filters)} filters")
        refused = {
            f: reason_name(c) if c >= 0x80 else f"granted_qos_{c}"
            for f, c in zip(filters, codes, strict=True)
            if c >= 0x80 or c < qos
        }
        if refused:
            raise SubscribeRefused(refused)

    # -- receiving ------------------------------------------------------------------------------------------------
    def ack(self, packet_ids: Sequence[int]) -> None:
        """Send the PUBACKs of `packet_ids` (QoS 0 messages, id 0, are skipped), in the order given, in one write."""
        ids = [pid for pid in packet_ids if pid]
        if ids and self.transport is not None and not self.transport.is_closing():
            self.transport.write(puback_packets(ids))

    def pause_reading(self) -> None:
        """Stop reading the socket: the broker's sends back up in TCP, and it stops sending (bounded memory)."""
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self._paused = True

    def resume_reading(self) -> None:
        """Read the socket again."""
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self.last_read = time.monotonic()
        self._paused = False

    @property
    def paused(self) -> bool:
        """Whether reading is paused."""
        return self._paused

    # -- sending --------------------------------------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1 and wait for the PUBACK; returns its reason code (>= 0x80: the broker refused it).

        At most the broker's receive maximum of our publishes are in flight; more wait here.
        """
        assert self._window is not None, "publish before CONNACK"
        async with self._window:
            pid, answer = self._reserve_packet_id()
            self._write(publish_packet(topic, payload, pid, retain=retain))
            body = await answer
        return body[2] if len(body) > 2 else 0

    def _reserve_packet_id(self) -> tuple[int, asyncio.Future[bytes]]:
        if self.closed.done():
            raise ConnectionLost(self.closed.result())
        if len(self._waiting) >= MAX_PACKET_ID:
            raise MqttError("every packet id is in use")
        pid = self._next_pid
        while pid in self._waiting:
            pid = pid % MAX_PACKET_ID + 1
        self._next_pid = pid % MAX_PACKET_ID + 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = future
        return pid, future

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost(self.closed.result() if self.closed.done() else "not connected")
        self.transport.write(data)

    # -- closing --------------------------------------------------------------------------------------------------
    async def disconnect(self, timeout_s: float = 5.0) -> None:
        """Send DISCONNECT (the session stays for its expiry interval) and close once the broker has closed.

        The broker reads a connection in order, so when it closes after our DISCONNECT it has read every PUBACK sent
        before. Closing at once could leave PUBACKs unread in the broker's socket buffer; a new connection with our
        client id then takes the session over and the broker sends those messages again. Messages that arrive
        meanwhile are not handed on (nor acknowledged): the broker keeps them for the session.
        """
        self._closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(DISCONNECT_PACKET)
            if transport.can_write_eof():
                transport.write_eof()
            if self._paused:  # we must read to hear the broker close
                transport.resume_reading()
                self._paused = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        self.abort()

    def abort(self, reason: str = "aborted") -> None:
        """Drop the connection at once, without DISCONNECT."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()
        self._finish(reason)

    # -- called by the protocol -----------------------------------------------------------------------------------
    def _connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(connect_packet(self.options))

    def _control(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind in (PUBACK, SUBACK):
            if len(body) < 2:
                raise MqttProtocolError(f"packet 0x{first:02x} of {len(body)} bytes")
            future = self._waiting.pop((body[0] << 8) | body[1], None)
            if future is not None and not future.done():
                future.set_result(body)
        elif kind == CONNACK:
            if self._connack.done():
                raise MqttProtocolError("a second CONNACK")
            self._connack.set_result(parse_connack(body))
        elif kind == PINGRESP:
            pass
        elif kind == DISCONNECT:
            code = body[0] if body else 0
            self._disconnect_reason = reason_name(code)
        else:
            raise MqttProtocolError(f"unexpected packet type 0x{first:02x}")

    def _fail(self, exc: BaseException) -> None:
        if not self._connack.done():
            self._connack.set_exception(exc)
        self.abort(reason=type(exc).__name__.lower() if not isinstance(exc, ConnectRefused) else exc.reason)

    def _connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            reason = type(exc).__name__.lower()
        else:
            reason = self._disconnect_reason or ("closed_by_us" if self._closing else "closed_by_broker")
        if not self._connack.done():
            self._connack.set_exception(ConnectionLost(reason))
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self._keepalive_task is not None and self._keepalive_task is not asyncio.current_task():
            self._keepalive_task.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))
        self._waiting.clear()
        if not self.closed.done():
            self.closed.set_result(reason)

    async def _keepalive(self, keepalive_s: int) -> None:
        """PINGREQ every half keepalive; drop the connection if the broker has said nothing for 1.5 keepalives."""
        while not self.closed.done():
            await asyncio.sleep(keepalive_s / 2)
            # While reading is paused we cannot hear the broker; that silence is ours, not a dead link.
            if not self._paused and time.monotonic() - self.last_read > 1.5 * keepalive_s:
                self.abort("keepalive_timeout")
                return
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(PINGREQ_PACKET)
