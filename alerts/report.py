"""`careloop report`: how the loop did over a period, per rule: time to acknowledge, time to resolve, false alarms.

Times are measured from the moment an alarm reached staff (its first transition to OPEN: after a fall's cancel
window, not from the impact) to its first acknowledgement, and to its resolution. The false-alarm rate is the share
of resolved alarms whose outcome was "false_alarm"; alarms still open are counted but not in that rate. Reminders
are listed apart: they page nobody. Failed deliveries are counted per channel, since a failed page is a failure of
the loop even when someone else took the alarm.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select

from alerts.models import AlertState, DeliveryStatus, Outcome, Severity
from alerts.store import AlertStore, alerts_table, notifications_table, transitions_table


@dataclass(slots=True)
class RuleReport:
    """One rule's alarms in the period."""

    rule_id: str
    kind: str
    severity: str
    raised: int = 0
    cancelled: int = 0  # "I'm OK" in the window, or a reminder whose condition cleared
    acknowledged: int = 0
    resolved: int = 0
    still_open: int = 0
    false_alarms: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    ack_s: list[float] = field(default_factory=list)
    resolve_s: list[float] = field(default_factory=list)

    @property
    def false_alarm_rate(self) -> float | None:
        """False alarms over resolved alarms (None when none was resolved)."""
        return self.false_alarms / self.resolved if self.resolved else None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""

        def _stats(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"median_s": None, "p90_s": None, "max_s": None}
            ordered = sorted(values)
            return {
                "median_s": round(statistics.median(ordered), 1),
                "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
                "max_s": round(ordered[-1], 1),
            }

        return {
            "rule_id": self.rule_id,
            "kind": self.kind,
            "severity": self.severity,
            "raised": self.raised,
            "cancelled": self.cancelled,
            "acknowledged": self.acknowledged,
            "resolved": self.resolved,
            "still_open": self.still_open,
            "false_alarm_rate": None if self.false_alarm_rate is None else round(self.false_alarm_rate, 3),
            "outcomes": dict(self.outcomes),
            "time_to_acknowledge": _stats(self.ack_s),
            "time_to_resolve": _stats(self.resolve_s),
        }


@dataclass(slots=True)
class Report:
    """Every rule's figures, and the deliveries, for alerts created in [since, until)."""

    since: float
    until: float
    rules: list[RuleReport]
    deliveries: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "since": self.since,
            "until": self.until,
            "rules": [r.as_dict() for r in self.rules],
            "deliveries": self.deliveries,
        }


def build_report(store: AlertStore, since: float, until: float) -> Report:
    """Read the period's alerts, their first OPEN transition and the deliveries (three queries)."""
    a, t, n = alerts_table, transitions_table, notifications_table
    opened = (
        select(t.c.alert_id, func.min(t.c.ts).label("open_ts"))
        .where(t.c.state == AlertState.OPEN.value)
        .group_by(t.c.alert_id)
        .subquery()
    )
    rows_query = (
        select(
            a.c.rule_id,
            a.c.kind,
            a.c.severity,
            a.c.state,
            a.c.outcome,
            a.c.acknowledged_ts,
            a.c.resolved_ts,
            opened.c.open_ts,
        )
        .select_from(a.outerjoin(opened, opened.c.alert_id == a.c.id))
        .where(and_(a.c.created_ts >= since, a.c.created_ts < until))
    )
    deliveries_query = (
        select(n.c.channel, n.c.status, func.count())
        .where(and_(n.c.created_ts >= since, n.c.created_ts < until))
        .group_by(n.c.channel, n.c.status)
    )
    by_rule: dict[tuple[str, str, str], RuleReport] = {}
    deliveries: dict[str, dict[str, int]] = defaultdict(dict)
    with store.engine.connect() as connection:
        for row in connection.execute(rows_query):
            key = (row.rule_id, row.kind, row.severity)
            report = by_rule.get(key)
            if report is None:
                report = by_rule[key] = RuleReport(row.rule_id, row.kind, row.severity)
            report.raised += 1
            state = AlertState(row.state)
            if state is AlertState.CANCELLED:
                report.cancelled += 1
                continue
            if row.acknowledged_ts is not None:
                report.acknowledged += 1
                if row.open_ts is not None:
                    report.ack_s.append(max(0.0, row.acknowledged_ts - row.open_ts))
            if state is AlertState.RESOLVED:
                report.resolved += 1
                report.outcomes[row.outcome or "none"] += 1
                if row.outcome == Outcome.FALSE_ALARM.value:
                    report.false_alarms += 1
                if row.resolved_ts is not None and row.open_ts is not None:
                    report.resolve_s.append(max(0.0, row.resolved_ts - row.open_ts))
            else:
                report.still_open += 1
        for channel, status, count in connection.execute(deliveries_query):
            deliveries[channel][status] = int(count)
    order = {s.value: s.rank for s in Severity}
    rules = sorted(by_rule.values(), key=lambda r: (-order.get(r.severity, 0), r.kind, r.rule_id))
    return Report(since, until, rules, dict(deliveries))


def render_text(report: Report) -> str:
    """The report as a table for a terminal."""

    def _s(values: list[float]) -> str:
        if not values:
            return "-"
        return f"{statistics.median(values):.0f}s"

    lines = [
        f"{'rule':<26} {'kind':<16} {'sev':<8} {'raised':>6} {'cancel':>6} {'open':>5} {'resolved':>8} "
        f"{'false%':>6} {'ack p50':>7} {'resolve p50':>11}"
    ]
    for r in report.rules:
        rate = "-" if r.false_alarm_rate is None else f"{100 * r.false_alarm_rate:.0f}"
        lines.append(
            f"{r.rule_id[:26]:<26} {r.kind[:16]:<16} {r.severity:<8} {r.raised:>6} {r.cancelled:>6} "
            f"{r.still_open:>5} {r.resolved:>8} {rate:>6} {_s(r.ack_s):>7} {_s(r.resolve_s):>11}"
        )
    if not report.rules:
        lines.append("(no alerts in this period)")
    failed = {ch: s.get(DeliveryStatus.FAILED.value, 0) for ch, s in report.deliveries.items()}
    sent = {ch: s.get(DeliveryStatus.DELIVERED.value, 0) for ch, s in report.deliveries.items()}
    lines.append("deliveries: " + (", ".join(f"{ch} {sent[ch]} delivered, {failed[ch]} failed" for ch in sorted(sent))
                                   or "none"))  # fmt: skip
    return "\n".join(lines)
