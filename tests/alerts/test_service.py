"""The alert service on SQLite and PostgreSQL, with a manual clock: the issue's loop end to end at this level
(fall -> window -> alarm -> no answer -> doctor -> handled), "I'm OK", repeats, quiet hours, restarts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from alerts.escalation import EscalationPolicy
from alerts.lifecycle import InvalidTransition
from alerts.models import (
    AlertState,
    ChannelName,
    DeliveryStatus,
    Outcome,
    QuietHours,
    Recipient,
    RecipientKind,
    Severity,
    Signal,
    SignalAction,
)
from alerts.roster import Preferences, RegistryDirectory, Shift
from alerts.service import AlertChange, AlertNotFound, AlertService
from alerts.store import AlertStore, Delivery, open_alert_store
from careloop.clock import ManualClock
from careloop.messages import AlertStateChange
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

T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC, 22:13:20 in Shanghai
CONSOLE = "https://console.example"


def fall(ts: float, source: str = "ev-fall-1", **kw: object) -> Signal:
    fields: dict[str, object] = {
        "resident_id": "R0001",
        "home_id": "H0001",
        "kind": "fall",
        "action": SignalAction.RAISE,
        "severity": Severity.HIGH,
        "ts": ts,
        "rule_id": "fall-edge",
        "source_id": source,
        "value": 0.93,
        "reason": "fall detected in the bathroom",
        "cancel_window_s": 30.0,
    }
    fields.update(kw)
    return Signal(**fields)  # type: ignore[arg-type]


def im_ok(ts: float) -> Signal:
    return Signal("R0001", "H0001", "fall", SignalAction.CANCEL, Severity.HIGH, ts, "ok-button", f"ok-{ts}")


def people(deliveries: list[Delivery], *, at: float | None = None) -> list[tuple[str, str, int]]:
    """(recipient, channel, level) of the notifications to persons (made at ``at``), sorted; the console's live
    pushes left out."""
    return sorted(
        (d.notification.recipient.recipient_id, d.notification.channel.value, d.notification.escalation_level)
        for d in deliveries
        if d.notification.channel is not ChannelName.LIVE and (at is None or d.notification.created_ts == at)
    )


# -- a registry with one home, its people and a roster ----------------------------------------------------------------
@dataclass
class Place:
    grid_id: int
    other_grid_id: int


def populate(registry: Registry) -> Place:
    with registry.transaction() as s:
        county = OrgUnit(level=OrgLevel.COUNTY, name="Minhang")
        community = OrgUnit(level=OrgLevel.COMMUNITY, name="Community 1", parent=county)
        grid = OrgUnit(level=OrgLevel.GRID, name="Grid 7", parent=community)
        other_grid = OrgUnit(level=OrgLevel.GRID, name="Grid 8", parent=community)
        household = OrgUnit(level=OrgLevel.HOUSEHOLD, name="301", parent=grid)
        home = Home(code="H0001", org_unit=household, timezone="Asia/Shanghai", address="Building 3, room 301")
        s.add_all([county, community, grid, other_grid, household, home])
        s.flush()
        resident = Resident(code="R0001", name="Wang Wei", birth_date=date(1941, 3, 2), sex=Sex.MALE, home=home)
        s.add(resident)
        s.flush()
        s.add_all(
            [
                Device(
                    code="BR0001", kind=DeviceKind.BRACELET, home=home, resident=resident, placement=Placement.WRIST
                ),
                Staff(
                    code="grid-7", name="Zhao Min", role=StaffRole.GRID_STAFF, email="zhao@care.example", org_unit=grid
                ),
                Staff(
                    code="grid-8",
                    name="Sun Li",
                    role=StaffRole.GRID_STAFF,
                    email="sun@care.example",
                    org_unit=other_grid,
                ),
                Staff(code="nurse-1", name="Li Na", role=StaffRole.NURSE, email="li@care.example"),
                Staff(code="nurse-2", name="Chen Yu", role=StaffRole.NURSE, email="chen@care.example"),
                Staff(
                    code="doc-1",
                    name="Dr Huang",
                    role=StaffRole.DOCTOR,
                    email="huang@care.example",
                    phone="+8613800000001",
                ),
                Staff(
                    code="lead-1",
                    name="Liu Fang",
                    role=StaffRole.COMMUNITY_LEAD,
                    email="liu@care.example",
                    org_unit=community,
                ),
                FamilyMember(
                    resident=resident,
                    name="Wang Mei",
                    relation="daughter",
                    email="mei@example.org",
                    emergency_contact=True,
                    priority=1,
                ),
                FamilyMember(resident=resident, name="Wang Jun", relation="son", phone="+8613900000002", priority=2),
            ]
        )
        return Place(grid.id, other_grid.id)


@dataclass
class World:
    store: AlertStore
    registry: Registry
    clock: ManualClock
    place: Place
    contexts: list[tuple[str, str]] = field(default_factory=list)

    def service(self, policy: EscalationPolicy | None = None) -> AlertService:
        directory = RegistryDirectory(self.registry, shifts=self.store, preferences=self.store)

        def context(resident_id: str, home_id: str) -> dict[str, object]:
            self.contexts.append((resident_id, home_id))
            return {"allergies": ["penicillin"], "address": "Building 3, room 301", "conditions": ["COPD"]}

        return AlertService(
            self.store,
            policy or EscalationPolicy.default(),
            directory,
            self.clock,
            console_url=CONSOLE + "/",
            context=context,
        )


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    with open_registry(db_url) as registry, open_alert_store(db_url) as store:
        place = populate(registry)
        day = 12 * 3600.0
        store.add_shifts(
            [
                Shift("nurse-1", "nurse", "all", T0 - day, T0 + day),
                Shift("nurse-2", "nurse", str(place.other_grid_id), T0 - day, T0 + day),  # another grid
                Shift("doc-1", "doctor", str(place.grid_id), T0 - day, T0 + day),
            ]
        )
        yield World(store, registry, ManualClock(T0), place)


# -- the loop -------------------------------------------------------------------------------------------------
def test_fall_window_alarm_escalation_to_the_doctor_acknowledged_handled_resolved(world: World) -> None:
    service = world.service()
    clock = world.clock

    [pending] = service.handle_signal(fall(T0))
    alert_id = pending.alert.alert_id
    assert pending.alert.state is AlertState.PENDING
    assert people(service.deliveries(alert_id)) == []  # nobody paged in the window
    assert service.fire_due() == []  # nothing due yet
    assert service.next_due() == T0 + 30

    clock.advance(30)
    [opened] = service.fire_due()
    assert (opened.previous_state, opened.alert.state) == (AlertState.PENDING, AlertState.OPEN)
    message = opened.message()
    assert isinstance(message, AlertStateChange)
    assert (message.state, message.previous_state, message.actor, message.kind) == ("open", "pending", "system", "fall")
    level0 = people(service.deliveries(alert_id))
    assert level0 == [  # grid staff, the nurse on duty for this home (not nurse-2's grid), the family
        ("family:1", "email", 0),
        ("family:2", "webhook", 0),
        ("grid-7", "email", 0),
        ("nurse-1", "email", 0),
    ]
    email = next(d for d in service.deliveries(alert_id) if d.notification.recipient.recipient_id == "nurse-1")
    assert email.status is DeliveryStatus.PENDING
    assert email.next_attempt_at == T0 + 30  # an alarm goes at once
    n = email.notification
    assert n.notification_id == f"{alert_id}/2/email/nurse-1"
    assert n.title == "HIGH alarm: fall - Wang Wei (open)"
    assert "Wang Wei (resident R0001, home H0001): fall." in n.body
    assert "Latest value: 0.93." in n.body
    assert f"{CONSOLE}/alerts/{alert_id}" in n.body
    assert n.link == f"{CONSOLE}/alerts/{alert_id}"
    assert n.context["allergies"] == ["penicillin"]
    assert n.context["resident_name"] == "Wang Wei"
    assert world.contexts == [("R0001", "H0001")]

    clock.advance(59)  # T0 + 89: nothing yet
    assert service.fire_due() == []
    clock.advance(1)  # T0 + 90: nobody answered, level 0 staff paged again (not the family)
    assert service.fire_due() == []  # a repeat is not a state change
    assert people(service.deliveries(alert_id), at=T0 + 90) == [("grid-7", "email", 0), ("nurse-1", "email", 0)]

    clock.advance(60)  # T0 + 150: 2 min after the alarm opened, the doctor on duty
    [escalated] = service.fire_due()
    assert escalated.alert.level == 1
    assert "escalated to level 1 (doctor on duty)" in escalated.reason
    assert people(service.deliveries(alert_id), at=T0 + 150) == [("doc-1", "email", 1)]

    clock.advance(50)
    view = service.acknowledge(alert_id, "doc-1", "calling him")
    assert (view.state, view.acknowledged_by, view.acknowledged_ts) == (AlertState.ACKNOWLEDGED, "doc-1", T0 + 200)
    assert service.next_due() is None  # no more escalations or repeats
    service.record_view(alert_id, "grid-7")
    clock.advance(60)
    view = service.start_handling(alert_id, "grid-7", "on my way, 5 min")
    assert (view.state, view.handled_by) == (AlertState.IN_HANDLING, "grid-7")
    clock.advance(900)
    view = service.resolve(alert_id, "grid-7", Outcome.HANDLED_AT_HOME, "helped him up, no injury")
    assert (view.state, view.outcome, view.note) == (
        AlertState.RESOLVED,
        Outcome.HANDLED_AT_HOME,
        "helped him up, no injury",
    )

    steps = [(e.ts - T0, e.actor, e.action) for e in service.audit(alert_id=alert_id)]
    assert steps == [
        (0, "system", "raise"),
        (30, "system", "cancel_window_elapsed"),
        (30, "system", "notify"),
        (90, "system", "repeat_notify"),
        (90, "system", "notify"),
        (150, "system", "escalate"),
        (150, "system", "notify"),
        (200, "doc-1", "acknowledge"),
        (200, "grid-7", "viewed"),
        (260, "grid-7", "start_handling"),
        (1160, "grid-7", "resolve"),
    ]
    audit = service.audit(alert_id=alert_id)
    assert audit[2].detail["recipients"] == ["family:1", "family:2", "grid-7", "nurse-1"]
    assert audit[-1].detail["outcome"] == "handled_at_home"
    assert audit[-1].detail["note"] == "helped him up, no injury"
    history = service.history(alert_id)
    assert [(t.action, t.state) for t in history] == [
        ("raise", AlertState.PENDING),
        ("cancel_window_elapsed", AlertState.OPEN),
        ("repeat_notify", AlertState.OPEN),
        ("escalate", AlertState.OPEN),
        ("acknowledge", AlertState.ACKNOWLEDGED),
        ("start_handling", AlertState.IN_HANDLING),
        ("resolve", AlertState.RESOLVED),
    ]
    # every published change went to the console as a live notification carrying the AlertStateChange
    live = [d.notification for d in service.deliveries(alert_id) if d.notification.channel is ChannelName.LIVE]
    assert [AlertStateChange.model_validate(n.payload).state for n in live] == [
        "pending",
        "open",
        "open",
        "acknowledged",
        "in_handling",
        "resolved",
    ]
    assert {n.recipient.recipient_id for n in live} == {"console:H0001"}
    assert live[1].notification_id == f"{alert_id}/2/live/console:H0001"


def test_a_false_alarm_is_resolved_straight_from_open(world: World) -> None:
    service = world.service()
    [sos] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    assert sos.alert.state is AlertState.OPEN  # SOS pages at once
    assert {p[0] for p in people(service.deliveries(sos.alert.alert_id))} >= {"grid-7", "nurse-1"}
    view = service.resolve(sos.alert.alert_id, "nurse-1", Outcome.FALSE_ALARM, "pressed by mistake")
    assert view.acknowledged_by == "nurse-1"
    assert view.outcome is Outcome.FALSE_ALARM


def test_im_ok_in_the_window_cancels_and_pages_nobody(world: World) -> None:
    service = world.service()
    [pending] = service.handle_signal(fall(T0))
    world.clock.advance(12)
    [cancelled] = service.handle_signal(im_ok(T0 + 12))
    assert cancelled.alert.state is AlertState.CANCELLED
    assert cancelled.actor == "resident:R0001"
    world.clock.advance(60)
    assert service.fire_due() == []
    assert service.next_due() is None
    deliveries = service.deliveries(pending.alert.alert_id)
    assert people(deliveries) == []
    assert [d.notification.recipient.recipient_id for d in deliveries] == ["console:H0001", "console:H0001"]
    assert [e.action for e in service.audit(alert_id=pending.alert.alert_id)] == ["raise", "resident_ok"]


def test_ten_minutes_of_tachycardia_are_one_alert_counted_600_times(world: World) -> None:
    service = world.service()
    changes: list[AlertChange] = []
    for i in range(600):
        hr = Signal(
            "R0001",
            "H0001",
            "hr_high",
            SignalAction.RAISE,
            Severity.MEDIUM,
            T0 + i,
            "hr-high",
            f"hr-high@{T0 + i}",
            value=131.0 + i % 7,
            unit="bpm",
        )
        changes += service.handle_signal(hr)
        changes += service.handle_signal(hr)  # redelivered: a no-op
        world.clock.advance(1)
    [alert] = service.list_alerts(resident_id="R0001")
    assert alert.count == 600
    assert alert.value == 131.0 + 599 % 7
    assert alert.unit == "bpm"
    assert len(changes) == 1  # opened once; the repeats changed nothing anyone must be told
    assert len([p for p in people(service.deliveries(alert.alert_id)) if p[2] == 0]) == 4


def test_a_reminder_waits_for_the_familys_quiet_hours_and_an_alarm_does_not(world: World) -> None:
    service = world.service()
    quiet = QuietHours("22:00", "07:00", "Asia/Shanghai")
    service.set_preferences("family:1", Preferences(quiet_hours=quiet, min_severity=Severity.REMINDER))
    battery = Signal(
        "R0001", "H0001", "battery_low", SignalAction.RAISE, Severity.REMINDER, T0, "battery", "bat-1", value=12.0
    )
    [reminder] = service.handle_signal(battery)
    [alarm] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))

    def to_daughter(alert_id: str) -> Delivery:
        [d] = [d for d in service.deliveries(alert_id) if d.notification.recipient.recipient_id == "family:1"]
        return d

    morning = datetime(2026, 9, 22, 7, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    assert to_daughter(reminder.alert.alert_id).next_attempt_at == morning
    assert to_daughter(alarm.alert.alert_id).next_attempt_at == T0
    # the reminder also went to the bracelet, at once, and to no staff
    assert people(service.deliveries(reminder.alert.alert_id)) == [
        ("family:1", "email", 0),
        ("resident:R0001", "bracelet", 0),
    ]
    [bracelet] = [
        d for d in service.deliveries(reminder.alert.alert_id) if d.notification.channel is ChannelName.BRACELET
    ]
    assert bracelet.next_attempt_at == T0
    assert bracelet.notification.recipient.device_id == "BR0001"
    assert bracelet.notification.payload["action"] == "reminder"
    # the battery is charged before the morning: the waiting reminder is not sent
    world.clock.advance(600)
    cleared = replace(battery, action=SignalAction.CLEAR, ts=T0 + 600, source_id="bat-2", reason="charging")
    [closed] = service.handle_signal(cleared)
    assert closed.alert.state is AlertState.CANCELLED
    waiting = to_daughter(reminder.alert.alert_id)
    assert waiting.status is DeliveryStatus.SUPPRESSED
    assert waiting.next_attempt_at is None


def test_an_unanswered_reminder_whose_condition_persists_becomes_an_alarm_for_staff(world: World) -> None:
    service = world.service()
    steps = Signal(
        "R0001",
        "H0001",
        "not_worn",
        SignalAction.RAISE,
        Severity.REMINDER,
        T0,
        "not-worn",
        "nw-1",
        promote_after_s=1800.0,
        promote_to=Severity.MEDIUM,
    )
    [opened] = service.handle_signal(steps)
    alert_id = opened.alert.alert_id
    assert people(service.deliveries(alert_id)) == [("resident:R0001", "bracelet", 0)]
    world.clock.advance(1800)
    [promoted] = service.fire_due()
    assert promoted.alert.severity is Severity.MEDIUM
    assert promoted.action == "promote"
    assert people(service.deliveries(alert_id), at=T0 + 1800) == [
        ("family:1", "email", 0),
        ("family:2", "webhook", 0),
        ("grid-7", "email", 0),
        ("nurse-1", "email", 0),
    ]
    assert service.next_due() == T0 + 1800 + 300  # medium: paged again after 5 min


# -- restarts and timers --------------------------------------------------------------------------------------------
def test_a_restart_in_the_middle_of_an_escalation_fires_it_once_on_time(db_url: str) -> None:
    url = db_url  # a file SQLite database, then PostgreSQL
    clock = ManualClock(T0)
    with open_registry(url) as registry:
        populate(registry)
        store = open_alert_store(url)
        store.add_shifts([Shift("doc-1", "doctor", "all", T0 - 3600, T0 + 3600)])
        policy = EscalationPolicy.from_mapping({"repeat_s": {"high": 0}})
        first = AlertService(store, policy, RegistryDirectory(registry, shifts=store, preferences=store), clock)
        [pending] = first.handle_signal(fall(T0))
        clock.advance(30)
        first.fire_due()
        clock.set(T0 + 30 + 119.9)  # just before the 2 min escalation
        assert first.fire_due() == []
        store.close()
        del first, store  # the process dies

        store = open_alert_store(url)
        second = AlertService(store, policy, RegistryDirectory(registry, shifts=store, preferences=store), clock)
        assert second.next_due() == T0 + 150
        second.handle_signal(fall(T0))  # the edge sends the fall again after the restart: a no-op
        clock.set(T0 + 150.5)
        [escalated] = second.fire_due()
        assert second.fire_due() == []
        assert escalated.action == "escalate"
        assert escalated.ts == T0 + 150.5
        history = second.history(pending.alert.alert_id)
        assert [t.action for t in history] == ["raise", "cancel_window_elapsed", "escalate"]
        assert people(second.deliveries(pending.alert.alert_id)).count(("doc-1", "email", 1)) == 1
        store.close()


def test_nobody_on_duty_at_a_level_escalates_at_once(world: World) -> None:
    service = world.service()
    world.clock.advance(13 * 3600)  # after every shift: no nurse and no doctor on duty
    now = world.clock.now()
    [sos] = service.handle_signal(fall(now, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    alert_id = sos.alert.alert_id
    world.clock.advance(120)
    changes = service.fire_due()
    # level 1 (doctor on duty) has nobody: straight on to level 2, the community lead
    assert [c.alert.level for c in changes] == [1, 2]
    assert "nobody to page at level 1 (doctor on duty)" in changes[1].reason
    assert [p for p in people(service.deliveries(alert_id)) if p[2] > 0] == [("lead-1", "email", 2)]
    actions = [e.action for e in service.audit(alert_id=alert_id)]
    assert actions[-4:] == ["escalate", "nobody_to_notify", "escalate", "notify"]
    assert service.next_due() == now + 120 + 60  # level 2 paged again in a minute, escalated in two


def test_a_recipient_without_an_address_shows_as_a_failed_delivery(world: World) -> None:
    service = world.service()
    service.set_preferences("family:2", Preferences(channels=(ChannelName.EMAIL,)))  # the son has no e-mail
    [sos] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    [failed] = service.failed_deliveries()
    assert failed.notification.alert_id == sos.alert.alert_id
    assert failed.notification.recipient.recipient_id == "family:2"
    assert failed.last_error == "Wang Jun (family:2) has no e-mail address"
    assert "delivery_failed" in [e.action for e in service.audit(alert_id=sos.alert.alert_id)]


def test_a_failing_alarm_context_does_not_stop_the_page(world: World) -> None:
    def broken(resident_id: str, home_id: str) -> dict[str, object]:
        raise TimeoutError("influxd did not answer")

    service = AlertService(
        world.store,
        EscalationPolicy.default(),
        RegistryDirectory(world.registry, shifts=world.store, preferences=world.store),
        world.clock,
        context=broken,
    )
    [sos] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    [nurse] = [d for d in service.deliveries(sos.alert.alert_id) if d.notification.recipient.recipient_id == "nurse-1"]
    assert nurse.notification.context["context_error"] == "TimeoutError: influxd did not answer"
    assert nurse.notification.link is None
    assert "context_failed" in [e.action for e in service.audit(alert_id=sos.alert.alert_id)]


# -- the public functions' edges ------------------------------------------------------------------------------------
def test_unknown_alerts_and_invalid_moves_are_refused(world: World) -> None:
    service = world.service()
    with pytest.raises(AlertNotFound):
        service.acknowledge("al-nope", "nurse-1")
    with pytest.raises(AlertNotFound):
        service.get("al-nope")
    with pytest.raises(AlertNotFound):
        service.record_view("al-nope", "nurse-1")
    [sos] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    service.acknowledge(sos.alert.alert_id, "nurse-1")
    with pytest.raises(InvalidTransition, match="Acknowledge is not allowed in state acknowledged"):
        service.acknowledge(sos.alert.alert_id, "nurse-2")
    assert service.get(sos.alert.alert_id).acknowledged_by == "nurse-1"


def test_clear_and_cancel_without_an_alert_do_nothing(world: World) -> None:
    service = world.service()
    clear = Signal("R0001", "H0001", "hr_high", SignalAction.CLEAR, Severity.MEDIUM, T0, "hr-high", "c-1")
    assert service.handle_signal(clear) == []
    assert service.handle_signal(im_ok(T0)) == []
    assert service.list_alerts() == []


def test_listing_by_home_resident_and_openness(world: World) -> None:
    service = world.service()
    [sos] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    world.clock.advance(1)
    [pending] = service.handle_signal(fall(T0 + 1))
    service.resolve(sos.alert.alert_id, "nurse-1", Outcome.OTHER)
    assert [a.alert_id for a in service.list_alerts()] == [pending.alert.alert_id, sos.alert.alert_id]
    assert [a.alert_id for a in service.list_alerts(open_only=True)] == [pending.alert.alert_id]
    assert service.list_alerts(home_id="H0002") == []
    assert len(service.list_alerts(resident_id="R0001", limit=1)) == 1
    assert len(service.audit(since=T0 + 1)) >= 2


def test_a_new_signal_after_resolution_opens_a_new_alert(world: World) -> None:
    service = world.service()
    [first] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos-1"))
    service.resolve(first.alert.alert_id, "nurse-1", Outcome.FALSE_ALARM)
    [second] = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos-2"))
    assert second.alert.alert_id != first.alert.alert_id
    assert second.alert.count == 1


def test_concurrent_signals_for_one_condition_make_one_alert(world: World) -> None:
    service = world.service()
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def raise_many(worker: int) -> None:
        try:
            start.wait()
            for i in range(15):
                hr = Signal(
                    "R0001", "H0001", "hr_high", SignalAction.RAISE, Severity.MEDIUM, T0, "hr-high", f"w{worker}-{i}"
                )
                service.handle_signal(hr)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=raise_many, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    [alert] = service.list_alerts()
    assert alert.count == 90


class _NoOne:
    """A directory with nobody in it."""

    def staff_covering(self, role: str, home_id: str) -> list[Recipient]:
        return []

    def staff_on_duty(self, role: str, home_id: str, now: float) -> list[Recipient]:
        return []

    def family(self, resident_id: str) -> list[Recipient]:
        return []

    def emergency_contacts(self, resident_id: str) -> list[Recipient]:
        return []

    def resident(self, resident_id: str) -> Recipient | None:
        return None


def test_an_alarm_nobody_can_be_told_of_walks_every_level_and_stays_on_the_console(world: World) -> None:
    service = AlertService(world.store, EscalationPolicy.default(), _NoOne(), world.clock)
    changes = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    assert [c.alert.level for c in changes] == [0, 1, 2, 3]
    assert changes[-1].alert.state is AlertState.OPEN
    actions = [e.action for e in service.audit(alert_id=changes[0].alert.alert_id)]
    assert actions.count("nobody_to_notify") == 4
    deliveries = service.deliveries(changes[0].alert.alert_id)
    assert {d.notification.recipient.kind for d in deliveries} == {RecipientKind.STAFF}  # the console only
    assert len(deliveries) == 4


class _FamilyOnly(_NoOne):
    """A directory in which only the family can be reached."""

    def family(self, resident_id: str) -> list[Recipient]:
        return [Recipient("family:1", RecipientKind.FAMILY, "Mei", email="mei@example.org", min_severity=Severity.LOW)]


def test_a_level_that_only_informs_the_family_does_not_wait_for_its_timeout(world: World) -> None:
    service = AlertService(world.store, EscalationPolicy.default(), _FamilyOnly(), world.clock)
    changes = service.handle_signal(fall(T0, kind="sos", cancel_window_s=0.0, source="ev-sos"))
    alert_id = changes[0].alert.alert_id
    assert changes[1].reason.startswith("nobody to page at level 0 (responsible)")
    assert people(service.deliveries(alert_id), at=T0) == [("family:1", "email", 0)]
    notify = [e for e in service.audit(alert_id=alert_id) if e.action == "notify"]
    assert (notify[0].detail["recipients"], notify[0].detail["paged"]) == (["family:1"], [])


def test_two_services_firing_the_same_timers_fire_each_once(world: World, db_url: str) -> None:
    first = world.service()
    alert_ids = [
        first.handle_signal(fall(T0, kind=f"sos{i}", cancel_window_s=0.0, source=f"ev-{i}"))[0].alert.alert_id
        for i in range(12)
    ]
    world.clock.advance(120.0)  # every escalation (and repeat) is due
    with open_alert_store(db_url) as other_store:
        second = AlertService(
            other_store,
            EscalationPolicy.default(),
            RegistryDirectory(world.registry, shifts=other_store, preferences=other_store),
            world.clock,
        )
        fired: list[list[AlertChange]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def fire(service: AlertService) -> None:
            try:
                start.wait()
                fired.append(service.fire_due())
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=fire, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert sorted(c.alert.alert_id for changes in fired for c in changes) == sorted(alert_ids)
    for alert_id in alert_ids:
        actions = [t.action for t in first.history(alert_id)]
        assert actions == ["raise", "repeat_notify", "escalate"]
