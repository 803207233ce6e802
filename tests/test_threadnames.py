"""stemdaq's threads carry their names to the kernel (``top -H``, ``/proc``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from stemdaq.compression import CompressionWindow
from stemdaq.threadnames import COMM_BYTES, named

pytestmark = pytest.mark.skipif(not Path("/proc/thread-self/comm").exists(), reason="no /proc")


def _comm(tid: int) -> str:
    return Path(f"/proc/{os.getpid()}/task/{tid}/comm").read_text().strip()


def test_named_thread_has_its_name_in_the_kernel() -> None:
    seen: list[str] = []
    ready = threading.Event()

    def work() -> None:
        seen.append(_comm(threading.get_native_id()))
        ready.set()

    t = named(work, name="stemdaq-data-0123456789")
    t.start()
    assert ready.wait(5)
    t.join(5)
    assert t.name == "stemdaq-data-0123456789"  # Python's name is whole
    assert seen == ["stemdaq-data-0123456789"[:COMM_BYTES]]
    assert _comm(threading.get_native_id()) != seen[0]  # the caller's name is untouched


def test_compression_workers_are_named() -> None:
    def prepare(frame: object) -> bytes:
        return _comm(threading.get_native_id()).encode()

    window = CompressionWindow(prepare, 1, 1 << 20, 1, name="scan-0042-compress")
    try:
        future = window._pool.submit(prepare, None)
        assert future.result(5) == b"stemdaq-encode"  # the kernel name says what it does
    finally:
        window.shutdown()
