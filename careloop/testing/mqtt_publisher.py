"""Publish many QoS 1 messages fast, for tests and benchmarks that need load (no pytest here).

    result = await publish_all(broker.host, broker.port, [(topic, payload), ...], connections=4)

Each connection keeps up to `window` messages in flight (fewer if the broker's receive maximum says so) and refills
its window with one write per read of PUBACKs, so a publisher process costs a few microseconds a message. Messages
are drawn from the iterable lazily, in order; with one connection they reach the broker in that order. The call
returns when every message has been acknowledged, and raises ConnectionError if a connection is lost first.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_PROTOCOL = b"\x00\x04MQTT\x05"  # MQTT 5
_KEEPALIVE_NO_PROPERTIES = b"\x00\x3c\x00"  # keepalive 60 s, no properties
_DISCONNECT = b"\xe0\x00"


@dataclass(frozen=True, slots=True)
class PublishResult:
    """How many messages were acknowledged, and when the first was sent and the last acknowledged (Unix time)."""

    acked: int
    started: float
    ended: float


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


class _Connection(asyncio.BufferedProtocol):
    def __init__(
        self,
        source: Iterator[tuple[str, bytes]],
        topics: dict[str, bytes],
        window: int,
        name: str,
        credentials: tuple[str | None, str | None] = (None, None),
    ) -> None:
        loop = asyncio.get_running_loop()
        self.credentials = credentials
        self.source = source
        self.topics = topics
        self.window = window
        self.name = name
        self.in_flight = 0
        self.acked = 0
        self.exhausted = False
        self.next_pid = 1
        self.pending = b""
        self.buffer = memoryview(bytearray(65_536))
        self.connack: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        username, password = self.credentials
        flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
        body = _PROTOCOL + bytes((flags,)) + _KEEPALIVE_NO_PROPERTIES + _string(self.name)
        if username is not None:
            body += _string(username)
        if password is not None:
            body += _string(password)
        transport.write(b"\x10" + _varint(len(body)) + body)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self.pending + self.buffer[:nbytes].tobytes()
        pos = acks = 0
        end = len(data)
        while end - pos >= 2:
            length = shift = 0
            i = pos + 1
            while i < end:
                byte = data[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break
            if i + length > end:
                break
            kind = data[pos] & 0xF0
            if kind == 0x40:
                acks += 1
            elif kind == 0x20:
                self._connack(data[i : i + length])
            pos = i + length
        self.pending = data[pos:]
        if acks:
            self.in_flight -= acks
            self.acked += acks
            self.fill()

    def _connack(self, body: bytes) -> None:
        if len(body) < 2 or body[1] >= 0x80:
            code = body[1] if len(body) > 1 else 0
            self.connack.set_exception(ConnectionRefusedError(f"CONNACK refused (reason 0x{code:02x})"))
            return
        receive_maximum = _receive_maximum(body)
        if receive_maximum is not None:
            self.window = min(self.window, receive_maximum)
        self.connack.set_result(None)

    def fill(self) -> None:
        """Send messages until the window is full or the source is exhausted."""
        parts: list[bytes] = []
        while self.in_flight < self.window:
            item = next(self.source, None)
            if item is None:
                self.exhausted = True
                break
            topic, payload = item
            encoded = self.topics.get(topic)
            if encoded is None:
                encoded = self.topics[topic] = _string(topic)
            pid = self.next_pid
            self.next_pid = pid % 65_535 + 1
            parts += (b"\x32", _varint(len(encoded) + 3 + len(payload)), encoded, pid.to_bytes(2, "big"), b"\x00")
            parts.append(payload)
            self.in_flight += 1
        if parts and self.transport is not None:
            self.transport.write(b"".join(parts))
        if self.exhausted and not self.in_flight and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError(f"publisher connection {self.name} lost: {exc or 'closed by the broker'}")
        if not self.connack.done():
            self.connack.set_exception(error)
        if not self.done.done():
            self.done.set_exception(error)


# CONNACK properties: fixed sizes, and those that are length-prefixed (strings, binary data, user properties).
_FIXED_SIZE = {0x11: 4, 0x13: 2, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}
_PREFIXED = {0x12: 1, 0x15: 1, 0x16: 1, 0x1A: 1, 0x1C: 1, 0x1F: 1, 0x26: 2}


def _receive_maximum(body: bytes) -> int | None:
    """The receive maximum a CONNACK body grants, if it says (65,535 when absent, per MQTT 5)."""
    if len(body) < 3:
        return None
    length = shift = 0
    k = 2
    while k < len(body):
        byte = body[k]
        length |= (byte & 0x7F) << shift
        shift += 7
        k += 1
        if not byte & 0x80:
            break
    end = min(len(body), k + length)
    while k < end:
        ident = body[k]
        k += 1
        if ident == 0x21:
            return int.from_bytes(body[k : k + 2], "big")
        if ident in _FIXED_SIZE:
            k += _FIXED_SIZE[ident]
        elif ident in _PREFIXED:
            for _ in range(_PREFIXED[ident]):
                k += 2 + int.from_bytes(body[k : k + 2], "big")
        else:
            return None  # a property this helper does not know: keep the window as asked
    return None


async def publish_all(
    host: str,
    port: int,
    messages: Iterable[tuple[str, bytes]],
    *,
    connections: int = 4,
    window: int = 100,
    client_id_prefix: str = "careloop-publisher",
    username: str | None = None,
    password: str | None = None,
) -> PublishResult:
    """Publish every `(topic, payload)` at QoS 1 over `connections` connections; return once all are acknowledged.

    A PUBACK with a failure reason (e.g. not authorized by the ACL) still counts as acknowledged: the broker has
    answered; what it did with the message is its business.
    """
    if connections < 1 or window < 1:
        raise ValueError("connections and window must be at least 1")
    loop = asyncio.get_running_loop()
    source = iter(messages)
    topics: dict[str, bytes] = {}
    conns = []
    tag = next(_counter)
    try:
        for n in range(connections):
            conn = _Connection(source, topics, window, f"{client_id_prefix}-{tag}-{n}", (username, password))
            await loop.create_connection(lambda c=conn: c, host, port)  # type: ignore[misc]
            await conn.connack
            conns.append(conn)
        started = time.time()
        for conn in conns:
            conn.fill()
        await asyncio.gather(*(conn.done for conn in conns))
        ended = time.time()
    finally:
        for conn in conns:
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(_DISCONNECT)
                conn.transport.close()
    return PublishResult(acked=sum(conn.acked for conn in conns), started=started, ended=ended)


_counter = itertools.count()
