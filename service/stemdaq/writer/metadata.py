"""The NXem metadata of an acquisition file: entry, sample, instrument, detector, program.

User metadata that is missing is left out (never invented): the file is still written and
:func:`stemdaq.writer.inspect_file` lists what NXem still requires.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import h5py
import numpy as np

from stemdaq.config import USER_KEYS, AcquisitionConfig
from stemdaq.models import DetectorInfo, SeriesStart
from stemdaq.writer.axes import DetectorGeometry

PROGRAM = "stemdaq"
INSTRUMENT = "/entry/measurement/instrument"
DETECTOR = f"{INSTRUMENT}/detector1"
STREAM_TYPES = {
    "stream2": "application/x-dectris-stream2",
    "stream1": "application/x-dectris-stream1",
}


@functools.cache
def program_version() -> str:
    """Version of the installed stemdaq distribution (looked up once per process: the first
    look scans the installed distributions, at file open, in the data thread)."""
    try:
        from importlib.metadata import version

        return version("stemdaq")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        return "unknown"


def now_iso() -> str:
    """Current time, ISO 8601 with time zone (NX_DATE_TIME)."""
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")


def group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    """Create (or open) ``parent/name`` with its ``NX_class``."""
    g = parent.require_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def put(parent: h5py.Group, name: str, value: Any, units: str | None = None, **attrs: Any) -> None:
    """Write a scalar/array field unless ``value`` is None; strings as UTF-8."""
    if value is None:
        return
    ds = parent.create_dataset(name, data=value)
    if units is not None:
        ds.attrs["units"] = units
    for key, val in attrs.items():
        ds.attrs[key] = val


def write_entry(
    f: h5py.File, config: AcquisitionConfig, start: SeriesStart, start_time: str
) -> h5py.Group:
    """``/entry`` with definition, times, user/experiment fields and ``/entry/sample``."""
    md = config.metadata
    entry = group(f, "entry", "NXentry")
    f.attrs["default"] = "entry"
    f.attrs["creator"] = PROGRAM
    f.attrs["creator_version"] = program_version()
    put(entry, "definition", "NXem")
    put(entry, "start_time", start_time)
    put(entry, "title", md.title)
    put(entry, "experiment_alias", md.title)  # NXem's name for it (the ELN's too)
    put(entry, "identifier_experiment", md.experiment_identifier)
    put(entry, "experiment_description", md.experiment_description)
    if md.project:
        put(group(entry, "project", "NXproject"), "name", md.project)
    for i, user in enumerate(md.users or [], start=1):
        u = group(entry, f"user{i}", "NXuser")
        for key in USER_KEYS:
            if key != "orcid":
                put(u, key, user.get(key))
        if user.get("orcid"):
            put(u, "identifier_orcid", user["orcid"], type="ORCID")
    sample = group(entry, "sample", "NXsample")
    put(sample, "is_simulation", np.bool_(config.is_simulation))
    put(sample, "name", md.sample.name)
    if md.sample.atom_types:
        put(sample, "atom_types", ", ".join(md.sample.atom_types))
    put(sample, "preparation_date", md.sample.preparation_date)
    put(sample, "thickness", md.sample.thickness, "m")
    put(sample, "description", md.sample.description)
    return entry


def write_instrument(
    entry: h5py.Group,
    config: AcquisitionConfig,
    start: SeriesStart,
    geometry: DetectorGeometry,
    frame_shape: tuple[int, int],
    dtype: str,
) -> h5py.Group:
    """``/entry/measurement/instrument``: microscope, column, scan controller, program, detector."""
    md = config.metadata
    measurement = group(entry, "measurement", "NXem_measurement")
    inst = group(measurement, "instrument", "NXem_instrument")
    put(inst, "name", md.microscope.name)
    put(inst, "location", md.microscope.location)
    fab = group(inst, "fabrication", "NXfabrication")
    put(fab, "vendor", md.microscope.vendor)
    put(fab, "model", md.microscope.model)
    put(fab, "serial_number", md.microscope.serial_number)
    prog = group(inst, "program1", "NXprogram")
    put(prog, "program", PROGRAM, version=program_version())

    column = group(inst, "ebeam_column", "NXebeam_column")
    source = group(column, "electron_source", "NXsource")
    put(source, "probe", "electron")
    put(source, "emitter_type", md.microscope.emitter_type)
    if geometry.beam_energy:
        put(source, "voltage", float(geometry.beam_energy), "V")
    scan = group(column, "scan_controller", "NXscan_controller")
    put(scan, "scan_schema", "serpentine" if config.serpentine else "raster")
    put(scan, "dwell_time", md.dwell_time, "s")

    write_detector(inst, start.detector, geometry, frame_shape, dtype)
    return inst


def _vendor(description: str | None) -> str | None:
    if description and description.lower().startswith("dectris"):
        return "DECTRIS"
    return None


def write_detector(
    inst: h5py.Group,
    det: DetectorInfo,
    geometry: DetectorGeometry,
    frame_shape: tuple[int, int],
    dtype: str,
) -> h5py.Group:
    """The NXdetector, from the stream's start message and the resolved calibration."""
    d = group(inst, "detector1", "NXdetector")
    put(d, "name", det.description or "detector")
    put(d, "description", det.description or "pixel detector (model not announced by the stream)")
    fab = group(d, "fabrication", "NXfabrication")
    put(fab, "vendor", _vendor(det.description))
    put(fab, "model", det.description)
    put(fab, "serial_number", det.serial_number)
    if det.software_version:
        put(d, "firmware_version", det.software_version)
    pixel_x = geometry.pixel_size or det.pixel_size_x
    pixel_y = det.pixel_size_y or pixel_x
    put(d, "x_pixel_size", pixel_x, "m")
    put(d, "y_pixel_size", pixel_y, "m")
    put(d, "sensor_material", det.sensor_material)
    put(d, "sensor_thickness", det.sensor_thickness, "m")
    bit_depth = det.bit_depth_image or np.dtype(dtype).itemsize * 8
    put(d, "bit_depth_readout", np.int64(bit_depth))
    put(d, "count_time", det.count_time, "s")
    put(d, "frame_time", det.frame_time, "s")
    put(d, "saturation_value", det.saturation_value)
    cx, cy = geometry.beam_center
    if pixel_x:
        put(d, "beam_center_x", cx * pixel_x, "m")  # NX_LENGTH: pixels x pixel size
        put(d, "beam_center_y", cy * (pixel_y or pixel_x), "m")
    if geometry.camera_length:
        put(d, "distance", geometry.camera_length, "m")  # the (effective) camera length
    put(d, "layout", "area")
    if geometry.sources:
        src = group(d, "calibration_sources", "NXcollection")
        for name, source in geometry.sources:
            put(src, name, source)
    return d


#: the NXnote checksum of a stream input (there is no input file to sum)
NO_CHECKSUM = "n/a: stream data, no file checksum"


def write_process(image: h5py.Group, start: SeriesStart, endpoint: str, channel: str) -> None:
    """``<image>/process``: the NXprocess that made the data (the stream it came from, stemdaq)."""
    proc = group(image, "process", "NXprocess")
    put(proc, "detector_identifier", DETECTOR)
    note = group(proc, "input", "NXnote")
    put(note, "type", STREAM_TYPES.get(start.protocol, start.protocol))
    put(note, "file_name", endpoint)
    put(note, "context", f"series_id={start.series_id}")
    put(note, "checksum", NO_CHECKSUM)
    put(note, "algorithm", "none")
    put(
        note,
        "description",
        f"channel {channel!r} of series {start.series_id}"
        + (f" (unique id {start.unique_id})" if start.unique_id else ""),
    )
    prog = group(proc, "program1", "NXprogram")
    put(prog, "program", PROGRAM, version=program_version())
