"""A notification as a person reads it: a subject line, a plain-text body and an HTML body, from one set of sections.

What is rendered: resident (name and id), kind, severity, state, value, the time in the recipient's zone, the link
to the alert in the web console, and the alarm context a responder needs (issue 6, point 6). Every text that
comes from data is HTML-escaped in the HTML part; a link is only made clickable when it is http(s).

The alarm context is ``Notification.context``, a mapping built by the alerts service. These keys are rendered,
in this order, when present (all optional; anything else is listed after them under its own name):

=================  ==============================================================================================
``resident_name``  the resident's name, for the subject and heading (``resident_id`` is always shown beside it)
``timezone``       the home's IANA zone; times are shown in the recipient's zone (their quiet hours' zone), else
                   in this one, else in UTC, always with the zone's abbreviation
``value``          the latest value of the condition (falls back to ``payload["value"]``), with ``unit``
``conditions``     a list of texts (e.g. "atrial fibrillation")
``medications``    a list of texts, or of mappings with ``name`` first and any other fields (dose, schedule)
``allergies``      a list of texts
``vitals``         the last minutes of readings, a list of mappings with ``ts`` and any of ``hr_bpm``,
                   ``spo2_pct``, ``skin_temp_c``, ``bp_systolic_mmhg``, ``bp_diastolic_mmhg``,
                   ``resp_rate_bpm``: shown as the latest value and the range over the window
``location``       a text, or a mapping with ``room``, ``lat``, ``lon``, ``ts``, ``source``
``address``        a text, or a list of lines
``contacts``       a list of texts, or of mappings with ``name``, ``relation`` or ``role``, ``phone``, ``email``
=================  ==============================================================================================

Rendering never raises on odd context values (a missed page is worse than an ugly one): unknown shapes are
shown as text, an unknown time zone falls back to UTC.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alerts.models import AlertState, Notification

#: Context keys rendered as their own sections, in this order; ``resident_name``, ``timezone``, ``value`` and
#: ``unit`` are shown in the heading facts instead.
CONTEXT_SECTIONS: tuple[tuple[str, str], ...] = (
    ("conditions", "Conditions"),
    ("medications", "Medications"),
    ("allergies", "Allergies"),
    ("vitals", "Last vitals"),
    ("location", "Last known location"),
    ("address", "Home address"),
    ("contacts", "Key contacts"),
)
_HEADING_KEYS = frozenset({"resident_name", "timezone", "value", "unit"})

_KIND_LABELS = {
    "fall": "Fall",
    "sos": "SOS",
    "inactivity": "Long inactivity",
    "bed_exit": "Bed exit",
    "night_wandering": "Night wandering",
    "geofence_exit": "Left the safe zone",
    "device_offline": "Device offline",
    "battery_low": "Battery low",
    "not_worn": "Bracelet not worn",
    "no_data": "No data",
    "hr_high": "Heart rate high",
    "hr_low": "Heart rate low",
    "spo2_low": "Oxygen saturation low",
    "news2": "NEWS2 score",
}

_STATE_LABELS = {
    AlertState.PENDING: "pending (waiting for the resident's \"I'm OK\")",
    AlertState.OPEN: "open (nobody has taken it yet)",
    AlertState.ACKNOWLEDGED: "acknowledged",
    AlertState.IN_HANDLING: "in handling",
    AlertState.RESOLVED: "resolved",
    AlertState.CANCELLED: "cancelled",
}

# vitals fields: (key, label, unit)
_VITALS = (
    ("hr_bpm", "Heart rate", "bpm"),
    ("spo2_pct", "SpO2", "%"),
    ("resp_rate_bpm", "Respiration", "/min"),
    ("skin_temp_c", "Skin temperature", "°C"),
)
_BP = ("bp_systolic_mmhg", "bp_diastolic_mmhg")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(slots=True, frozen=True)
class RenderedMessage:
    """One notification rendered for people: an e-mail's subject and its two parts."""

    subject: str
    text: str
    html: str


@dataclass(slots=True, frozen=True)
class _Section:
    label: str
    lines: tuple[str, ...]


def kind_label(kind: str) -> str:
    """A person's name for an alert kind ("hr_high" -> "Heart rate high"); unknown kinds are de-underscored."""
    label = _KIND_LABELS.get(kind)
    if label is not None:
        return label
    words = kind.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else kind


def one_line(text: str) -> str:
    """`text` with control characters (newlines included) and runs of spaces collapsed: safe in a header."""
    return " ".join(_CONTROL.sub(" ", text).split())


def resident_label(notification: Notification) -> str:
    """ "Anna Berg (r-0001)", or just the id when the context has no name."""
    name = notification.context.get("resident_name")
    if isinstance(name, str) and name.strip():
        return f"{one_line(name)} ({notification.resident_id})"
    return notification.resident_id


def subject_line(notification: Notification) -> str:
    """ "[HIGH] Fall: Anna Berg (r-0001)", with the state appended once it is no longer open or pending."""
    subject = f"[{notification.severity.value.upper()}] {kind_label(notification.kind)}: {resident_label(notification)}"
    if notification.state not in (AlertState.OPEN, AlertState.PENDING):
        subject += f" - {notification.state.value.replace('_', ' ')}"
    return one_line(subject)


def display_zone(notification: Notification) -> str:
    """The zone times are shown in: the recipient's (their quiet hours' zone), else the home's, else UTC."""
    quiet = notification.recipient.quiet_hours
    candidates = [quiet.timezone if quiet is not None else None, notification.context.get("timezone")]
    for zone in candidates:
        if isinstance(zone, str) and _zone(zone) is not None:
            return zone
    return "UTC"


def local_time(ts: float, zone: str, *, with_date: bool = True) -> str:
    """A UNIX time as "2026-09-21 14:05:31 CEST" in `zone` (UTC when the zone is unknown)."""
    tz = _zone(zone) or UTC
    try:
        moment = datetime.fromtimestamp(ts, tz)
    except (OverflowError, OSError, ValueError):
        return str(ts)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S %Z")


def alert_link(notification: Notification, console_url: str | None = None) -> str | None:
    """The alert in the web console: the notification's own link, else the console's address, else None."""
    return notification.link or console_url


def render(notification: Notification, *, console_url: str | None = None) -> RenderedMessage:
    """Subject, plain text and HTML of one notification (never raises on odd context values)."""
    zone = display_zone(notification)
    facts = _facts(notification, zone)
    sections = _context_sections(notification.context, zone)
    link = alert_link(notification, console_url)
    subject = subject_line(notification)
    return RenderedMessage(
        subject=subject,
        text=_text(notification, subject, facts, sections, link),
        html=_html(notification, subject, facts, sections, link),
    )


# -- building the content --------------------------------------------------------------------------------------
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _facts(notification: Notification, zone: str) -> list[tuple[str, str]]:
    facts = [
        ("Resident", resident_label(notification)),
        ("Alert", kind_label(notification.kind)),
        ("Severity", notification.severity.value.upper()),
        ("State", _STATE_LABELS.get(notification.state, notification.state.value)),
    ]
    value = notification.context.get("value", notification.payload.get("value"))
    if value is not None:
        unit = notification.context.get("unit")
        shown = _scalar(value, zone)
        facts.append(("Value", f"{shown} {unit}" if isinstance(unit, str) and unit else shown))
    facts.append(("Time", local_time(notification.created_ts, zone)))
    if notification.escalation_level > 0:
        facts.append(("Escalation level", str(notification.escalation_level)))
    return facts


def _context_sections(context: Mapping[str, object], zone: str) -> list[_Section]:
    sections: list[_Section] = []
    for key, label in CONTEXT_SECTIONS:
        value = context.get(key)
        if value is None or value == "" or (_is_list(value) and not value):
            continue
        if key == "vitals":
            lines = _vitals_lines(value, zone)
        elif key == "location":
            lines = [_location(value, zone)]
        elif key == "address" and _is_list(value):
            lines = [", ".join(_scalar(v, zone) for v in value)]
        else:
            lines = _lines(value, zone)
        sections.append(_Section(label, tuple(lines)))
    known = {key for key, _ in CONTEXT_SECTIONS} | _HEADING_KEYS
    for key, value in context.items():
        if key not in known and value is not None:
            sections.append(_Section(kind_label(key), tuple(_lines(value, zone))))
    return sections


def _is_list(value: object) -> TypeGuard[Sequence[object]]:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _scalar(value: object, zone: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, Mapping):
        return _mapping(value, zone)
    if _is_list(value):
        return ", ".join(_scalar(v, zone) for v in value)
    return one_line(str(value))


def _mapping(value: Mapping[object, object], zone: str) -> str:
    """A person-like or item-like mapping: its name first, then the other values ("Eva Berg (daughter), +46...")."""
    name = value.get("name")
    relation = value.get("relation") or value.get("role")
    head = _scalar(name, zone) if name is not None else ""
    if relation is not None:
        head = f"{head} ({_scalar(relation, zone)})" if head else _scalar(relation, zone)
    rest = []
    for key, item in value.items():
        if key in ("name", "relation", "role") or item is None or item == "":
            continue
        shown = local_time(float(item), zone) if key == "ts" and isinstance(item, int | float) else _scalar(item, zone)
        rest.append(shown if head or key in ("phone", "email") else f"{key}: {shown}")
    if head and rest:
        return f"{head}: {', '.join(rest)}"
    return head or ", ".join(rest)


def _lines(value: object, zone: str) -> list[str]:
    if _is_list(value):
        return [_scalar(item, zone) for item in value]
    return [_scalar(value, zone)]


def _location(value: object, zone: str) -> str:
    if not isinstance(value, Mapping):
        return _scalar(value, zone)
    parts = []
    room = value.get("room")
    if room is not None:
        parts.append(f"room: {_scalar(room, zone)}")
    lat, lon = value.get("lat"), value.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        parts.append(f"position {lat:.5f}, {lon:.5f}")
    for key, item in value.items():
        if key not in ("room", "lat", "lon", "ts") and item is not None:
            parts.append(f"{key}: {_scalar(item, zone)}")
    ts = value.get("ts")
    if isinstance(ts, int | float):
        parts.append(f"as of {local_time(float(ts), zone)}")
    return ", ".join(parts) or "unknown"


def _vitals_lines(value: object, zone: str) -> list[str]:
    """The latest reading of each parameter and its range over the window: a table of 60 rows helps nobody."""
    if not _is_list(value):
        return _lines(value, zone)
    rows = [row for row in value if isinstance(row, Mapping)]
    if not rows:
        return _lines(value, zone)
    rows.sort(key=lambda row: _float(row.get("ts")) or 0.0)
    times = [t for t in (_float(row.get("ts")) for row in rows) if t is not None]
    lines = []
    if times:
        span = f"{local_time(times[0], zone, with_date=False)} - {local_time(times[-1], zone, with_date=False)}"
        lines.append(f"{len(rows)} readings, {span}")
    for key, label, unit in _VITALS:
        series = [v for v in (_float(row.get(key)) for row in rows) if v is not None]
        if series:
            lines.append(f"{label}: {_number(series[-1])} {unit}{_range(series, unit)}")
    pairs = [(_float(row.get(_BP[0])), _float(row.get(_BP[1]))) for row in rows]
    bp = [(s, d) for s, d in pairs if s is not None and d is not None]
    if bp:
        latest = f"{_number(bp[-1][0])}/{_number(bp[-1][1])} mmHg"
        systolic = [s for s, _ in bp]
        lines.append(f"Blood pressure: {latest}{_range(systolic, 'mmHg systolic')}")
    return lines


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _range(series: Iterable[float], unit: str) -> str:
    values = list(series)
    if len(values) < 2 or min(values) == max(values):
        return ""
    return f" (range {_number(min(values))}-{_number(max(values))} {unit})"


# -- the two formats -------------------------------------------------------------------------------------------
def _text(
    notification: Notification,
    subject: str,
    facts: list[tuple[str, str]],
    sections: list[_Section],
    link: str | None,
) -> str:
    out = [subject, ""]
    if notification.title and notification.title != subject:
        out.append(notification.title)
    if notification.body:
        out.append(notification.body)
    if out[-1] != "":
        out.append("")
    width = max(len(label) for label, _ in facts)
    out += [f"{label + ':':<{width + 1}} {value}" for label, value in facts]
    if link:
        out += ["", f"Open the alert: {link}"]
    for section in sections:
        out += ["", f"{section.label}:"]
        out += [f"  - {line}" for line in section.lines]
    out += ["", f"careloop notification {notification.notification_id} (alert {notification.alert_id})", ""]
    return "\n".join(out)


def _safe_href(link: str) -> str | None:
    return link if link.lower().startswith(("https://", "http://")) else None


def _html(
    notification: Notification,
    subject: str,
    facts: list[tuple[str, str]],
    sections: list[_Section],
    link: str | None,
) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(subject)}</title></head>",
        '<body style="font-family: sans-serif; line-height: 1.4">',
        f"<h2>{e(subject)}</h2>",
    ]
    if notification.title and notification.title != subject:
        out.append(f"<p><strong>{e(notification.title)}</strong></p>")
    if notification.body:
        out.append("<p>" + "<br>".join(e(line) for line in notification.body.splitlines()) + "</p>")
    out.append('<table cellpadding="4" style="border-collapse: collapse">')
    out += [f'<tr><th align="left">{e(label)}</th><td>{e(value)}</td></tr>' for label, value in facts]
    out.append("</table>")
    if link:
        href = _safe_href(link)
        if href is not None:
            out.append(f'<p><a href="{e(href, quote=True)}">Open the alert</a>: {e(link)}</p>')
        else:
            out.append(f"<p>Open the alert: {e(link)}</p>")
    for section in sections:
        out.append(f"<h3>{e(section.label)}</h3>")
        out.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in section.lines) + "</ul>")
    out.append(
        f'<p style="color: #666; font-size: smaller">careloop notification {e(notification.notification_id)} '
        f"(alert {e(notification.alert_id)})</p>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
