"""Unit tests of the compression window (one class, a fake prepare function)."""

from __future__ import annotations

import threading

import pytest
from stemdaq.compression import CompressionWindow
from stemdaq.models import Codec, Frame


def frame(i: int, nbytes: int = 100) -> Frame:
    return Frame(1, i, "threshold_1", (1, nbytes), "uint8", Codec.RAW, bytes(nbytes))


def test_frames_come_back_in_arrival_order_even_when_batches_finish_out_of_order():
    gate = threading.Event()

    def prepare(f: Frame) -> int:
        if f.frame_id < 4:  # the first batch is slow
            gate.wait(5)
        return f.frame_id * 10

    window = CompressionWindow(prepare, workers=2, batch=4)
    for i in range(8):
        window.add(i, 0, frame(i))
    assert list(window.ready(block=False)) == []  # the oldest batch is not done: nothing yet
    gate.set()
    got = [(pos, chunk) for pos, _, _, chunk in window.ready(block=True)]
    assert got == [(i, i * 10) for i in range(8)]
    assert len(window) == 0
    window.shutdown()


def test_a_failing_frame_is_returned_as_its_exception_without_costing_its_neighbours():
    def prepare(f: Frame) -> int:
        if f.frame_id == 2:
            raise ValueError("bad frame")
        return f.frame_id

    window = CompressionWindow(prepare, workers=1, batch=8)
    for i in range(5):
        window.add(i, 0, frame(i))
    out = [chunk for *_, chunk in window.ready(block=True)]
    assert out[:2] == [0, 1] and out[3:] == [3, 4]
    assert isinstance(out[2], ValueError)
    window.shutdown()


@pytest.mark.parametrize("n", [1, 3])
def test_window_is_full_beyond_its_byte_budget(n):
    window = CompressionWindow(lambda f: f.frame_id, workers=1, max_bytes=250, batch=16)
    for i in range(n):
        window.add(i, 0, frame(i, 100))
    assert window.full is (n * 100 > 250)
    list(window.ready(block=True))
    assert not window.full
    window.shutdown()
