"""AlertService.handle_signal() per SOS, against one bare write transaction on the same engine, in one run.

The alerts service runs every signal through one database thread, so the cost of one call bounds an alarm storm
(10,000 bracelets offline at once) and adds to every SOS's latency. Three cases, each on a fresh database (a
SQLite file unless ``--url`` names another, e.g. a PostgreSQL database), each SOS for a resident who has no open
alert, and the outbox claimed after every signal as the dispatcher would:

1. baseline: one transaction inserting one row (a handled-signal row) through the alert store's engine, the
   database's floor for a call that must commit;
2. unreachable: a registry with no staff and no family, so the alarm walks every escalation level at once
   (4 levels: 4 transitions, 4 audit pairs, 4 console pushes, the timers);
3. reachable: a home with grid staff, a nurse and a doctor on shift, two family members, a bracelet and 10
   minutes of vitals in the alarm context: level 0 is paged (e-mails, an SMS, the console).

Prints per case the calls per second, ms per call (wall and this process's CPU), SQL statements per call, and
the ratio to the baseline. Best of ``--rounds`` rounds.

Run: `.venv/bin/python bench/alert_service.py [--signals 300] [--rounds 3] [--url URL] [--json]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from sqlalchemy import Engine, event, insert

from alerts.context import ContextBook
from alerts.directory import ResidentBook, load_snapshot
from alerts.escalation import EscalationPolicy
from alerts.models import Severity, Signal, SignalAction, VitalsObservation
from alerts.roster import RegistryDirectory, Shift
from alerts.service import AlertService
from alerts.store import AlertStore, open_alert_store, signals_table
from careloop.clock import ManualClock
from careloop.registry.models import (
    Device,
    DeviceKind,
    FamilyMember,
    Home,
    OrgLevel,
    OrgUnit,
    Placement,
    Resident,
    Sex,
    Staff,
    StaffRole,
)
from careloop.registry.store import Registry, open_registry
from careloop.testing.postgres import scratch_database

T0 = 1_790_000_000.0
DAY = 86_400.0


@dataclass(slots=True)
class Case:
    """One measured case: per call, best round."""

    name: str
    calls: int
    wall_s: float
    cpu_s: float
    statements: int

    @property
    def ms(self) -> float:
        return self.wall_s / self.calls * 1e3

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.calls * 1e3

    def fields(self, baseline: Case | None) -> dict[str, Any]:
        return {
            "case": self.name,
            "per_s": round(self.calls / self.wall_s, 1),
            "ms": round(self.ms, 3),
            "cpu_ms": round(self.cpu_ms, 3),
            "statements": round(self.statements / self.calls, 1),
            "x_baseline": None if baseline is None else round(self.ms / baseline.ms, 2),
        }


class StatementCounter:
    """Counts the SQL statements an engine sends (executemany counts once: one round trip)."""

    def __init__(self, *engines: Engine) -> None:
        self.count = 0
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


def _populate(registry: Registry, residents: int, *, staffed: bool) -> tuple[int, int]:
    """``residents`` residents, each in their own home under one grid; with ``staffed``, people to page.
    Returns (the grid's org unit id, the community's)."""
    with registry.transaction() as s:
        county = OrgUnit(level=OrgLevel.COUNTY, name="County")
        community = OrgUnit(level=OrgLevel.COMMUNITY, name="Community 1", parent=county)
        grid = OrgUnit(level=OrgLevel.GRID, name="Grid 1", parent=community)
        s.add_all([county, community, grid])
        s.flush()
        for i in range(residents):
            household = OrgUnit(level=OrgLevel.HOUSEHOLD, name=f"{i:05d}", parent=grid)
            home = Home(code=f"H{i:05d}", org_unit=household, timezone="Asia/Shanghai", address=f"Building 1, {i}")
            resident = Resident(
                code=f"R{i:05d}", name=f"Resident {i}", birth_date=dt.date(1941, 3, 2), sex=Sex.FEMALE, home=home
            )
            s.add_all([household, home, resident])
            if staffed:
                s.add_all(
                    [
                        Device(
                            code=f"BR{i:05d}",
                            kind=DeviceKind.BRACELET,
                            home=home,
                            resident=resident,
                            placement=Placement.WRIST,
                        ),
                        FamilyMember(
                            resident=resident,
                            name=f"Daughter {i}",
                            relation="daughter",
                            email=f"d{i}@family.example",
                            emergency_contact=True,
                            priority=1,
                        ),
                        FamilyMember(
                            resident=resident, name=f"Son {i}", relation="son", phone="+8613900000002", priority=2
                        ),
                    ]
                )
        if staffed:
            s.add_all(
                [
                    Staff(
                        code="grid-1", name="Zhao Min", role=StaffRole.GRID_STAFF, email="z@c.example", org_unit=grid
                    ),
                    Staff(code="nurse-1", name="Li Na", role=StaffRole.NURSE, email="li@c.example"),
                    Staff(code="doc-1", name="Dr Huang", role=StaffRole.DOCTOR, email="h@c.example", phone="+86138"),
                    Staff(
                        code="lead-1",
                        name="Liu Fang",
                        role=StaffRole.COMMUNITY_LEAD,
                        email="liu@c.example",
                        org_unit=community,
                    ),
                ]
            )
        s.flush()
        return grid.id, community.id


@dataclass(slots=True)
class World:
    service: AlertService
    store: AlertStore
    registry: Registry
    clock: ManualClock
    counter: StatementCounter

    def close(self) -> None:
        self.store.close()
        self.registry.close()


def _world(url: str, residents: int, *, staffed: bool) -> World:
    """The service as ``build_runtime`` wires it: registry directory, alarm contexts from the resident book."""
    registry = open_registry(url)
    store = open_alert_store(url)
    grid_id, _ = _populate(registry, residents, staffed=staffed)
    clock = ManualClock(T0)
    if staffed:
        store.add_shifts(
            [
                Shift("nurse-1", "nurse", "all", T0 - DAY, T0 + DAY),
                Shift("doc-1", "doctor", str(grid_id), T0 - DAY, T0 + DAY),
            ]
        )
    book = ResidentBook(load_snapshot(registry))
    contexts = ContextBook(book)
    if staffed:
        for i in range(residents):  # 10 minutes of vitals, a reading every 5 s: what an alarm context carries
            for k in range(120):
                contexts.add_vitals(
                    VitalsObservation(
                        f"R{i:05d}", f"H{i:05d}", f"BR{i:05d}", T0 - 600 + 5 * k, hr_bpm=80.0 + k % 7, spo2_pct=96.0
                    )
                )
    directory = RegistryDirectory(registry, shifts=store, preferences=store)
    service = AlertService(
        store,
        EscalationPolicy.default(),
        directory,
        clock,
        console_url="https://console.example",
        context=lambda resident, home: contexts.context(resident, home, clock.now()),
    )
    return World(service, store, registry, clock, StatementCounter(store.engine, registry.engine))


def sos(i: int, now: float) -> Signal:
    """An SOS press of resident ``i`` (each its own source id)."""
    return Signal(
        resident_id=f"R{i:05d}",
        home_id=f"H{i:05d}",
        kind="sos",
        action=SignalAction.RAISE,
        severity=Severity.HIGH,
        ts=now,
        rule_id="events.sos",
        source_id=f"sos-{i}-{now}",
    )


def _timed(calls: int, call: Callable[[int], None], after: Callable[[], None], counter: StatementCounter) -> Case:
    wall = cpu = 0.0
    statements = 0
    for i in range(calls):
        before = counter.count
        t0, c0 = time.perf_counter(), time.process_time()
        call(i)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        statements += counter.count - before
        after()
    return Case("", calls, wall, cpu, statements)


def _signals_case(url: str, name: str, signals: int, *, staffed: bool) -> Case:
    world = _world(url, signals, staffed=staffed)
    try:
        store, service = world.store, world.service

        def call(i: int) -> None:
            service.handle_signal(sos(i, world.clock.now()))

        def drain() -> None:  # the dispatcher's claim, outside the timing, so the outbox stays as small as in life
            store.claim_due(world.clock.now(), limit=500, lease_s=600.0)
            world.clock.advance(0.01)

        call(signals - 1)  # warm up: caches, pooled connections, compiled statements
        drain()
        case = _timed(signals - 1, call, drain, world.counter)
        case.name = name
        return case
    finally:
        world.close()


def _baseline_case(url: str, calls: int) -> Case:
    store = open_alert_store(url)
    counter = StatementCounter(store.engine)
    statement = insert(signals_table)
    try:

        def call(i: int) -> None:
            with store.transaction() as tx:
                tx.connection.execute(
                    statement,
                    {"source_id": f"b-{i}", "resident_id": "R", "kind": "sos", "action": "raise", "ts": T0 + i},
                )

        call(-1)
        case = _timed(calls, call, lambda: None, counter)
        case.name = "baseline (1 row, 1 transaction)"
        return case
    finally:
        store.close()


@contextmanager
def _database(url: str | None, tmp: Path, name: str) -> Iterator[str]:
    if url is None:
        yield f"sqlite:///{tmp / name}.db"
    elif url.startswith("postgresql"):
        with scratch_database(url) as scratch:
            yield scratch
    else:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=int, default=300, help="SOS signals per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="a PostgreSQL server's admin URL (a scratch database per case)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    best: dict[str, Case] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cases = []
            with _database(args.url, Path(tmp), f"base{r}") as url:
                cases.append(_baseline_case(url, args.signals))
            with _database(args.url, Path(tmp), f"unreachable{r}") as url:
                cases.append(_signals_case(url, "SOS, every level unreachable", args.signals, staffed=False))
            with _database(args.url, Path(tmp), f"reachable{r}") as url:
                cases.append(_signals_case(url, "SOS, level 0 reachable", args.signals, staffed=True))
            for case in cases:
                if case.name not in best or case.wall_s < best[case.name].wall_s:
                    best[case.name] = case
    baseline = next(iter(best.values()))
    rows = [case.fields(baseline) for case in best.values()]
    if args.json:
        print(json.dumps({"database": "postgresql" if args.url else "sqlite", "cases": rows}, indent=2))
        return
    database = "postgresql" if args.url else "sqlite file"
    print(f"database: {database}; {args.signals} calls per case, best of {args.rounds}")
    print(f"{'case':36} {'per s':>8} {'ms':>8} {'cpu ms':>8} {'stmts':>6} {'x base':>7}")
    for row in rows:
        ratio = "" if row["x_baseline"] is None else f"{row['x_baseline']:.1f}"
        print(
            f"{row['case']:36} {row['per_s']:8.0f} {row['ms']:8.2f} {row['cpu_ms']:8.2f} {row['statements']:6.1f} "
            f"{ratio:>7}"
        )


if __name__ == "__main__":
    main()
