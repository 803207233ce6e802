"""Python client of the stemdaq service (HTTP only: it never imports the service).

>>> from stemdaq_client import Client  # doctest: +SKIP
>>> c = Client("http://127.0.0.1:8000", token="...")  # doctest: +SKIP
>>> acq = c.arm(scan_shape=[64, 64])  # doctest: +SKIP
>>> c.wait(acq.id, timeout=120).state  # doctest: +SKIP
"""

from stemdaq_client._client import DEFAULT_URL, AsyncClient, Client, file_template_for
from stemdaq_client.errors import (
    Conflict,
    InvalidRequest,
    InvalidResponse,
    NotFound,
    ServerError,
    StemdaqClientError,
    Unauthorized,
)
from stemdaq_client.models import (
    Acquisition,
    AcquisitionPage,
    AcquisitionState,
    Config,
    Counters,
    Event,
    Flush,
    Status,
)

__all__ = [
    "DEFAULT_URL",
    "Acquisition",
    "AcquisitionPage",
    "AcquisitionState",
    "AsyncClient",
    "Client",
    "Config",
    "Conflict",
    "Counters",
    "Event",
    "Flush",
    "InvalidRequest",
    "InvalidResponse",
    "NotFound",
    "ServerError",
    "StemdaqClientError",
    "Status",
    "Unauthorized",
    "file_template_for",
]
