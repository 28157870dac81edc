"""The MQTT topic tree: the one place that builds and parses careloop topics.

Every topic is `<root>/v1/...`; see docs/protocol.md for the table. Nobody formats a topic string by hand:
build one with `TopicTree.build(...)` (or the named helpers) and parse one with `TopicTree.parse(...)`.

Identifiers that appear in topics (home, device and component ids) are restricted to letters, digits, `_` and
`-` (1 to 64 characters), so they can never contain the MQTT separators or wildcards (`/`, `+`, `#`), and so a
broker ACL pattern such as `careloop/v1/home/+/device/%u/#` can bind a device to its own topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

VERSION = "v1"
DEFAULT_ROOT = "careloop"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)


class TopicError(ValueError):
    """A topic string that is not part of the careloop tree, or an identifier that cannot go into one."""


class TopicKind(StrEnum):
    """Every kind of topic in the tree. The value is the template below the `<root>/v1/` prefix."""

    # device -> edge (home broker); SIM bracelets publish the same topics straight to the central broker
    DEVICE_VITALS = "home/{home_id}/device/{device_id}/vitals"
    DEVICE_ACCEL = "home/{home_id}/device/{device_id}/accel"
    DEVICE_SOS = "home/{home_id}/device/{device_id}/sos"
    DEVICE_OK = "home/{home_id}/device/{device_id}/ok"
    DEVICE_GPS = "home/{home_id}/device/{device_id}/gps"
    DEVICE_BATTERY = "home/{home_id}/device/{device_id}/battery"
    DEVICE_WEAR = "home/{home_id}/device/{device_id}/wear"
    DEVICE_MOTION = "home/{home_id}/device/{device_id}/motion"
    DEVICE_THERMAL = "home/{home_id}/device/{device_id}/thermal"
    DEVICE_OCCUPANCY = "home/{home_id}/device/{device_id}/occupancy"
    DEVICE_AVAILABILITY = "home/{home_id}/device/{device_id}/availability"
    # central -> device
    DEVICE_COMMAND = "home/{home_id}/device/{device_id}/command"
    # edge -> central
    EDGE_VITALS = "home/{home_id}/edge/vitals"
    EDGE_EVENTS = "home/{home_id}/edge/events"
    EDGE_DEVICE_HEALTH = "home/{home_id}/edge/health"
    EDGE_HEARTBEAT = "home/{home_id}/edge/heartbeat"
    EDGE_AVAILABILITY = "home/{home_id}/edge/availability"
    # central -> dashboards
    ALERT_STATE = "home/{home_id}/alert"
    # any component -> operators
    DEAD_LETTER = "deadletter/{component}"

    @property
    def is_device_topic(self) -> bool:
        """True for the per-device topics (`home/<home>/device/<device>/<stream>`)."""
        return "{device_id}" in self.value


# Last segment -> kind, for the two families that share a prefix; parse() uses these instead of regexes.
_DEVICE_STREAMS: dict[str, TopicKind] = {k.value.rsplit("/", 1)[1]: k for k in TopicKind if k.is_device_topic}
_EDGE_STREAMS: dict[str, TopicKind] = {
    k.value.rsplit("/", 1)[1]: k for k in TopicKind if k.value.startswith("home/{home_id}/edge/")
}


def check_id(value: str, what: str = "identifier") -> str:
    """Return `value` if it may appear as one topic level, else raise TopicError saying why."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise TopicError(
            f"{what} {value!r} is not valid: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: its kind and the identifiers it carries."""

    kind: TopicKind
    home_id: str | None = None
    device_id: str | None = None
    component: str | None = None


class TopicTree:
    """Builds and parses the topics of one deployment (`root` lets tests and tenants share a broker)."""

    __slots__ = ("_prefix", "_prefix_len", "root")

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = check_id(root, "topic root")
        self._prefix = f"{root}/{VERSION}/"
        self._prefix_len = len(self._prefix)

    # -- building -------------------------------------------------------------------------------------------
    def build(
        self,
        kind: TopicKind,
        *,
        home_id: str | None = None,
        device_id: str | None = None,
        component: str | None = None,
    ) -> str:
        """The topic of `kind` for the given identifiers; raises TopicError for a missing or invalid one."""
        values: dict[str, str] = {}
        for name, value in (("home_id", home_id), ("device_id", device_id), ("component", component)):
            placeholder = "{" + name + "}"
            if placeholder in kind.value:
                if value is None:
                    raise TopicError(f"{kind.name} topics need {name}")
                values[name] = check_id(value, name)
            elif value is not None:
                raise TopicError(f"{kind.name} topics have no {name}")
        return self._prefix + kind.value.format(**values)

    def device(self, kind: TopicKind, home_id: str, device_id: str) -> str:
        """A per-device topic."""
        return self.build(kind, home_id=home_id, device_id=device_id)

    def edge(self, kind: TopicKind, home_id: str) -> str:
        """An edge -> central topic of one home."""
        return self.build(kind, home_id=home_id)

    def alert_state(self, home_id: str) -> str:
        """Where alert state changes for a home's residents are published."""
        return self.build(TopicKind.ALERT_STATE, home_id=home_id)

    def dead_letter(self, component: str) -> str:
        """Where `component` publishes the messages it rejected."""
        return self.build(TopicKind.DEAD_LETTER, component=component)

    def filter(self, kind: TopicKind, *, home_id: str = "+", device_id: str = "+", component: str = "+") -> str:
        """A subscription filter for `kind`; an identifier left out (or given as "+") matches every one."""
        values = {"home_id": home_id, "device_id": device_id, "component": component}
        for name, value in values.items():
            if value != "+":
                check_id(value, name)
        return self._prefix + kind.value.format(**values)

    def home_devices_filter(self, home_id: str = "+") -> str:
        """Every per-device topic of a home (all streams of all devices, commands included)."""
        if home_id != "+":
            check_id(home_id, "home_id")
        return f"{self._prefix}home/{home_id}/device/+/+"

    def edge_uplink_filter(self, home_id: str = "+") -> str:
        """Every edge -> central topic of a home (or of all homes)."""
        if home_id != "+":
            check_id(home_id, "home_id")
        return f"{self._prefix}home/{home_id}/edge/+"

    @staticmethod
    def shared(group: str, topic_filter: str) -> str:
        """An MQTT 5 shared subscription: the broker splits messages matching the filter across the group."""
        return f"$share/{check_id(group, 'share group')}/{topic_filter}"

    # -- parsing --------------------------------------------------------------------------------------------
    def parse(self, topic: str) -> Topic:
        """Parse a concrete topic (no wildcards) of this tree; raises TopicError naming what is wrong."""
        if not topic.startswith(self._prefix):
            raise TopicError(f"topic {topic!r} is not under {self._prefix!r}")
        parts = topic[self._prefix_len :].split("/")
        n = len(parts)
        head = parts[0]
        if head == "home" and n >= 3:
            home_id = parts[1]
            if not _ID_RE.fullmatch(home_id):
                raise TopicError(f"topic {topic!r}: home id {home_id!r} is not valid")
            if n == 5 and parts[2] == "device":
                device_id = parts[3]
                kind = _DEVICE_STREAMS.get(parts[4])
                if kind is None:
                    raise TopicError(f"topic {topic!r}: unknown device stream {parts[4]!r}")
                if not _ID_RE.fullmatch(device_id):
                    raise TopicError(f"topic {topic!r}: device id {device_id!r} is not valid")
                return Topic(kind, home_id=home_id, device_id=device_id)
            if n == 4 and parts[2] == "edge":
                kind = _EDGE_STREAMS.get(parts[3])
                if kind is None:
                    raise TopicError(f"topic {topic!r}: unknown edge stream {parts[3]!r}")
                return Topic(kind, home_id=home_id)
            if n == 3 and parts[2] == "alert":
                return Topic(TopicKind.ALERT_STATE, home_id=home_id)
        elif head == "deadletter" and n == 2:
            if not _ID_RE.fullmatch(parts[1]):
                raise TopicError(f"topic {topic!r}: component {parts[1]!r} is not valid")
            return Topic(TopicKind.DEAD_LETTER, component=parts[1])
        raise TopicError(f"topic {topic!r} does not match any careloop topic")

    def build_parsed(self, t: Topic) -> str:
        """The inverse of parse()."""
        return self.build(t.kind, home_id=t.home_id, device_id=t.device_id, component=t.component)
