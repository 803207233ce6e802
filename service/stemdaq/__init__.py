"""stemdaq: 4D-STEM acquisition and storage service (DECTRIS stream -> NeXus/NXem HDF5)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stemdaq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
