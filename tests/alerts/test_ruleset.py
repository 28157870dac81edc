"""The rule file: the packaged defaults load, and every kind of mistake is refused with its key path and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alerts.models import Severity
from alerts.ruleset import CONDITIONS, RulesError, RuleSet, load_rules, parse_rules

RULE = """
[thresholds.hr_high]
kind = "hr_high"
measure = "hr_bpm"
direction = "high"
raise_at = 120.0
clear_at = 110.0
for_s = 300.0
severity = "medium"
reason = "tachycardia"
"""


def _problems(text: str) -> tuple[str, ...]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "test.toml")
    assert caught.value.source == "test.toml"
    assert str(caught.value).startswith("rule file test.toml has")
    return caught.value.problems


def test_packaged_rules_load() -> None:
    rules = load_rules()
    assert isinstance(rules, RuleSet)
    assert {"hr_high", "hr_low", "spo2_low", "news2", "hr_baseline", "hr_rise"} <= {
        r.kind for r in rules.thresholds.values()
    }
    assert rules.events.fall.cancel_window_s == 30.0
    assert rules.events.sos.severity is Severity.HIGH
    assert rules.thresholds["hr_high"].severity is Severity.MEDIUM
    assert set(rules.conditions) <= CONDITIONS


def test_packaged_rules_equal_the_file_loaded_by_path() -> None:
    path = Path(__file__).parents[2] / "alerts" / "rules.toml"
    assert load_rules(path) == load_rules()


def test_empty_file_is_the_built_in_defaults_without_thresholds() -> None:
    rules = parse_rules("")
    assert rules.thresholds == {}
    assert rules.events.fall.cancel_window_s == 30.0
    assert rules.defaults.repeat_s == 60.0


def test_rules_are_frozen() -> None:
    rules = parse_rules(RULE)
    with pytest.raises(ValueError, match="frozen"):
        rules.thresholds["hr_high"].raise_at = 1.0  # type: ignore[misc]


def test_unknown_key_is_named_with_its_path() -> None:
    assert _problems(RULE + "rais_at = 3\n") == ("thresholds.hr_high.rais_at: unknown key",)
    assert _problems("[defaults]\nrepeat = 60\n") == ("defaults.repeat: unknown key",)
    assert _problems("[events.falls]\nseverity = 'high'\nreason = 'x'\n") == ("events.falls: unknown key",)


def test_bad_type_is_named_with_its_path_and_value() -> None:
    (problem,) = _problems(RULE.replace("raise_at = 120.0", 'raise_at = "high"'))
    assert problem.startswith("thresholds.hr_high.raise_at: ")
    assert "'high'" in problem
    (problem,) = _problems(RULE.replace('severity = "medium"', 'severity = "urgent"'))
    assert problem.startswith("thresholds.hr_high.severity: ")
    (problem,) = _problems(RULE.replace('measure = "hr_bpm"', 'measure = "pulse"'))
    assert problem.startswith("thresholds.hr_high.measure: ")


def test_missing_required_key() -> None:
    assert _problems(RULE.replace('reason = "tachycardia"\n', "")) == ("thresholds.hr_high.reason: missing (required)",)


def test_inverted_levels_are_refused() -> None:
    (problem,) = _problems(RULE.replace("clear_at = 110.0", "clear_at = 125.0"))
    assert problem.startswith("thresholds.hr_high.clear_at: raise_at 120 and clear_at 125 are inverted")
    low = RULE.replace('"high"\nraise_at = 120.0\nclear_at = 110.0', '"low"\nraise_at = 40.0\nclear_at = 35.0')
    (problem,) = _problems(low)
    assert "inverted: a 'low' rule must clear above" in problem
    # equal levels leave no hysteresis: refused too
    assert _problems(RULE.replace("clear_at = 110.0", "clear_at = 120.0"))
    battery = "[technical.battery_low]\nseverity='reminder'\nreason='x'\nraise_at_pct=30\nclear_at_pct=20\n"
    (problem,) = _problems(battery)
    assert problem.startswith("technical.battery_low: raise_at_pct 30 and clear_at_pct 20 are inverted")


def test_unknown_condition_is_refused() -> None:
    (problem,) = _problems("[conditions.atrial_fibrilation]\nlimits = { hr_max_bpm = 130.0 }\n")
    assert problem.startswith("conditions.atrial_fibrilation: unknown condition; known conditions are ")
    assert "atrial_fibrillation" in problem


def test_references_to_unknown_rules_and_kinds_are_refused() -> None:
    problems = _problems(
        RULE
        + 'inhibited_by = ["hr_hgih"]\n'
        + '[conditions.copd]\ndisable = ["spo2_lo"]\n'
        + '[residents.R00001]\ndisable = ["nope"]\n'
    )
    assert problems == (
        "thresholds.hr_high.inhibited_by: unknown kind 'hr_hgih'",
        "conditions.copd.disable: unknown rule 'spo2_lo'",
        "residents.R00001.disable: unknown rule 'nope'",
    )


def test_every_problem_is_reported_at_once() -> None:
    text = (
        RULE.replace("clear_at = 110.0", "clear_at = 130.0")
        + "colour = 'red'\n"
        + '[night]\nstart = "25:00"\n'
        + '[residents.R1]\nmedication_times = ["8am"]\n'
    )
    problems = _problems(text)
    assert len(problems) == 4
    joined = "\n".join(problems)
    assert "thresholds.hr_high.clear_at: raise_at 120 and clear_at 130 are inverted" in joined
    assert "thresholds.hr_high.colour: unknown key" in joined
    assert "night.start: '25:00' is not a time of day HH:MM" in joined
    assert "residents.R1.medication_times.0: '8am' is not a time of day HH:MM" in joined


def test_limit_must_match_the_measure_and_come_with_its_default() -> None:
    (problem,) = _problems(RULE + 'limit = "spo2_min_pct"\nlimit_default = 92.0\n')
    assert problem == "thresholds.hr_high: limit spo2_min_pct moves spo2_pct, not this rule's hr_bpm"
    (problem,) = _problems(RULE + 'limit = "hr_max_bpm"\n')
    assert problem.startswith("thresholds.hr_high: limit and limit_default go together")


def test_promotion_is_for_reminders_and_goes_up() -> None:
    (problem,) = _problems(RULE + 'promote_after_s = 60.0\npromote_to = "high"\n')
    assert "only a reminder is promoted" in problem
    reminder = RULE.replace('severity = "medium"', 'severity = "reminder"')
    (problem,) = _problems(reminder + "promote_after_s = 60.0\n")
    assert "promote_after_s and promote_to go together" in problem
    assert parse_rules(reminder + 'promote_after_s = 60.0\npromote_to = "low"\n')


def test_sos_cannot_be_weakened() -> None:
    (problem,) = _problems("[events.sos]\nseverity = 'medium'\nreason = 'sos'\n")
    assert problem.startswith("events: sos is always enabled, high, with no cancel window")
    assert _problems("[events.sos]\nseverity = 'high'\nreason = 'sos'\ncancel_window_s = 10.0\n")


def test_snooze_statuses_are_registry_statuses() -> None:
    (problem,) = _problems('snooze_statuses = ["holiday"]\n')
    assert problem.startswith("snooze_statuses.0: ")
    (problem,) = _problems('snooze_statuses = ["away", "active"]\n')
    assert "an active resident is never snoozed" in problem


def test_limits_must_be_ordered_and_physiological() -> None:
    (problem,) = _problems("[residents.R1]\nlimits = { hr_min_bpm = 130.0, hr_max_bpm = 120.0 }\n")
    assert problem == "residents.R1.limits: hr_min_bpm 130 is not below hr_max_bpm 120"
    (problem,) = _problems("[residents.R1]\nlimits = { spo2_min_pct = 120.0 }\n")
    assert problem.startswith("residents.R1.limits.spo2_min_pct: ")


def test_bad_toml_and_unreadable_files(tmp_path: Path) -> None:
    (problem,) = _problems("[thresholds\n")
    assert problem.startswith("not valid TOML: ")
    missing = tmp_path / "nope.toml"
    with pytest.raises(RulesError, match=re.escape(str(missing)) + ".*cannot be read"):
        load_rules(missing)


def test_a_file_on_disk_is_named_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "site-rules.toml"
    path.write_text(RULE + "bogus = 1\n", encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert f"{path}: thresholds.hr_high.bogus: unknown key" in str(caught.value)


def test_condition_aliases_must_not_collide() -> None:
    text = '[conditions.atrial_fibrillation]\naliases = ["af"]\n[conditions.copd]\naliases = ["af"]\n'
    (problem,) = _problems(text)
    assert problem == "conditions.copd.aliases: 'af' already names conditions.atrial_fibrillation"
