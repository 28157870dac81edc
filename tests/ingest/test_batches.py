"""Batches are acknowledged in the order their messages arrived, whatever order they finish in."""

from __future__ import annotations

from ingest.batches import AckQueue, Batch


def batch(*pids: int) -> Batch:
    return Batch(session=1, pids=list(pids))


def test_a_batch_that_finishes_early_waits_for_the_ones_before_it() -> None:
    queue = AckQueue()
    first, second, third = batch(1, 2), batch(3), batch(4, 5)
    for b in (first, second, third):
        queue.add(b)
    assert queue.messages == 5
    third.waiting = 0
    assert queue.release() == []
    first.waiting = 0
    assert queue.release() == [first]
    second.waiting = 0
    assert queue.release() == [second, third]
    assert len(queue) == 0


def test_a_batch_is_finished_only_when_nothing_is_left_to_wait_for() -> None:
    b = batch(1)
    b.waiting += 2  # two dead letters in flight besides the store
    queue = AckQueue()
    queue.add(b)
    b.waiting -= 1
    assert not b.finished
    assert queue.release() == []
    b.waiting -= 2
    assert b.finished
    assert queue.release() == [b]
