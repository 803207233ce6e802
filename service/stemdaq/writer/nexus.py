"""One acquisition -> one NXem file: direct chunk writes, bookkeeping, SWMR flushes, close.

Life cycle::

    w = NexusWriter(final_path, config)      # nothing on disk yet
    w.reserve()                              # <final>.partial created exclusively (O_EXCL),
                                             # empty: a second writer to the name fails now
    w.open(start, endpoint=..., channels=..., frame_shape=..., dtype=..., codec=...)
        # <final>.partial: all metadata and all datasets at full scan size, then SWMR starts
    chunk = w.prepare(frame)                 # any thread: encode/convert, no h5py
    w.write(position, channel_index, chunk, frame)   # writer thread only
    w.maybe_flush()                          # writer thread, when idle
    w.close(state, counters, summary)        # end times, counters, summaries; rename
                                             # (never over an existing file unless overwrite)

What the file gets at open (layout, chunks of K frames, filter, bookkeeping datasets) is
:mod:`stemdaq.writer.opening`; what close adds after SWMR ends, :mod:`stemdaq.writer.closing`.
Frames in the dataset's framing are written unchanged (``write_direct_chunk``); others are
converted by :meth:`NexusWriter.prepare`. The bookkeeping is kept in memory, written at flushes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.errors import DecodeError
from stemdaq.models import AcquisitionState, Codec, Counters, DetectorInfo, Frame, SeriesStart
from stemdaq.writer import metadata as md
from stemdaq.writer.axes import resolve_geometry
from stemdaq.writer.bookkeeping import Bookkeeping
from stemdaq.writer.chunking import HOLD_SECONDS, RowChunker, frames_per_chunk
from stemdaq.writer.closing import ballast_bytes, finish_file
from stemdaq.writer.codecs import check_framing, decode_chunk, encode_chunk
from stemdaq.writer.eln import write_eln_sidecar
from stemdaq.writer.filesafety import Ballast, Reservation, describe_write_error
from stemdaq.writer.opening import create_file, file_config, image_path, storage_codecs
from stemdaq.writer.storage import StorageWatch
from stemdaq.writer.summary import SummaryAccumulator

logger = logging.getLogger(__name__)


class NexusWriter:
    """Write one acquisition as an NXem file (see the module docstring)."""

    def __init__(
        self,
        final_path: Path,
        config: AcquisitionConfig,
        *,
        validate_framing: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.final_path = Path(final_path)
        self.tmp_path = self.final_path.with_name(self.final_path.name + ".partial")
        self.config = config
        self.overwrite = overwrite
        self._reservation = Reservation(self.tmp_path, self.final_path, overwrite)
        self._storage = StorageWatch(self.tmp_path, config.min_free_mb)
        #: set when free space fell below ``min_free_mb``: the acquisition must stop
        self.low_space: str | None = None
        #: the detector's SIMPLON config (active mode), the calibration's last resort
        self.detector_config: DetectorInfo | None = None
        #: set when the storage refused a write (close() then frees the ballast first)
        self.storage_error: str | None = None
        self._ballast: Ballast | None = None
        self.filter_codec = Codec.RAW
        self.compression: str = config.compression
        self.channels: tuple[str, ...] = ()
        self.frame_shape: tuple[int, int] | None = None
        self.dtype: np.dtype | None = None
        self._f: h5py.File | None = None
        self._closed = False
        self.flush_errors = 0
        self._result: Path | None = None
        self._direct: Codec | None = None  # codec whose payload goes to the file unchanged
        # walk the block table of pre-compressed payloads written unchanged (~1-2 us a frame):
        # a corrupt chunk would make reads of the whole dataset fail
        self._validate = validate_framing
        self._flush_frames = config.flush_frames
        self._flush_seconds = config.flush_seconds
        n_m, n_k = config.scan_shape
        self._n_k = n_k
        self._n_pos = n_m * n_k
        self._frame_nbytes = 0
        self._itemsize = 1
        self._last_flush = time.monotonic()
        self._book = Bookkeeping(1, config.scan_shape)  # replaced at open()
        self._k = 1  # frames per chunk, decided at open()
        self._rows: RowChunker | None = None  # assembles K-frame chunks when K > 1
        #: a rank's file of a scale-out acquisition: the positions it owns (gaps count only
        #: those) and no ELN sidecar of its own (the master has it)
        self.owned_positions: int | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def dataset_path(self) -> str:
        """Path of the 4D intensity of the first recorded channel."""
        return f"{image_path(0)}/image_4d/intensity"

    @property
    def is_open(self) -> bool:
        """True between open() and close()."""
        return self._f is not None

    @property
    def frames_written(self) -> int:
        """Distinct (position, channel) frames written so far."""
        return int(self._book.count)

    @property
    def written_mask(self) -> np.ndarray:
        """Per channel and scan position, 1 once the frame's chunk is in the file (read only:
        marks never go back; the data thread sets them)."""
        return self._book.written

    @property
    def chunk_shape(self) -> tuple[int, int, int, int] | None:
        """HDF5 chunk shape of the intensity ``(1, K, ny, nx)``; None before open()."""
        return None if self.frame_shape is None else (1, self._k, *self.frame_shape)

    @property
    def pending_frames(self) -> int:
        """Frames accepted by write() whose chunk is not in the file yet (K > 1)."""
        return 0 if self._rows is None else self._rows.pending_frames

    @property
    def current_path(self) -> Path:
        """Where the file is now: the final name once closed and renamed, else the .partial."""
        return self._result or self.tmp_path

    # -- reserve ----------------------------------------------------------------------------

    def reserve(self) -> None:
        """Create ``<final>.partial`` exclusively (empty) so no other writer can take the name.

        Raises
        ------
        PathError
            See :meth:`Reservation.take`.
        """
        self._reservation.take()

    def release(self) -> None:
        """Remove the empty reservation if no file was ever opened on it (no frame came)."""
        self._reservation.drop(remove=self._f is None and self._result is None)

    # -- open -------------------------------------------------------------------------------

    def open(
        self,
        start: SeriesStart,
        *,
        endpoint: str,
        channels: Sequence[str],
        frame_shape: tuple[int, int],
        dtype: str,
        codec: Codec,
        first: Frame | None = None,
    ) -> None:
        """Create ``<final>.partial`` with all metadata and datasets, then start SWMR.

        ``first``: the first frame, whose block size decides whether K frames share a chunk.
        """
        if self._f is not None or self._closed:
            raise RuntimeError(f"{self.final_path.name}: open() called twice")
        cfg = self.config
        self.channels = tuple(channels) or ("",)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.dtype = np.dtype(dtype)
        self._itemsize = self.dtype.itemsize
        self._frame_nbytes = self.frame_shape[0] * self.frame_shape[1] * self._itemsize
        self.compression, self.filter_codec, self._direct = storage_codecs(codec, cfg.compression)
        self._book = Bookkeeping(len(self.channels), cfg.scan_shape)
        payload = first.payload if first is not None and first.codec is codec else None
        self._k, why = frames_per_chunk(
            cfg.frames_per_chunk, self._n_k, codec, self._frame_nbytes, payload
        )
        if why:
            logger.info("%s: one frame per chunk: %s", self.tmp_path.name, why)
        self.start = start
        self.start_time = md.now_iso()
        self.geometry = resolve_geometry(
            cfg, start.detector, self.frame_shape, self.detector_config
        )
        self.config = cfg = file_config(cfg, start.detector)
        self._f, self._dsets = create_file(
            self._reservation, self, endpoint, self._book, self._layout_done
        )
        self._dsids: list[Any] = [ds.id for ds in self._dsets]
        self._last_flush = time.monotonic()
        if self._k > 1:
            self._rows = RowChunker(
                self._k,
                cfg.scan_shape,
                self.frame_shape,
                self.dtype,
                self._book,
                self._dsids,
                count_bytes=self._count_bytes,
                hold=min(HOLD_SECONDS, self._flush_seconds),
            )
        need = ballast_bytes(self.frame_shape, self._n_pos, len(self.channels))
        self._ballast = Ballast(self.tmp_path.parent, need)  # space to finish the file
        self._ballast.take()

    def _layout_done(self, f: h5py.File) -> None:
        """Hook: the layout is made, SWMR not started yet (the VDS master replaces datasets)."""

    def _before_rename(self, f: h5py.File) -> None:
        """Hook: the file is open for the last time (r+), the outcome written."""

    def _gaps_per_image(self) -> list[int]:
        """Scan positions without a frame, per channel (at close)."""
        n_pos = self._n_pos if self.owned_positions is None else self.owned_positions
        return [n_pos - int(n) for n in self._book.counts]

    # -- hot path ---------------------------------------------------------------------------

    def prepare(self, frame: Frame) -> bytes | memoryview | np.ndarray:
        """Chunk for ``frame`` in the dataset's framing. Thread-safe, no h5py.

        Raises
        ------
        DecodeError
            ``corrupt``: the payload's length or framing is wrong; ``wrong_shape``: the frame
            does not match the dataset.
        """
        if self.dtype is None or self.frame_shape is None:
            raise RuntimeError("prepare() before open()")
        if tuple(frame.shape) != self.frame_shape or np.dtype(frame.dtype) != self.dtype:
            raise DecodeError(
                "wrong_shape",
                f"frame {frame.frame_id} is {frame.dtype}{list(frame.shape)}, "
                f"dataset is {self.dtype}{list(self.frame_shape)}",
            )
        if frame.codec is self._direct:
            check_framing(frame.payload, frame.codec, self._frame_nbytes, self._itemsize)
            return frame.payload
        arr = decode_chunk(frame.payload, frame.codec, self.frame_shape, self.dtype)
        return encode_chunk(arr, self.compression, self.config.compression_level)

    def write(self, position: int, channel_index: int, chunk: Any, frame: Frame) -> int:
        """Store one frame at flat scan ``position``; return its bytes. Writer thread only.

        With K > 1 the frame waits for the rest of its chunk (:attr:`pending_frames`); it is
        marked written once its chunk is in the file.
        """
        if not 0 <= position < self._n_pos:
            raise IndexError(f"scan position {position} outside 0..{self._n_pos - 1}")
        if chunk is frame.payload:  # straight off the wire: check it is what the dataset expects
            if frame.codec is not self._direct:
                chunk = self.prepare(frame)
            elif self._validate:
                check_framing(chunk, frame.codec, self._frame_nbytes, self._itemsize)
        now = time.monotonic()
        if self._rows is not None:
            self._rows.add(channel_index, position, chunk, frame, now)
            n = len(chunk)
        else:
            m, k = divmod(position, self._n_k)
            if type(chunk) is np.ndarray:
                self._dsets[channel_index][m, k] = chunk
                n = chunk.nbytes
            else:
                self._dsids[channel_index].write_direct_chunk((m, k, 0, 0), chunk)
                n = len(chunk)
            self._count_bytes(n)
            self._book.mark(channel_index, position, frame)
        self.flush_if_due(now)  # the frame is written: a failed flush must not say otherwise
        return n

    def lane_parts(self) -> tuple[RowChunker, Bookkeeping] | None:
        """What :mod:`stemdaq.rank.lane` writes through, where it applies (K > 1, one channel
        of detector bitshuffle-LZ4 stored as it arrives): the chunk assembler, the bookkeeping."""
        if self._rows is None or self._direct is not Codec.BSLZ4 or len(self.channels) != 1:
            return None
        return self._rows, self._book

    def flush_if_due(self, now: float) -> None:
        """Flush when ``flush_frames`` frames were marked or ``flush_seconds`` passed (after
        :meth:`write`, and after the in-order lane marked a chunk's frames)."""
        if (
            self._book.since_store >= self._flush_frames
            or now - self._last_flush >= self._flush_seconds
        ):
            self._flush_checked()

    def _count_bytes(self, n: int) -> None:
        """Count ``n`` chunk bytes written, for the sync and the free-space check."""
        if self._storage.written(n):
            self.check_space()

    def _flush_checked(self) -> None:
        """Flush; a failure or too little free space sets :attr:`low_space` (the caller stops)."""
        try:
            self.flush()
        except Exception as exc:
            self.flush_errors += 1
            if self.low_space is None:
                logger.error("%s: flush failed: %s", self.tmp_path.name, exc)
                self.low_space = f"flush failed: {describe_write_error(exc)}"
            self.storage_error = self.storage_error or self.low_space

    def check_space(self) -> None:
        """Set :attr:`low_space` when the file system has less than ``min_free_mb`` left."""
        if self.low_space is None:
            self.low_space = self._storage.check()

    def maybe_flush(self) -> bool:
        """Flush if there is something new and ``flush_seconds`` passed. True if it flushed."""
        if self._f is None or (self._book.since_store == 0 and not self.pending_frames):
            return False
        if time.monotonic() - self._last_flush < self._flush_seconds:
            return False
        self.flush()
        return True

    def write_waiting_chunks(self) -> None:
        """Write every chunk still waiting for frames (the series is over; gaps as zeros)."""
        if self._f is not None and self._rows is not None:
            self._rows.write_all()

    def flush(self) -> None:
        """Write chunks waiting ``flush_seconds`` (gaps as zeros) and the bookkeeping rows that
        changed; make everything visible to SWMR readers."""
        if self._f is None:
            return
        if self._rows is not None:
            self._rows.write_due(time.monotonic(), self._flush_seconds)
        # Data first: HDF5's flush writes cached raw data (the mask) before metadata (the chunk
        # index), so with one flush a reader or a crash could see the mask claim a chunk the
        # index does not have yet (tests/writer/test_flush_order.py). The second flush is small.
        self._f.flush()
        self._book.store()
        self._f.flush()
        self._last_flush = time.monotonic()
        self.check_space()
        self._storage.maybe_sync(self._f)

    # -- close ------------------------------------------------------------------------------

    def close(
        self,
        state: AcquisitionState,
        counters: Counters,
        summary: SummaryAccumulator | None = None,
        *,
        warnings: Sequence[str] = (),
        error: str | None = None,
    ) -> Path | None:
        """Finish the file and rename it to its final name; idempotent.

        Also for aborted/failed acquisitions (a clean close with gaps); ``warnings`` and
        ``error`` are stored in the file. When :meth:`open` never happened (no frame arrived)
        no file is created (the empty reservation is removed) and ``None`` is returned. The
        final name is never written over unless ``overwrite`` was given: if it appeared
        meanwhile the file keeps its ``.partial`` name (returned).
        """
        if self._closed:
            return self._result
        self._closed = True
        if self._f is None:
            self.release()
            if summary is not None:
                summary.finish()
            return None
        if self._ballast is not None:  # the reserve is for exactly this
            self._ballast.release()
        try:
            if self._rows is not None:
                self._rows.write_all()
            self.flush()
        except Exception as exc:
            self.storage_error = self.storage_error or describe_write_error(exc)
            raise
        finally:
            self._storage.join()  # its file descriptor closes with the file
            self._f.close()
            self._f = None
        self._result = finish_file(
            self._reservation,
            self,
            summary,
            storage_error=self.storage_error,
            state=state,
            counters=counters,
            gaps_per_image=self._gaps_per_image(),
            warnings=warnings,
            error=error,
            last=self._before_rename,
        )
        if self._result == self.final_path and self.owned_positions is None:
            # for NOMAD / pynxtools-em: never over another file
            write_eln_sidecar(
                self._result, self.config, self.start.detector, overwrite=self.overwrite
            )
        logger.info("closed %s (%s, %d frames)", self._result, state.value, self._book.count)
        return self._result
