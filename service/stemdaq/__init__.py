"""stemdaq: 4D-STEM acquisition and storage service (DECTRIS stream -> NeXus/NXem HDF5)."""

import os
from importlib.metadata import PackageNotFoundError, version

# bitshuffle's OpenMP threads fight stemdaq's compression pool (seen: two workers collapsed to a
# few hundred frames/s on 2 cores). Must be set before bitshuffle is first imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    __version__ = version("stemdaq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
