"""Threads that carry their name to the operating system (``top -H``, ``ps -L``, ``/proc``).

Python 3.11 names threads for itself only: the kernel sees every thread of ``stemdaq serve`` as
``stemdaq``. :func:`named` makes a thread set its kernel name (``/proc/thread-self/comm``,
15 bytes at most) to its Python name when it starts, so that a facility engineer watching
``top -H`` (and ``bench/perframe.py --threads``) sees ``stemdaq-data``, ``stemdaq-summary``,
``stemdaq-sync`` or ``stemdaq-encode`` and how much CPU each takes. Where ``/proc`` cannot be
written the thread runs unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

COMM_BYTES = 15  # the kernel's TASK_COMM_LEN, less its terminating zero


def set_os_name(name: str) -> None:
    """Set the calling thread's kernel name (truncated to :data:`COMM_BYTES`)."""
    try:
        with open("/proc/thread-self/comm", "wb") as fh:
            fh.write(name.encode("ascii", "replace")[:COMM_BYTES])
    except OSError:  # not Linux, or /proc read-only: the name stays Python's only
        pass


def named(
    target: Callable[..., Any], *, name: str, args: tuple[Any, ...] = (), daemon: bool = True
) -> threading.Thread:
    """A (not yet started) thread running ``target(*args)`` whose kernel name is ``name``."""

    def run() -> None:
        set_os_name(name)
        target(*args)

    return threading.Thread(target=run, name=name, daemon=daemon)
