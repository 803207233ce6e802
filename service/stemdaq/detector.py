"""Active mode: drive a DECTRIS-compatible detector over its SIMPLON REST API.

Only the subset a 4D-STEM scan needs (LiberTEM-live's ``controller.py`` sequence): enable the
stream, set trigger mode and image count, arm, trigger, disarm, abort; plus the state and the
description that ``stemdaq detector`` shows. Every call is blocking (httpx); the acquisition
engine calls it from its own threads, never from the event loop.

Real SIMPLON servers differ, so nothing is assumed: the API version comes from
``GET /detector/api/version/``, else from probing the versioned paths (1.8.0, then 1.6.0);
only keys the detector lists (``config/keys``) are set, and a detector without a stream
``format`` key (SIMPLON 1.6, EIGER1-class) streams v1 and is left to do so.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from stemdaq.errors import DetectorError
from stemdaq.simplon_discovery import (
    KNOWN_VERSIONS,
    Negotiated,
    SimplonVersionError,
    discover_version,
)

logger = logging.getLogger(__name__)

__all__ = [
    "KNOWN_VERSIONS",
    "DetectorRefusedError",
    "Negotiated",
    "SimplonClient",
    "SimplonVersionError",
]

#: why a detector in this state refuses ``arm``, and what gets it out of that state
_ARM_HINTS: dict[str, tuple[str, str]] = {
    "ready": (
        "an earlier acquisition left it armed?",
        "end that with `stemdaq detector abort {url}`",
    ),
    "acquire": (
        "an earlier acquisition left it running?",
        "end that with `stemdaq detector abort {url}`",
    ),
    "configure": ("still configuring?", "end that with `stemdaq detector abort {url}`"),
    "error": ("it reports an error", "reset it with `stemdaq detector initialize {url}`"),
    "na": ("not initialized", "initialize it with `stemdaq detector initialize {url}`"),
    "initialize": ("still initializing", "wait for state 'idle' (`stemdaq detector status {url}`)"),
}


class DetectorRefusedError(DetectorError):
    """The detector answered a request with an HTTP error (it was reachable).

    Attributes
    ----------
    status_code
        The HTTP status.
    detail
        The detector's own reason, as short text.
    """

    def __init__(self, message: str, status_code: int, detail: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


#: detector keys a scan cannot do without
REQUIRED_KEYS = ("trigger_mode", "ntrigger", "nimages")
#: SIMPLON ``stream/config/format`` values -> what stemdaq reports ("cbor": v2, "legacy": v1)
_FORMATS = {"cbor": "cbor", "legacy": "legacy", "json": "legacy"}


def _detail(response: httpx.Response) -> str:
    """The reason in an error response: ``{"detail": ...}``/``{"value": ...}`` or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        for key in ("detail", "value", "message", "error"):
            if key in body:
                return str(body[key])[:200]
    return str(body)[:200]


class SimplonClient:
    """Minimal SIMPLON client.

    Parameters
    ----------
    base_url
        e.g. ``http://dcu:80``.
    timeout
        Seconds per HTTP call.
    trigger_timeout
        Seconds for ``trigger``, which blocks for the whole series on a real DCU; None: no limit.
    simplon_version
        SIMPLON API version to use, e.g. ``1.6.0``; tried first, before discovery, and used if
        the detector answers on its paths. None: discovered (see :attr:`version`).
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        trigger_timeout: float | None = None,
        simplon_version: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        except (httpx.InvalidURL, ValueError) as exc:
            raise DetectorError(f"invalid detector URL {base_url!r}: {exc}") from exc
        self._trigger_timeout = trigger_timeout
        self._configured_version = simplon_version or None
        self._version: str | None = None
        self._version_source: str | None = None
        self._keys: dict[str, frozenset[str] | None] = {}
        #: what the last :meth:`configure_scan` negotiated (None before)
        self.negotiated: Negotiated | None = None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> SimplonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- version discovery --------------------------------------------------------------------

    @property
    def version(self) -> str:
        """SIMPLON API version, e.g. ``1.8.0``, found once.

        In order: the configured ``simplon_version`` if the detector answers on its paths;
        ``GET /detector/api/version/``; the first of :data:`KNOWN_VERSIONS` whose
        ``config/keys`` or ``status/state`` answers.

        Raises
        ------
        SimplonVersionError
            None of these answered; the message names every request and its answer.
        DetectorError
            The detector is unreachable.
        """
        if self._version is None:
            self._version, self._version_source, keys = discover_version(
                self._try_get, self.base_url, self._configured_version
            )
            if keys is not None:
                self._keys["detector"] = keys
            logger.info(
                "detector at %s: SIMPLON %s (%s)",
                self.base_url,
                self._version,
                self._version_source,
            )
        return self._version

    @property
    def version_source(self) -> str:
        """How :attr:`version` was found: ``version endpoint``, ``probed`` or ``configured``."""
        _ = self.version
        return self._version_source or ""

    @property
    def stream_format(self) -> str | None:
        """``cbor`` (stream v2) or ``legacy`` (stream v1) once configured; None before."""
        return self.negotiated.stream_format if self.negotiated else None

    def _try_get(self, path: str) -> tuple[Any, str | None]:
        """``(body, None)`` for an answer, ``(None, "HTTP 404 ...")`` for a refusal; an
        unreachable detector raises."""
        try:
            return self._request("GET", path), None
        except DetectorRefusedError as exc:
            return None, f"HTTP {exc.status_code}" + (f" {exc.detail}" if exc.detail else "")

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
            detail = _detail(response)
            raise DetectorRefusedError(
                f"detector refused {method} {path}: HTTP {response.status_code} {detail}",
                response.status_code,
                detail,
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

    def config_keys(self, module: str) -> frozenset[str] | None:
        """The keys ``GET /{module}/api/{v}/config/keys`` lists, read once; None when the
        detector does not list them (then every key is tried)."""
        version = self.version  # a version probe may have read the detector's keys
        if module not in self._keys:
            path = f"/{module}/api/{version}/config/keys"
            body, answer = self._try_get(path)
            if answer is None and isinstance(body, list):
                self._keys[module] = frozenset(str(k) for k in body)
            else:
                why = answer or "not a key list"
                logger.info("GET %s: %s; its keys are set without checking", path, why)
                self._keys[module] = None
        return self._keys[module]

    def _set_if_present(self, module: str, key: str, value: Any, skipped: list[str]) -> bool:
        """Set ``module/key`` if the detector has it (True); else log, note in ``skipped``."""
        keys = self.config_keys(module)
        if keys is None or key in keys:
            try:
                self.set_config(module, key, value)
                return True
            except DetectorRefusedError as exc:
                if keys is not None or exc.status_code != 404:
                    raise
        logger.info(
            "detector at %s has no %s/config/%s (SIMPLON %s); not set",
            self.base_url,
            module,
            key,
            self.version,
        )
        skipped.append(f"{module}/{key}")
        return False

    def configure_scan(self, n_images: int, stream_format: str = "cbor") -> Negotiated:
        """Enable the stream and set up an internally triggered series of ``n_images``.

        Keys the detector does not have are skipped; without a stream ``format`` key the
        detector streams v1 and is left to. The result is also kept as :attr:`negotiated`.

        Raises
        ------
        DetectorError
            Unreachable, refused, or without ``trigger_mode``/``ntrigger``/``nimages``.
        """
        keys = self.config_keys("detector")
        missing = [k for k in REQUIRED_KEYS if keys is not None and k not in keys]
        if missing:
            raise DetectorError(
                f"detector at {self.base_url} (SIMPLON {self.version}) has no "
                f"{', '.join(missing)} in its config keys: it cannot be set up for a scan"
            )
        skipped: list[str] = []
        self._set_if_present("stream", "mode", "enabled", skipped)
        fmt = self._negotiate_format(stream_format, skipped)
        self._set_if_present("stream", "header_detail", "basic", skipped)
        self.set_config("detector", "trigger_mode", "ints")
        self.set_config("detector", "ntrigger", 1)
        self.set_config("detector", "nimages", n_images)
        self.negotiated = Negotiated(self.version, self.version_source, fmt, tuple(skipped))
        logger.info("detector at %s: %s", self.base_url, self.negotiated.describe())
        return self.negotiated

    def _negotiate_format(self, wanted: str, skipped: list[str]) -> str:
        """Ask for stream format ``wanted``; what the detector will stream (cbor or legacy)."""
        if not self._set_if_present("stream", "format", wanted, skipped):
            return "legacy"  # no format key: SIMPLON 1.6 streams v1 only
        return _FORMATS.get(wanted, wanted)

    def state(self) -> str:
        """The detector's state (``GET /detector/api/{v}/status/state``): idle, ready, acquire,
        error, na, configure or initialize."""
        body = self._request("GET", f"/detector/api/{self.version}/status/state")
        return str(body.get("value") if isinstance(body, dict) else body)

    def description(self) -> str | None:
        """The detector model (``config/description``), e.g. ``Dectris ARINA Si``; None when
        the detector does not have that parameter."""
        try:
            value = self.get_config("detector", "description")
        except DetectorRefusedError as exc:
            if exc.status_code == 404:
                return None
            raise
        return None if value is None else str(value)

    def arm(self) -> int | None:
        """Arm; returns the detector's sequence id (the stream's series id).

        Raises
        ------
        DetectorError
            Unreachable, or refused; a refusal names the detector's state and the command that
            gets it out of that state.
        """
        try:
            body = self.command("arm")
        except DetectorRefusedError as exc:
            raise DetectorRefusedError(
                self._arm_refusal(exc.detail), exc.status_code, exc.detail
            ) from exc
        if isinstance(body, dict):
            seq = body.get("sequence id", body.get("sequence_id"))
            return int(seq) if seq is not None else None
        return None

    def _arm_refusal(self, detail: str) -> str:
        """The message of a refused arm: the state it is in and how to get it out of there."""
        head = f"detector at {self.base_url} refused arm"
        try:
            state = self.state()
        except DetectorError as exc:
            logger.debug("state after a refused arm unknown: %s", exc)
            return f"{head}: {detail} (its state could not be read)"
        reason, fix = _ARM_HINTS.get(state, ("", ""))
        text = f"{head}: it is in state {state!r}"
        if reason:
            text += f" ({reason})"
        elif detail:
            text += f" ({detail})"
        if fix:
            text += f"; {fix.format(url=self.base_url)} and try again"
        return text

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
