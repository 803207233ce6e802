"""The NeXus tree of a file as JSON: groups, attributes, dataset shapes/dtypes/chunks/filters.

Blocking (h5py): call it from a worker thread. Opens with ``swmr=True`` first, so a file that is
still being written can be read; bulk data is never read, only datasets of a few elements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stemdaq.errors import BusyError, NotFoundError

_MAX_VALUE_ELEMENTS = 16  # datasets up to this size are included with their value
_MAX_ATTR_ELEMENTS = 64  # larger attributes are summarised
_MAX_NODES = 5000  # guard against pathological files


def read_tree(path: Path, *, swmr: bool) -> dict[str, Any]:
    """Read the tree of ``path`` (see module docstring).

    Raises
    ------
    NotFoundError
        The file does not exist (yet).
    BusyError
        The file exists but cannot be opened now (e.g. not yet SWMR-readable).
    """
    if not path.exists():
        raise NotFoundError(f"file {path.name} does not exist (yet)")
    last: Exception | None = None
    for use_swmr in (True, False) if swmr else (False,):
        try:
            with h5py.File(path, "r", swmr=use_swmr, locking=False) as f:
                budget = [_MAX_NODES]
                return _group(f, budget)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            last = exc
    raise BusyError(f"cannot read {path.name} now: {last}")


def _group(group: h5py.Group, budget: list[int]) -> dict[str, Any]:
    children: dict[str, Any] = {}
    node: dict[str, Any] = {"type": "group", "attrs": _attrs(group), "children": children}
    for name in group:
        budget[0] -= 1
        if budget[0] < 0:
            node["truncated"] = True
            break
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            children[name] = {"type": "soft_link", "target": link.path}
            continue
        if isinstance(link, h5py.ExternalLink):
            children[name] = {"type": "external_link", "file": link.filename, "target": link.path}
            continue
        try:
            obj = group[name]
        except (KeyError, OSError) as exc:  # e.g. a dataset being created right now
            children[name] = {"type": "unreadable", "error": str(exc)}
            continue
        if isinstance(obj, h5py.Group):
            children[name] = _group(obj, budget)
        elif isinstance(obj, h5py.Dataset):
            children[name] = _dataset(obj)
    return node


def _dataset(ds: h5py.Dataset) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": "dataset",
        "shape": list(ds.shape) if ds.shape is not None else None,
        "dtype": _dtype(ds.dtype),
        "chunks": list(ds.chunks) if ds.chunks else None,
        "maxshape": [m if m is not None else -1 for m in ds.maxshape] if ds.maxshape else None,
        "filters": _filters(ds),
        "attrs": _attrs(ds),
    }
    if ds.is_virtual:
        node["virtual"] = True
    if ds.size is not None and ds.size <= _MAX_VALUE_ELEMENTS:
        try:
            node["value"] = _jsonable(ds[()])
        except (OSError, ValueError, TypeError):
            pass
    return node


def _filters(ds: h5py.Dataset) -> list[dict[str, Any]]:
    out = []
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, flags, values, name = plist.get_filter(i)
        out.append(
            {
                "id": int(code),
                "name": name.decode(errors="replace"),
                "options": [int(v) for v in values],
            }
        )
    return out


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in obj.attrs:
        try:
            value = obj.attrs[key]
        except (OSError, TypeError, ValueError) as exc:
            out[key] = f"<unreadable: {exc}>"
            continue
        size = getattr(value, "size", 1)
        if size > _MAX_ATTR_ELEMENTS:
            out[key] = {"shape": list(value.shape), "dtype": _dtype(value.dtype)}
        else:
            out[key] = _jsonable(value)
    return out


def _dtype(dtype: np.dtype[Any]) -> str:
    if h5py.check_string_dtype(dtype) is not None:
        return "string"
    return str(dtype)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return (
            [_jsonable(v) for v in value.tolist()]
            if value.dtype.kind != "O"
            else [_jsonable(v) for v in value.ravel()]
        )
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
