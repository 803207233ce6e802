"""What the summary holds: the exact sums, the included mask, the live maps and their geometry.

:class:`SummaryReduction` is added to by the summary thread while the scan runs and, after
:meth:`~stemdaq.writer.summary.SummaryAccumulator.finish`, by the completion from the file
(``writer/live_groups.py``); when and which frames is the accumulator's business
(``writer/summary.py``), not this module's.

Decoded frames go into the exact sums (:class:`~stemdaq.writer.summary_decode.Sums`) and, as
float32, into the live view (:class:`stemdaq.live.maps.LiveMaps`): virtual bright field,
annular dark field, total intensity and centre of mass per scan position, reduced in batches by
one matrix product. The geometry comes from the config (``live_*``), else is found in the
summed pattern once :data:`AUTO_FRAMES` frames are in; :meth:`SummaryReduction.set_detectors`
changes it while the scan runs.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from pydantic import ValidationError

from stemdaq.config import AcquisitionConfig
from stemdaq.errors import ConfigError
from stemdaq.live.geometry import (
    Detectors,
    DetectorsRequest,
    check_in_frame,
    given_by_config,
    resolve,
)
from stemdaq.live.kernels import single_thread_blas
from stemdaq.live.maps import LiveMaps
from stemdaq.writer.summary_decode import Sums

logger = logging.getLogger(__name__)

#: frames summed before the geometry not given is found in the summed pattern
AUTO_FRAMES = 8


class SummaryReduction:
    """The sums [ny, nx] and [n_m, n_k], the included mask and the live maps of one channel.

    Parameters
    ----------
    scan_shape
        (n_m, n_k); position ``p`` is row ``p // n_k``, column ``p % n_k``.
    frame_shape
        (ny, nx).
    dtype
        Frame dtype; integer frames are summed exactly (uint64 / int64), float in float64.
    batch_n
        Most frames one :meth:`add` takes.
    config
        The acquisition's config: the live view's geometry (``live_*``, the calibration's
        ``beam_center``).
    """

    def __init__(
        self,
        scan_shape: tuple[int, int],
        frame_shape: tuple[int, int],
        dtype: np.dtype,
        batch_n: int,
        config: AcquisitionConfig | None,
    ) -> None:
        self.scan_shape = scan_shape
        self.frame_shape = frame_shape
        n_pos = scan_shape[0] * scan_shape[1]
        self.sums = Sums(n_pos, frame_shape, dtype)
        #: 1 where the position is in the sums (written by the summary thread, then completion)
        self.mask = bytearray(n_pos)
        self.included = 0  # frames summed so far
        self.batch_n = batch_n
        self._given = given_by_config(config)
        self._beam_center = config.calibration.beam_center if config is not None else None
        self._auto_pending = any(
            getattr(self._given, k) is None
            for k in ("center", "bf_radius", "adf_inner", "adf_outer")
        )
        det = resolve(frame_shape, self._given, self._beam_center)
        single_thread_blas()
        self.maps = LiveMaps(scan_shape, frame_shape, det)
        self._batch = np.empty((batch_n, *frame_shape), dtype=np.float32)
        self._geometry_lock = threading.Lock()

    def sum_pattern(self) -> np.ndarray:
        """A copy of the summed pattern so far, float64 [ny, nx]."""
        with self.maps.lock:
            return self.sums.snapshot()

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sum_pattern [ny, nx], total_image [n_m, n_k], included mask [n_m, n_k])."""
        mask = np.frombuffer(bytes(self.mask), dtype=np.uint8).astype(bool)
        return (
            self.sums.finish(),
            self.sums.image.reshape(self.scan_shape),
            mask.reshape(self.scan_shape),
        )

    def missing(self) -> np.ndarray:
        """Positions not in the sums, row-major."""
        return np.flatnonzero(np.frombuffer(bytes(self.mask), dtype=np.uint8) == 0)

    def add(self, positions: np.ndarray, frames: np.ndarray) -> None:
        """Add decoded frames (at most :attr:`batch_n`) to the exact sums and the live maps.

        The caller marks the positions in :attr:`mask`.
        """
        n = positions.size
        with self.maps.lock:  # readers of the pattern see whole batches
            self.sums.add_batch(positions, frames)
        if self._auto_pending and self.included + n >= AUTO_FRAMES:
            self._auto_pending = False  # before the batch is reduced: it is reduced exactly
            self._auto_detectors()
        buf = self._batch[:n]
        np.copyto(buf, frames)
        self.maps.add(positions, buf)
        self.included += n

    def complete(self, positions: np.ndarray, frames: np.ndarray) -> None:
        """Add decoded frames (B x ny x nx) read back from the file; positions already in the
        sums are left out."""
        positions = np.asarray(positions, dtype=np.int64)
        keep = np.asarray([i for i, p in enumerate(positions) if not self.mask[int(p)]], int)
        for start in range(0, keep.size, self.batch_n):
            part = keep[start : start + self.batch_n]
            pos = positions[part]
            self.add(pos, np.asarray(frames)[part])
            for p in pos:
                self.mask[int(p)] = 1

    def set_detectors(self, change: DetectorsRequest) -> Detectors:
        """Change the geometry (values not given stay); recompute the maps.

        Raises
        ------
        ConfigError
            The geometry does not fit the frame, or the annulus is empty.
        """
        with self._geometry_lock:
            merged = self._given.model_copy(update=change.model_dump(exclude_unset=True))
            check_in_frame(merged, self.frame_shape)
            try:
                merged = DetectorsRequest.model_validate(merged.model_dump())
            except ValidationError as exc:  # e.g. the annulus empty with the values kept
                msg = "; ".join(str(e.get("msg", e)) for e in exc.errors())
                raise ConfigError(f"geometry refused: {msg}") from None
            det = resolve(self.frame_shape, merged, self._beam_center, self.sum_pattern())
            self._given = merged
            self.maps.set_detectors(det)
            logger.info("live view: detectors %s", det.as_dict())
            return det

    def _auto_detectors(self) -> None:
        """Find what the config did not give (centre, disk, annulus) in the summed pattern."""
        with self._geometry_lock:
            det = resolve(self.frame_shape, self._given, self._beam_center, self.sum_pattern())
            if det != self.maps.detectors:
                self.maps.set_detectors(det)
                logger.info("live view: detectors found in the summed pattern: %s", det.as_dict())
