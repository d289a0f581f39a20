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
