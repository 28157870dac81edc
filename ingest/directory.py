"""Who wears which device: a cached device -> (home, resident) map from the registry, for SIM bracelets' topics.

A bracelet with its own SIM publishes to `home/<home>/device/<device>/...`; its points are tagged with the resident
wearing it, which only the registry knows. The whole map is loaded at start and reloaded every `refresh_s`; a
device missing from it (registered since the last reload) is looked up on its own with `device_by_code`, and a
device the registry does not know is remembered as unknown for `negative_ttl_s`, so unknown devices cost one query
each per interval, not one per message. Every query runs in an executor, never on the event loop.

Used only when a registry is configured; the service then rejects messages from devices the registry does not know
(`unknown_device`), or that it knows in another home than the topic says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import aliased

from careloop.clock import Clock, SystemClock
from careloop.registry.models import Device, Home, Resident
from careloop.registry.store import Registry, device_by_code


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """What the registry says about one device: its home and its wearer (None for home sensors and spare devices)."""

    home: str
    resident: str | None


class ResidentDirectory:
    """The registry's devices, cached; `get()` is a dict look-up, `resolve()` and `refresh()` query the database."""

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Clock | None = None,
        refresh_s: float = 60.0,
        negative_ttl_s: float = 10.0,
    ) -> None:
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.refresh_s = refresh_s
        self.negative_ttl_s = negative_ttl_s
        self._known: dict[str, DeviceEntry] = {}
        self._unknown_until: dict[str, float] = {}
        self.loaded_at: float | None = None

    def get(self, device: str) -> DeviceEntry | None:
        """The cached entry of `device`, or None when it is not cached (call `resolve()`, or see `is_unknown()`)."""
        return self._known.get(device)

    def is_unknown(self, device: str) -> bool:
        """Whether the registry said recently that it does not know `device`."""
        until = self._unknown_until.get(device)
        return until is not None and self.clock.now() < until

    @property
    def size(self) -> int:
        """Devices cached."""
        return len(self._known)

    async def refresh(self) -> None:
        """Reload every device from the registry (in an executor)."""
        known = await asyncio.get_running_loop().run_in_executor(None, self._load_all)
        self._known = known
        self._unknown_until.clear()
        self.loaded_at = self.clock.now()

    def _load_all(self) -> dict[str, DeviceEntry]:
        wearer = aliased(Resident)
        statement = select(Device.code, Home.code, wearer.code).join(Device.home).outerjoin(wearer, Device.resident)
        with self.registry.session() as session:
            return {code: DeviceEntry(home, resident) for code, home, resident in session.execute(statement)}

    async def resolve(self, devices: Iterable[str]) -> None:
        """Look up each device that is neither cached nor recently found unknown (in an executor)."""
        wanted = sorted({d for d in devices if d not in self._known and not self.is_unknown(d)})
        if not wanted:
            return
        found = await asyncio.get_running_loop().run_in_executor(None, self._load_some, wanted)
        now = self.clock.now()
        for device in wanted:
            entry = found.get(device)
            if entry is None:
                self._unknown_until[device] = now + self.negative_ttl_s
            else:
                self._known[device] = entry
                self._unknown_until.pop(device, None)

    def _load_some(self, devices: list[str]) -> dict[str, DeviceEntry]:
        found: dict[str, DeviceEntry] = {}
        with self.registry.session() as session:
            for code in devices:
                device = device_by_code(session, code)
                if device is not None:
                    found[code] = DeviceEntry(device.home.code, device.resident.code if device.resident else None)
        return found
