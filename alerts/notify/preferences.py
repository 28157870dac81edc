"""When a notification may go out, given the recipient's preferences: quiet hours hold reminders, never alarms."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from alerts.models import QuietHours, Recipient, Severity


def _parse_hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def quiet_until(quiet: QuietHours, now: float) -> float | None:
    """The end of the quiet window that ``now`` falls in, as UNIX seconds; None when ``now`` is not quiet."""
    zone = ZoneInfo(quiet.timezone)
    local = datetime.fromtimestamp(now, zone)
    start, end = _parse_hhmm(quiet.start), _parse_hhmm(quiet.end)
    if start == end:
        return None
    t = local.time()
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:  # wraps midnight, e.g. 22:00-07:00
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, end, zone).timestamp()


def wants(recipient: Recipient, severity: Severity) -> bool:
    """Whether this recipient is told about alerts of this severity at all."""
    return severity.rank >= recipient.min_severity.rank


def earliest_delivery(recipient: Recipient, severity: Severity, now: float) -> float:
    """When a notification of this severity may be sent to this recipient: now, or the end of their quiet hours.

    Alarms break through quiet hours; reminders wait for them to end.
    """
    if severity.is_alarm or recipient.quiet_hours is None:
        return now
    until = quiet_until(recipient.quiet_hours, now)
    return now if until is None else until
