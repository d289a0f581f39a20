"""The hand-off queue between the serving path and the worker."""

from __future__ import annotations

import queue
import threading

import pytest

from inferwatch.pipeline import HandoffQueue


def test_put_is_bounded_and_refusal_is_queue_full():
    q = HandoffQueue(maxsize=3)
    for i in range(3):
        q.put_nowait(i)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert q.qsize() == 3 and q.unfinished_tasks == 3


def test_take_all_returns_everything_in_order_up_to_the_limit():
    q = HandoffQueue(maxsize=100)
    for i in range(10):
        q.put_nowait(i)
    assert q.take_all(limit=4) == [0, 1, 2, 3]
    assert q.unfinished_tasks == 10  # four in hand, six queued
    for _ in range(4):
        q.done()
    assert q.take_all() == [4, 5, 6, 7, 8, 9]


def test_take_all_waits_for_a_producer():
    q = HandoffQueue(maxsize=10, poll_seconds=0.001)
    timer = threading.Timer(0.05, q.put_nowait, args=("late",))
    timer.start()
    assert q.take_all() == ["late"]
    timer.join()


def test_the_stop_marker_is_never_refused():
    q = HandoffQueue(maxsize=1)
    q.put_nowait("x")
    q.put_always("stop")
    assert q.take_all() == ["x", "stop"]


def test_bytes_are_bounded_too_and_freed_when_taken():
    q = HandoffQueue(maxsize=100, max_bytes=1000)
    q.put_nowait("a", 600)
    q.put_nowait("b", 400)
    with pytest.raises(queue.Full):   # the count allows it, the bytes do not
        q.put_nowait("c", 1)
    q.put_nowait("sizeless")          # items without a size only count
    assert q.queued_bytes == 1000 and q.qsize() == 3
    assert q.take_all() == ["a", "b", "sizeless"]
    assert q.queued_bytes == 0
    q.put_nowait("d", 1000)           # exactly the bound fits
    with pytest.raises(queue.Full):
        q.put_nowait("e", 1001)       # larger than the whole bound: refused, never held
    assert q.queued_bytes == 1000


def test_concurrent_producers_keep_the_byte_count_exact():
    q = HandoffQueue(maxsize=1_000_000, max_bytes=10**12)

    def produce():
        for _ in range(20_000):
            q.put_nowait("x", 3)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    taken = 0
    while any(t.is_alive() for t in threads) or q.qsize():
        if q.qsize():
            taken += len(q.take_all(limit=5000))
    for t in threads:
        t.join()
    taken += len(q.take_all()) if q.qsize() else 0
    assert taken == 80_000 and q.queued_bytes == 0
