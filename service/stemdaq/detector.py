"""Active mode: drive a DECTRIS-compatible detector over its SIMPLON REST API.

Only the subset a 4D-STEM scan needs (LiberTEM-live's ``controller.py`` sequence): enable the
stream, set trigger mode and image count, arm, trigger, disarm, abort. Every call is blocking
(httpx); the acquisition engine calls it from its own threads, never from the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from stemdaq.errors import DetectorError

logger = logging.getLogger(__name__)


class SimplonClient:
    """Minimal SIMPLON client.

    Parameters
    ----------
    base_url
        e.g. ``http://dcu:80``; the API version is discovered from
        ``GET /detector/api/version/``.
    timeout
        Seconds per HTTP call.
    trigger_timeout
        Seconds for ``trigger``, which blocks for the whole series on a real DCU; None: no limit.
    """

    def __init__(self, base_url: str, timeout: float = 10.0, trigger_timeout: float | None = None):
        self.base_url = base_url.rstrip("/")
        try:
            self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        except (httpx.InvalidURL, ValueError) as exc:
            raise DetectorError(f"invalid detector URL {base_url!r}: {exc}") from exc
        self._trigger_timeout = trigger_timeout
        self._version: str | None = None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> SimplonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> str:
        """SIMPLON API version, e.g. ``1.8.0``."""
        if self._version is None:
            body = self._request("GET", "/detector/api/version/")
            self._version = str(body.get("value", "1.8.0")) if isinstance(body, dict) else "1.8.0"
        return self._version

    def _request(
        self, method: str, path: str, json: Any = None, timeout: httpx.Timeout | None = None
    ) -> Any:
        try:
            kwargs: dict[str, Any] = {"json": json}
            if timeout is not None:
                kwargs["timeout"] = timeout
            response = self._http.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise DetectorError(f"detector at {self.base_url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise DetectorError(
                f"detector refused {method} {path}: "
                f"HTTP {response.status_code} {response.text[:200]}"
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def set_config(self, module: str, key: str, value: Any) -> None:
        """``PUT /{module}/api/{v}/config/{key}`` with ``{"value": value}``."""
        self._request("PUT", f"/{module}/api/{self.version}/config/{key}", json={"value": value})

    def get_config(self, module: str, key: str) -> Any:
        """``GET /{module}/api/{v}/config/{key}`` -> the ``value``."""
        body = self._request("GET", f"/{module}/api/{self.version}/config/{key}")
        return body.get("value") if isinstance(body, dict) else body

    def command(self, name: str, timeout: httpx.Timeout | None = None) -> Any:
        """``PUT /detector/api/{v}/command/{name}``."""
        return self._request("PUT", f"/detector/api/{self.version}/command/{name}", timeout=timeout)

    def configure_scan(self, n_images: int, stream_format: str = "cbor") -> None:
        """Enable the stream and set up an internally triggered series of ``n_images``."""
        self.set_config("stream", "mode", "enabled")
        self.set_config("stream", "format", stream_format)
        self.set_config("stream", "header_detail", "basic")
        self.set_config("detector", "trigger_mode", "ints")
        self.set_config("detector", "ntrigger", 1)
        self.set_config("detector", "nimages", n_images)

    def arm(self) -> int | None:
        """Arm; returns the detector's sequence id (the stream's series id)."""
        body = self.command("arm")
        if isinstance(body, dict):
            seq = body.get("sequence id", body.get("sequence_id"))
            return int(seq) if seq is not None else None
        return None

    def trigger(self) -> None:
        """Trigger the series (blocks on a real DCU until it is done)."""
        self.command("trigger", timeout=httpx.Timeout(self._trigger_timeout))

    def disarm(self) -> None:
        """Disarm: the detector sends the end-of-series message."""
        self.command("disarm")

    def abort(self) -> None:
        """Abort the running series."""
        self.command("abort")

    def stream_dropped(self) -> int | None:
        """The stream's own dropped-frame counter (``/stream/api/{v}/status/dropped``)."""
        try:
            body = self._request("GET", f"/stream/api/{self.version}/status/dropped")
        except DetectorError:
            return None
        value = body.get("value") if isinstance(body, dict) else body
        return int(value) if isinstance(value, int | float) else None
