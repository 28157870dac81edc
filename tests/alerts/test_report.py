"""`careloop report`: time to acknowledge and to resolve, counted from when an alarm reached staff, and the
false-alarm rate per rule, for the alerts raised in a period."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from alerts.app import build_runtime
from alerts.cli import alerts, report
from alerts.models import Outcome, Severity, Signal, SignalAction
from alerts.report import build_report, render_text
from careloop.clock import ManualClock
from careloop.registry.importer import import_csv
from careloop.registry.models import FamilyMember, Resident
from careloop.registry.store import open_registry
from careloop.settings import load_settings
from careloop.testing.registry_csv import generate_registry_csv

T0 = 1_790_000_000.0


def _signal(kind: str, resident: str, ts: float, window: float = 0.0) -> Signal:
    return Signal(
        resident_id=resident,
        home_id="H1",
        kind=kind,
        action=SignalAction.RAISE,
        severity=Severity.HIGH,
        ts=ts,
        rule_id=f"events.{kind}",
        source_id=f"{kind}-{resident}-{ts}",
        cancel_window_s=window,
    )


def test_report_counts_from_the_page_not_the_impact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    clock = ManualClock(T0)
    runtime = build_runtime(load_settings(database={"url": url}), clock=clock)
    service = runtime.service
    try:
        # a fall: 30 s cancel window, then paged; acknowledged 60 s later, resolved as a false alarm 120 s after paging
        fall = service.handle_signal(_signal("fall", "R1", T0, window=30.0))[0]
        clock.advance(30.0)
        service.fire_due()
        clock.advance(60.0)
        service.acknowledge(fall.alert.alert_id, "N0001")
        clock.advance(60.0)
        service.resolve(fall.alert.alert_id, "N0001", Outcome.FALSE_ALARM)
        # an SOS: paged at once, acknowledged after 20 s, handled at home after 200 s
        # (nobody is registered here, so it walks every escalation level at once: several changes, one alert)
        sos = service.handle_signal(_signal("sos", "R2", clock.now()))[0]
        clock.advance(20.0)
        service.acknowledge(sos.alert.alert_id, "G0001")
        clock.advance(180.0)
        service.resolve(sos.alert.alert_id, "G0001", Outcome.HANDLED_AT_HOME)
        # a second fall, cancelled in its window ("I'm OK"): counted, not paged
        service.handle_signal(_signal("fall", "R3", clock.now(), window=30.0))
        cancel = Signal(resident_id="R3", home_id="H1", kind="fall", action=SignalAction.CANCEL, severity=Severity.HIGH,
                        ts=clock.now(), rule_id="events.ok", source_id="ok-R3")  # fmt: skip
        service.handle_signal(cancel)
        result = build_report(runtime.store, T0 - 1, clock.now() + 1)
    finally:
        runtime.close()
    by_kind = {r.kind: r for r in result.rules}
    assert by_kind["fall"].raised == 2
    assert by_kind["fall"].cancelled == 1
    assert by_kind["fall"].ack_s == [60.0]  # from the page (after the window), not from the impact
    assert by_kind["fall"].resolve_s == [120.0]
    assert by_kind["fall"].false_alarm_rate == 1.0
    assert by_kind["sos"].ack_s == [20.0]
    assert by_kind["sos"].resolve_s == [200.0]
    assert by_kind["sos"].false_alarm_rate == 0.0
    assert "fall" in render_text(result)
    # the command line prints the same figures
    monkeypatch.setenv("CARELOOP_DATABASE__URL", url)
    out = CliRunner().invoke(report, ["--since", "2026-09-01", "--until", "2026-12-31", "--json"])
    assert out.exit_code == 0, out.output
    printed = {r["kind"]: r for r in json.loads(out.output)["rules"]}
    assert printed["fall"]["time_to_acknowledge"]["median_s"] == 60.0
    assert printed["sos"]["time_to_resolve"]["median_s"] == 200.0
    assert printed["fall"]["false_alarm_rate"] == 1.0


def test_failed_deliveries_are_listed_for_staff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    data = generate_registry_csv(n_residents=1, seed=5)
    with open_registry(url) as registry:
        files = [("r.csv", data.residents), ("d.csv", data.devices), ("h.csv", data.health)]
        assert import_csv(registry.engine, [(n, t.encode()) for n, t in files]).ok
        with registry.transaction() as session:
            resident = session.query(Resident).one()
            session.add(FamilyMember(resident=resident, name="Li Na", relation="daughter", email="li@family.example"))
    # no e-mail server configured: the daughter's e-mail cannot go out, and staff must be able to see that
    now = time.time()  # the live channel checks a change's time against the wall clock
    runtime = build_runtime(load_settings(database={"url": url}), clock=ManualClock(now))
    try:
        sos = runtime.service.handle_signal(Signal(
            resident_id="R00001", home_id="H00001", kind="sos", action=SignalAction.RAISE, severity=Severity.HIGH,
            ts=now, rule_id="events.sos", source_id="sos-1"))[0]  # fmt: skip
        asyncio.run(runtime.app.dispatcher.run_once())  # type: ignore[attr-defined]  # tries every due delivery
        listed = runtime.service.failed_deliveries()
    finally:
        runtime.close()
    assert [d.notification.recipient.name for d in listed] == ["Li Na"]
    monkeypatch.setenv("CARELOOP_DATABASE__URL", url)
    out = CliRunner().invoke(alerts, ["deliveries", "--failed"])
    assert out.exit_code == 0, out.output
    [line] = [line for line in out.output.splitlines() if line.strip()]
    assert "failed" in line
    assert "Li Na" in line
    assert sos.alert.alert_id in line
