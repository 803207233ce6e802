"""Frame -> HDF5/NeXus: NXem layout, direct chunk write, bookkeeping, SWMR, crash-safe rename.

Public API::

    NexusWriter          one acquisition file (open / prepare / write / maybe_flush / close)
    encode_chunk         array -> chunk bytes of an HDF5 filter (GIL-free, any thread)
    decode_chunk         stream payload (raw / bslz4 / lz4) -> array
    SummaryAccumulator   summed pattern + total-intensity image, off the hot path
    write_nximage        any NXimage form (image_1d..4d, stack_1d..3d), shapes checked first
    inspect_file         layout report of a file (HDF5 in this process)
    probe_file           read a possibly damaged file in a child process, time-bounded
    clear_status_flags   ``h5clear -s`` for a ``.partial`` file left by a killed writer
"""

from stemdaq.writer.axes import electron_wavelength
from stemdaq.writer.codecs import decode_chunk, encode_chunk
from stemdaq.writer.inspect import InspectReport, inspect_file
from stemdaq.writer.layout import Axis, SignalSpec, write_nximage, write_nximage_data
from stemdaq.writer.nexus import NexusWriter
from stemdaq.writer.probe import FileProbe, probe_file
from stemdaq.writer.probe_reader import ImageProbe
from stemdaq.writer.recover import clear_status_flags
from stemdaq.writer.summary import SummaryAccumulator

__all__ = [
    "Axis",
    "FileProbe",
    "ImageProbe",
    "InspectReport",
    "NexusWriter",
    "SignalSpec",
    "SummaryAccumulator",
    "clear_status_flags",
    "decode_chunk",
    "electron_wavelength",
    "encode_chunk",
    "inspect_file",
    "probe_file",
    "write_nximage",
    "write_nximage_data",
]
