"""The zero-setup demo runs end to end on the embedded broker and SQLite."""

from __future__ import annotations

from pathlib import Path

from careloop.demo import run_demo


async def test_demo_accepts_valid_messages_and_dead_letters_every_malformed_one(tmp_path: Path) -> None:
    lines: list[str] = []
    tally = await run_demo(tmp_path / "demo", say=lines.append, timeout_s=60)
    assert tally.accepted == {
        "DEVICE_AVAILABILITY": 1,
        "DEVICE_WEAR": 1,
        "DEVICE_VITALS": 3,
        "DEVICE_ACCEL": 1,
        "DEVICE_SOS": 1,
    }
    assert tally.rejected == {
        "out_of_range": 1,
        "not_finite": 1,
        "timestamp_in_future": 1,
        "wrong_type": 1,
        "bad_json": 1,
    }
    assert tally.dead_letters == 5
    assert any(line.startswith("registry: 20 residents") for line in lines)
    assert any("is worn by" in line and "R00001" in line for line in lines)
    assert any("REJECTED vitals" in line and "hr_bpm" in line for line in lines)
