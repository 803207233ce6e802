"""One exception hierarchy for stemdaq; built-ins are mixed in where they fit.

The API maps these to HTTP responses in one exception handler (``api/errors.py``).
"""

from __future__ import annotations


class StemdaqError(Exception):
    """Base class of every error stemdaq raises on purpose."""


class ConfigError(StemdaqError, ValueError):
    """A setting or acquisition parameter is invalid (HTTP 422)."""


class ShapeError(StemdaqError, ValueError):
    """An array does not fit the NXimage symbols (n_img, n_m, n_k, n_j, n_i)."""


class LayoutError(StemdaqError):
    """A file does not follow the stemdaq/NXem layout."""


class PathError(StemdaqError, ValueError):
    """A file name would escape the data directory (HTTP 422)."""


class NotFoundError(StemdaqError, LookupError):
    """No such acquisition (HTTP 404)."""


class BusyError(StemdaqError, RuntimeError):
    """An acquisition is already running (HTTP 409)."""


class DecodeError(StemdaqError, ValueError):
    """A stream message or payload cannot be decoded; carries the drop reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StorageError(StemdaqError, OSError):
    """Not enough free space (or the storage refuses writes) for the acquisition (HTTP 507)."""


class StreamError(StemdaqError, ConnectionError):
    """The detector's stream endpoint cannot be reached or is not this detector's (HTTP 422)."""


class DetectorError(StemdaqError, RuntimeError):
    """The detector (SIMPLON) refused a command or is unreachable."""


class AcquisitionError(StemdaqError, RuntimeError):
    """The acquisition failed; raised on the control side from a background thread's error."""
