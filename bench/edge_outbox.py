"""The edge outbox's write path: what durability costs, and what grouping device messages per transaction saves.

Every case journals device messages (an accelerometer batch's worth of bytes each) the way `EdgeService` does,
staging one vitals summary per 60 messages; the baseline commits one message per transaction with
`synchronous=NORMAL`. Cases: the service's grouping (64 messages per transaction), and an alarm in every
transaction (`synchronous=FULL`: an fsync per commit), alone and grouped. Also the drain: reading pending messages
and deleting them after their PUBACK, as the uplink does.

Run: `.venv/bin/python bench/edge_outbox.py [--json] [--messages 4000]`. Prints microseconds per device message
and the ratio baseline / case (above 1: faster than the baseline).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from careloop import messages as m
from edge.models import Outputs, event_id
from edge.outbox import JournalEntry, Outbox, Stream, item_json, staged_items

T0 = 1_790_000_000.0
PAYLOAD = (
    b'{"v":1,"t0":1790000000.0,"rate_hz":50.0,"samples_g":[' + b",".join([b"[0.0123,-0.9871,0.0432]"] * 50) + b"]}"
)


def _outputs(i: int, alarm: bool) -> Outputs:
    out = Outputs()
    if i % 60 == 59:
        out.vitals.append(
            m.VitalsSummary(ts=T0 + i, device_id="BR-1", interval_s=60.0, hr_bpm=70.0, n_readings=60, n_rejected=0)
        )
    if alarm:
        out.events.append(m.SosEvent(event_id=event_id("sos", "BR-1", T0 + i), ts=T0 + i, pressed_ts=T0 + i))
    return out


def write_path(directory: Path, messages: int, group: int, alarm: bool) -> float:
    """Microseconds per device message: journal + staged outputs, `group` messages per transaction."""
    with Outbox(directory / f"w-{group}-{alarm}.db") as box:
        start = time.perf_counter()
        for first in range(0, messages, group):
            journal, items = [], []
            for i in range(first, min(first + group, messages)):
                journal.append(JournalEntry("H1", f"t/{i}", PAYLOAD + str(i).encode(), T0 + i))
                items += staged_items("H1", _outputs(i, alarm and i == first))
            box.commit(now=T0 + first, journal=journal, items=items)
        return (time.perf_counter() - start) / messages * 1e6


def drain(directory: Path, messages: int, window: int) -> float:
    """Microseconds per uplink message: pending() a window at a time, then ack() each, as the uplink does."""
    with Outbox(directory / "drain.db") as box:
        body = item_json(m.SosEvent(event_id="sos-1", ts=T0, pressed_ts=T0))
        for i in range(messages):
            box.enqueue("H1", Stream.EVENTS, [body], now=T0 + i)
        start = time.perf_counter()
        cursor = 0
        while batch := box.pending(after_id=cursor, limit=window):
            for message in batch:
                box.ack([message.id])
            cursor = batch[-1].id
        return (time.perf_counter() - start) / messages * 1e6


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--messages", type=int, default=4000)
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="careloop-bench-outbox-") as tmp:
        directory = Path(tmp)
        baseline = write_path(directory, n, 1, alarm=False)
        results = {
            "one message per transaction, NORMAL (baseline)": baseline,
            "64 per transaction, NORMAL (the service)": write_path(directory, n, 64, alarm=False),
            "one per transaction, each with an alarm (FULL)": write_path(directory, n // 4, 1, alarm=True),
            "64 per transaction, each with an alarm (FULL)": write_path(directory, n, 64, alarm=True),
            "drain: pending + ack per message (window 32)": drain(directory, n, 32),
        }
    if args.json:
        print(json.dumps({k: {"us": v, "ratio": baseline / v} for k, v in results.items()}, indent=2))
        return
    print(f"edge outbox, {n} device messages of {len(PAYLOAD)} bytes (us per message; ratio = baseline / case)")
    for name, us in results.items():
        print(f"  {name:52} {us:9.1f} us  x{baseline / us:6.2f}")


if __name__ == "__main__":
    main()
