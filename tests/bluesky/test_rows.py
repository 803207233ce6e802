"""Unit tests of stemdaq.rows: complete rows from the written mask, flushes on request."""

from __future__ import annotations

import threading

import numpy as np
from stemdaq.rows import FlushRequests, RowCounter


def test_rows_count_leading_complete_rows_of_every_channel() -> None:
    counter = RowCounter((4, 3))
    mask = np.zeros((2, 12), dtype=np.uint8)
    assert counter.count(mask) == 0
    mask[0, :6] = 1  # channel 0 has rows 0 and 1, channel 1 nothing
    assert counter.count(mask) == 0
    mask[1, :3] = 1
    assert counter.count(mask) == 1
    mask[:, 9:] = 1  # row 3 complete, row 2 not: a gap ends the count
    mask[1, 3:6] = 1
    assert counter.count(mask) == 2
    mask[:, 6:9] = 1
    assert counter.count(mask) == 4
    assert counter.count(np.zeros((1, 12), dtype=np.uint8)) == 0  # a new file's mask


def test_flush_requests_are_served_once_and_released_at_close() -> None:
    requests = FlushRequests()
    flushed: list[int] = []
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(requests.request(30)))
    waiter.start()
    while not requests._waiters:  # the request is queued
        threading.Event().wait(0.001)
    requests.serve(lambda: flushed.append(1), "test", lambda: len(flushed))
    waiter.join(30)
    assert answers == [(True, 1)] and flushed == [1]  # the snapshot is taken after the flush
    requests.serve(lambda: flushed.append(1), "test")  # nothing waiting: no flush
    assert flushed == [1]
    assert requests.request(0.01) == (False, None)  # nobody serves it
    requests.close()
    assert requests.request(30) == (True, None)  # closed: all on disk, answered at once


def test_a_failing_flush_releases_the_request_with_false() -> None:
    requests = FlushRequests()
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(requests.request(30)))
    waiter.start()
    while not requests._waiters:
        threading.Event().wait(0.001)

    def broken() -> None:
        raise OSError("disk full")

    requests.serve(broken, "test", lambda: "not taken")
    waiter.join(30)
    assert answers == [(False, None)]
