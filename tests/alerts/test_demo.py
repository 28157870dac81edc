"""The demo tells the alert loop end to end on the embedded broker and SQLite: what a user reads is the story."""

from __future__ import annotations

import re
from pathlib import Path

from careloop.demo import run_demo


async def test_demo_shows_sos_then_a_fall_escalated_acknowledged_handled_and_resolved(tmp_path: Path) -> None:
    lines: list[str] = []
    await run_demo(tmp_path / "demo", say=lines.append, timeout_s=60)
    text = "\n".join(lines)

    def first(pattern: str) -> int:
        """The index of the first line matching `pattern` (the test fails when none does)."""
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no line matches {pattern!r} in:\n{text}"
        return found[0]

    # The SOS opens at once, is pushed live, and who was told is said, the family's e-mail failing honestly.
    first(r"console +live: sos alarm \(high\) new -> OPEN")
    first(r"paged at the console, level 0 .*Zhang Wei .*Li Na")
    first(r"e-mail to Wang Min .*FAILED - e-mail is not configured in the demo")
    first(r"console +live: sos alarm .* -> RESOLVED, by Zhang Wei")

    # The fall waits out its cancel window, escalates to the doctor on duty, and the nurse takes it to the end.
    story = [
        first(r"console +live: fall alarm \(high\) new -> PENDING"),
        first(r"console +live: fall alarm \(high\) pending -> OPEN"),
        first(r"console +live: fall alarm .*escalated to level 1 \(doctor on duty\)"),
        first(r"paged at the console, level 1 \(doctor on duty\): Dr Huang"),
        first(r"console +live: fall alarm .* -> ACKNOWLEDGED, by Li Na"),
        first(r"console +live: fall alarm .* -> IN_HANDLING, by Li Na"),
        first(r"console +live: fall alarm .* -> RESOLVED, by Li Na .*handled at home"),
    ]
    assert story == sorted(story), text

    # The fall's audit log: time, actor, action, in the order things happened.
    start = first(r"^audit log of the fall alarm al-")
    audit = [line.split() for line in lines[start + 1 :] if re.match(r"^  \d\d:\d\d:\d\d  ", line)]
    actions = [(actor, action) for _, actor, action, *_ in audit]
    assert actions[:3] == [("system", "raise"), ("system", "cancel_window_elapsed"), ("system", "notify")]
    assert ("system", "escalate") in actions
    assert actions[-3:] == [("N0001", "acknowledge"), ("N0001", "start_handling"), ("N0001", "resolve")]
    assert actions.index(("system", "escalate")) < actions.index(("N0001", "acknowledge"))
    assert re.search(r"careloop report: 2 alarms raised, 2 resolved \(1 false alarm\)", lines[-1]), lines[-1]
