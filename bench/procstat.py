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
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


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
