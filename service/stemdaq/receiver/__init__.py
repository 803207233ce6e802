"""Stream receiver: DECTRIS stream v1 / v2 messages -> stream events -> scan placements.

Public API:

- :class:`ZmqSource` (PULL connect, zero-copy ``recv``),
- :class:`StreamDecoder` (``decode(parts) -> list[StreamEvent]``, both formats, never raises),
- :class:`SeriesTracker` (``accept(event)``: placement of frames and drop accounting),
- framing helpers for HDF5 direct chunk writes (:func:`lz4_hdf5_frame`, :func:`check_bslz4`,
  :func:`check_lz4_hdf5`).
"""

from stemdaq.receiver.decoder import StreamDecoder
from stemdaq.receiver.framing import check_bslz4, check_lz4_hdf5, lz4_bound, lz4_hdf5_frame
from stemdaq.receiver.placement import Placement, SeriesOpened, SeriesTracker
from stemdaq.receiver.stream1 import V1_CHANNEL
from stemdaq.receiver.zmq_source import ZmqSource

__all__ = [
    "Placement",
    "SeriesOpened",
    "SeriesTracker",
    "StreamDecoder",
    "V1_CHANNEL",
    "ZmqSource",
    "check_bslz4",
    "check_lz4_hdf5",
    "lz4_bound",
    "lz4_hdf5_frame",
]
