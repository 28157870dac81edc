"""`careloop alerts ...` and `careloop report`: run the service, check rule files, work alerts, import the roster.

careloop alerts run                       # the service: central broker in, alarms and notifications out
careloop alerts rules check rules.toml    # every problem of a rule file, by key path
careloop alerts list [--open]             # alerts, newest first
careloop alerts ack AL --actor N0001      # acknowledge / handle / resolve, as the console does
careloop alerts deliveries --failed       # every notification given up on, for staff to act on
careloop alerts roster import shifts.csv  # on-duty shifts: staff_code,role,scope,start,end
careloop report --since 2026-11-01 --until 2026-12-01 [--json]
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
from pathlib import Path
from typing import Any

import click

from careloop.settings import CareloopSettings, SettingsError, load_settings


def _settings(config_file: Path | None) -> CareloopSettings:
    try:
        return load_settings(config_file)
    except SettingsError as exc:
        raise click.ClickException("configuration: " + "; ".join(f"{w}: {p}" for w, p in exc.problems)) from None


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML settings file (else CARELOOP_CONFIG / environment)",
)


@click.group()
def alerts() -> None:
    """The alert loop: rules, reminders and alarms, escalation, notifications."""


@alerts.command("run")
@config_option
def run_command(config_file: Path | None) -> None:
    """Run the alerts service until SIGINT / SIGTERM."""
    from alerts.app import build_runtime
    from alerts.ruleset import RulesError

    settings = _settings(config_file)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        try:
            runtime = build_runtime(settings)
        except RulesError as exc:
            raise click.ClickException(str(exc)) from None
        stop = asyncio.get_running_loop().create_future()

        def _stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, _stop)
        task = asyncio.create_task(runtime.app.run(), name="alerts")
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # a crash: raise it
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            runtime.close()

    asyncio.run(main())


@alerts.group("rules")
def rules_group() -> None:
    """Rule files."""


@rules_group.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--show", is_flag=True, help="print the validated rule set as JSON")
def rules_check(path: Path | None, show: bool) -> None:
    """Validate a rule file (default: the packaged rules) and list its rules; exit 1 with every problem."""
    from alerts.ruleset import RulesError, load_rules

    try:
        rules = load_rules(path)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path or 'packaged rules'}: ok")
    if show:
        click.echo(json.dumps(rules.model_dump(mode="json"), indent=2))


def _service(config_file: Path | None) -> Any:
    from alerts.escalation import load_escalation_policy
    from alerts.roster import RegistryDirectory
    from alerts.service import AlertService
    from alerts.store import open_alert_store
    from careloop.clock import SystemClock
    from careloop.registry.store import open_registry

    settings = _settings(config_file)
    registry = open_registry(settings.database.url)
    store = open_alert_store(settings.database.url)
    directory = RegistryDirectory(registry, shifts=store, preferences=store)
    policy = load_escalation_policy(settings.alerts.escalation_file)
    return AlertService(store, policy, directory, SystemClock(), console_url=settings.alerts.console_url)


def _show(view: Any) -> str:
    when = dt.datetime.fromtimestamp(view.created_ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    who = view.acknowledged_by or "-"
    return (
        f"{view.alert_id}  {when}Z  {view.severity.value:<8} {view.state.value:<12} {view.kind:<16} "
        f"resident {view.resident_id} home {view.home_id} x{view.count} ack {who}"
    )


@alerts.command("list")
@config_option
@click.option("--open", "open_only", is_flag=True, help="only alerts not yet resolved or cancelled")
@click.option("--resident", default=None)
@click.option("--home", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_command(
    config_file: Path | None, open_only: bool, resident: str | None, home: str | None, limit: int, as_json: bool
) -> None:
    """List alerts, newest first."""
    service = _service(config_file)
    views = service.list_alerts(open_only=open_only, home_id=home, resident_id=resident, limit=limit)
    if as_json:
        click.echo(json.dumps([_view_dict(v) for v in views], indent=2, default=str))
        return
    for view in views:
        click.echo(_show(view))


def _view_dict(view: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        k: (v.value if hasattr(v, "value") and not isinstance(v, int | float) else v) for k, v in asdict(view).items()
    }


def _act(
    action: str, alert_id: str, actor: str, note: str | None, outcome: str | None, config_file: Path | None
) -> None:
    from alerts.lifecycle import InvalidTransition
    from alerts.models import Outcome
    from alerts.service import AlertNotFound

    service = _service(config_file)
    try:
        if action == "ack":
            view = service.acknowledge(alert_id, actor, note)
        elif action == "handle":
            view = service.start_handling(alert_id, actor, note)
        else:
            view = service.resolve(alert_id, actor, Outcome(outcome or "other"), note)
    except AlertNotFound as exc:
        raise click.ClickException(str(exc)) from None
    except InvalidTransition as exc:
        raise click.ClickException(f"not allowed: {exc}") from None
    click.echo(_show(view))


actor_option = click.option("--actor", required=True, help="your staff code (recorded in the audit log)")
note_option = click.option("--note", default=None)


@alerts.command("ack")
@click.argument("alert_id")
@actor_option
@note_option
@config_option
def ack_command(alert_id: str, actor: str, note: str | None, config_file: Path | None) -> None:
    """Acknowledge an alert: you have seen it and take it (escalation stops)."""
    _act("ack", alert_id, actor, note, None, config_file)


@alerts.command("handle")
@click.argument("alert_id")
@actor_option
@note_option
@config_option
def handle_command(alert_id: str, actor: str, note: str | None, config_file: Path | None) -> None:
    """Say you are handling an alert (going there, calling), with a note."""
    _act("handle", alert_id, actor, note, None, config_file)


@alerts.command("resolve")
@click.argument("alert_id")
@actor_option
@note_option
@click.option(
    "--outcome",
    required=True,
    type=click.Choice(["false_alarm", "handled_at_home", "taken_to_hospital", "other"]),
)
@config_option
def resolve_command(alert_id: str, actor: str, note: str | None, outcome: str, config_file: Path | None) -> None:
    """Close an alert with its outcome."""
    _act("resolve", alert_id, actor, note, outcome, config_file)


@alerts.command("deliveries")
@click.argument("alert_id", required=False)
@click.option("--failed", is_flag=True, help="every notification given up on (to act on: call the person instead)")
@config_option
def deliveries_command(alert_id: str | None, failed: bool, config_file: Path | None) -> None:
    """How each notification of an alert went, or (--failed) every failed one."""
    if not failed and alert_id is None:
        raise click.UsageError("give an ALERT_ID, or --failed")
    service = _service(config_file)
    rows = service.failed_deliveries(limit=1000) if failed else service.deliveries(alert_id)
    for d in rows:
        n = d.notification
        when = dt.datetime.fromtimestamp(d.updated_ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        outcome = d.receipt if d.status.value == "delivered" else (d.last_error or "")
        click.echo(
            f"{when}Z  {d.status.value:<10} {n.channel.value:<8} {n.recipient.name} ({n.recipient.recipient_id})  "
            f"alert {n.alert_id} {n.kind} {n.severity.value}  attempts {d.attempts}  {outcome}"
        )
    if failed and not rows:
        click.echo("no failed deliveries")


@alerts.group("roster")
def roster_group() -> None:
    """The on-duty roster."""


@roster_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timezone", default="UTC", show_default=True, help="zone of times written without an offset")
@config_option
def roster_import(path: Path, timezone: str, config_file: Path | None) -> None:
    """Import shifts (CSV: staff_code,role,scope,start,end); nothing is written if any row is wrong."""
    from alerts.roster import RegistryDirectory, ShiftImportError, parse_shifts_csv
    from alerts.store import open_alert_store
    from careloop.registry.store import open_registry

    settings = _settings(config_file)
    registry = open_registry(settings.database.url)
    store = open_alert_store(settings.database.url)
    directory = RegistryDirectory(registry, shifts=store, preferences=store)
    try:
        shifts = parse_shifts_csv(
            path.read_text(encoding="utf-8"),
            timezone=timezone,
            staff_roles=directory.staff_roles(),
            resolve_scope=directory.resolve_scope,
        )
    except ShiftImportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: {store.add_shifts(shifts)} shifts imported")


def _when(text: str) -> float:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@click.command("report")
@click.option("--since", default=None, help="ISO date or date-time (UTC unless it has an offset); default 30 days ago")
@click.option("--until", default=None, help="ISO date or date-time; default now")
@click.option("--json", "as_json", is_flag=True)
@config_option
def report(since: str | None, until: str | None, as_json: bool, config_file: Path | None) -> None:
    """Time to acknowledge, time to resolve and false-alarm rate per rule, for alerts raised in a period."""
    import time

    from alerts.report import build_report, render_text
    from alerts.store import open_alert_store

    end = _when(until) if until else time.time()
    start = _when(since) if since else end - 30 * 86_400
    if start >= end:
        raise click.BadParameter("--since must be before --until")
    store = open_alert_store(_settings(config_file).database.url)
    try:
        result = build_report(store, start, end)
    finally:
        store.close()
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else render_text(result))
