"""The alerts component in the zero-setup demo: reminder -> alarm -> handling, told in plain words.

The embedded broker (amqtt) speaks MQTT 3.1.1 only and the service's own link is MQTT 5, so this adapter receives
the demo home's bracelet and edge topics with an MQTT 3.1.1 client and hands each message to
``AlertsApp.process`` (the validation, rules and persistent loop the service runs); the app's ticker and
dispatcher run as in the service, and its live pushes and bracelet commands go out through the same client. The
home's console (printing every live state change) and the edge gateway (reporting the fall) are other parties:
each has its own client, as it would in a deployment.

The story: the demo bracelet's SOS opens an alarm, pushed live to the home's console; the grid staff member takes
it (a false alarm). Then the edge gateway reports a fall: it waits out its cancel window, opens, pages the grid
staff and the nurse on duty, informs the family by e-mail (which fails: the demo has no SMTP server, and says so),
nobody acknowledges, it escalates to the doctor on duty, and the nurse acknowledges, handles and resolves it. Last,
the fall's audit log and a ``careloop report`` line. Waiting minutes for timers is replaced by fast-forwarding the
alerts' clock (:class:`DemoClock`): the timers fire exactly as they would, in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiomqtt
from sqlalchemy import select

from alerts.app import AlertsRuntime, build_runtime
from alerts.intake import SUBSCRIBED
from alerts.models import ChannelName, DeliveryStatus, Outcome
from alerts.report import RuleReport, build_report
from alerts.roster import Preferences, Shift
from alerts.service import AlertView
from alerts.store import AuditEntry, Delivery
from careloop import messages as m
from careloop.clock import Clock
from careloop.codec import DEFAULT_MAX_FUTURE_S, PayloadError, encode
from careloop.contract import decode_message
from careloop.demo import BRACELET, HOME, DemoContext, demo_client
from careloop.mqtt import dead_letter, payload_bytes
from careloop.registry.models import FamilyMember, Home, OrgLevel, Resident, Staff, StaffRole
from careloop.registry.store import open_registry, org_path
from careloop.settings import AlertsSettings, CareloopSettings, DatabaseSettings, MqttSettings
from careloop.topics import TopicKind

COMPONENT = "alerts"
RESIDENT = "R00001"  # the demo bracelet's wearer
#: How long the demo waits for any one step (a live push, a delivery) before it says what it was waiting for.
STEP_TIMEOUT_S = 15.0


class DemoClock:
    """Another clock plus an offset that only grows: the demo fast-forwards it instead of waiting for timers.

    What the alerts publish carries this clock's time, and receivers (a console, the live notifier itself) refuse a
    timestamp more than 5 minutes ahead of their own clock: the offset stays below ``max_ahead_s``.
    """

    def __init__(self, base: Clock, max_ahead_s: float = DEFAULT_MAX_FUTURE_S - 20.0) -> None:
        self.base = base
        self.offset_s = 0.0
        self.max_ahead_s = max_ahead_s

    def now(self) -> float:
        """The base clock's time, fast-forwarded."""
        return self.base.now() + self.offset_s

    def fast_forward(self, seconds: float) -> None:
        """Move this clock `seconds` ahead (never back)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (asked to fast-forward {seconds} s)")
        if self.offset_s + seconds > self.max_ahead_s:
            raise ValueError(
                f"{self.offset_s + seconds:g} s ahead of the real time: receivers would refuse the timestamps "
                f"(at most {self.max_ahead_s:g} s)"
            )
        self.offset_s += seconds


@dataclass(slots=True, frozen=True)
class DemoPeople:
    """Who the demo added to the registry: recipient ids (staff codes, ``family:<id>``) to names saying who they are."""

    names: dict[str, str]
    grid_unit_id: int
    resident_name: str


def _add_people(db_url: str) -> DemoPeople:
    """Grid staff covering the demo home's grid, a nurse and a doctor, and the wearer's daughter (with an e-mail)."""
    with open_registry(db_url) as registry, registry.transaction() as session:
        home = session.scalars(select(Home).where(Home.code == HOME)).one()
        path = org_path(session, home.org_unit_id)
        grid = next((u for u in path if u.level is OrgLevel.GRID), path[-1])
        resident = session.scalars(select(Resident).where(Resident.code == RESIDENT)).one()
        session.add_all(
            [
                Staff(
                    code="G0001",
                    name="Zhang Wei",
                    role=StaffRole.GRID_STAFF,
                    email="zhang.wei@care.example",
                    org_unit_id=grid.id,
                ),
                Staff(code="N0001", name="Li Na", role=StaffRole.NURSE, email="li.na@care.example"),
                Staff(code="D0001", name="Dr Huang", role=StaffRole.DOCTOR, email="huang@care.example"),
                daughter := FamilyMember(
                    resident=resident,
                    name="Wang Min",
                    relation="daughter",
                    email="wang.min@family.example",
                    emergency_contact=True,
                    priority=1,
                ),
            ]
        )
        session.flush()  # the daughter's id
        names = {
            "G0001": f"Zhang Wei (grid staff, {grid.name})",
            "N0001": "Li Na (nurse on duty)",
            "D0001": "Dr Huang (doctor on duty)",
            f"family:{daughter.id}": f"Wang Min (daughter, {daughter.email})",
            f"console:{HOME}": f"the console of home {HOME}",
        }
        return DemoPeople(names, grid.id, resident.name)


def _roster(runtime: AlertsRuntime, people: DemoPeople, now: float) -> None:
    """The nurse and the doctor on shift from an hour ago; staff take alarms at the console in the demo."""
    scope = str(people.grid_unit_id)
    runtime.store.add_shifts(
        [
            Shift("N0001", StaffRole.NURSE.value, scope, now - 3600, now + 8 * 3600),
            Shift("D0001", StaffRole.DOCTOR.value, scope, now - 3600, now + 8 * 3600),
        ]
    )
    for code in ("G0001", "N0001", "D0001"):
        runtime.service.set_preferences(code, Preferences(channels=(ChannelName.LIVE,)))


def _settings(ctx: DemoContext) -> CareloopSettings:
    # Explicit sections: the demo has no SMTP server or SMS gateway whatever the environment says.
    return CareloopSettings(
        environment="demo",
        mqtt=MqttSettings(url=ctx.broker_url, topic_root=ctx.tree.root),
        database=DatabaseSettings(url=ctx.db_url),
        alerts=AlertsSettings(client_id="careloop-alerts-demo"),
    )


def _hhmmss(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


class Console:
    """What the home's web console would show: every AlertStateChange on the home's alert topic, as it arrives."""

    def __init__(self, ctx: DemoContext, clock: Clock, names: dict[str, str]) -> None:
        self.ctx = ctx
        self.clock = clock
        self.names = names
        self.changes: list[m.AlertStateChange] = []
        self._arrived = asyncio.Condition()

    async def watch(self, client: aiomqtt.Client) -> None:
        """Print each live state change of the home's alerts (until cancelled)."""
        async for message in client.messages:
            _, change = decode_message(self.ctx.tree, message.topic.value, payload_bytes(message), now=self.clock.now())
            assert isinstance(change, m.AlertStateChange)
            was = change.previous_state or "new"
            actor = self.names.get(change.actor or "", change.actor or "")
            self.ctx.say(
                f"  console   live: {change.kind} alarm ({change.severity}) {was} -> "
                f"{change.state.upper()}, by {actor}: {change.reason}"
            )
            async with self._arrived:
                self.changes.append(change)
                self._arrived.notify_all()

    async def wait_for(self, what: str, test: Callable[[m.AlertStateChange], bool]) -> m.AlertStateChange:
        """The first live change passing `test` (waiting for it up to STEP_TIMEOUT_S)."""

        def found() -> m.AlertStateChange | None:
            return next((c for c in self.changes if test(c)), None)

        try:
            async with asyncio.timeout(STEP_TIMEOUT_S), self._arrived:
                await self._arrived.wait_for(lambda: found() is not None)
        except TimeoutError:
            raise TimeoutError(f"the console never showed {what}") from None
        change = found()
        assert change is not None
        return change


class Story:
    """The demo's steps over the running alerts app."""

    def __init__(
        self, ctx: DemoContext, runtime: AlertsRuntime, clock: DemoClock, console: Console, people: DemoPeople
    ) -> None:
        self.ctx = ctx
        self.runtime = runtime
        self.clock = clock
        self.console = console
        self.people = people
        self.say = ctx.say
        self.taken = 0
        self.rejected: list[str] = []
        self.last_received = 0.0  # event loop time

    # -- the adapter: embedded broker (MQTT 3.1.1) -> the app -------------------------------------------------------
    async def receive(self, client: aiomqtt.Client) -> None:
        """Hand every message of the demo home to the app, as the service's link does; dead-letter the rejects."""
        app = self.runtime.app
        async for message in client.messages:
            topic, payload = message.topic.value, payload_bytes(message)
            self.last_received = asyncio.get_running_loop().time()
            try:
                await app.process(topic, payload)
            except PayloadError as exc:
                self.rejected.append(exc.reason.value)
                letter = dead_letter(COMPONENT, topic, payload, exc, self.clock.now())
                await client.publish(app.tree.dead_letter(COMPONENT), encode(letter), qos=1)
            else:
                self.taken += 1

    # -- helpers ------------------------------------------------------------------------------------------------------
    async def _until(self, what: str, check: Callable[[], Awaitable[bool]]) -> None:
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                while not await check():  # noqa: ASYNC110 - the database tells nobody: the demo looks again
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise TimeoutError(f"the demo waited {STEP_TIMEOUT_S:g} s for {what}") from None

    async def _deliveries(self, alert_id: str) -> list[Delivery]:
        """The alert's deliveries once the dispatcher has sent (or given up on) every one due by now."""

        async def settled() -> bool:  # pending: not sent yet, or being sent (alarms never wait for quiet hours)
            rows = await asyncio.to_thread(self.runtime.service.deliveries, alert_id)
            return all(d.status is not DeliveryStatus.PENDING for d in rows)

        await self._until(f"the notifications of {alert_id}", settled)
        return await asyncio.to_thread(self.runtime.service.deliveries, alert_id)

    async def _audit(self, alert_id: str) -> list[AuditEntry]:
        return await asyncio.to_thread(lambda: self.runtime.service.audit(alert_id=alert_id))

    def _fast_forward(self, seconds: float, why: str) -> None:
        self.say(f"  (clock fast-forwarded {seconds:g} s: {why})")
        self.clock.fast_forward(seconds)
        self.runtime.app.poke()  # the ticker looks at the clock now instead of at its next tick

    async def _act(self, said: str, action: Callable[[], AlertView]) -> AlertView:
        """A person's action at the console, then its live push (woken at once, as the service does after a signal)."""
        self.say(said)
        view = await asyncio.to_thread(action)
        self.runtime.app.dispatcher.wake()
        state = view.state.value
        await self.console.wait_for(
            f"{view.alert_id} {state}", lambda c: c.alert_id == view.alert_id and c.state == state
        )
        return view

    def _who(self, recipient_id: str) -> str:
        return self.people.names.get(recipient_id, recipient_id)

    async def told(self, alert_id: str, level: int, seen_deliveries: set[str]) -> None:
        """Say who was paged or informed at `level`, and how each delivery went (each one once)."""
        deliveries = await self._deliveries(alert_id)
        audit = await self._audit(alert_id)
        for entry in audit:
            if entry.action == "notify" and entry.detail.get("level") == level and not entry.detail.get("repeat"):
                paged = [str(r) for r in _seq(entry.detail.get("paged"))]
                informed = [str(r) for r in _seq(entry.detail.get("recipients")) if r not in paged]
                self.say(f"  paged at the console, level {level} ({entry.detail.get('level_name')}): "
                         + ", ".join(self._who(r) for r in paged))  # fmt: skip
                if informed:
                    self.say("  informed: " + ", ".join(self._who(r) for r in informed))
        for d in deliveries:
            n = d.notification
            if n.notification_id in seen_deliveries or n.escalation_level != level:
                continue
            seen_deliveries.add(n.notification_id)
            if n.channel is ChannelName.LIVE and d.status is DeliveryStatus.DELIVERED:
                continue  # every state change's push; the console lines above show them arriving
            what = f"  {_channel(n.channel.value)} to {self._who(n.recipient.recipient_id)}: {d.status.value.upper()}"
            if (
                d.status is DeliveryStatus.FAILED
                and n.channel is ChannelName.EMAIL
                and "no notifier" in (d.last_error or "")
            ):
                what += " - e-mail is not configured in the demo (no SMTP server); recorded and listed for staff"
            elif d.last_error:
                what += f" - {d.last_error}"
            self.say(what)

    # -- the story ----------------------------------------------------------------------------------------------------
    async def tell(self) -> None:
        """SOS, then a fall through its whole loop, then the fall's audit log and the report line."""
        start = self.clock.now()
        service = self.runtime.service
        sos = await self.console.wait_for("the SOS alarm opening", lambda c: c.kind == "sos" and c.state == "open")
        await self.ctx.tour_done.wait()
        loop = asyncio.get_running_loop()

        async def quiet() -> bool:  # the bracelet is done: its last messages are through the app too
            return loop.time() - self.last_received > 0.2

        await self._until("the bracelet's messages", quiet)
        self.say("")
        self.say(f"alerts: reminder -> alarm -> handling, for {self.people.resident_name} ({RESIDENT}) in {HOME}")
        self.say(
            f"  the alerts service took {self.taken} of the bracelet's messages (not the raw accelerometer) and "
            f"rejected {len(self.rejected)} ({', '.join(sorted(set(self.rejected))) or 'none'}), "
            f"dead-lettered on {self.runtime.app.tree.dead_letter(COMPONENT)}"
        )
        self.say(f"SOS from {BRACELET}: alarm {sos.alert_id} opened at once and was pushed live (above)")
        seen: set[str] = set()
        await self.told(sos.alert_id, 0, seen)
        await self._act(
            "  Zhang Wei acknowledges the SOS at the console and calls Wang Fang",
            lambda: service.acknowledge(sos.alert_id, "G0001", "calling her"),
        )
        await self._act(
            "  she pressed it by mistake: Zhang Wei resolves it as a false alarm",
            lambda: service.resolve(sos.alert_id, "G0001", Outcome.FALSE_ALARM, "pressed it by mistake; she is fine"),
        )

        self.say("")
        self.say(f"a fall: the edge gateway of {HOME} reports one from {BRACELET} in the bathroom")
        await self._publish_fall()
        fall = await self.console.wait_for("the fall pending", lambda c: c.kind == "fall")
        self.say('  pending: it waits 30 s for "I\'m OK" before anyone is paged')
        self._fast_forward(31, 'nobody pressed "I\'m OK"')
        await self.console.wait_for("the fall opening", lambda c: c.alert_id == fall.alert_id and c.state == "open")
        await self.told(fall.alert_id, 0, seen)
        self._fast_forward(60, "nobody acknowledged")
        await self._until("level 0 paged again", lambda: self._audited(fall.alert_id, "repeat_notify"))
        self.say("  level 0 paged again: " + ", ".join(self._who(code) for code in ("G0001", "N0001")))
        self._fast_forward(60, "still nobody")
        await self._until("the fall to escalate", lambda: self._audited(fall.alert_id, "escalate"))
        await self.console.wait_for(
            "the fall escalated", lambda c: c.alert_id == fall.alert_id and "escalated" in (c.reason or "")
        )
        await self.told(fall.alert_id, 1, seen)
        self._fast_forward(15, "Li Na sees it on the console")
        await self._act(
            "  Li Na, the nurse on duty, acknowledges: escalation stops",
            lambda: service.acknowledge(fall.alert_id, "N0001", "I'm in the next building"),
        )
        self._fast_forward(45, "she walks over")
        await self._act(
            "  Li Na starts handling it, with a note",
            lambda: service.start_handling(fall.alert_id, "N0001", "with her now; she slipped on the wet floor"),
        )
        self._fast_forward(60, "she helps her up and checks her over")
        await self._act(
            "  Li Na resolves it: handled at home",
            lambda: service.resolve(
                fall.alert_id, "N0001", Outcome.HANDLED_AT_HOME, "helped her up; no injury; daughter called"
            ),
        )
        await self._deliveries(fall.alert_id)

        self.say("")
        self.say(f"audit log of the fall alarm {fall.alert_id}:")
        for entry in await self._audit(fall.alert_id):
            self.say(f"  {_hhmmss(entry.ts)}  {entry.actor:<7} {entry.action:<22} {self._detail(entry)}")
        self.say(await self._report_line(start))

    async def _audited(self, alert_id: str, action: str) -> bool:
        return any(entry.action == action for entry in await self._audit(alert_id))

    async def _publish_fall(self) -> None:
        now = self.clock.now()
        fall = m.FallEvent(
            event_id="ev-H00001-demo-fall",
            ts=now,
            resident_id=RESIDENT,
            device_id=BRACELET,
            room="bathroom",
            impact_ts=now - 2.0,
            confidence=0.93,
            placement="wrist",
            features={"peak_g": 3.6, "stillness_s": 8.0},
        )
        batch = m.EventBatch(msg_id="H00001-000000000001", seq=1, events=(fall,))
        async with demo_client(self.ctx.broker_url, f"edge-{HOME}") as edge:
            topic = self.ctx.tree.edge(TopicKind.EDGE_EVENTS, HOME)
            await edge.publish(topic, encode(batch), qos=1)
        self.say(f"  edge {HOME} -> {topic.split('/', 2)[-1]}: fall, confidence 0.93")

    def _detail(self, entry: AuditEntry) -> str:
        d = entry.detail
        if entry.action == "notify":
            paged = ", ".join(str(r) for r in _seq(d.get("paged")))
            return f"level {d.get('level')} ({d.get('level_name')}): paged {paged or 'nobody'}" + (
                " (again)" if d.get("repeat") else ""
            )
        if entry.action == "delivery_failed":
            return f"{_channel(str(d.get('channel')))} to {d.get('recipient_id')}: {d.get('error')}"
        parts = [f"{d.get('from') or 'new'} -> {d.get('to')}"] if "to" in d else []
        parts += [str(d[k]) for k in ("reason", "note") if d.get(k)]
        return "; ".join(parts) or ", ".join(f"{k}={v}" for k, v in d.items())

    async def _report_line(self, start: float) -> str:
        """What `careloop report` says about the demo's alarms, on one line."""
        report = await asyncio.to_thread(build_report, self.runtime.store, start - 1.0, self.clock.now() + 1.0)
        alarms = [r for r in report.rules if r.severity != "reminder"]

        def after(times: Callable[[RuleReport], list[float]]) -> str:
            return ", ".join(f"{r.kind} {_mmss(t)}" for r in alarms for t in times(r)) or "-"

        deliveries = ", ".join(
            f"{_channel(channel)} {by.get('delivered', 0)} delivered / {by.get('failed', 0)} failed"
            for channel, by in sorted(report.deliveries.items())
        )
        return (
            f"careloop report: {sum(r.raised for r in alarms)} alarms raised, {sum(r.resolved for r in alarms)} "
            f"resolved ({sum(r.false_alarms for r in alarms)} false alarm); acknowledged after "
            f"{after(lambda r: r.ack_s)}; resolved after {after(lambda r: r.resolve_s)} (min:s); "
            f"deliveries: {deliveries}"
        )


def _seq(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()


def _channel(name: str) -> str:
    return "e-mail" if name == ChannelName.EMAIL.value else name


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


async def run_demo(ctx: DemoContext) -> None:
    """The alerts component's part of `careloop demo` (entry point `careloop.demo: alerts`)."""
    clock = DemoClock(ctx.clock)
    people = await asyncio.to_thread(_add_people, ctx.db_url)  # before the runtime reads the registry
    runtime = await asyncio.to_thread(build_runtime, _settings(ctx), clock=clock, tick_s=0.25)
    try:
        await asyncio.to_thread(_roster, runtime, people, clock.now())
        console = Console(ctx, clock, people.names)
        story = Story(ctx, runtime, clock, console, people)
        async with (
            demo_client(ctx.broker_url, "careloop-alerts-demo") as link,
            demo_client(ctx.broker_url, f"console-{HOME}") as screen,
        ):
            for kind in SUBSCRIBED:
                await link.subscribe(ctx.tree.filter(kind, home_id=HOME), qos=1)
            await screen.subscribe(ctx.tree.alert_state(HOME), qos=1)
            runtime.app.publisher.client = link  # live pushes and bracelet commands go out on the embedded broker
            ctx.ready.set()
            try:
                async with asyncio.TaskGroup() as tasks:  # a failing task stops the story with its error
                    background = [
                        tasks.create_task(runtime.app.run(link=False), name="alerts-app"),
                        tasks.create_task(story.receive(link), name="alerts-receive"),
                        tasks.create_task(console.watch(screen), name="alerts-console"),
                    ]
                    await story.tell()
                    for task in background:
                        task.cancel()
            finally:
                runtime.app.publisher.client = None
    finally:
        await asyncio.to_thread(runtime.close)
