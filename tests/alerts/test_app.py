"""The alerts process's own machinery: the database worker serves the most urgent work first."""

from __future__ import annotations

import asyncio
import threading

import pytest

from alerts.app import PriorityMessageQueue, PriorityWorker


async def test_an_sos_waits_only_for_the_call_in_progress_not_for_a_storm() -> None:
    worker = PriorityWorker()
    ran: list[str] = []
    gate = threading.Event()
    try:
        busy = asyncio.create_task(worker.call(2, gate.wait))  # the call in progress when the storm comes
        await asyncio.sleep(0.05)
        storm = [asyncio.create_task(worker.call(2, ran.append, f"offline-{i}")) for i in range(200)]
        await asyncio.sleep(0.05)
        sos = asyncio.create_task(worker.call(0, ran.append, "sos"))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(busy, sos, *storm)
    finally:
        worker.shutdown()
    assert ran[0] == "sos"
    assert ran[1:] == [f"offline-{i}" for i in range(200)]  # same priority: in the order they came


async def test_a_failing_call_raises_in_its_caller_and_the_worker_goes_on() -> None:
    worker = PriorityWorker()
    try:
        with pytest.raises(ZeroDivisionError):
            await worker.call(1, lambda: 1 / 0)
        assert await worker.call(1, lambda: 42) == 42
    finally:
        worker.shutdown()


class _Message:
    def __init__(self, topic: str) -> None:
        self.topic = type("T", (), {"value": topic})()


async def test_the_receive_queue_serves_sos_and_events_before_vitals() -> None:
    q = PriorityMessageQueue()
    for topic in ("h/1/device/b/vitals", "h/1/device/b/battery", "h/1/edge/events", "h/1/device/b/vitals",
                  "h/1/device/b/sos"):  # fmt: skip
        q.put_nowait(_Message(topic))  # type: ignore[arg-type]
    order = [q.get_nowait().topic.value.rsplit("/", 1)[1] for _ in range(5)]
    assert order == ["events", "sos", "battery", "vitals", "vitals"]
