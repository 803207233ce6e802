"""What a data path does at the first frame of its series: create the file (the codec, frame shape
and dtype are known only now), the summary, and say early when the disk will not hold the file."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from stemdaq.models import Codec, Frame, SeriesStart
from stemdaq.preflight import estimated_bytes
from stemdaq.writer import SummaryAccumulator
from stemdaq.writer.filesafety import free_bytes

if TYPE_CHECKING:
    from stemdaq.rank.datapath import DataPath

logger = logging.getLogger(__name__)


def open_file(dp: DataPath, first: Frame) -> None:
    """At the first frame the codec is known: create ``dp``'s file, datasets and summary."""
    start = dp.start or SeriesStart(series_id=first.series_id, protocol="stream2")
    dp.frame_shape = tuple(first.shape)  # type: ignore[assignment]
    dp.dtype = first.dtype
    dp.channels = dp.tracker.channels or dp.channels or (first.channel,)
    dp.frame_nbytes = int(np.prod(first.shape)) * np.dtype(first.dtype).itemsize
    dp.writer.open(
        start,
        endpoint=dp.config.resolved_stream_endpoint(),
        channels=dp.channels,
        frame_shape=first.shape,
        dtype=first.dtype,
        codec=first.codec,
        first=first,
    )
    if dp.config.summary:
        dp.summary = SummaryAccumulator(
            dp.config.scan_shape,
            first.shape,
            first.dtype,
            cpu_share=dp.config.summary_cpu_share,
            config=dp.config,  # the live view's geometry
        )
    dp.opened = True
    dp.writer.check_space()
    _warn_if_space_short(dp, len(dp.channels))
    if first.codec is not Codec.RAW and dp.writer.compression != dp.config.compression:
        msg = (
            f"compression {dp.config.compression!r} not applied: the detector sends "
            f"{first.codec.value}-compressed frames, stored as they are (to have stemdaq "
            "compress, set the detector's compression to none: SIMPLON "
            "detector/config/compression)"
        )
        logger.warning("%s: %s", dp.name, msg)
        dp.warnings.append(msg)


def _warn_if_space_short(dp: DataPath, channels: int) -> None:
    """Passive mode learns the frame size only now: say early if the file will not fit."""
    need = estimated_bytes(dp.config, dp.frame_nbytes, channels)
    try:
        free = free_bytes(dp.writer.tmp_path.parent)
    except OSError:
        return
    if free < need + dp.config.min_free_mb * 1e6:
        msg = (
            f"the file is estimated at {need / 1e9:.2f} GB (assumed compression ratio "
            f"{dp.config.assumed_compression_ratio:g}) and {free / 1e9:.2f} GB are free: "
            "the acquisition stops when less than min_free_mb is left"
        )
        logger.warning("%s: %s", dp.name, msg)
        dp.warnings.append(msg)
