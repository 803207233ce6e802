"""The simulated DECTRIS detector: SIMPLON REST subset + ZeroMQ PUSH (stream v2 CBOR / v1 JSON).

An independent implementation of the wire protocol (it never imports ``stemdaq.receiver`` or
``stemdaq.writer``), so the receiver is tested against something it does not share code with.

- :class:`FrameGenerator`: deterministic synthetic 4D-STEM frames.
- :func:`encode_series`: a whole series as messages, for replay and benchmarks.
- :class:`SimulatedDetector`: REST + stream on loopback, fault injection (:class:`Faults`).
- :func:`run_sim`: the blocking entry point behind ``stemdaq sim``.
"""

from stemdaq.sim.detector import SimulatedDetector
from stemdaq.sim.encode import SeriesEncoder, SeriesInfo
from stemdaq.sim.faults import Faults, Injection
from stemdaq.sim.frames import FrameGenerator, default_scan_shape
from stemdaq.sim.replay import encode_series
from stemdaq.sim.run import run_sim

__all__ = [
    "Faults",
    "FrameGenerator",
    "Injection",
    "SeriesEncoder",
    "SeriesInfo",
    "SimulatedDetector",
    "default_scan_shape",
    "encode_series",
    "run_sim",
]
