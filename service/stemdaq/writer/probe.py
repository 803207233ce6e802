"""Read a possibly damaged acquisition file in a child process, with a time bound.

A damaged or half-written HDF5 file can make a library call hang (seen: minutes at 0% CPU in
``get_storage_size``) or crash the process. :func:`probe_file` runs the reading in a child
Python process (:func:`stemdaq.writer.probe_reader.child_main`, which says what is checked),
reads its progress as JSON lines, and kills it when the time is up, so the caller always gets a
:class:`FileProbe` back, with what was readable before it stopped, and its verdict.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from stemdaq.writer.inspect import ImageReport, InspectReport
from stemdaq.writer.probe_reader import ImageProbe

logger = logging.getLogger(__name__)

Verify = Literal["index", "sample", "all"]
VERIFY_MODES: tuple[str, ...] = ("index", "sample", "all")
_STDERR_KEEP = 64 * 1024
_CHILD = (
    "import sys\n"
    "from stemdaq.writer.probe_reader import child_main\n"
    "sys.exit(child_main(sys.argv[1:]))"
)


@dataclass
class FileProbe:
    """Result of :func:`probe_file`. ``readable`` is False when the reader did not finish."""

    path: str
    readable: bool = False
    error: str | None = None  # one line, never a traceback
    stage: str = ""  # what the reader was doing last (where it stopped, if it did)
    opened: bool = False
    opened_swmr: bool = False  # only a SWMR open worked (marked open by a writer, or truncated)
    open_note: str | None = None  # why the plain open failed
    partial: bool = False
    state_read: bool = False
    state: str | None = None  # /entry/measurement/event1/acquisition/state
    stored_warnings: list[str] = field(default_factory=list)
    stored_error: str | None = None
    images: list[ImageProbe] = field(default_factory=list)
    layout: InspectReport | None = None  # with ``layout=True``
    seconds: float = 0.0

    @property
    def frames_claimed(self) -> int:
        """Frames the bookkeeping claims, all channels."""
        return sum(im.frames_claimed for im in self.images)

    @property
    def positions(self) -> int:
        """Scan positions x channels."""
        return sum(im.positions for im in self.images)

    def incomplete_reasons(self) -> list[str]:
        """Why the data are not whole (empty when they are). Meaningful when ``readable``."""
        out: list[str] = []
        if self.partial and (self.opened_swmr or self.state is None):
            out.append("not closed (a .partial file: the writer was killed or is still writing)")
        elif self.partial:
            out.append("closed, but still named .partial (the final name was taken?)")
        elif self.opened_swmr:
            out.append(f"opens only in SWMR mode ({self.open_note})")
        elif self.state is None:
            out.append("no acquisition state in the file (not closed by stemdaq)")
        if self.state not in (None, "completed"):
            out.append(f"state {self.state}")
        if not self.images:
            out.append("no NXimage with frame bookkeeping")
        for im in self.images:
            name = f"{im.path.rsplit('/', 1)[-1]}: " if len(self.images) > 1 else ""
            if im.frames_claimed < im.positions:
                missing = im.positions - im.frames_claimed
                out.append(f"{name}{missing} of {im.positions} positions missing")
            if im.unreadable:
                where = ", ".join(f"[{m}, {k}]" for m, k in im.unreadable_positions[:3])
                out.append(
                    f"{name}{im.unreadable} of {im.frames_claimed} written frames unreadable"
                    f" (no chunk or decode failed; first at {where})"
                )
        if self.stored_error:
            out.append(f"error: {self.stored_error}")
        out += self.stored_warnings
        return out

    def verdict(self) -> tuple[int, str]:
        """``(exit code, one line)``: 0 whole, 1 broken layout or incomplete, 2 unreadable."""
        if not self.readable:
            return 2, f"unreadable: {self.error or 'the reader stopped'}"
        problems = self.layout.problems if self.layout is not None else []
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return 1, f"broken layout: {problems[0]}{more}"
        reasons = self.incomplete_reasons()
        if reasons:
            return 1, "incomplete: " + "; ".join(reasons)
        return 0, f"complete: all {self.frames_claimed} frames written and verified"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def probe_file(
    path: Path | str, timeout: float = 10.0, verify: Verify = "sample", *, layout: bool = False
) -> FileProbe:
    """Read ``path`` in a child process for at most ``timeout`` seconds; never raises.

    Parameters
    ----------
    path
        An acquisition file, final or ``.partial``.
    timeout
        Seconds for the whole probe; the child is killed after that.
    verify
        ``"index"``: every claimed frame has a chunk; ``"sample"``: and a sample decodes;
        ``"all"``: every claimed frame decodes.
    layout
        Also check the stemdaq/NXem layout (``FileProbe.layout``, as ``stemdaq inspect``).
    """
    path = Path(path)
    result = FileProbe(path=str(path), partial=path.name.endswith(".partial"))
    try:  # the child runs in the file's folder: it starts even where our own cwd is gone
        path = Path(os.path.abspath(path))
    except OSError:
        pass
    folder = str(path.parent) if path.is_absolute() and path.parent.is_dir() else os.sep
    if verify not in VERIFY_MODES:
        result.error = f"verify must be one of {', '.join(VERIFY_MODES)}, not {verify!r}"
        return result
    # -P: nothing from the current folder on sys.path (a data folder never shadows a module)
    cmd = [sys.executable, "-P", "-c", _CHILD, str(path), verify]
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            [*cmd, "layout" if layout else "no-layout"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            cwd=folder,
        )
    except OSError as exc:
        result.error = f"cannot start the reader process: {exc}"
        return result
    lines: queue.Queue[bytes | None] = queue.Queue()
    err = bytearray()
    threading.Thread(target=_pump_lines, args=(proc.stdout, lines), daemon=True).start()
    err_thread = threading.Thread(target=_pump_stderr, args=(proc.stderr, err), daemon=True)
    err_thread.start()
    finished = timed_out = False
    while True:
        try:
            line = lines.get(timeout=max(0.0, t0 + timeout - time.monotonic()))
        except queue.Empty:
            timed_out = True
            break
        if line is None:
            break
        finished = _apply(result, line) or finished
    if timed_out:
        _kill(proc)
        doing = f" while {result.stage}" if result.stage else ""
        result.error = f"HDF5 did not answer within {timeout:g} s{doing}"
    else:
        try:
            proc.wait(max(1.0, t0 + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(proc)
        err_thread.join(1.0)
        if not finished and result.error is None:
            doing = f" while {result.stage}" if result.stage else ""
            why = first_meaningful_line(err.decode("utf-8", "replace"))
            result.error = f"the reader process {_exit_text(proc.returncode)}{doing}" + (
                f": {why}" if why else ""
            )
    result.readable = finished and result.error is None
    result.seconds = round(time.monotonic() - t0, 3)
    return result


def _pump_lines(stream: Any, out: queue.Queue[bytes | None]) -> None:
    try:
        for line in stream:
            out.put(line)
    finally:
        out.put(None)
        stream.close()


def _pump_stderr(stream: Any, buf: bytearray) -> None:
    with stream:
        for chunk in iter(lambda: stream.read(4096), b""):
            if len(buf) < _STDERR_KEEP:
                buf += chunk[: _STDERR_KEEP - len(buf)]


def _apply(result: FileProbe, line: bytes) -> bool:
    """Merge one progress line into ``result``; True at the end mark."""
    try:
        msg = json.loads(line)
    except ValueError:
        return False
    if not isinstance(msg, dict):
        return False
    if "doing" in msg:
        result.stage = str(msg["doing"])
    if "set" in msg:
        for key, value in msg["set"].items():
            setattr(result, key, value)
    if "image" in msg:
        image = ImageProbe(**msg["image"])
        result.images = [im for im in result.images if im.path != image.path] + [image]
    if "layout" in msg:
        d = dict(msg["layout"])
        d.pop("ok", None)
        d["images"] = [ImageReport(**im) for im in d.get("images", [])]
        result.layout = InspectReport(**d)
    if "error" in msg:
        result.error = str(msg["error"])
    return bool(msg.get("done"))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    try:
        proc.wait(2.0)
    except subprocess.TimeoutExpired:  # stuck in the kernel (e.g. a hung network mount)
        logger.warning("reader process %d did not exit after SIGKILL; left behind", proc.pid)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"crashed ({signal.Signals(-code).name})"
        except ValueError:
            return f"crashed (signal {-code})"
    return f"stopped with exit code {code}"


def first_meaningful_line(text: str) -> str:
    """The line of an error report (HDF5 error stack, Python traceback) that says what failed."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):  # a Python traceback ends with "SomeError: message"
        m = re.match(r"^([A-Za-z_.]*(Error|Exception)): (.+)$", ln)
        if m:
            return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(3)}"
    for ln in lines:  # HDF5: "#000: H5F.c line 836 in H5Fopen(): unable to open file"
        m = re.match(r"^#\d+: .* in \w+\(\): (.+)$", ln)
        if m:
            return m.group(1)
    skip = ("Traceback", "File ", "HDF5-DIAG", "major:", "minor:")
    return next((ln for ln in lines if not ln.startswith(skip)), "")[:300]
