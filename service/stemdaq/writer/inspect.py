"""``stemdaq inspect``: what is in an acquisition file, and whether it follows the layout.

The report lists the NXimage groups (forms, shapes, dtypes, axis units, compression filter and
ratio, frames written and missing). ``problems`` are breaks of the stemdaq/NXem layout (the
command exits non-zero); ``missing_nxem`` is user metadata NXem requires that was not given
(the file is still fine, just not yet NXem-valid). Whether the data are whole (state, gaps,
frames that do not read back) is :mod:`stemdaq.writer.probe`'s part, and
:meth:`~stemdaq.writer.probe.FileProbe.verdict` joins both for the command.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stemdaq.errors import LayoutError
from stemdaq.writer.layout import FORMS

#: user metadata NXem requires, as HDF5 paths, with the setting that fills each
REQUIRED_USER_METADATA = {
    "/entry/sample/atom_types": "metadata.sample.atom_types",
    "/entry/sample/preparation_date": "metadata.sample.preparation_date",
    "/entry/measurement/instrument/fabrication/vendor": "metadata.microscope.vendor",
    "/entry/measurement/instrument/fabrication/model": "metadata.microscope.model",
    "/entry/measurement/instrument/ebeam_column/electron_source/emitter_type": (
        "metadata.microscope.emitter_type"
    ),
}
_FILTERS = {1: "gzip", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle+lz4", 32015: "zstd"}


@dataclass
class ImageReport:
    """One NXdata form inside an NXimage group."""

    path: str
    form: str
    signal: str
    shape: list[int]
    dtype: str
    axes: dict[str, str]  # axis name -> units
    compression: str
    stored_bytes: int
    ratio: float | None  # uncompressed / stored, over the frames written
    frames_written: int | None = None
    frames_missing: int | None = None


@dataclass
class InspectReport:
    """Result of :func:`inspect_file`."""

    path: str
    problems: list[str] = field(default_factory=list)
    missing_nxem: list[str] = field(default_factory=list)
    images: list[ImageReport] = field(default_factory=list)
    state: str | None = None
    partial: bool = False
    #: NXimage groups of the live view (virtual images with their geometry), e.g. image_bf
    live_images: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file follows the layout (missing user metadata does not count)."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(
        self,
        width: int = 80,
        *,
        head: bool = True,
        extra: dict[str, list[tuple[str, str]]] | None = None,
    ) -> list[str]:
        """Plain text, one block of ``key: value`` lines per NXdata, wrapped at ``width``.

        Names are never broken across lines: a line only breaks at spaces. ``extra`` adds rows
        to the block of an NXdata path.
        """
        first = f"{self.path}: {'OK' if self.ok else 'BROKEN LAYOUT'}"
        first += f" (state {self.state})" if self.state else ""
        first += " (partial: not closed cleanly)" if self.partial else ""
        out = wrap(first, width) if head else []
        for im in self.images:
            out += ["", im.path]
            rows = [
                ("signal", f"{im.signal}, {im.dtype}, {' x '.join(map(str, im.shape))}"),
                ("axes", ", ".join(f"{k} [{v or 'unitless'}]" for k, v in im.axes.items())),
                ("filter", f"{im.compression}, ratio {f'{im.ratio:.2f}' if im.ratio else 'n/a'}"),
                ("stored", f"{im.stored_bytes} bytes"),
            ]
            if im.frames_written is not None:
                rows.append(("frames", f"{im.frames_written} written, {im.frames_missing} missing"))
            rows += (extra or {}).get(im.path, [])
            for key, value in rows:
                out += wrap(f"{key}: {value}", width, indent="  ")
        if self.live_images:
            out += [""] + wrap(f"live view: {', '.join(self.live_images)}", width)
        if self.problems:
            out += ["", "layout problems:"]
            out += [ln for p in self.problems for ln in wrap(f"- {p}", width, indent="  ")]
        if self.missing_nxem:
            out += ["", "NXem needs (user metadata, the file is fine without it):"]
            out += [ln for m in self.missing_nxem for ln in wrap(f"- {m}", width, indent="  ")]
        return out


def wrap(text: str, width: int = 80, indent: str = "") -> list[str]:
    """Wrap ``text`` at spaces only (paths and names stay whole); continuation lines indented."""
    return textwrap.wrap(
        text,
        width,
        initial_indent=indent,
        subsequent_indent=indent + "    ",
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent]


def stored_bytes(ds: h5py.Dataset) -> int:
    """Bytes a dataset holds on disk, from its chunk index (one pass) when it is chunked.

    ``get_storage_size`` is avoided for chunked data: on a damaged index it was seen to hang.
    """
    if ds.chunks is None:
        return int(ds.id.get_storage_size())
    total = 0

    def visit(info: Any) -> None:
        nonlocal total
        total += int(info.size)

    ds.id.chunk_iter(visit)
    return total


def open_readonly(path: Path | str) -> h5py.File:
    """Open read-only; SWMR mode when a writer that did not close left the file marked open."""
    last: Exception | None = None
    for swmr in (False, True):  # a crashed SWMR writer leaves a file only SWMR readers open
        try:
            return h5py.File(path, "r", swmr=swmr, locking=False)
        except (OSError, ValueError) as exc:
            last = exc
    raise OSError(f"cannot open {path}: {last}")


def inspect_file(path: Path | str) -> InspectReport:
    """Inspect an acquisition file (also a ``.partial`` one being written or left by a crash).

    HDF5 runs in this process: for a file that may be damaged, use
    :func:`stemdaq.writer.probe.probe_file`, which runs this in a child process with a time bound.

    Raises
    ------
    OSError
        The file cannot be opened as HDF5.
    """
    path = Path(path)
    report = InspectReport(path=str(path), partial=path.name.endswith(".partial"))
    with open_readonly(path) as f:
        check_layout(f, report)
    return report


def check_layout(f: h5py.File, report: InspectReport, sizes: dict[str, int] | None = None) -> None:
    """Fill ``report`` from an open file; ``sizes`` maps dataset paths to known stored bytes."""
    try:
        _check(f, report, sizes or {})
    except LayoutError as exc:
        report.problems.append(str(exc))


def stored_state(f: h5py.File) -> dict[str, Any]:
    """``state``, ``stored_error``, ``stored_warnings`` from ``event1/acquisition``, if there."""
    acq = f.get("/entry/measurement/event1/acquisition")
    if not isinstance(acq, h5py.Group):
        return {}
    out: dict[str, Any] = {}
    if "state" in acq:
        out["state"] = as_text(acq["state"])
    if "error" in acq:
        out["stored_error"] = as_text(acq["error"]) or None
    if "warnings" in acq:
        values = np.atleast_1d(acq["warnings"][()]).ravel().tolist()
        out["stored_warnings"] = [t for t in map(as_text, values) if t]
    return out


def bookkept_images(f: h5py.File) -> list[tuple[h5py.Group, h5py.Dataset]]:
    """(NXimage group, its 4D signal) of image1, image2, ... that have frame bookkeeping."""
    event = f.get("/entry/measurement/event1")
    if not isinstance(event, h5py.Group):
        return []
    names = sorted((n for n in event if re.fullmatch(r"image\d+", n)), key=lambda n: int(n[5:]))
    out = []
    for name in names:
        data, book = event[name].get("image_4d"), event[name].get("frames")
        if not isinstance(data, h5py.Group) or not isinstance(book, h5py.Group):
            continue
        signal = data.get(as_text(data.attrs.get("signal")) or "intensity")
        if isinstance(signal, h5py.Dataset) and "written" in book:
            out.append((event[name], signal))
    return out


def _check(f: h5py.File, r: InspectReport, sizes: dict[str, int]) -> None:
    entry = f.get("entry")
    if not isinstance(entry, h5py.Group) or _cls(entry) != "NXentry":
        raise LayoutError("no /entry NXentry group")
    definition = as_text(entry.get("definition"))
    if definition != "NXem":
        r.problems.append(f"/entry/definition is {definition!r}, expected 'NXem'")
    if "start_time" not in entry:
        r.problems.append("/entry/start_time is missing")
    if "sample" not in entry or "is_simulation" not in entry["sample"]:
        r.problems.append("/entry/sample/is_simulation is missing")
    state = f.get("/entry/measurement/event1/acquisition/state")
    r.state = as_text(state) if state is not None else None
    for p, setting in REQUIRED_USER_METADATA.items():
        if p not in f:
            r.missing_nxem.append(f"{p} (set {setting})")
    event = f.get("/entry/measurement/event1")
    if not isinstance(event, h5py.Group):
        raise LayoutError("no /entry/measurement/event1 group")
    images = [n for n in event if isinstance(event[n], h5py.Group) and _cls(event[n]) == "NXimage"]
    if "image1" not in images:
        r.problems.append("/entry/measurement/event1/image1 (NXimage) is missing")
    r.live_images = [
        n
        for n in sorted(images)
        if isinstance(event[n].get("live"), h5py.Group) and _cls(event[n]["live"]) == "NXcollection"
    ]
    for name in images:
        for form in event[name]:
            if form in FORMS and isinstance(event[name][form], h5py.Group):
                _check_data(event[name][form], form, r, sizes)
    image1 = event.get("image1")
    if isinstance(image1, h5py.Group) and "image_4d" not in image1:
        r.problems.append("/entry/measurement/event1/image1/image_4d (NXdata) is missing")
    _check_default(f, r)


def _check_data(data: h5py.Group, form: str, r: InspectReport, sizes: dict[str, int]) -> None:
    where = data.name
    if _cls(data) != "NXdata":
        r.problems.append(f"{where}: NX_class is {_cls(data)!r}, expected NXdata")
    signal = as_text(data.attrs.get("signal"))
    if not signal or signal not in data:
        r.problems.append(f"{where}: @signal {signal!r} does not name a dataset")
        return
    ds = data[signal]
    axes = [as_text(a) or "" for a in np.atleast_1d(data.attrs.get("axes", []))]
    if axes != list(FORMS[form]):
        r.problems.append(f"{where}: @axes is {axes}, expected {list(FORMS[form])}")
    if ds.ndim != len(FORMS[form]):
        r.problems.append(f"{where}/{signal}: rank {ds.ndim}, {form} needs {len(FORMS[form])}")
    units: dict[str, str] = {}
    for dim, axis in enumerate(axes):
        if axis not in data:
            r.problems.append(f"{where}: axis {axis} is missing")
            continue
        a = data[axis]
        if dim < ds.ndim and a.shape != (ds.shape[dim],):
            r.problems.append(
                f"{where}/{axis}: {a.shape[0] if a.shape else 0} values, "
                f"dimension {dim} has {ds.shape[dim]}"
            )
        if data.attrs.get(f"{axis}_indices") != dim:
            r.problems.append(f"{where}: @{axis}_indices should be {dim}")
        for attr in ("units", "long_name"):
            if attr not in a.attrs:
                r.problems.append(f"{where}/{axis}: @{attr} is missing")
        units[axis] = as_text(a.attrs.get("units")) or ""
    for attr in ("units", "long_name"):
        if attr not in ds.attrs:
            r.problems.append(f"{where}/{signal}: @{attr} is missing")
    if signal == "intensity":
        if "real" not in data:
            r.problems.append(f"{where}/real is missing (NXem requires it)")
        elif data["real"].id != ds.id:
            r.problems.append(f"{where}/real is not a hard link to intensity")
    written = missing = None
    book = data.parent.get("frames")
    if form == "image_4d":
        if not isinstance(book, h5py.Group) or "written" not in book:
            r.problems.append(
                f"{data.parent.name}/frames/written (per-position bookkeeping) is missing"
            )
        else:
            mask = book["written"][()]
            if mask.shape != ds.shape[:2]:
                r.problems.append(
                    f"{book.name}/written has shape {list(mask.shape)}, "
                    f"scan is {list(ds.shape[:2])}"
                )
            written = int(np.count_nonzero(mask))
            missing = int(mask.size - written)
    stored = sizes[ds.name] if ds.name in sizes else stored_bytes(ds)
    frame_bytes = int(np.prod(ds.shape[2:])) * ds.dtype.itemsize if ds.ndim > 2 else ds.nbytes
    raw = frame_bytes * written if written is not None else ds.nbytes
    r.images.append(
        ImageReport(
            path=where,
            form=form,
            signal=signal,
            shape=list(ds.shape),
            dtype=str(ds.dtype),
            axes=units,
            compression=_compression(ds),
            stored_bytes=stored,
            ratio=round(raw / stored, 3) if stored and raw else None,
            frames_written=written,
            frames_missing=missing,
        )
    )


def _check_default(f: h5py.File, r: InspectReport) -> None:
    node: h5py.Group = f
    for _ in range(8):
        target = as_text(node.attrs.get("default"))
        if not target:
            break
        child = node.get(target)
        if not isinstance(child, h5py.Group):
            r.problems.append(f"{node.name}/@default names {target!r}, which is not a group")
            return
        node = child
        if _cls(node) == "NXdata":
            return
    r.problems.append(f"the @default chain stops at {node.name} before reaching an NXdata")


def _compression(ds: h5py.Dataset) -> str:
    dcpl = ds.id.get_create_plist()
    names = []
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        names.append(_FILTERS.get(code, f"filter {code}"))
    return "+".join(names) or "none"


def _cls(obj: Any) -> str | None:
    return as_text(obj.attrs.get("NX_class"))


def as_text(value: Any) -> str | None:
    """A scalar string dataset or attribute as ``str`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, h5py.Dataset):
        value = value[()]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return as_text(value[()])
    return str(value)
