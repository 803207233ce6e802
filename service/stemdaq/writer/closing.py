"""What the file gets at close, after SWMR ends (SWMR allows no new objects), and its rename.

:func:`finish_file` reopens the closed ``.partial``, adds ``end_time`` (entry and event) and
``/entry/measurement/event1/acquisition`` (NXcollection): the final ``state``, every counter,
``warnings`` (what is worth knowing: gaps, no end message, stopped on request, drops) and
``error``; ``frames_missing`` (gaps) per NXimage; the summed diffraction pattern
(``image_sum``) and the total-intensity image (``image_total``) with the positions they include;
the live view's virtual images (:mod:`stemdaq.writer.live_groups`), completed from the file
first within ``live_completion_seconds``; then renames it to its final name, never over an
existing file (:mod:`stemdaq.writer.filesafety`). :func:`ballast_bytes` is the room all that
takes, held back from the start in case the disk fills up. What the file gets at open is
:mod:`stemdaq.writer.opening`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionState, Counters
from stemdaq.writer import metadata as md
from stemdaq.writer.axes import detector_axes, scan_axes
from stemdaq.writer.filesafety import Reservation, rename_no_clobber, still_open
from stemdaq.writer.layout import write_nximage
from stemdaq.writer.live_groups import complete_from_file, write_live_images
from stemdaq.writer.opening import EVENT, FileSpec

if TYPE_CHECKING:
    from stemdaq.writer.summary import SummaryAccumulator

BOOKKEEPING = "frames"  # NXcollection inside each NXimage
#: bytes held back on the file system (an unlinked, fallocated file) for finishing the file
#: after the disk filled up: this plus the size of what close() writes, at most BALLAST_MAX
BALLAST_BASE = 2 << 20
BALLAST_MAX = 512 << 20


def ballast_bytes(frame_shape: tuple[int, int], n_positions: int, n_channels: int) -> int:
    """Space to finish the file if the disk fills up: the close-time metadata (counters, summed
    pattern, total-intensity image, masks; the live view's five images and their masks: 25
    bytes a position) plus a margin for HDF5's own."""
    ny, nx = frame_shape
    need = BALLAST_BASE + 2 * ny * nx * 8 + n_positions * (16 * n_channels + 25)
    return min(need, BALLAST_MAX)


def finish_file(
    reservation: Reservation,
    spec: FileSpec,
    summary: SummaryAccumulator | None,
    *,
    storage_error: str | None,
    state: AcquisitionState,
    counters: Counters,
    gaps_per_image: Sequence[int],
    warnings: Sequence[str],
    error: str | None,
    last: Callable[[h5py.File], None],
) -> Path:
    """End the ``summary``'s thread; reopen the closed ``.partial`` (r+), add ``end_time``, the
    outcome and (with a ``summary``) the summaries, call ``last(f)``, close it and rename it to
    its final name (:func:`~stemdaq.writer.filesafety.rename_no_clobber`); where it is then.

    Raises
    ------
    OSError
        ``EIO``: after a ``storage_error`` HDF5 may still hold the file open; it is left as
        the last flush made it.
    """
    if summary is not None:
        summary.finish()  # its thread ends, whether or not the file can be finished
    path = reservation.tmp_path
    if storage_error is not None and still_open(path):
        # HDF5 could not write everything: its close may have left the file half-open in
        # the library, and opening it again in this process crashes (seen: SIGSEGV on a
        # full tmpfs). The file stays as the last flush left it: a .partial that SWMR
        # readers open, whose written mask claims only frames flushed with their chunks.
        raise OSError(
            errno.EIO,
            f"not finished after a storage error ({storage_error}); "
            f"{path.name} holds every frame flushed before it",
        )
    end_time = md.now_iso()
    # locking=False: a reader's refresh() of a VDS over this file (the scale-out master)
    # holds HDF5's lock on it; the reservation, not that lock, keeps other writers out
    with h5py.File(path, "r+", libver="latest", locking=False) as f:
        f["/entry"].create_dataset("end_time", data=end_time)
        event = f[EVENT]
        event.create_dataset("end_time", data=end_time)
        write_outcome(event, state, counters, gaps_per_image, warnings, error)
        if summary is not None and spec.frame_shape is not None:
            write_summaries(event, spec.config, spec.geometry, spec.frame_shape, summary)
        last(f)
    result = rename_no_clobber(path, reservation.final_path, reservation.overwrite)
    reservation.drop(remove=False)
    return result


def write_outcome(
    event: h5py.Group,
    state: AcquisitionState,
    counters: Counters,
    gaps_per_image: Sequence[int],
    warnings: Sequence[str],
    error: str | None,
) -> None:
    """State, counters, warnings and error of the acquisition; gaps per NXimage."""
    coll = md.group(event, "acquisition", "NXcollection")
    md.put(coll, "state", state.value)
    for name, value in counters.model_dump().items():
        if isinstance(value, dict):
            sub = md.group(coll, name, "NXcollection")
            for key, n in value.items():
                md.put(sub, key, np.int64(n))
        elif isinstance(value, float):
            md.put(coll, name, np.float64(value))
        else:
            md.put(coll, name, np.int64(value))
    if warnings:  # no empty dataset: readers such as RosettaSciIO choke on size-0 data
        ds = coll.create_dataset(
            "warnings", data=list(warnings), dtype=h5py.string_dtype(), shape=(len(warnings),)
        )
        ds.attrs["long_name"] = "what is worth knowing about this acquisition"
    if error:
        md.put(coll, "error", error)
    for index, gaps in enumerate(gaps_per_image):
        grp = event[f"image{index + 1}/{BOOKKEEPING}"]
        grp.create_dataset("frames_missing", data=np.int64(gaps))
        grp["frames_missing"].attrs["long_name"] = "scan positions without a frame (gaps)"


def write_summaries(
    event: h5py.Group,
    config: AcquisitionConfig,
    geometry: Any,
    frame_shape: tuple[int, int],
    summary: SummaryAccumulator,
) -> None:
    """The summed pattern and the total-intensity image, with the positions they include, and
    the live view's virtual images; first the sums and maps are completed from the file
    (within the config's ``live_completion_seconds``) where the budget left positions out."""
    pattern, total, included = summary.finish()
    during_scan = int(included.sum())
    completion = "none needed" if included.all() else "off"
    # at most live_completion_seconds, and at most a tenth of the scan's own time (at least
    # 0.5 s): a 5 s scan at 40k frames/s closes 0.5 s later, not 2 s (bench/throughput.py)
    budget = min(config.live_completion_seconds, max(0.5, 0.1 * summary.wall_seconds))
    if not included.all() and budget > 0:
        n, seconds = complete_from_file(event, summary, budget)
        pattern, total, included = summary.finish()  # complete() renewed them
        completion = f"{n} frames read back from the file after the scan in {seconds:.2f} s"
    write_sum_images(
        event, config, geometry, frame_shape, summary.channel or "", pattern, total, included
    )
    write_live_images(event, config, summary, completion, during_scan)


def write_sum_images(
    event: h5py.Group,
    config: AcquisitionConfig,
    geometry: Any,
    frame_shape: tuple[int, int],
    channel: str,
    pattern: np.ndarray,
    total: np.ndarray,
    included: np.ndarray,
) -> None:
    """``image_sum`` (the summed pattern) and ``image_total`` (the total-intensity image), with
    the positions they include; also what a scale-out master writes from its ranks' sums."""
    complete = bool(included.all())
    note = (
        "all frames"
        if complete
        else f"{int(included.sum())} of {included.size} frames (subsampled)"
    )
    pat = write_nximage(
        event,
        "image_sum",
        "image_2d",
        axes=detector_axes(geometry, frame_shape),
        intensity=pattern,
        signal_long_name="summed intensity (counts)",
        title=f"summed diffraction pattern, channel {channel}: {note}",
    )
    axes = scan_axes(config)
    img = write_nximage(
        event,
        "image_total",
        "image_2d",
        axes={"axis_j": axes["axis_m"], "axis_i": axes["axis_k"]},
        intensity=total,
        signal_long_name="total intensity per scan position (counts)",
        title=f"total intensity, channel {channel}: {note}",
    )
    for g in (pat, img):
        coll = md.group(g, "summary", "NXcollection")
        md.put(coll, "channel", channel)
        ds = coll.create_dataset("frames_included", data=included.astype(np.uint8))
        ds.attrs["long_name"] = "1 where the frame of this scan position is in the sum"
        md.put(coll, "complete", np.bool_(complete))
