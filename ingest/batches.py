"""Batches: messages received together, written together, acknowledged together and in order. Pure; no I/O.

A batch collects the packet ids of the messages it took in and the lines of their points. It is *finished* when
nothing remains to be done for it: its points are durable (InfluxDB answered 2xx, or they are in the spool) and
every dead letter it sent was acknowledged by the broker. MQTT wants PUBACKs in the order the messages arrived, so
`AckQueue` hands out finished batches only from the front: a batch that finished early waits for the ones before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from careloop.messages import Message
from careloop.topics import TopicKind


@dataclass(frozen=True, slots=True)
class Deferred:
    """A valid message from a device the registry cache does not know yet: converted after a look-up."""

    topic: bytes
    payload: bytes
    kind: TopicKind
    home: str
    device: str
    message: Message


@dataclass(slots=True, eq=False)
class Batch:
    """Messages taken in together. `session` is the MQTT connection their packet ids belong to."""

    session: int
    pids: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    #: Valid messages whose tags wait on a registry look-up.
    deferred: list[Deferred] = field(default_factory=list)
    #: What must still happen before the batch is finished: its store (1), plus one per dead letter in flight.
    waiting: int = 1
    #: Points counted in the service's queue depth when the batch was sealed.
    counted: int = 0
    timer: asyncio.TimerHandle | None = None

    @property
    def finished(self) -> bool:
        """Whether the batch's points are durable and its dead letters acknowledged."""
        return self.waiting == 0


class AckQueue:
    """Open and sealed batches in arrival order; `release()` pops the finished ones at the front."""

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()

    def add(self, batch: Batch) -> None:
        """A new batch, after every batch added before it."""
        self._batches.append(batch)

    def release(self) -> list[Batch]:
        """The finished batches at the front, in order, removed from the queue (their PUBACKs may go now)."""
        out = []
        batches = self._batches
        while batches and batches[0].waiting == 0:
            out.append(batches.popleft())
        return out

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def messages(self) -> int:
        """Messages in the queue's batches: received and not yet acknowledged."""
        return sum(len(b.pids) for b in self._batches)
