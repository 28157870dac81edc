"""Ground truth: what happened in a simulation run and what a correct system should raise, as JSON lines.

Every run writes one `GroundTruth` record per happening (a fall with its impact time, a button press, a bracelet
taken off, a lost connection, a dead battery) and per expectation of the scenario. Tests and benchmarks score
the edge's events and the alerts against it: `edge_events` / `alerts` must appear within `within_s` of `ts`,
`no_edge_events` / `no_alerts` must not appear in that window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from simulators.scenario import Expectation, ScenarioFile

Happening = Literal["fall", "sos", "ok", "worn_off", "worn_on", "connection_lost", "reconnect", "battery_dead"]


class GroundTruth(BaseModel):
    """One line of a ground-truth file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    seed: int
    ts: float
    local_time: str
    what: str
    kind: Literal["happened", "expect"]
    home_id: str
    resident_id: str
    device_id: str | None = None
    edge_events: tuple[str, ...] = ()
    no_edge_events: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()
    no_alerts: tuple[str, ...] = ()
    severity: str | None = None
    within_s: float | None = None
    detail: dict[str, Any] = {}


def happened(
    scenario: ScenarioFile, seed: int, ts: float, what: Happening, device_id: str | None, **detail: Any
) -> GroundTruth:
    """A record of something that happened during the run."""
    return GroundTruth(
        scenario=scenario.name,
        seed=seed,
        ts=round(ts, 3),
        local_time=_local(ts, scenario.timezone),
        what=what,
        kind="happened",
        home_id=scenario.home_id,
        resident_id=scenario.resident_id,
        device_id=device_id,
        detail=detail,
    )


def expectations(scenario: ScenarioFile, seed: int, start: float, facts: Sequence[GroundTruth]) -> list[GroundTruth]:
    """The scenario's expectations, timed: `at` offsets from the start, or `on` the first matching happening."""
    records = []
    for expect in scenario.expect:
        ts = _when(expect, start, facts)
        records.append(
            GroundTruth(
                scenario=scenario.name,
                seed=seed,
                ts=round(ts, 3),
                local_time=_local(ts, scenario.timezone),
                what=expect.what,
                kind="expect",
                home_id=scenario.home_id,
                resident_id=scenario.resident_id,
                device_id=scenario.bracelet_id if scenario.bracelet else None,
                edge_events=expect.edge_events,
                no_edge_events=expect.no_edge_events,
                alerts=expect.alerts,
                no_alerts=expect.no_alerts,
                severity=expect.severity,
                within_s=expect.within_s,
                detail={"note": expect.note} if expect.note else {},
            )
        )
    return records


def _when(expect: Expectation, start: float, facts: Sequence[GroundTruth]) -> float:
    if expect.at is not None:
        return start + expect.at
    for fact in facts:
        if fact.what == expect.on:
            return fact.ts
    raise ValueError(f"expectation {expect.what!r} is `on` {expect.on!r}, which never happens in the scenario")


def _local(ts: float, timezone: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(timezone)).isoformat(timespec="milliseconds")


def write_jsonl(records: Iterable[GroundTruth], path: Path) -> None:
    """Write records as JSON lines, in time order."""
    with path.open("w", encoding="utf-8") as handle:
        for record in sorted(records, key=lambda r: r.ts):
            handle.write(record.model_dump_json() + "\n")


def read_jsonl(path: Path) -> list[GroundTruth]:
    """Read a ground-truth file."""
    with path.open(encoding="utf-8") as handle:
        return [GroundTruth.model_validate(json.loads(line)) for line in handle if line.strip()]
