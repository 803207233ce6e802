"""The NXimage base class as an API: write any of its NXdata forms with checked shapes.

Forms and the symbols of their signal (NXimage): ``image_1d`` [n_i], ``image_2d`` [n_j, n_i],
``image_3d`` [n_k, n_j, n_i], ``image_4d`` [n_m, n_k, n_j, n_i], ``stack_1d`` [n_img, n_i],
``stack_2d`` [n_img, n_j, n_i], ``stack_3d`` [n_img, n_k, n_j, n_i]. Signals are ``intensity``,
``real``, ``imag`` (NX_NUMBER) and ``complex`` (NX_COMPLEX, native complex dtype). Stacks carry
``indices_image`` (offset, offset+1, ...) and optionally ``indices_group`` (any integers).

Every check happens before the first HDF5 call, so a wrong shape leaves the file untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from stemdaq.errors import ShapeError

#: form -> axis names of the signal dimensions, slowest first
FORMS: dict[str, tuple[str, ...]] = {
    "image_1d": ("axis_i",),
    "image_2d": ("axis_j", "axis_i"),
    "image_3d": ("axis_k", "axis_j", "axis_i"),
    "image_4d": ("axis_m", "axis_k", "axis_j", "axis_i"),
    "stack_1d": ("indices_image", "axis_i"),
    "stack_2d": ("indices_image", "axis_j", "axis_i"),
    "stack_3d": ("indices_image", "axis_k", "axis_j", "axis_i"),
}
#: axis name -> NXimage symbol
SYMBOLS = {
    "indices_image": "n_img",
    "axis_m": "n_m",
    "axis_k": "n_k",
    "axis_j": "n_j",
    "axis_i": "n_i",
}
SIGNALS = ("intensity", "real", "imag", "complex")


@dataclass
class Axis:
    """One NXdata axis: coordinates, unit and a human label."""

    values: np.ndarray
    units: str
    long_name: str

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values)
        if self.values.ndim != 1:
            raise ShapeError(f"axis values must be 1-D, got shape {self.values.shape}")


@dataclass
class SignalSpec:
    """A signal to create empty (for streaming) instead of from an array."""

    shape: tuple[int, ...]
    dtype: Any
    create_kwargs: dict[str, Any] = field(default_factory=dict)


def signal_shape(form: str, signals: Mapping[str, np.ndarray | SignalSpec]) -> tuple[int, ...]:
    """Validate the signals of ``form`` against each other; return their common shape."""
    if form not in FORMS:
        raise ShapeError(f"unknown NXimage form {form!r}; one of {', '.join(FORMS)}")
    if not signals:
        raise ShapeError(f"{form}: at least one of {', '.join(SIGNALS)} is needed")
    rank = len(FORMS[form])
    symbols = ", ".join(SYMBOLS[a] for a in FORMS[form])
    shape: tuple[int, ...] | None = None
    for name, value in signals.items():
        if name not in SIGNALS:
            raise ShapeError(f"{form}: unknown signal {name!r}; one of {', '.join(SIGNALS)}")
        s = tuple(value.shape)
        if len(s) != rank:
            raise ShapeError(
                f"{form}/{name} must have rank {rank} [{symbols}], got shape {list(s)}"
            )
        if shape is not None and s != shape:
            raise ShapeError(f"{form}/{name} has shape {list(s)}, other signals have {list(shape)}")
        shape = s
        dt = np.dtype(value.dtype)
        if name == "complex" and dt.kind != "c":
            raise ShapeError(f"{form}/complex must have a complex dtype (NX_COMPLEX), got {dt}")
        if name != "complex" and dt.kind not in "iuf":
            raise ShapeError(f"{form}/{name} must be real numbers (NX_NUMBER), got {dt}")
    if shape is None:  # pragma: no cover - signals is not empty
        raise ShapeError(f"{form}: no signal")
    return shape


def check_axes(form: str, shape: tuple[int, ...], axes: Mapping[str, Axis]) -> None:
    """Every axis of ``form`` is given (except ``indices_image``) and has its symbol's length."""
    for dim, name in enumerate(FORMS[form]):
        if name == "indices_image":
            continue
        if name not in axes:
            raise ShapeError(f"{form}: axis {name} [{SYMBOLS[name]}] is missing")
        n = axes[name].values.shape[0]
        if n != shape[dim]:
            raise ShapeError(
                f"{form}/{name} has {n} values, the signal has {SYMBOLS[name]} = {shape[dim]}"
            )
    extra = set(axes) - set(FORMS[form])
    if extra:
        raise ShapeError(f"{form}: axes {sorted(extra)} do not belong to this form")


def check_indices(
    form: str,
    n_img: int,
    indices_image: Sequence[int] | np.ndarray | None,
    indices_group: Sequence[int] | np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Stack indices: ``indices_image`` counts from an offset in steps of one."""
    if not form.startswith("stack_"):
        if indices_image is not None or indices_group is not None:
            raise ShapeError(f"{form} is not a stack: indices_image/indices_group do not apply")
        return None, None
    img = np.arange(n_img, dtype=np.int64) if indices_image is None else np.asarray(indices_image)
    if img.shape != (n_img,):
        raise ShapeError(f"{form}/indices_image must have n_img = {n_img} values, got {img.shape}")
    if img.dtype.kind not in "iu":
        raise ShapeError(f"{form}/indices_image must be integers, got {img.dtype}")
    if n_img > 1 and not np.all(np.diff(img) == 1):
        raise ShapeError(f"{form}/indices_image must count from an offset in steps of one")
    grp = None
    if indices_group is not None:
        grp = np.asarray(indices_group)
        if grp.shape != (n_img,):
            raise ShapeError(
                f"{form}/indices_group must have n_img = {n_img} values, got {grp.shape}"
            )
        if grp.dtype.kind not in "iu":
            raise ShapeError(f"{form}/indices_group must be integers, got {grp.dtype}")
    return img, grp


def write_nximage_data(
    parent: h5py.Group,
    form: str,
    *,
    axes: Mapping[str, Axis],
    intensity: np.ndarray | SignalSpec | None = None,
    real: np.ndarray | SignalSpec | None = None,
    imag: np.ndarray | SignalSpec | None = None,
    complex: np.ndarray | SignalSpec | None = None,  # noqa: A002 - the NeXus name
    signal_long_name: str = "intensity",
    signal_units: str = "",
    title: str | None = None,
    indices_image: Sequence[int] | np.ndarray | None = None,
    indices_group: Sequence[int] | np.ndarray | None = None,
    link_real: bool = True,
) -> h5py.Group:
    """Create ``parent/<form>`` (NXdata) with signals, axes and NXdata attributes.

    ``parent`` is an NXimage group. ``intensity`` is the plotted signal when given; with
    ``link_real`` (default) and no ``real``, ``real`` is a hard link to ``intensity`` (NXem
    requires ``real``; the data are stored once). Array signals are written; ``SignalSpec``
    signals are created empty with their ``create_kwargs`` (chunks, filter, fill value).

    Raises
    ------
    ShapeError
        Before anything is written, when a shape, dtype, axis or index does not fit.
    """
    given = {
        k: v
        for k, v in (("intensity", intensity), ("real", real), ("imag", imag), ("complex", complex))
        if v is not None
    }
    shape = signal_shape(form, given)
    check_axes(form, shape, axes)
    img, grp = check_indices(form, shape[0], indices_image, indices_group)
    if form in parent:
        raise ShapeError(f"{parent.name}/{form} exists already")

    data = parent.create_group(form)
    data.attrs["NX_class"] = "NXdata"
    plotted = (
        "intensity" if "intensity" in given else "real" if "real" in given else next(iter(given))
    )
    data.attrs["signal"] = plotted
    axis_names = list(FORMS[form])
    data.attrs["axes"] = axis_names
    for dim, name in enumerate(axis_names):
        data.attrs[f"{name}_indices"] = np.uint32(dim)
    if title:
        data.create_dataset("title", data=title)
    for name, value in given.items():
        if isinstance(value, SignalSpec):
            ds = data.create_dataset(
                name, shape=value.shape, dtype=value.dtype, **value.create_kwargs
            )
        else:
            ds = data.create_dataset(name, data=np.asarray(value))
        label = (
            signal_long_name if name in ("intensity", "real") else f"{signal_long_name} ({name})"
        )
        ds.attrs["long_name"] = label
        ds.attrs["units"] = signal_units
    if link_real and "intensity" in given and "real" not in given:
        data["real"] = data["intensity"]  # hard link: one dataset, two names
    for name, axis in axes.items():
        ds = data.create_dataset(name, data=axis.values)
        ds.attrs["units"] = axis.units
        ds.attrs["long_name"] = axis.long_name
    if img is not None:
        ds = data.create_dataset("indices_image", data=img)
        ds.attrs["units"] = ""
        ds.attrs["long_name"] = "image index"
    if grp is not None:
        ds = data.create_dataset("indices_group", data=grp)
        ds.attrs["units"] = ""
        ds.attrs["long_name"] = "group index"
    return data


def create_nximage(parent: h5py.Group, name: str) -> h5py.Group:
    """An empty NXimage group ``parent/name``."""
    g = parent.create_group(name)
    g.attrs["NX_class"] = "NXimage"
    return g


def write_nximage(parent: h5py.Group, name: str, form: str, **kwargs: Any) -> h5py.Group:
    """Check, then create NXimage ``parent/name`` holding one ``form`` (see write_nximage_data).

    The NXimage group is only created once every check passed.
    """
    given = {k: kwargs[k] for k in SIGNALS if kwargs.get(k) is not None}
    shape = signal_shape(form, given)
    check_axes(form, shape, kwargs.get("axes", {}))
    check_indices(form, shape[0], kwargs.get("indices_image"), kwargs.get("indices_group"))
    image = parent[name] if name in parent else create_nximage(parent, name)
    write_nximage_data(image, form, **kwargs)
    return image
