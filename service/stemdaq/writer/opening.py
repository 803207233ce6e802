"""What the file gets at open: the NXem layout of one acquisition, made before SWMR starts.

SWMR allows no new objects or attributes, so everything the file holds while the scan runs is
created at open, at full scan size: ``/entry`` with the instrument and the user's metadata
(:mod:`stemdaq.writer.metadata`), ``/entry/measurement/event1`` (NXem_event_data) and in it one
NXimage per recorded channel (``image1``, ``image2``, ...: :func:`image_path`) with its process,
its ``image_4d`` (NXdata: the 4D ``intensity``, ``real`` its hard link, the scan and detector
axes) and its bookkeeping. What close adds is :mod:`stemdaq.writer.closing`.

Storage: chunks ``(1, K, ny, nx)`` along the scan row, fixed dimensions, fill value 0 (a
position never written reads as zeros: the ``written`` mask tells gaps from dark frames). The
filter is chosen at open from the first frame's codec (:func:`storage_codecs`): BSLZ4 ->
bitshuffle/LZ4, LZ4 -> LZ4, RAW -> ``config.compression``. K is ``config.frames_per_chunk`` for
detector bitshuffle-LZ4 frames of whole 8 KiB blocks (their blocks are joined, see
:mod:`stemdaq.writer.chunking`), else 1 (one chunk, one call per frame); the dataset's chunk
shape says which (an attribute would make the file invalid NXem).

Bookkeeping, per NXimage in ``<image>/frames`` (NXcollection), kept in memory and written at
each flush: ``written`` [n_m, n_k] uint8, ``frame_id`` int64 (-1: none), ``start_time``,
``stop_time``, ``real_time`` float64 s (NaN: not given / not written), ``frames_written``
(scalar, what a SWMR reader polls).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import h5py
import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.errors import PathError
from stemdaq.models import Codec, DetectorInfo, SeriesStart
from stemdaq.writer import metadata as md
from stemdaq.writer.axes import DetectorGeometry, detector_axes, scan_axes
from stemdaq.writer.bookkeeping import Bookkeeping
from stemdaq.writer.codecs import filter_kwargs
from stemdaq.writer.filesafety import Reservation
from stemdaq.writer.layout import SignalSpec, create_nximage, write_nximage_data

EVENT = "/entry/measurement/event1"
CODEC_COMPRESSION = {Codec.BSLZ4: "bslz4", Codec.LZ4: "lz4"}
#: the detector description of stemdaq's own simulator (is_simulation is then set by itself)
SIMULATOR_MARK = "stemdaq simulator"


def image_path(channel_index: int) -> str:
    """HDF5 path of the NXimage group of a recorded channel (image1, image2, ...)."""
    return f"{EVENT}/image{channel_index + 1}"


def storage_codecs(codec: Codec, compression: str) -> tuple[str, Codec, Codec | None]:
    """How the intensity is stored when frames arrive as ``codec``.

    Returns the filter (``compression``, the config's, for raw frames), the codec of that
    filter's framing (RAW for any other filter) and the codec whose payloads go to the file
    unchanged (None: every frame is converted).
    """
    compression = CODEC_COMPRESSION.get(codec, compression)
    filter_codec = {"bslz4": Codec.BSLZ4, "lz4": Codec.LZ4}.get(compression, Codec.RAW)
    direct = (
        filter_codec
        if filter_codec is not Codec.RAW
        else Codec.RAW
        if compression == "none"
        else None
    )
    return compression, filter_codec, direct


class FileSpec(Protocol):
    """What open() decided about the file (:class:`~stemdaq.writer.nexus.NexusWriter` is one)."""

    config: AcquisitionConfig
    start: SeriesStart
    start_time: str
    geometry: DetectorGeometry
    channels: tuple[str, ...]
    frame_shape: tuple[int, int] | None
    dtype: np.dtype | None
    compression: str

    @property
    def chunk_shape(self) -> tuple[int, int, int, int] | None: ...


def file_config(config: AcquisitionConfig, detector: DetectorInfo) -> AcquisitionConfig:
    """``config``, with ``is_simulation`` set when the frames come from stemdaq's simulator."""
    if not config.is_simulation and SIMULATOR_MARK in (detector.description or ""):
        return config.model_copy(update={"is_simulation": True})
    return config


def create_file(
    reservation: Reservation,
    spec: FileSpec,
    endpoint: str,
    book: Bookkeeping,
    layout_done: Callable[[h5py.File], None],
) -> tuple[h5py.File, list[h5py.Dataset]]:
    """Create the reserved ``.partial`` with :func:`create_layout`, call ``layout_done`` on it,
    then start SWMR; the file and the intensity of each channel.

    On any failure no half-made file is left behind.

    Raises
    ------
    PathError
        The reservation is not the empty file it made, or, not reserved, the file exists (it
        is never touched).
    """
    path = reservation.tmp_path
    if reservation.held:
        reservation.check()  # ours and still empty: "w" only truncates our own file
        mode = "w"
    else:  # not reserved: create exclusively (O_EXCL); an existing file is never touched
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "x"
    try:
        f = h5py.File(path, mode, libver="latest")
    except FileExistsError:
        raise PathError(f"{path} exists; not writing over it") from None
    try:
        dsets = create_layout(f, spec, endpoint, book)
        layout_done(f)
        f.swmr_mode = True
    except BaseException:
        f.close()
        path.unlink(missing_ok=True)  # no half-made file left behind
        raise
    return f, dsets


def create_layout(
    f: h5py.File, spec: FileSpec, endpoint: str, book: Bookkeeping
) -> list[h5py.Dataset]:
    """The layout of the module docstring in ``f``; the intensity of each channel, in order.

    ``book`` creates each NXimage's bookkeeping.
    """
    chunks = spec.chunk_shape
    if chunks is None or spec.frame_shape is None or spec.dtype is None:  # pragma: no cover
        raise RuntimeError("layout before open()")
    config, start, start_time, geometry = spec.config, spec.start, spec.start_time, spec.geometry
    frame_shape, dtype = spec.frame_shape, spec.dtype
    entry = md.write_entry(f, config, start, start_time)
    md.write_instrument(entry, config, start, geometry, frame_shape, dtype.str)
    measurement = entry["measurement"]
    event = md.group(measurement, "event1", "NXem_event_data")
    md.put(event, "start_time", start_time)
    entry.attrs["default"] = "measurement"
    measurement.attrs["default"] = "event1"
    event.attrs["default"] = "image1"

    n_m, n_k = config.scan_shape
    ny, nx = frame_shape
    axes = {**scan_axes(config), **detector_axes(geometry, frame_shape)}
    create = {
        "chunks": chunks,
        "fillvalue": 0,
        **filter_kwargs(spec.compression, config.compression_level),
    }
    dsets: list[h5py.Dataset] = []
    for index, channel in enumerate(spec.channels):
        image = create_nximage(event, f"image{index + 1}")
        image.attrs["default"] = "image_4d"
        md.write_process(image, start, endpoint, channel)
        data = write_nximage_data(
            image,
            "image_4d",
            axes=axes,
            intensity=SignalSpec((n_m, n_k, ny, nx), dtype, create),
            signal_long_name="intensity (detector counts)",
            title=f"4D-STEM, channel {channel}" if channel else "4D-STEM",
        )
        dsets.append(data["intensity"])
        book.create(image, channel)
    return dsets
