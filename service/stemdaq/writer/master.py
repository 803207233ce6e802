"""The master file of a scale-out acquisition: one NXem layout, the frames in the rank files.

``<name>`` holds the whole NXem/NXimage layout that :class:`~stemdaq.writer.nexus.NexusWriter`
writes for one file, with two differences:

- ``image_4d/intensity`` (and ``real``, its hard link) is a virtual dataset (VDS) with one
  strided mapping per rank file, ``<stem>_r00.h5`` ... beside it: rank ``r`` owns the blocks of
  ``block_rows`` scan rows ``r, r + N, r + 2N, ...``, which is one HDF5 hyperslab (stride
  ``N * block_rows``, block ``block_rows``) plus one for a last block cut short;
- the per-position bookkeeping (``frames/written``, ``frame_id``, times) is a VDS over the rank
  files the same way while the scan runs, so an SWMR reader sees frames arrive and the count
  grow; at close it is merged into ordinary datasets of the master.

The master is created (and SWMR started) as soon as the frames' dtype and shape are known, from
the first rank that opened its file; nothing is written to it until close. At close the mappings
are pointed at the names the rank files have then (the final name after a clean close, the
``.partial`` of a rank that died), the bookkeeping merged, the outcome written, and the master
renamed like any file (:mod:`stemdaq.writer.filesafety`: never over an existing file).
VDS source names are relative (the file name only), so the folder can be moved or mounted
elsewhere: HDF5 looks for them beside the master.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from stemdaq.config import AcquisitionConfig
from stemdaq.rank.ownership import hyperslabs
from stemdaq.writer.bookkeeping import _FIELDS, BOOKKEEPING
from stemdaq.writer.closing import write_sum_images
from stemdaq.writer.live_groups import LiveGeometry, read_map_groups, write_map_groups
from stemdaq.writer.nexus import NexusWriter
from stemdaq.writer.opening import EVENT, image_path
from stemdaq.writer.recover import clear_status_flags

logger = logging.getLogger(__name__)

BOOK_FIELDS = tuple((name, np.dtype(dtype), fill) for name, dtype, fill, _, _ in _FIELDS)


def rank_file_name(master: Path, index: int) -> Path:
    """``<stem>_rNN.h5`` beside the master (``scan.nxs`` -> ``scan_r00.h5``)."""
    return master.with_name(f"{master.stem}_r{index:02d}.h5")


def current_name(final: Path) -> Path | None:
    """Where a rank file is now: its final name, else its ``.partial``, else None."""
    partial = final.with_name(final.name + ".partial")
    if final.is_file():
        return final
    if partial.is_file() and partial.stat().st_size > 0:
        return partial
    return None


def create_virtual(
    group: h5py.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    fill: object,
    sources: Sequence[tuple[str, str, Sequence[tuple[int, int, int, int]]]],
) -> h5py.Dataset:
    """A VDS ``group[name]``: each source ``(file, dataset, row hyperslabs)`` maps the same rows.

    A hyperslab ``(start, stride, count, block)`` selects rows on the first axis and all of the
    others, in the virtual and the source dataset alike (both have ``shape``).
    """
    rest = tuple(shape[1:])
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_fill_value(np.array(fill, dtype=dtype))
    for file_name, dset, slabs in sources:
        for start, stride, count, block in slabs:
            sel = (
                (start,) + (0,) * len(rest),
                (count,) + (1,) * len(rest),
                (stride,) + (1,) * len(rest),
                (block, *rest),
            )
            vspace = h5py.h5s.create_simple(shape)
            vspace.select_hyperslab(sel[0], sel[1], sel[2], sel[3])
            sspace = h5py.h5s.create_simple(shape)
            sspace.select_hyperslab(sel[0], sel[1], sel[2], sel[3])
            dcpl.set_virtual(vspace, file_name.encode(), dset.encode(), sspace)
    space = h5py.h5s.create_simple(shape)
    dsid = h5py.h5d.create(group.id, name.encode(), h5py.h5t.py_create(dtype), space, dcpl=dcpl)
    return h5py.Dataset(dsid)


class MasterWriter(NexusWriter):
    """The master file over ``ranks`` rank files (see the module docstring).

    Parameters
    ----------
    final_path
        The user's output name (``<name>``); the rank files are :func:`rank_file_name` beside it.
    config
        The acquisition's config (scan, metadata).
    ranks, block_rows
        How the frames are shared (:class:`~stemdaq.rank.ownership.Ownership`).
    """

    def __init__(
        self,
        final_path: Path,
        config: AcquisitionConfig,
        *,
        ranks: int,
        block_rows: int,
        overwrite: bool = False,
    ) -> None:
        super().__init__(final_path, config, validate_framing=False, overwrite=overwrite)
        self.ranks = ranks
        self.block_rows = block_rows
        self.rank_files = [rank_file_name(self.final_path, r) for r in range(ranks)]
        self._slabs = [hyperslabs(ranks, r, block_rows, config.scan_shape[0]) for r in range(ranks)]
        self._sources: list[str | None] = [
            p.name + ".partial" for p in self.rank_files
        ]  # while the scan runs: the names the ranks write
        self._merged: dict[str, np.ndarray] | None = None
        #: summed pattern, total-intensity image, positions included: added up over ranks
        self._sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._sums_channel = ""
        #: the ranks' live-view maps merged: maps, filled, geometry, completions, during scan
        self._maps: tuple[dict[str, np.ndarray], np.ndarray, LiveGeometry, set[str], int] | None = (
            None
        )

    def owns_rows(self, index: int) -> bool:
        """True if rank ``index`` owns any scan row (more ranks than blocks: some own none)."""
        return bool(self._slabs[index])

    def exclude(self, index: int) -> None:
        """Leave rank ``index`` out of the mappings made at open (it has no file)."""
        self._sources[index] = None

    # -- layout (before SWMR) -------------------------------------------------------------------

    def _layout_done(self, f: h5py.File) -> None:
        self._map_all(f, bookkeeping_virtual=True)

    def _map_all(self, f: h5py.File, *, bookkeeping_virtual: bool) -> None:
        """(Re)create the intensity VDS, and the bookkeeping as VDS or merged arrays."""
        if self.frame_shape is None or self.dtype is None:  # pragma: no cover - set by open
            raise RuntimeError("layout before open()")
        n_m, n_k = self.config.scan_shape
        for ci in range(len(self.channels)):
            image = f[image_path(ci)]
            data = image["image_4d"]
            shape4 = (n_m, n_k, *self.frame_shape)
            path4 = f"{image_path(ci)}/image_4d/intensity"
            attrs = dict(data["intensity"].attrs)
            had_real = "real" in data
            for name in ("intensity", "real"):
                if name in data:
                    del data[name]
            ds = create_virtual(data, "intensity", shape4, self.dtype, 0, self._src(path4))
            for key, value in attrs.items():
                ds.attrs[key] = value
            if had_real:
                data["real"] = ds  # one dataset, two names, as in a single file
            book = image[BOOKKEEPING]
            for name, dtype, fill in BOOK_FIELDS:
                attrs = dict(book[name].attrs)
                del book[name]
                if bookkeeping_virtual:
                    path = f"{image_path(ci)}/{BOOKKEEPING}/{name}"
                    ds = create_virtual(book, name, (n_m, n_k), dtype, fill, self._src(path))
                else:
                    merged = self._merged[name][ci] if self._merged is not None else None
                    ds = book.create_dataset(name, data=merged, chunks=None)
                for key, value in attrs.items():
                    ds.attrs[key] = value
            if not bookkeeping_virtual and self._merged is not None:
                book["frames_written"][()] = int(self._merged["written"][ci].sum())

    def _src(self, dset: str) -> list[tuple[str, str, Sequence[tuple[int, int, int, int]]]]:
        return [
            (name, dset, self._slabs[r]) for r, name in enumerate(self._sources) if name is not None
        ]

    # -- close ----------------------------------------------------------------------------------

    def merge_ranks(self) -> list[int]:
        """Point the mappings at the rank files as they are now and read their bookkeeping.

        Call once every rank has closed (or died). Returns, per rank, the frames its file holds
        (0 for a rank without a file).
        """
        n_m, n_k = self.config.scan_shape
        nch = max(1, len(self.channels))
        merged = {
            name: np.full((nch, n_m, n_k), fill, dtype=dtype) for name, dtype, fill in BOOK_FIELDS
        }
        per_rank = []
        self._sums = None
        self._maps = None
        for r, final in enumerate(self.rank_files):
            path = current_name(final)
            self._sources[r] = path.name if path is not None else None
            n = 0
            if path is not None:
                rows = np.zeros(n_m, dtype=bool)
                for start, stride, count, block in self._slabs[r]:
                    for j in range(count):
                        rows[start + j * stride : start + j * stride + block] = True
                try:
                    with h5py.File(path, "r", swmr=True) as f:
                        for ci in range(nch):
                            group = f[f"{image_path(ci)}/{BOOKKEEPING}"]
                            for name, _, _ in BOOK_FIELDS:
                                merged[name][ci, rows] = group[name][rows]
                            n += int(merged["written"][ci, rows].sum())
                        self._add_summary(f, rows)
                except (OSError, KeyError) as exc:  # its frames stay mapped; its mask says 0
                    logger.error(
                        "%s: bookkeeping of %s not readable: %s", self.final_path.name, path, exc
                    )
            per_rank.append(n)
        self._merged = merged
        return per_rank

    def _add_summary(self, f: h5py.File, rows: np.ndarray) -> None:
        """Add a rank file's summed pattern and total-intensity image (its rows) to the sums."""
        event = f[EVENT]
        if "image_sum" not in event or "image_total" not in event:
            return
        pattern = event["image_sum/image_2d/intensity"][()]
        total = event["image_total/image_2d/intensity"][()]
        included = event["image_sum/summary/frames_included"][()].astype(bool)
        total[~rows] = 0
        included[~rows] = False
        if self._sums is None:
            channel = event["image_sum/summary/channel"][()]
            self._sums_channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            self._sums = (pattern, total, included)
        else:
            p, t, i = self._sums
            self._sums = (p + pattern, t + total, i | included)
        self._add_maps(event, rows)

    def _add_maps(self, event: h5py.Group, rows: np.ndarray) -> None:
        """Take a rank file's live-view maps at the positions of its rows that it filled."""
        found = read_map_groups(event)
        if found is None:
            return
        images, filled, geometry, completion, during = found
        mine = filled & rows[:, None]
        if self._maps is None:
            blank = {name: np.full(a.shape, np.nan, dtype=a.dtype) for name, a in images.items()}
            self._maps = (blank, np.zeros_like(filled), geometry, set(), 0)
        maps, merged, first, completions, total_during = self._maps
        for name, image in images.items():
            if name in maps:
                maps[name][mine] = image[mine]
        merged |= mine
        completions.add(completion)
        self._maps = (maps, merged, first, completions, total_during + during)

    def release_dead_rank(self, index: int) -> str | None:
        """Clear the SWMR-write flags (``h5clear -s``) of the file of rank ``index``, whose
        process is gone, so the master reads without ``swmr=True``; a note for the warnings."""
        final = self.rank_files[index]
        partial = final.with_name(final.name + ".partial")
        if not partial.is_file() or partial.stat().st_size == 0:
            return None
        try:
            clear_status_flags(partial)
        except (OSError, ValueError) as exc:
            logger.error("%s: %s: %s", self.final_path.name, partial, exc)
            return f"rank {index}'s file {partial.name} could not be released: {exc}"
        return (
            f"rank {index}'s file {partial.name} keeps its .partial name: it holds every frame "
            "its written mask claims"
        )

    def _gaps_per_image(self) -> list[int]:
        if self._merged is None:
            return super()._gaps_per_image()
        n_pos = self.config.n_positions
        return [n_pos - int(w.sum()) for w in self._merged["written"]]

    def _before_rename(self, f: h5py.File) -> None:
        self._map_all(f, bookkeeping_virtual=False)
        if self._sums is not None and self.frame_shape is not None:
            write_sum_images(
                f[EVENT],
                self.config,
                self.geometry,
                self.frame_shape,
                self._sums_channel,
                *self._sums,
            )
        if self._maps is not None:
            maps, filled, geometry, completions, during = self._maps
            completion = "; ".join(sorted(completions)) + " (per rank, merged)"
            write_map_groups(
                f[EVENT],
                self.config,
                maps,
                filled,
                geometry,
                completion,
                during,
                self._sums_channel,
            )
