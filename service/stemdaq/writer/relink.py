"""Point a scale-out master at its rank files as they are named now (after a crash).

The master's virtual datasets name the rank files while the scan runs by their ``.partial``
names, and at a clean close by their final names. If the service dies mid-scan the ranks still
finish (they are told to abort and close: their files get their final names) while the master
keeps naming the ``.partial`` ones, so it reads as fill values. :func:`relink` rebuilds each
virtual dataset with the same selections and, per source, whichever of the two names exists;
it clears the SWMR-write flags the crash left on the master and on ``.partial`` sources
(``h5clear -s``). Run it only when nothing writes these files any more.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from stemdaq.writer.recover import clear_status_flags

logger = logging.getLogger(__name__)

PARTIAL = ".partial"


def _present(folder: Path, name: str) -> str:
    """``name`` if it exists beside the master, else its final/partial twin if that does."""
    if (folder / name).exists():
        return name
    twin = name[: -len(PARTIAL)] if name.endswith(PARTIAL) else name + PARTIAL
    return twin if (folder / twin).exists() else name


def relink(master: Path) -> list[str]:
    """Rebuild the mappings of every VDS in ``master`` whose sources were renamed.

    Returns the datasets changed (empty: nothing to do).

    Raises
    ------
    ValueError
        ``master`` is not an HDF5 file.
    """
    master = Path(master)
    folder = master.parent
    clear_status_flags(master)
    changed: list[str] = []
    with h5py.File(master, "r+", locking=False) as f:
        virtual: list[str] = []
        f.visititems(
            lambda name, obj: (
                virtual.append(name) if isinstance(obj, h5py.Dataset) and obj.is_virtual else None
            )
        )
        for name in virtual:
            ds = f[name]
            sources = ds.virtual_sources()
            names = [_present(folder, s.file_name) for s in sources]
            if names == [s.file_name for s in sources]:
                continue
            for n in set(names):
                if n.endswith(PARTIAL) and (folder / n).stat().st_size > 0:
                    clear_status_flags(folder / n)
            parent, base = ds.parent, name.rsplit("/", 1)[-1]
            twins = [k for k, v in parent.items() if k != base and v.id == ds.id]  # hard links
            attrs, dtype, shape = dict(ds.attrs), ds.dtype, ds.shape
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_fill_value(np.array(ds.fillvalue, dtype=dtype))
            for s, n in zip(sources, names, strict=True):
                dcpl.set_virtual(s.vspace, n.encode(), s.dset_name.encode(), s.src_space)
            for k in [base, *twins]:
                del parent[k]
            space = h5py.h5s.create_simple(shape)
            dsid = h5py.h5d.create(
                parent.id, base.encode(), h5py.h5t.py_create(dtype), space, dcpl=dcpl
            )
            new = h5py.Dataset(dsid)
            for key, value in attrs.items():
                new.attrs[key] = value
            for k in twins:
                parent[k] = new
            changed.append(name)
    if changed:
        logger.info("%s: %d virtual datasets pointed at the rank files", master.name, len(changed))
    return changed
