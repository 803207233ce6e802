"""Whole series as pre-encoded messages, for replay, benchmarks and tests without sockets."""

from __future__ import annotations

from typing import Any

from stemdaq.sim.encode import Message, SeriesEncoder, SeriesInfo
from stemdaq.sim.faults import Faults, InjectionLog
from stemdaq.sim.frames import FrameGenerator, default_scan_shape
from stemdaq.sim.params import detector_params


def default_config(
    frame_shape: tuple[int, int] = (96, 96),
    dtype: str = "uint16",
    compression: str = "bslz4",
    frame_time: float = 0.001,
) -> dict[str, Any]:
    """Detector config values as the simulator starts with them."""
    params = detector_params(frame_shape, dtype, compression, frame_time)
    return {name: p.default for name, p in params.items()}


def encode_series(
    n_images: int,
    *,
    fmt: str = "cbor",
    frame_shape: tuple[int, int] = (96, 96),
    dtype: str = "uint16",
    compression: str = "bslz4",
    seed: int = 0,
    series_id: int = 1,
    scan_shape: tuple[int, int] | None = None,
    channels: tuple[str, ...] = ("threshold_1",),
    header_detail: str = "basic",
    split_header: bool = False,
    frame_time: float = 0.001,
    faults: Faults | str | None = None,
    log: InjectionLog | None = None,
) -> list[Message]:
    """A whole series (start, images, end) as messages, each a list of ZeroMQ parts.

    The frames are ``FrameGenerator(frame_shape, dtype, scan_shape or
    default_scan_shape(n_images), seed).frame(i)``, as the live simulator sends them.
    """
    config = default_config(frame_shape, dtype, compression, frame_time)
    config.update(nimages=n_images, ntrigger=1, trigger_mode="ints")
    generator = FrameGenerator(frame_shape, dtype, scan_shape or default_scan_shape(n_images), seed)
    info = SeriesInfo(
        series_id=series_id,
        n_images=n_images,
        config=config,
        fmt=fmt,
        header_detail=header_detail,
        split_header=split_header,
        channels=channels,
        user_data={"seed": seed, "scan_shape": list(generator.scan_shape)},
    )
    encoder = SeriesEncoder(info, generator, Faults.parse(faults), log)
    messages = encoder.start()
    for image_id in encoder.order(list(range(n_images))):
        if encoder.aborts_at(image_id):
            encoder.log.add("abort_after", series_id, image_id)
            return messages
        messages += encoder.image(image_id)
    return messages + encoder.end()
