"""Device health: last seen, online / offline, battery, worn, per device of one home.

- Online until the device's retained `Availability(online=False)` arrives (its MQTT last will, published by the
  broker when the link drops without a goodbye: `offline_reason="last_will"`), or, for a device that reports on
  a schedule, until nothing came from it for `offline_after_s` (`"no_data"`). Any message brings it back.
  PIR sensors report only when something moves (an unused room stays silent for days), so silence never makes a
  PIR offline; only its last will does.
- Low battery below `low_battery_pct`, unless it is charging (the reminder would be to charge it).
- Worn / not worn from the wearable's `WearStatus`.

A `DeviceHealth` goes out when any of online, its reason, low battery or worn changes (a device's first message
is such a change: from unknown to online), and every `report_every_s` per device otherwise (so upstream sees
last-seen and battery levels move, and can tell a silent edge from a quiet home). The periodic and no-data
checks run at most every `scan_every_s` (thousands of homes tick every second; a device list is not walked
every time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from careloop import messages as m
from edge.models import DeviceKind, HomeConfig

#: Kinds that report on a schedule (vitals or battery every few minutes, frames every few seconds, the bed and
#: chair mats refresh their state): silence from them means they are gone.
SCHEDULED: frozenset[DeviceKind] = frozenset({"bracelet", "belt", "thermopile", "bed_sensor", "chair_sensor"})
OfflineReason = Literal["last_will", "no_data", "disconnected"]


@dataclass(slots=True)
class _Device:
    kind: DeviceKind
    online: bool | None = None  # None: not heard from yet
    reason: OfflineReason | None = None
    last_seen: float | None = None
    battery_pct: float | None = None
    charging: bool = False
    low: bool = False  # below the limit (charging or not)
    worn: bool | None = None
    reported: float = -math.inf  # when its last DeviceHealth went out

    @property
    def low_battery(self) -> bool:
        return self.low and not self.charging

    def state(self) -> tuple[bool | None, OfflineReason | None, bool, bool | None]:
        return self.online, self.reason, self.low_battery, self.worn


class DeviceHealthTracker:
    """Health of the devices of one home; every method returns the `DeviceHealth` items to send now."""

    def __init__(self, config: HomeConfig, *, report_every_s: float = 300.0, scan_every_s: float = 10.0) -> None:
        self.offline_after_s = config.offline_after_s
        self.low_battery_pct = config.low_battery_pct
        self.report_every_s = report_every_s
        self.scan_every_s = scan_every_s
        self._devices: dict[str, _Device] = {d.device_id: _Device(d.kind) for d in config.devices}
        self._next_scan = -math.inf

    def add(self, device_id: str, kind: DeviceKind) -> None:
        """Track a device the configuration did not list (adopted by the monitor)."""
        self._devices.setdefault(device_id, _Device(kind))

    def seen(self, device_id: str, now: float) -> list[m.DeviceHealth]:
        """A message from the device itself arrived at `now` (not its availability: the broker publishes the last
        will, so it says nothing about when the device was last heard from)."""
        device = self._devices.get(device_id)
        if device is None:
            return []
        if device.online and device.last_seen is not None:  # the usual case, on every message: keep it cheap
            device.last_seen = max(device.last_seen, now)
            return []
        before = device.state()
        device.last_seen = now if device.last_seen is None else max(device.last_seen, now)
        device.online, device.reason = True, None
        return self._report(device_id, device, now) if device.state() != before else []

    def availability(self, device_id: str, message: m.Availability, now: float) -> list[m.DeviceHealth]:
        """The device's retained online / offline status (offline: its last will)."""
        device = self._devices.get(device_id)
        if device is None:
            return []
        before = device.state()
        device.online = message.online
        device.reason = None if message.online else "last_will"
        return self._report(device_id, device, now) if device.state() != before else []

    def battery(self, device_id: str, message: m.BatteryStatus, now: float) -> list[m.DeviceHealth]:
        """A battery report."""
        device = self._devices.get(device_id)
        if device is None:
            return []
        before = device.state()
        device.battery_pct, device.charging = message.level_pct, message.charging
        device.low = message.level_pct < self.low_battery_pct
        return self._report(device_id, device, now) if device.state() != before else []

    def wear(self, device_id: str, message: m.WearStatus, now: float) -> list[m.DeviceHealth]:
        """A wear report from a wearable."""
        device = self._devices.get(device_id)
        if device is None:
            return []
        before = device.state()
        device.worn = message.worn
        return self._report(device_id, device, now) if device.state() != before else []

    def worn(self, device_id: str) -> bool | None:
        """The last wear status of the device (None: unknown)."""
        device = self._devices.get(device_id)
        return None if device is None else device.worn

    def online(self, device_id: str) -> bool | None:
        """Whether the device is online (None: not heard from yet)."""
        device = self._devices.get(device_id)
        return None if device is None else device.online

    def tick(self, now: float) -> list[m.DeviceHealth]:
        """Mark silent scheduled devices offline and send the periodic reports (at most every `scan_every_s`)."""
        if now < self._next_scan:
            return []
        self._next_scan = now + self.scan_every_s
        out: list[m.DeviceHealth] = []
        for device_id, device in self._devices.items():
            if device.last_seen is None:
                continue  # never heard from: nothing to say yet (a configured device that never came is the
                # registry's question, and a PIR in an unused room may legitimately be silent)
            if device.kind in SCHEDULED and device.online and now - device.last_seen >= self.offline_after_s:
                device.online, device.reason = False, "no_data"
                out += self._report(device_id, device, now)
            elif now - device.reported >= self.report_every_s:
                out += self._report(device_id, device, now)
        return out

    def _report(self, device_id: str, device: _Device, now: float) -> list[m.DeviceHealth]:
        device.reported = now
        return [
            m.DeviceHealth(
                device_id=device_id,
                ts=now,
                online=bool(device.online),
                last_seen_ts=device.last_seen,
                battery_pct=device.battery_pct,
                low_battery=device.low_battery,
                worn=device.worn,
                offline_reason=device.reason,
            )
        ]
