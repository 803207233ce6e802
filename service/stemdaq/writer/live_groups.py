"""The live view in the file, at close: the maps completed from the file, then NXimage groups.

Completion: positions the budgeted live view skipped during the scan are read back from the
file (whole scan rows, the coarsest rows first: every 16th, then 8th, ... so that a budget that
runs out leaves a coarser but whole picture) and reduced, until ``live_completion_seconds``
are spent. Only positions the file claims written are read; gaps stay out of the maps.

Groups, beside the 4D data in ``/entry/measurement/event1``: ``image_bf``, ``image_adf``,
``image_com_x``, ``image_com_y``, ``image_com_magnitude``, each an NXimage with an
``image_2d`` NXdata on the scan axes (NX_LENGTH, the same values as ``image_4d``'s
``axis_m``/``axis_k``; float32, NaN where a position is not in the map) and an NXcollection
``live`` with the geometry used (pixels), ``frames_included``, ``frames_during_scan`` (what
the budget covered while the scan ran) and ``completion`` (what was read back after it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import h5py
import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.live.maps import MAP_NAMES
from stemdaq.writer import metadata as md
from stemdaq.writer.axes import scan_axes
from stemdaq.writer.layout import write_nximage

if TYPE_CHECKING:
    from stemdaq.writer.summary import SummaryAccumulator

logger = logging.getLogger(__name__)

#: map name -> (NXimage group, long name of the signal, units)
GROUPS: dict[str, tuple[str, str, str]] = {
    "bf": ("image_bf", "virtual bright field (counts in the disk)", "counts"),
    "adf": ("image_adf", "virtual annular dark field (counts in the annulus)", "counts"),
    "com_x": ("image_com_x", "centre of mass x, from the beam centre (pixels)", "pixel"),
    "com_y": ("image_com_y", "centre of mass y, from the beam centre (pixels)", "pixel"),
    "com_magnitude": ("image_com_magnitude", "centre of mass shift magnitude (pixels)", "pixel"),
}


def image_of_channel(event: h5py.Group, channel: str | None) -> h5py.Group | None:
    """The NXimage ``image<n>`` holding ``channel`` (its ``frames/channel``), else the first."""
    first = None
    for name in sorted(event):
        if not name.startswith("image") or not name[5:].isdigit():
            continue
        grp = event[name]
        first = first or grp
        stored = grp.get("frames/channel")
        if stored is not None and channel is not None:
            value = stored[()]
            if (value.decode() if isinstance(value, bytes) else str(value)) == channel:
                return grp
    return first


def complete_from_file(
    event: h5py.Group, live: SummaryAccumulator, seconds: float
) -> tuple[int, float]:
    """Add positions missing from the live view, read back from the file; (frames, seconds)."""
    t0 = time.monotonic()
    missing = live.missing()
    image = image_of_channel(event, live.channel)
    if seconds <= 0 or missing.size == 0 or image is None:
        return 0, 0.0
    data = image["image_4d/intensity"]
    written = np.asarray(image["frames/written"][()]).astype(bool).ravel()
    n_m, n_k = live.scan_shape
    todo = np.zeros(n_m * n_k, dtype=bool)
    todo[missing] = True
    todo &= written
    rows = np.flatnonzero(todo.reshape(n_m, n_k).any(axis=1))
    rows = rows[np.argsort(-_row_class(rows), kind="stable")]  # coarse rows first
    added = 0
    for m in rows:
        cols = np.flatnonzero(todo[m * n_k : (m + 1) * n_k])
        for start in range(0, cols.size, live.batch_n):  # memory: one batch of frames at a time
            # the budget is looked at before every batch: a row of large frames can take longer
            # than the whole budget (a 100-position row of 1024x1024 uint32 frames: ~0.3 s)
            if time.monotonic() - t0 > seconds:
                logger.info(
                    "live view: completion stopped after %.1f s (%d frames from the file)",
                    seconds,
                    added,
                )
                return added, time.monotonic() - t0
            part = cols[start : start + live.batch_n]
            frames = data[m, int(part[0]) : int(part[-1]) + 1]
            live.complete(m * n_k + part, frames[part - part[0]])
            added += part.size
    return added, time.monotonic() - t0


def _row_class(rows: np.ndarray) -> np.ndarray:
    """Coarseness of each row index: 4 for every 16th row, 3 every 8th, ... 0 the others."""
    cls = np.zeros(rows.size, dtype=np.int64)
    for c, step in enumerate((2, 4, 8, 16), start=1):
        cls[rows % step == 0] = c
    return cls


def write_live_images(
    event: h5py.Group,
    config: AcquisitionConfig,
    live: SummaryAccumulator,
    completion: str,
    during_scan: int,
) -> None:
    """The virtual images as NXimage ``image_2d`` groups, with the geometry and the mask."""
    det = live.detectors
    write_map_groups(
        event,
        config,
        live.maps.images(),
        live.maps.filled(),
        LiveGeometry(det.center[0], det.center[1], det.bf_radius, det.adf_inner, det.adf_outer),
        completion,
        during_scan,
        live.channel or "",
    )


class LiveGeometry(NamedTuple):
    """The detector geometry a live view used, in pixels (as the file records it)."""

    center_x: float
    center_y: float
    bf_radius: float
    adf_inner: float
    adf_outer: float


def write_map_groups(
    event: h5py.Group,
    config: AcquisitionConfig,
    images: Mapping[str, np.ndarray],
    filled: np.ndarray,
    geometry: LiveGeometry,
    completion: str,
    during_scan: int,
    channel: str,
) -> None:
    """One NXimage group per map in :data:`GROUPS` (also what a scale-out master writes from
    its ranks' maps)."""
    axes = scan_axes(config)
    note = "all positions" if filled.all() else f"{int(filled.sum())} of {filled.size} positions"
    for name in MAP_NAMES:
        if name not in GROUPS or name not in images:
            continue
        group, long_name, units = GROUPS[name]
        grp = write_nximage(
            event,
            group,
            "image_2d",
            axes={"axis_j": axes["axis_m"], "axis_i": axes["axis_k"]},
            intensity=images[name],
            signal_long_name=f"{long_name} [{units}]",
            title=f"live view: {long_name}, {note}",
        )
        coll = md.group(grp, "live", "NXcollection")
        for key, value in geometry._asdict().items():
            ds = coll.create_dataset(key, data=np.float64(value))
            ds.attrs["units"] = "pixel"
        ds = coll.create_dataset("frames_included", data=filled.astype(np.uint8))
        ds.attrs["long_name"] = "1 where the frame of this scan position is in the map"
        md.put(coll, "complete", np.bool_(filled.all()))
        md.put(coll, "completion", completion)
        ds = coll.create_dataset("frames_during_scan", data=np.int64(during_scan))
        ds.attrs["long_name"] = "positions in the maps when the scan ended (before completion)"
        md.put(coll, "channel", channel)


def read_map_groups(
    event: h5py.Group,
) -> tuple[dict[str, np.ndarray], np.ndarray, LiveGeometry, str, int] | None:
    """What :func:`write_map_groups` wrote: maps, filled mask, geometry, completion, positions
    during the scan; None where the file has no live view."""
    images: dict[str, np.ndarray] = {}
    filled = None
    geometry = None
    completion, during = "", 0
    for name, (group, _, _) in GROUPS.items():
        if group not in event:
            continue
        grp = event[group]
        images[name] = grp["image_2d/intensity"][()]
        if filled is None:
            coll = grp["live"]
            filled = coll["frames_included"][()].astype(bool)
            geometry = LiveGeometry(*(float(coll[k][()]) for k in LiveGeometry._fields))
            raw = coll["completion"][()]
            completion = raw.decode() if isinstance(raw, bytes) else str(raw)
            during = int(coll["frames_during_scan"][()])
    if filled is None or geometry is None:
        return None
    return images, filled, geometry, completion, during
