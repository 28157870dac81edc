"""The durable outbox: order, idempotent ids across reopen, batching, eviction that never removes an alarm, replay
journal, kill -9 survival, and the capacity for a home's day of traffic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careloop import messages as m
from careloop.codec import decode
from careloop.contract import SPECS
from careloop.topics import TopicTree
from edge.models import Outputs, event_id
from edge.outbox import (
    DEFAULT_MAX_BYTES,
    ROW_OVERHEAD_BYTES,
    BatchPolicy,
    JournalEntry,
    Outbox,
    Priority,
    Stream,
    decode_batch,
    item_json,
    msg_id_for,
    staged_items,
)

T0 = 1_790_000_000.0
HOME, OTHER = "H0001", "H0002"


def vitals(ts: float, device: str = "BR-1", hr: float = 70.0) -> m.VitalsSummary:
    return m.VitalsSummary(
        ts=ts,
        device_id=device,
        resident_id="R-1",
        interval_s=60.0,
        hr_bpm=hr,
        hr_min_bpm=hr - 4,
        hr_max_bpm=hr + 5,
        spo2_pct=96.5,
        spo2_min_pct=95.0,
        skin_temp_c=33.2,
        n_readings=58,
        n_rejected=2,
    )


def health(ts: float, device: str) -> m.DeviceHealth:
    return m.DeviceHealth(device_id=device, ts=ts, online=True, last_seen_ts=ts - 3, battery_pct=71.0, worn=True)


def sos(ts: float, device: str = "BR-1") -> m.SosEvent:
    return m.SosEvent(event_id=event_id("sos", device, ts), ts=ts, device_id=device, resident_id="R-1", pressed_ts=ts)


def presence(ts: float, present: bool = True) -> m.PresenceEvent:
    return m.PresenceEvent(event_id=event_id("presence", "home", ts), ts=ts, present=present, room="living_room")


def fall(ts: float, clip_samples: int = 1000) -> m.FallEvent:
    samples = tuple((0.012 * (i % 7), -0.987 + 0.001 * (i % 13), 0.043) for i in range(clip_samples))
    return m.FallEvent(
        event_id=event_id("fall", "BR-1", ts),
        ts=ts + 12,
        device_id="BR-1",
        resident_id="R-1",
        room="bathroom",
        impact_ts=ts,
        confidence=0.93,
        placement="wrist",
        sources=("bracelet", "thermal"),
        features={"peak_g": 3.81, "stillness_s": 10.2, "tilt_deg": 78.5},
        clip=m.AccelClip(t0=ts - 10, rate_hz=50.0, samples_g=samples),
    )


def body(item: m.Frozen) -> bytes:
    return item_json(item)


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    with Outbox(tmp_path / "outbox.db") as box:
        yield box  # type: ignore[misc]


# -- order and ids ----------------------------------------------------------------------------------------------
def test_messages_wait_in_enqueue_order_with_a_seq_per_home_and_decode_as_the_contract_says(outbox: Outbox) -> None:
    tree = TopicTree("t")
    ids = [
        outbox.enqueue(HOME, Stream.VITALS, [body(vitals(T0))], now=T0),
        outbox.enqueue(OTHER, Stream.EVENTS, [body(sos(T0 + 1))], now=T0 + 1, alarm=True),
        outbox.enqueue(HOME, Stream.HEALTH, [body(health(T0 + 2, "BR-1")), body(health(T0 + 2, "PIR-1"))], now=T0 + 2),
        outbox.enqueue(HOME, Stream.EVENTS, [body(presence(T0 + 3))], now=T0 + 3),
    ]
    assert ids == [msg_id_for(HOME, 0), msg_id_for(OTHER, 0), msg_id_for(HOME, 1), msg_id_for(HOME, 2)]
    assert ids[0] == "H0001-000000000000"
    pending = outbox.pending()
    assert [p.msg_id for p in pending] == ids
    assert [p.seq for p in outbox.pending(HOME)] == [0, 1, 2]
    assert [p.priority for p in pending] == [Priority.VITALS, Priority.ALARM, Priority.HEALTH, Priority.EVENT]
    for message in pending:
        topic = message.topic(tree)
        spec_kind = tree.parse(topic).kind
        decoded = decode(SPECS[spec_kind].model, message.payload, now=T0 + 10, max_bytes=SPECS[spec_kind].max_bytes)
        assert isinstance(decoded, m.UplinkMessage)
        assert (decoded.msg_id, decoded.seq) == (message.msg_id, message.seq)
    health_batch = decode_batch(Stream.HEALTH, pending[2].payload)
    assert isinstance(health_batch, m.DeviceHealthBatch)
    assert [d.device_id for d in health_batch.devices] == ["BR-1", "PIR-1"]
    assert outbox.depth() == 4
    assert outbox.depth(HOME) == 3
    assert outbox.oldest_ts() == T0
    assert outbox.oldest_ts(OTHER) == T0 + 1


def test_ack_removes_only_what_was_acknowledged(outbox: Outbox) -> None:
    for i in range(5):
        outbox.enqueue(HOME, Stream.VITALS, [body(vitals(T0 + 60 * i))], now=T0 + i)
    pending = outbox.pending()
    assert outbox.ack([pending[1].id, pending[3].id]) == 2
    assert outbox.ack([pending[1].id]) == 0  # a second PUBACK for the same message (a resend) changes nothing
    assert [p.seq for p in outbox.pending()] == [0, 2, 4]
    assert [p.seq for p in outbox.pending(after_id=pending[2].id, limit=1)] == [4]
    assert outbox.size_bytes() == sum(len(p.payload) + ROW_OVERHEAD_BYTES for p in outbox.pending())


def test_ids_only_rise_even_when_everything_was_acknowledged(outbox: Outbox) -> None:
    outbox.enqueue(HOME, Stream.VITALS, [body(vitals(T0))], now=T0)
    (first,) = outbox.pending()
    outbox.ack([first.id])
    outbox.enqueue(HOME, Stream.VITALS, [body(vitals(T0 + 60))], now=T0 + 1)
    assert outbox.pending(after_id=first.id)[0].id > first.id  # the uplink's cursor never misses a message


def test_ids_and_bytes_are_the_same_after_a_reopen_and_seq_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        for i in range(3):
            box.enqueue(HOME, Stream.VITALS, [body(vitals(T0 + 60 * i))], now=T0 + i)
        before = box.pending()
        box.ack([before[0].id])
    with Outbox(path) as box:
        after = box.pending()
        assert [(p.msg_id, p.payload) for p in after] == [(p.msg_id, p.payload) for p in before[1:]]
        assert box.enqueue(HOME, Stream.VITALS, [body(vitals(T0 + 999))], now=T0 + 9) == msg_id_for(HOME, 3)
        assert box.next_seq(HOME) == 4
        assert box.size_bytes() == sum(len(p.payload) + ROW_OVERHEAD_BYTES for p in box.pending())


def test_a_long_home_id_still_gives_a_valid_unique_msg_id() -> None:
    home = "H" * 64
    ids = {msg_id_for(home, seq) for seq in (0, 1, 10**11)}
    assert len(ids) == 3
    assert all(len(i) <= 64 for i in ids)
    m.VitalsBatch.model_validate({"msg_id": msg_id_for(home, 7), "seq": 7, "readings": [vitals(T0).model_dump()]})


# -- the batcher ------------------------------------------------------------------------------------------------
def test_vitals_wait_to_be_batched_and_an_alarm_goes_at_once_with_the_events_staged_before_it(outbox: Outbox) -> None:
    first = Outputs(vitals=[vitals(T0)], events=[presence(T0)])
    result = outbox.commit(now=T0, items=staged_items(HOME, first))
    assert result.enqueued == []
    assert outbox.staged_count() == 2
    result = outbox.commit(now=T0 + 1, items=staged_items(HOME, Outputs(vitals=[vitals(T0 + 60, hr=71)])))
    assert result.enqueued == []
    alarm = outbox.commit(now=T0 + 2, items=staged_items(HOME, Outputs(events=[sos(T0 + 2)])))
    assert alarm.enqueued == [msg_id_for(HOME, 0)]  # no waiting: the SOS and the presence before it, in order
    (message,) = outbox.pending()
    assert message.alarm
    assert message.priority is Priority.ALARM
    events = decode_batch(Stream.EVENTS, message.payload)
    assert isinstance(events, m.EventBatch)
    assert [e.kind for e in events.events] == ["presence", "sos"]
    assert outbox.flush_due(T0 + 29).enqueued == []  # the vitals have waited 29 s of their 30
    assert outbox.flush_due(T0 + 30).enqueued == [msg_id_for(HOME, 1)]
    batch = decode_batch(Stream.VITALS, outbox.pending()[1].payload)
    assert isinstance(batch, m.VitalsBatch)
    assert [r.hr_bpm for r in batch.readings] == [70, 71]
    assert outbox.staged_count() == 0


def test_a_full_batch_goes_without_waiting_and_the_rest_waits(tmp_path: Path) -> None:
    policy = {
        Stream.VITALS: BatchPolicy(max_wait_s=30, max_items=3, max_bytes=10**6),
        Stream.EVENTS: BatchPolicy(max_wait_s=5, max_items=50, max_bytes=10**6),
        Stream.HEALTH: BatchPolicy(max_wait_s=60, max_items=100, max_bytes=10**6),
    }
    with Outbox(tmp_path / "o.db", policies=policy) as box:
        outputs = Outputs(vitals=[vitals(T0 + 60 * i, device=f"BR-{i}") for i in range(7)])
        assert len(box.commit(now=T0, items=staged_items(HOME, outputs)).enqueued) == 2
        assert box.staged_count() == 1
        assert [p.n_items for p in box.pending()] == [3, 3]
        assert len(box.flush_due(T0, force=True).enqueued) == 1


def test_batches_of_several_homes_stay_apart(outbox: Outbox) -> None:
    outbox.commit(now=T0, items=staged_items(HOME, Outputs(vitals=[vitals(T0, device="BR-A")])))
    outbox.commit(now=T0, items=staged_items(OTHER, Outputs(vitals=[vitals(T0, device="BR-B")])))
    outbox.flush_due(T0 + 30)
    for home, device in ((HOME, "BR-A"), (OTHER, "BR-B")):
        (message,) = outbox.pending(home)
        batch = decode_batch(Stream.VITALS, message.payload)
        assert isinstance(batch, m.VitalsBatch)
        assert [r.device_id for r in batch.readings] == [device]
        assert message.seq == 0


# -- the bound --------------------------------------------------------------------------------------------------
def test_eviction_takes_lowest_priority_oldest_first_never_an_alarm_and_counts_it(tmp_path: Path) -> None:
    v = body(vitals(T0))
    size = len(v) + 80 + ROW_OVERHEAD_BYTES  # about one message
    with Outbox(tmp_path / "o.db", max_bytes=6 * size) as box:
        box.enqueue(HOME, Stream.EVENTS, [body(sos(T0))], now=T0, alarm=True)
        box.enqueue(HOME, Stream.VITALS, [v], now=T0 + 1)
        box.enqueue(HOME, Stream.HEALTH, [body(health(T0, "BR-1"))], now=T0 + 2)
        box.enqueue(HOME, Stream.EVENTS, [body(presence(T0))], now=T0 + 3)
        box.enqueue(HOME, Stream.VITALS, [v], now=T0 + 4)
        box.enqueue(HOME, Stream.VITALS, [v], now=T0 + 5)
        assert box.evictions() == {}
        box.enqueue(HOME, Stream.EVENTS, [body(sos(T0 + 6))], now=T0 + 6, alarm=True)
        box.enqueue(HOME, Stream.VITALS, [v], now=T0 + 7)
        left = [(p.seq, p.stream.value) for p in box.pending()]
        assert (0, "events") in left
        assert (6, "events") in left
        assert (1, "vitals") not in left  # the oldest vitals went first
        evicted = box.evictions(HOME)
        assert evicted[Stream.VITALS].messages >= 1
        assert Stream.EVENTS not in evicted or all(p.alarm for p in box.pending() if p.stream is Stream.EVENTS)
        assert box.size_bytes() <= box.max_bytes
        # more alarms than the bound holds: every non-alarm goes, every alarm stays
        for i in range(10):
            result = box.commit(now=T0 + 10 + i, items=staged_items(HOME, Outputs(events=[sos(T0 + 10 + i)])))
        assert result.over_bound
        pending = box.pending()
        assert all(p.alarm for p in pending)
        assert len(pending) == 12
        assert sum(e.messages for e in box.evictions().values()) == 18 - 12
        backlog = box.backlog()[HOME]
        assert backlog.depth == 12
        assert backlog.next_seq == 18
        assert backlog.evicted == box.evictions(HOME)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([HOME, OTHER]), st.sampled_from(list(Stream)), st.booleans(), st.integers(1, 4)),
        min_size=1,
        max_size=40,
    ),
    st.integers(2_000, 12_000),
)
def test_whatever_the_bound_evicts_alarms_stay_seq_rises_and_everything_is_counted(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, Stream, bool, int]], bound: int
) -> None:
    path = tmp_path_factory.mktemp("prop") / "o.db"
    with Outbox(path, max_bytes=bound) as box:
        alarms = set()
        for i, (home, stream, alarm_flag, n) in enumerate(ops):
            alarm = alarm_flag and stream is Stream.EVENTS
            items = [body(sos(T0 + i * 10 + k)) if alarm else body(vitals(T0 + 60 * k)) for k in range(n)]
            if stream is Stream.HEALTH:
                items = [body(health(T0 + k, f"D{k}")) for k in range(n)]
            if stream is Stream.EVENTS and not alarm:
                items = [body(presence(T0 + i * 10 + k)) for k in range(n)]
            msg_id = box.enqueue(home, stream, items, now=T0 + i, alarm=alarm)
            if alarm:
                alarms.add(msg_id)
        pending = box.pending(limit=1000)
        assert alarms <= {p.msg_id for p in pending}
        for home in (HOME, OTHER):
            seqs = [p.seq for p in pending if p.home_id == home]
            assert seqs == sorted(seqs)
        evicted = sum(e.messages for e in box.evictions().values())
        assert evicted + len(pending) == len(ops)
        assert box.size_bytes() <= bound or all(p.alarm for p in pending)


# -- the journal ------------------------------------------------------------------------------------------------
def test_the_journal_recognises_a_redelivery_and_keeps_the_last_minutes_for_replay(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", journal_keep_s=60, journal_keep_rows=5) as box:
        entries = [JournalEntry(HOME, f"t/{i}", b"payload %d" % i, T0 + 10 * i) for i in range(20)]
        for entry in entries:
            box.commit(now=entry.received_ts, journal=[entry])
        box.commit(now=T0 + 500, journal=[entries[-1]])  # delivered again: stored once
        assert box.recent_digests(3) == [e.digest for e in entries[-3:]]
        box.prune(T0 + 200)
        replay = box.replay_entries(HOME)
        assert replay == entries[-7:]  # 60 s before the newest, inclusive
        assert box.recent_digests(100) == [e.digest for e in entries[-7:]]
        assert box.replay_entries(OTHER) == []


def test_produced_keys_are_remembered_for_a_replay(outbox: Outbox) -> None:
    items = staged_items(HOME, Outputs(events=[sos(T0)], vitals=[vitals(T0)], health=[health(T0, "PIR-1")]))
    outbox.commit(now=T0, items=items)
    again = staged_items(HOME, Outputs(events=[sos(T0)], vitals=[vitals(T0), vitals(T0 + 60)]))
    known = outbox.already_produced(HOME, [i.key for i in again])
    assert known == {again[0].key, again[1].key}
    assert outbox.already_produced(OTHER, [i.key for i in again]) == set()


# -- kill -9 ----------------------------------------------------------------------------------------------------
def test_a_commit_survives_a_kill_9_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from edge.outbox import Outbox, Stream
        box = Outbox({str(path)!r})
        for i in range(200):
            box.enqueue("H1", Stream.VITALS, [b'{{"i":%d}}' % i], now={T0} + i, alarm=(i % 50 == 0))
        print("committed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "committed"
    assert Path(str(path) + "-wal").exists()  # never checkpointed: the data is only in the WAL
    with Outbox(path) as box:
        assert [p.seq for p in box.pending(limit=1000)] == list(range(200))
    assert os.path.getsize(path) > 0


# -- capacity ---------------------------------------------------------------------------------------------------
DEVICES = ["BR-1", "PIR-bedroom", "PIR-bathroom", "PIR-kitchen", "PIR-living_room", "PIR-hallway", "PIR-front_door"]
DEVICES += ["THERMO-bedroom", "THERMO-bathroom", "THERMO-living_room", "BED-bedroom"]


def a_day_of_one_home(box: Outbox, home: str, start: float) -> None:
    """24 h of a busy home through the batcher: a vitals summary a minute, the health of 11 devices every 5 min,
    40 presence changes, and 10 alarms of which 2 falls with their 20 s accelerometer clips."""
    alarms = {int(h * 3600) for h in (2.2, 7.5, 9.1, 11.0, 13.3, 15.8, 18.2, 20.4, 22.7, 23.5)}
    falls = {int(7.5 * 3600), int(20.4 * 3600)}
    presences = {int(i * 86_400 / 40) + 17 for i in range(40)}
    for second in range(0, 86_400, 1):
        now = start + second
        out = Outputs()
        if second % 60 == 59:
            out.vitals.append(vitals(now, hr=60 + (second // 60) % 30))
        if second % 300 == 299:
            out.health.extend(health(now, d) for d in DEVICES)
        if second in presences:
            out.events.append(presence(now, present=bool(second % 2)))
        if second in alarms:
            out.events.append(fall(now) if second in falls else sos(now))
        if out:
            box.commit(now=now, items=staged_items(home, out))
        if second % 10 == 0:
            box.flush_due(now)
    box.flush_due(start + 86_400, force=True)


def test_a_day_of_a_home_fits_the_default_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Outbox(tmp_path / "o.db") as box:
        a_day_of_one_home(box, HOME, T0)
        day_bytes = box.size_bytes()
        messages = box.depth()
        assert box.evictions() == {}
        assert box.staged_count() == 0
        items = sum(p.n_items for p in box.pending(limit=100_000))
        assert items == 1440 + 288 * len(DEVICES) + 40 + 10
        file_bytes = box.file_bytes()
    with capsys.disabled():
        print(
            f"\n  a day of one home: {messages} messages, {items} items, {day_bytes / 1e6:.2f} MB counted, "
            f"{file_bytes / 1e6:.2f} MB on disk; the default bound of {DEFAULT_MAX_BYTES / 2**20:.0f} MiB holds "
            f"{DEFAULT_MAX_BYTES / day_bytes:.0f} home-days"
        )
    assert day_bytes * 24 < DEFAULT_MAX_BYTES  # over three weeks of one gateway's outage, or a day of 24 homes


def test_at_a_small_bound_a_day_keeps_every_alarm_and_drops_vitals_first(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_bytes=400_000) as box:
        a_day_of_one_home(box, HOME, T0)
        evicted = box.evictions(HOME)
        assert evicted[Stream.VITALS].messages > 0
        pending = box.pending(limit=100_000)
        alarm_items = 0
        for message in pending:
            if message.alarm:
                batch = decode_batch(Stream.EVENTS, message.payload)
                assert isinstance(batch, m.EventBatch)
                alarm_items += sum(1 for e in batch.events if e.kind != "presence")
        assert alarm_items == 10
        assert box.size_bytes() <= 400_000
