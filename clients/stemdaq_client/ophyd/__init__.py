"""stemdaq as an ophyd-async detector, so bluesky plans can drive it (``pip install
'stemdaq[bluesky]'``).

>>> from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider  # doctest: +SKIP
>>> from stemdaq_client.ophyd import StemdaqDetector  # doctest: +SKIP
>>> det = StemdaqDetector(  # doctest: +SKIP
...     "http://127.0.0.1:8000",
...     StaticPathProvider(UUIDFilenameProvider(), PurePath("/data/bluesky")),
...     scan_shape=(64, 64),
...     name="stemdaq",
... )

See docs/BLUESKY.md for plans and the documents they produce.
"""

from __future__ import annotations

try:
    import bluesky  # noqa: F401
    import event_model  # noqa: F401
    import ophyd_async  # noqa: F401
except ImportError as exc:  # the client itself never needs them
    raise ImportError(
        f"stemdaq_client.ophyd needs the bluesky extra ({exc.name} is not installed): "
        "pip install 'stemdaq[bluesky]'"
    ) from exc

from stemdaq_client.ophyd._detector import StemdaqDetector, fly_rows
from stemdaq_client.ophyd._logic import (
    AcquisitionEndedError,
    StemdaqAcquireLogic,
    StemdaqDataLogic,
    StemdaqStreamProvider,
    StemdaqTriggerLogic,
)
from stemdaq_client.ophyd._session import StemdaqSession

__all__ = [
    "AcquisitionEndedError",
    "StemdaqAcquireLogic",
    "StemdaqDataLogic",
    "StemdaqDetector",
    "StemdaqSession",
    "StemdaqStreamProvider",
    "StemdaqTriggerLogic",
    "fly_rows",
]
