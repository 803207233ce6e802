"""CPU time and memory of a receiving process, measured from outside (``/proc``, ``wait4``).

Every receiver is a fresh child process. Its CPU for the series is

    ``(user + system at exit, from os.wait4's rusage) - (user + system before the first frame,
    from /proc/<pid>/stat)``

for a receiver that exits when the file is closed (``stemdaq acquire`` and the benchmark's own
receivers), and the difference of two ``/proc/<pid>/stat`` samples (before the first frame,
once the acquisition's final state is seen) for ``stemdaq serve``, which keeps running. Both
count every thread of the process (ZeroMQ's I/O thread, compression pools) and, as wait4
does, its waited-for children. Start-up (interpreter, imports, settings) is before the first
sample and not counted; the exit of a process that ends is (a few ms).

Peak RSS is ``ru_maxrss`` from wait4 for a receiver started by :mod:`launcher` (so that it
is not the driver's), ``VmHWM`` read just before the end for ``stemdaq serve``.
"""

from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")  # clock ticks per second


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its waited-for children (``/proc/<pid>/stat``).

    Resolution: one clock tick (``SC_CLK_TCK``, usually 10 ms).
    """
    _, fields = _stat(f"/proc/{pid}/stat")
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Kernel name and user + system CPU seconds of each thread of ``pid`` now
    (``/proc/<pid>/task/<tid>/stat``); empty if the process is gone."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name, fields = _stat(f"/proc/{pid}/task/{tid}/stat")
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def _stat(path: str) -> tuple[str, list[bytes]]:
    """The command name and the fields after it of a ``/proc`` ``stat`` file."""
    with open(path, "rb") as fh:
        stat = fh.read()
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    name = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
    return name, stat[stat.rindex(b")") + 2 :].split()


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of ``pid`` in MB (MiB); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
