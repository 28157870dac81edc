"""Sends what the outbox holds and records how every delivery went; nothing is dropped silently.

The alert service writes notifications to the outbox in the transaction of the transition that caused them. The
dispatcher then claims the due ones (each claim counts an attempt and leases the row, so a dispatcher that dies
mid-send has it sent again after the lease; receivers de-duplicate on the stable notification id), sends each over
its channel's :class:`~alerts.models.Notifier` with bounded concurrency per channel, and records the outcome:

- accepted: DELIVERED, with the channel's receipt;
- :class:`~alerts.models.DeliveryError` that is transient (and attempts remain): RETRYING, the next attempt after
  a deterministic exponential backoff (or the channel's Retry-After, when longer);
- permanent, or attempts exhausted: FAILED, with the last error, an audit line, and listed by
  ``AlertService.failed_deliveries()`` for staff to act on;
- any other exception from a notifier, or no answer within ``send_timeout_s``: a transient failure, recorded
  with the exception's type;
- a channel without a notifier: FAILED at once.

``run(stop)`` sends whatever is due, then sleeps until the next notification is due, ``wake()`` is called (the
app calls it right after the service queued something, so a live push goes out at once), or ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.exc import InterfaceError, OperationalError

from alerts.models import ChannelName, DeliveryError, Notifier
from alerts.service import AlertService
from alerts.store import AlertStore, Delivery
from careloop.clock import Clock

log = logging.getLogger(__name__)

#: The longest error text kept with a delivery.
MAX_ERROR = 2000


@dataclass(slots=True, frozen=True)
class ExponentialBackoff:
    """Seconds to wait after the n-th failed attempt: ``base_s``, then ``factor`` times more, at most ``max_s``."""

    base_s: float = 5.0
    factor: float = 2.0
    max_s: float = 600.0

    def __call__(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1 for the first)."""
        return float(min(self.max_s, self.base_s * self.factor ** max(0, attempt - 1)))


class Dispatcher:
    """Delivers the outbox's due notifications over their channels (see the module docstring)."""

    def __init__(
        self,
        service_or_store: AlertService | AlertStore,
        notifiers: Mapping[ChannelName, Notifier],
        clock: Clock,
        *,
        max_attempts: int = 8,
        backoff: Callable[[int], float] = ExponentialBackoff(),
        concurrency: int | Mapping[ChannelName, int] = 8,
        batch_size: int = 200,
        send_timeout_s: float = 60.0,
        lease_s: float | None = None,
        idle_s: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.store = service_or_store.store if isinstance(service_or_store, AlertService) else service_or_store
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.batch_size = batch_size
        self.send_timeout_s = send_timeout_s
        # A claimed notification is not claimed again while its send may still be running.
        self.lease_s = lease_s if lease_s is not None else send_timeout_s + 60.0
        if self.lease_s <= send_timeout_s:
            raise ValueError("lease_s must be longer than send_timeout_s")
        self.idle_s = idle_s
        limits = concurrency if isinstance(concurrency, Mapping) else dict.fromkeys(ChannelName, concurrency)
        self._limits = {channel: max(1, limits.get(channel, 1)) for channel in ChannelName}
        self._semaphores: dict[ChannelName, asyncio.Semaphore] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None

    async def run_once(self) -> int:
        """Send every notification due now and record each outcome; how many were attempted."""
        attempted = 0
        while True:
            now = self.clock.now()
            claimed = await asyncio.to_thread(self.store.claim_due, now, limit=self.batch_size, lease_s=self.lease_s)
            if claimed:
                async with asyncio.TaskGroup() as tasks:
                    for delivery in claimed:
                        tasks.create_task(self._deliver(delivery), name=f"deliver {delivery.notification.channel}")
            attempted += len(claimed)
            if len(claimed) < self.batch_size:
                return attempted

    async def run(self, stop_event: asyncio.Event) -> None:
        """Deliver until ``stop_event`` is set: at once when woken, else when the next notification is due.

        When the database cannot be reached, says so in the log and tries again (1 s, 2 s, ... up to ``idle_s``):
        the notifications wait in the outbox meanwhile, and one that was sent but not recorded is sent again
        after its lease.
        """
        self._loop = asyncio.get_running_loop()
        self._wakeup = wakeup = asyncio.Event()
        outage = 0
        try:
            while not stop_event.is_set():
                wakeup.clear()
                try:
                    await self.run_once()
                    due = await asyncio.to_thread(self.store.next_delivery_at)
                except (OperationalError, InterfaceError) as exc:
                    outage += 1
                    delay = min(self.idle_s, 2.0 ** (outage - 1))
                    log.error("the outbox database is unavailable (%s); trying again in %g s", exc, delay)
                else:
                    outage = 0
                    delay = self.idle_s if due is None else min(self.idle_s, max(0.0, due - self.clock.now()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await _first_of(wakeup, stop_event)
        finally:
            self._loop = None
            self._wakeup = None

    def wake(self) -> None:
        """Look at the outbox now (callable from any thread; a no-op when ``run`` is not running)."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wakeup.set()
        else:
            loop.call_soon_threadsafe(wakeup.set)

    # -- one delivery -------------------------------------------------------------------------------------------------
    async def _deliver(self, delivery: Delivery) -> None:
        notification = delivery.notification
        nid = notification.notification_id
        notifier = self.notifiers.get(notification.channel)
        if notifier is None:
            error = f"no notifier for the {notification.channel.value} channel is configured"
            await asyncio.to_thread(self.store.record_failed, nid, error, self.clock.now())
            return
        retry_after: float | None = None
        async with self._semaphore(notification.channel):
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    receipt = await notifier.send(notification)
            except DeliveryError as exc:
                error, transient, retry_after = exc.detail, exc.transient, exc.retry_after_s
            except TimeoutError:
                error = f"no answer from the {notification.channel.value} channel within {self.send_timeout_s:g} s"
                transient = True
            except Exception as exc:  # a notifier's bug or an unforeseen failure: retried and recorded, never lost
                error, transient = f"{type(exc).__name__}: {exc}", True
            else:
                await asyncio.to_thread(self.store.record_delivered, nid, receipt, self.clock.now())
                return
        error = error[:MAX_ERROR]
        now = self.clock.now()
        if transient and delivery.attempts < self.max_attempts:
            delay = self.backoff(delivery.attempts)
            if retry_after is not None:
                delay = max(delay, retry_after)
            await asyncio.to_thread(self.store.record_retry, nid, error, now + delay, now)
            return
        if transient:
            error = f"{error} (gave up after {delivery.attempts} attempts)"
        await asyncio.to_thread(self.store.record_failed, nid, error, now)

    def _semaphore(self, channel: ChannelName) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(channel)
        if semaphore is None:
            semaphore = self._semaphores[channel] = asyncio.Semaphore(self._limits[channel])
        return semaphore


async def _first_of(*events: asyncio.Event) -> None:
    """Return when any of the events is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        # Not `await waiter` under suppress(CancelledError): a cancellation of this task that arrives meanwhile
        # would be swallowed with the waiter's own, and the dispatcher would never stop. gather() hands the waiters'
        # cancellations back as results and still raises ours.
        await asyncio.gather(*waiters, return_exceptions=True)
