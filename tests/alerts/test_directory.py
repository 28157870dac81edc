"""The alerts service's view of the registry: profiles with normalised conditions, wearers, cards with contacts."""

from __future__ import annotations

import datetime as dt

from alerts.context import ContextBook, Location
from alerts.directory import ResidentBook, condition_key, load_snapshot
from alerts.models import VitalsObservation
from careloop.registry.importer import import_csv
from careloop.registry.models import FamilyMember, Resident
from careloop.registry.store import Registry, open_registry
from careloop.testing.registry_csv import generate_registry_csv

TODAY = dt.date(2026, 11, 26)


def _registry(db_url: str) -> Registry:
    data = generate_registry_csv(n_residents=30, seed=7)
    registry = open_registry(db_url)
    report = import_csv(
        registry.engine,
        [("r.csv", data.residents.encode()), ("d.csv", data.devices.encode()), ("h.csv", data.health.encode())],
        today=TODAY,
    )
    assert report.ok, report.errors
    with registry.transaction() as session:
        resident = session.query(Resident).filter_by(code="R00001").one()
        session.add_all(
            [
                FamilyMember(resident_id=resident.id, name="Li Na", relation="daughter", phone="+86 139 0000 0001",
                             email="li.na@example.org", emergency_contact=True, priority=1),
                FamilyMember(resident_id=resident.id, name="Neighbour Wu", relation="neighbour",
                             phone="+86 139 0000 0002", priority=2),
            ]
        )  # fmt: skip
    return registry


def test_condition_names_become_rule_keys() -> None:
    assert condition_key("Atrial fibrillation") == "atrial_fibrillation"
    assert condition_key("COPD") == "copd"
    assert condition_key("type 2 diabetes") == "type_2_diabetes"


def test_snapshot_maps_devices_to_wearers_and_profiles_to_limits(db_url: str) -> None:
    with _registry(db_url) as registry:
        snap = load_snapshot(registry, today=TODAY)
    book = ResidentBook(snap)
    assert len(book.residents()) == 30
    assert book.wearer("BR-R00001", "H00001") == "R00001"
    assert book.device("PIR-H00001") is not None
    assert book.device("PIR-H00001").resident_id is None
    # a device the registry does not know stands for its wearer, so its alarms still open
    assert book.wearer("BR-STRANGER", "H09999") == "BR-STRANGER"
    unknown = book.profile("BR-STRANGER", "H09999")
    assert (unknown.home_id, unknown.status, unknown.conditions) == ("H09999", "active", ())
    profiles = [book.profile(r, "") for r in book.residents()]
    assert all(p.timezone == "Asia/Shanghai" for p in profiles)
    assert all(c == condition_key(c) for p in profiles for c in p.conditions)
    assert any(p.conditions for p in profiles)
    # the generator puts resident 97k in hospital; none here, so all are active
    assert {p.status for p in profiles} == {"active"}
    assert snap.wearables["R00001"] == ("BR-R00001",)


def test_card_has_what_a_responder_needs_in_contact_order(db_url: str) -> None:
    with _registry(db_url) as registry:
        book = ResidentBook(load_snapshot(registry, today=TODAY))
    card = book.card("R00001")
    assert card is not None
    assert card.address
    assert card.home_location is not None
    assert card.age is not None
    assert 60 <= card.age <= 102
    assert [c["name"] for c in card.contacts] == ["Li Na", "Neighbour Wu"]
    assert card.contacts[0]["emergency_contact"] is True


def test_context_keeps_ten_minutes_of_vitals_thinned_and_the_newest_location(db_url: str) -> None:
    with _registry(db_url) as registry:
        book = ResidentBook(load_snapshot(registry, today=TODAY))
    contexts = ContextBook(book)
    t0 = 1_790_000_000.0
    for i in range(1200):  # 20 minutes at 1 Hz
        contexts.add_vitals(VitalsObservation("R00001", "H00001", "BR-R00001", t0 + i, hr_bpm=70.0 + i % 3))
    contexts.add_location("R00001", Location(31.2, 121.4, 8.0, t0 + 100, "gps"))
    contexts.add_location("R00001", Location(31.0, 121.0, 8.0, t0 + 50, "gps"))  # older: ignored
    now = t0 + 1199
    ctx = contexts.context("R00001", "H00001", now)
    vitals = ctx["vitals"]
    assert isinstance(vitals, list)
    assert 100 <= len(vitals) <= 121
    assert all(now - v["ts"] <= 600 for v in vitals)
    assert ctx["location"] == {"lat": 31.2, "lon": 121.4, "accuracy_m": 8.0, "ts": t0 + 100, "source": "gps"}
    assert ctx["registered"] is True
    assert ctx["contacts"]
    assert ctx["medications"] is not None
    stranger = contexts.context("BR-X", "H1", now)
    assert stranger["registered"] is False
    assert stranger["vitals"] == []
