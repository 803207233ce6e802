"""What the reader process of :func:`stemdaq.writer.probe.probe_file` checks in the file.

This runs in the child process (:func:`child_main`), where a hanging or crashing HDF5 call
cannot take the caller with it; it reports its progress to the parent as JSON lines on stdout.

What it checks, per NXimage with bookkeeping (``imageN/frames/written``): the frames the mask
claims, whether each claimed frame has a chunk in the chunk index (``chunk_iter``), and with
``verify="sample"`` (first, last and ~16 spread claimed frames) or ``"all"`` whether they decode.
The result per NXimage is an :class:`ImageProbe`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from stemdaq.writer.inspect import InspectReport

MAX_LISTED = 20  # unreadable positions listed per image (all are counted)
SAMPLE_SPREAD = 16  # claimed frames decoded between the first and the last with verify="sample"


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
