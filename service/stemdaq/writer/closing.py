"""What the writer adds at close (SWMR allows no new objects, so after SWMR ends).

``/entry/measurement/event1/acquisition`` (NXcollection): the final ``state``, every counter,
``warnings`` (what is worth knowing: gaps, no end message, stopped on request, drops) and
``error``; ``frames_missing`` (gaps) per NXimage; the summed diffraction pattern
(``image_sum``) and the total-intensity image (``image_total``) with the positions they include;
the live view's virtual images (:mod:`stemdaq.writer.live_groups`), completed from the file
first within ``live_completion_seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.models import AcquisitionState, Counters
from stemdaq.writer import metadata as md
from stemdaq.writer.axes import detector_axes, scan_axes
from stemdaq.writer.layout import write_nximage
from stemdaq.writer.live_groups import complete_from_file, write_live_images

if TYPE_CHECKING:
    from stemdaq.writer.summary import SummaryAccumulator

BOOKKEEPING = "frames"  # NXcollection inside each NXimage


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
