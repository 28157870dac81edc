"""The alerts process's clock handling, without a broker: the ticker never loses a wake-up, and a poke wakes the
dispatcher too (what is due in the outbox can change with the clock alone, e.g. a reminder held for quiet hours)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

from alerts.app import AlertsApp
from alerts.context import ContextBook
from alerts.directory import ResidentBook
from alerts.models import Observation, ResidentProfile, Signal
from careloop.clock import ManualClock
from careloop.settings import CareloopSettings

T0 = 1_790_000_000.0


class Rules:
    def observe(self, obs: Observation, profile: ResidentProfile, now: float) -> list[Signal]:
        return []

    def tick(self, now: float) -> list[Signal]:
        return []


class Service:
    """Blocks in its first fire_due() until released, as a slow database would."""

    def __init__(self) -> None:
        self.passes = 0
        self.in_first_pass = threading.Event()
        self.release = threading.Event()

    def handle_signal(self, signal: Signal) -> Sequence[object]:
        return []

    def fire_due(self) -> Sequence[object]:
        self.passes += 1
        if self.passes == 1:
            self.in_first_pass.set()
            self.release.wait(10)
        return []

    def next_due(self) -> float | None:
        return None


class Dispatcher:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def _app(service: Service, dispatcher: Dispatcher) -> AlertsApp:
    book = ResidentBook()
    return AlertsApp(
        CareloopSettings(),
        engine=Rules(),
        service=service,
        dispatcher=dispatcher,
        book=book,
        contexts=ContextBook(book),
        clock=ManualClock(T0),
        tick_s=3600.0,  # the ticker's own period never comes in this test
    )


async def test_a_poke_during_a_ticker_pass_runs_another_pass_at_once() -> None:
    service = Service()
    app = _app(service, Dispatcher())
    ticker = asyncio.create_task(app._ticker())
    try:
        await asyncio.to_thread(service.in_first_pass.wait, 10)
        app.poke()  # the clock moved while the pass was reading it
        service.release.set()
        async with asyncio.timeout(5):
            while service.passes < 2:  # noqa: ASYNC110 - the ticker's progress is only visible as a count
                await asyncio.sleep(0.01)
        assert app.stats.ticks >= 1
    finally:
        service.release.set()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def test_a_poke_wakes_the_dispatcher_too() -> None:
    dispatcher = Dispatcher()
    app = _app(Service(), dispatcher)
    app.poke()
    assert dispatcher.wakes == 1
