"""The escalation policy (defaults, TOML overrides, errors) and who each level reaches."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from alerts.escalation import (
    Audience,
    AudienceKind,
    EscalationLevel,
    EscalationPolicy,
    PolicyError,
    load_escalation_policy,
    recipients_at,
    route,
)
from alerts.models import ChannelName, Recipient, RecipientKind, Severity

T0 = 1_790_000_000.0


def test_the_default_policy_is_the_issues_chain_of_people() -> None:
    policy = EscalationPolicy.default()
    assert [level.name for level in policy.levels] == [
        "responsible",
        "doctor on duty",
        "community lead",
        "emergency contacts",
    ]
    assert [str(a) for a in policy.level(0).audiences] == ["covering:grid_staff", "on_duty:nurse", "family", "resident"]
    assert policy.escalate_after(Severity.HIGH, 0) == 120
    assert policy.escalate_after(Severity.MEDIUM, 1) == 600
    assert policy.escalate_after(Severity.REMINDER, 0) is None  # reminders are promoted, not escalated
    assert policy.escalate_after(Severity.HIGH, 3) is None  # nowhere to go after the last level
    assert policy.repeat_every(Severity.HIGH, 3) == 60  # but the last level is paged until someone answers
    assert policy.has_next(2)
    assert not policy.has_next(3)


def test_toml_overrides_defaults_per_severity_and_per_level() -> None:
    policy = EscalationPolicy.from_toml(
        """
        timeout_s = { high = 90 }
        repeat_s = { low = 0 }          # 0: never repeat

        [[levels]]
        name = "nurse"
        notify = ["on_duty:nurse", "family"]

        [[levels]]
        name = "doctor"
        notify = ["on_duty:doctor"]
        timeout_s = { high = 300 }
        """
    )
    assert policy.last_level == 1
    assert policy.escalate_after(Severity.HIGH, 0) == 90
    assert policy.escalate_after(Severity.MEDIUM, 0) == 600  # untouched default
    assert policy.repeat_every(Severity.LOW, 0) is None
    assert policy.repeat_every(Severity.HIGH, 1) == 60


def test_every_problem_of_a_policy_file_is_reported_where_it_is() -> None:
    with pytest.raises(PolicyError) as caught:
        EscalationPolicy.from_mapping(
            {
                "timeout_s": {"urgent": 10},
                "levels": [{"name": "x", "notify": ["on_duty:plumber"]}, {"name": "", "notify": []}],
                "extra": 1,
            }
        )
    text = "\n".join(caught.value.problems)
    assert "timeout_s.urgent" in text
    assert "levels.0.notify" in text
    assert "unknown staff role 'plumber'" in text
    assert "levels.1.name" in text
    assert "levels.1.notify" in text
    assert "extra" in text
    with pytest.raises(PolicyError, match="TOML"):
        EscalationPolicy.from_toml("levels = [")
    with pytest.raises(PolicyError, match=r"repeat_s.high: Input should be greater than or equal to 0"):
        EscalationPolicy.from_mapping({"repeat_s": {"high": -5}})
    with pytest.raises(PolicyError, match="not a positive number"):
        EscalationPolicy((EscalationLevel("x", (), timeout_s={Severity.HIGH: 0.0}),))
    with pytest.raises(PolicyError, match="at least one level"):
        EscalationPolicy(())


def test_audiences_parse_and_say_what_is_wrong() -> None:
    assert Audience.parse("on_duty:doctor") == Audience(AudienceKind.ON_DUTY, "doctor")
    assert Audience.parse("family") == Audience(AudienceKind.FAMILY)
    with pytest.raises(ValueError, match="needs staff role"):
        Audience.parse("covering")
    with pytest.raises(ValueError, match="takes no staff role"):
        Audience.parse("family:son")
    with pytest.raises(ValueError, match="unknown audience"):
        Audience.parse("neighbours")


def test_no_file_means_the_default_policy(tmp_path: object) -> None:
    assert load_escalation_policy(None) == EscalationPolicy.default()


# -- routing ----------------------------------------------------------------------------------------------------------
def staff(code: str, role: str) -> Recipient:
    return Recipient(code, RecipientKind.STAFF, code, role=role, email=f"{code}@care.example",
                     channels=(ChannelName.LIVE, ChannelName.EMAIL), min_severity=Severity.LOW)  # fmt: skip


@dataclass
class Directory:
    covering: dict[str, list[Recipient]] = field(default_factory=dict)
    duty: dict[str, list[Recipient]] = field(default_factory=dict)
    relatives: list[Recipient] = field(default_factory=list)
    bracelet: Recipient | None = None
    asked: list[tuple[str, float]] = field(default_factory=list)

    def staff_covering(self, role: str, home_id: str) -> list[Recipient]:
        return self.covering.get(role, [])

    def staff_on_duty(self, role: str, home_id: str, now: float) -> list[Recipient]:
        self.asked.append((role, now))
        return self.duty.get(role, [])

    def family(self, resident_id: str) -> list[Recipient]:
        return self.relatives

    def emergency_contacts(self, resident_id: str) -> list[Recipient]:
        return [r for r in self.relatives if r.role == "daughter"]

    def resident(self, resident_id: str) -> Recipient | None:
        return self.bracelet


DAUGHTER = Recipient("family:1", RecipientKind.FAMILY, "Mei", role="daughter", email="mei@example.org",
                     min_severity=Severity.LOW)  # fmt: skip
SON = Recipient("family:2", RecipientKind.FAMILY, "Jun", role="son", email="jun@example.org",
                min_severity=Severity.REMINDER)  # fmt: skip
BRACELET = Recipient("resident:R0001", RecipientKind.RESIDENT, "Wang Wei", device_id="BR0001",
                     channels=(ChannelName.BRACELET,))  # fmt: skip


@pytest.fixture
def directory() -> Directory:
    nurse = staff("nurse-1", "nurse")
    return Directory(
        covering={"grid_staff": [staff("grid-1", "grid_staff"), nurse], "community_lead": [staff("lead", "x")]},
        duty={"nurse": [nurse], "doctor": [staff("doc-1", "doctor")]},
        relatives=[DAUGHTER, SON],
        bracelet=BRACELET,
    )


def ids(recipients: list[Recipient]) -> list[str]:
    return [r.recipient_id for r in recipients]


def test_level_0_of_an_alarm_is_grid_staff_nurse_on_duty_and_family_each_once(directory: Directory) -> None:
    policy = EscalationPolicy.default()
    got = recipients_at(policy, directory, 0, resident_id="R0001", home_id="H0001", severity=Severity.HIGH, now=T0)
    assert ids(got) == ["grid-1", "nurse-1", "family:1", "family:2"]
    assert directory.asked == [("nurse", T0)]


def test_a_reminder_goes_to_the_bracelet_and_the_family_that_asked_for_reminders(directory: Directory) -> None:
    policy = EscalationPolicy.default()
    got = recipients_at(policy, directory, 0, resident_id="R0001", home_id="H0001", severity=Severity.REMINDER, now=T0)
    assert ids(got) == ["family:2", "resident:R0001"]


def test_repeats_page_staff_not_the_family(directory: Directory) -> None:
    policy = EscalationPolicy.default()
    got = recipients_at(
        policy, directory, 0, resident_id="R0001", home_id="H0001", severity=Severity.HIGH, now=T0, repeat=True
    )
    assert ids(got) == ["grid-1", "nurse-1"]


def test_higher_levels(directory: Directory) -> None:
    policy = EscalationPolicy.default()

    def at(level: int) -> list[str]:
        return ids(
            recipients_at(
                policy, directory, level, resident_id="R0001", home_id="H0001", severity=Severity.HIGH, now=T0
            )
        )

    assert at(1) == ["doc-1"]
    assert at(2) == ["lead"]
    assert at(3) == ["family:1"]
    with pytest.raises(IndexError):
        at(4)


def test_route_says_who_is_paged_and_who_is_informed(directory: Directory) -> None:
    policy = EscalationPolicy.from_mapping({"levels": [{"name": "all", "notify": ["family", "emergency_contacts"]}]})
    routed = route(policy, directory, 0, resident_id="R0001", home_id="H0001", severity=Severity.HIGH, now=T0)
    # the daughter is family (informed) and an emergency contact (paged): paged; the son is only informed
    assert [(r.recipient.recipient_id, r.paged) for r in routed] == [("family:1", True), ("family:2", False)]
