"""Read a possibly damaged acquisition file in a child process, with a time bound.

A damaged or half-written HDF5 file can make a library call hang (seen: minutes at 0% CPU in
``get_storage_size``) or crash the process. :func:`probe_file` runs the reading in
``python -m stemdaq.writer.probe``, reads its progress as JSON lines, and kills it when the time is
up, so the caller always gets a :class:`FileProbe` back, with what was readable before it stopped.

What the child checks, per NXimage with bookkeeping (``imageN/frames/written``): the frames the
mask claims, whether each claimed frame has a chunk in the chunk index (``chunk_iter``), and with
``verify="sample"`` (first, last and ~16 spread claimed frames) or ``"all"`` whether they decode.
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

logger = logging.getLogger(__name__)

Verify = Literal["index", "sample", "all"]
VERIFY_MODES: tuple[str, ...] = ("index", "sample", "all")
MAX_LISTED = 20  # unreadable positions listed per image (all are counted)
SAMPLE_SPREAD = 16  # claimed frames decoded between the first and the last with verify="sample"
_STDERR_KEEP = 64 * 1024
_CHILD = (
    "import sys\nfrom stemdaq.writer.probe import child_main\nsys.exit(child_main(sys.argv[1:]))"
)


@dataclass
class ImageProbe:
    """What one NXimage holds: claimed, verified and unreadable frames."""

    path: str  # the NXimage group, e.g. /entry/measurement/event1/image1
    dataset: str  # its 4D signal dataset
    shape: list[int]
    positions: int  # scan positions (n_m * n_k)
    frames_claimed: int  # positions the ``written`` mask marks
    frames_verified: int | None = None  # claimed frames with a chunk in the index (None: unknown)
    frames_decoded: int = 0  # claimed frames read back and decoded
    unreadable: int = 0  # claimed frames with no chunk, or whose read failed
    unreadable_positions: list[list[int]] = field(default_factory=list)  # [m, k], at most 20
    unclaimed_chunks: int = 0  # chunks holding no claimed frame (written after the last flush)
    stored_bytes: int | None = None
    verified_by: str = ""  # "index", "sample" or "all" once that check finished


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


# -- the child process ---------------------------------------------------------------------


class _Emitter:
    """JSON lines to the parent; ``doing`` lines at most every 0.25 s when ``throttle``."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, throttle: bool = False, /, **msg: Any) -> None:
        now = time.monotonic()
        if throttle and now - self._last < 0.25:
            return
        self._last = now
        sys.stdout.write(json.dumps(msg, default=int) + "\n")
        sys.stdout.flush()


def child_main(argv: list[str]) -> int:
    """Entry point of the reader process: ``PATH VERIFY layout|no-layout``."""
    import hdf5plugin  # noqa: F401 - registers the filters (bitshuffle-LZ4 is 32008)

    from stemdaq.writer.inspect import bookkept_images, check_layout, stored_state

    path, verify, layout = argv[0], argv[1], argv[2] == "layout"
    emit = _Emitter()
    try:
        emit(doing="opening the file")
        if not os.path.exists(path) or os.path.isdir(path):
            emit(error=f"{path} is a directory" if os.path.isdir(path) else f"no such file: {path}")
            return 1
        with _open(path, emit) as f:
            emit(doing="reading the acquisition state")
            emit(set={**stored_state(f), "state_read": True})
            images: list[tuple[ImageProbe, Any, Any]] = []
            for group, ds in bookkept_images(f):
                im, mask = _index(group, ds, emit)
                images.append((im, ds, mask))
                emit(image=asdict(im))
            if layout:
                emit(doing="checking the layout")
                report = InspectReport(path=path, partial=path.endswith(".partial"))
                sizes = {im.dataset: im.stored_bytes or 0 for im, _, _ in images}
                check_layout(f, report, sizes)
                emit(layout=report.to_json())
            if verify != "index":
                for im, ds, mask in images:
                    _decode(im, ds, mask, verify == "all", emit)
                    emit(image=asdict(im))
        emit(done=True)
    except Exception as exc:  # reported to the parent as one line
        text = (str(exc).strip().splitlines() or ["no message"])[0]
        emit(error=text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}")
        return 1
    return 0


def _open(path: str, emit: _Emitter) -> Any:
    """Plain read-only open, else SWMR (a writer that did not close leaves the file marked)."""
    import h5py

    try:
        f = h5py.File(path, "r", locking=False)
    except (OSError, ValueError) as exc:
        note = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        try:
            f = h5py.File(path, "r", swmr=True, locking=False)
        except (OSError, ValueError):
            raise OSError(f"cannot open {path}: {note}") from None
        emit(set={"opened": True, "opened_swmr": True, "open_note": note})
        return f
    emit(set={"opened": True})
    return f


def _index(group: Any, ds: Any, emit: _Emitter) -> tuple[ImageProbe, Any]:
    """Claimed frames (mask) against the chunk index; the mask of those that have a chunk."""
    import numpy as np

    emit(doing=f"reading the bookkeeping {group.name}/frames/written")
    mask = np.asarray(group["frames/written"][()]).astype(bool)
    im = ImageProbe(
        path=group.name,
        dataset=ds.name,
        shape=list(ds.shape),
        positions=int(mask.size),
        frames_claimed=int(mask.sum()),
    )
    if mask.shape != tuple(ds.shape[:2]):  # the layout check says so; nothing to compare
        return im, np.zeros(ds.shape[:2], dtype=bool)
    if ds.chunks is None:  # not stemdaq's layout (one chunk per frame): decode only
        return im, mask
    emit(doing=f"reading the chunk index of {ds.name}")
    present = np.zeros(mask.shape, dtype=bool)
    total = 0
    unclaimed = 0  # chunks none of whose frames the mask claims (written after the last flush)
    c0, c1 = ds.chunks[0], ds.chunks[1]

    def visit(info: Any) -> None:
        nonlocal total, unclaimed
        total += int(info.size)
        if info.byte_offset is not None and info.size > 0:
            m, k = info.chunk_offset[0], info.chunk_offset[1]
            present[m : m + c0, k : k + c1] = True
            # with K frames per chunk, a gap inside a written chunk is not "unclaimed"
            unclaimed += not mask[m : m + c0, k : k + c1].any()

    ds.id.chunk_iter(visit)
    missing = np.argwhere(mask & ~present)
    im.frames_verified = im.frames_claimed - len(missing)
    im.unreadable = len(missing)
    im.unreadable_positions = missing[:MAX_LISTED].tolist()
    im.unclaimed_chunks = int(unclaimed)
    im.stored_bytes = total
    im.verified_by = "index"
    return im, mask & present


def _decode(im: ImageProbe, ds: Any, readable: Any, every: bool, emit: _Emitter) -> None:
    """Read back claimed frames that have a chunk: all, or first, last and a spread."""
    import numpy as np

    flat = np.flatnonzero(readable)
    if not every and len(flat) > SAMPLE_SPREAD + 2:
        flat = flat[np.unique(np.linspace(0, len(flat) - 1, SAMPLE_SPREAD + 2).round().astype(int))]
    n_k = readable.shape[1]
    for i, pos in enumerate(flat.tolist()):
        m, k = divmod(pos, n_k)
        emit(i > 0, doing=f"decoding frames of {ds.name} ({i} of {len(flat)} done)")
        try:
            ds[m, k]
        except Exception:  # a frame that does not decode is what we look for
            im.unreadable += 1
            if len(im.unreadable_positions) < MAX_LISTED:
                im.unreadable_positions.append([m, k])
            continue
        im.frames_decoded += 1
    im.verified_by = "all" if every else "sample"
