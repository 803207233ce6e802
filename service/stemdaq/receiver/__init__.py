"""Stream receiver: DECTRIS stream v1 / v2 messages -> stream events -> scan placements.

Public API:

- :class:`ZmqSource` (PULL connect, zero-copy ``recv``), :func:`recv_message` (one message:
  a single part, or a list of parts when more follow),
- :class:`StreamDecoder` (``decode(parts)`` / ``decode_part(part) -> list[StreamEvent]``, both
  formats, never raises; images in the usual layout take the fast paths
  :mod:`~stemdaq.receiver.fast2` / :mod:`~stemdaq.receiver.fast1`),
- :class:`SeriesTracker` (``accept(event)``, ``place(frame)``: placement of frames and drop
  accounting),
- framing helpers for HDF5 direct chunk writes (:func:`lz4_hdf5_frame`, :func:`check_bslz4`,
  :func:`check_lz4_hdf5`).
"""

from stemdaq.receiver.decoder import StreamDecoder
from stemdaq.receiver.framing import check_bslz4, check_lz4_hdf5, lz4_bound, lz4_hdf5_frame
from stemdaq.receiver.placement import Placement, SeriesOpened, SeriesTracker
from stemdaq.receiver.stream1 import V1_CHANNEL
from stemdaq.receiver.zmq_source import ZmqSource, recv_message

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
    "recv_message",
]
