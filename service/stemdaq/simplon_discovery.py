"""Which SIMPLON API a detector speaks, and what a scan set up on it got.

Real SIMPLON servers differ: some do not serve ``GET /detector/api/version/`` and only the
versioned paths; older firmware (SIMPLON 1.6, EIGER1-class) has no stream ``format`` key because
it streams v1 only. :func:`discover_version` finds the version without assuming either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stemdaq.errors import DetectorError

#: versions probed, in order, when ``GET /detector/api/version/`` gives none
KNOWN_VERSIONS = ("1.8.0", "1.6.0")
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")

#: ``get(path) -> (body, None)`` for an answer, ``(None, "HTTP 404 ...")`` for a refusal
Getter = Callable[[str], tuple[Any, str | None]]


@dataclass(frozen=True)
class Negotiated:
    """What the detector and stemdaq agreed on for a scan (``SimplonClient.configure_scan``).

    Attributes
    ----------
    api_version
        SIMPLON API version used, e.g. ``1.8.0``.
    version_source
        How it was found: ``version endpoint``, ``probed`` or ``configured``.
    stream_format
        ``cbor`` (stream v2) or ``legacy`` (stream v1, JSON multipart).
    skipped_keys
        ``module/key`` settings not made because the detector does not have them.
    """

    api_version: str
    version_source: str
    stream_format: str
    skipped_keys: tuple[str, ...] = ()

    @property
    def stream_version(self) -> int:
        """2 for ``cbor``, 1 for ``legacy``."""
        return 2 if self.stream_format == "cbor" else 1

    def describe(self) -> str:
        """One line, e.g. ``SIMPLON 1.6.0 (probed), stream v1 (legacy)``."""
        text = (
            f"SIMPLON {self.api_version} ({self.version_source}), "
            f"stream v{self.stream_version} ({self.stream_format})"
        )
        if self.skipped_keys:
            text += f"; not set (the detector has no such key): {', '.join(self.skipped_keys)}"
        return text


class SimplonVersionError(DetectorError):
    """No SIMPLON API version could be found; ``tried`` says what was asked and answered."""

    def __init__(self, message: str, tried: list[str]) -> None:
        super().__init__(message)
        self.tried = tried


def discover_version(
    get: Getter, base_url: str, configured: str | None = None
) -> tuple[str, str, frozenset[str] | None]:
    """``(version, how it was found, the detector's config keys if read on the way)``.

    In order: ``configured`` if the detector answers on its paths; ``GET
    /detector/api/version/``; the first of :data:`KNOWN_VERSIONS` whose ``config/keys`` or
    ``status/state`` answers.

    Raises
    ------
    SimplonVersionError
        None answered; the message names every request and its answer.
    """
    tried: list[str] = []
    if configured:
        answer, keys = _probe(get, configured)
        if answer is None:
            return configured, "configured", keys
        tried.append(f"the configured version: {answer}")
    path = "/detector/api/version/"
    body, answer = get(path)
    if answer is None:
        value = body.get("value") if isinstance(body, dict) else None
        if isinstance(value, str) and _VERSION_RE.fullmatch(value.strip()):
            return value.strip(), "version endpoint", None
        answer = f"answered {str(body)[:60]!r}, not a version"
    tried.append(f"GET {path} ({answer})")
    for version in KNOWN_VERSIONS:
        if version == configured:
            continue
        answer, keys = _probe(get, version)
        if answer is None:
            return version, "probed", keys
        tried.append(answer)
    hint = (
        f"Is simplon_version {configured!r} right?"
        if configured
        else "If its SIMPLON API has another version, set simplon_version"
    )
    raise SimplonVersionError(
        f"no SIMPLON API found at {base_url}: tried {'; '.join(tried)}. "
        f"Is this a DECTRIS detector? {hint}",
        tried,
    )


def _probe(get: Getter, version: str) -> tuple[str | None, frozenset[str] | None]:
    """``(None, keys)`` if ``/detector/api/{version}`` answers (``config/keys``, else
    ``status/state``); else ``(what the two requests answered, None)``."""
    base = f"/detector/api/{version}"
    keys, answer = get(f"{base}/config/keys")
    if answer is None:
        if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            return None, frozenset(keys)
        answer = "not a key list"
    state, answer2 = get(f"{base}/status/state")
    if answer2 is None:
        if isinstance(state, dict) and isinstance(state.get("value"), str):
            return None, None
        answer2 = "not a state"
    if answer == answer2:
        return f"GET {base}/config/keys and status/state ({answer})", None
    return f"GET {base}/config/keys ({answer}), {base}/status/state ({answer2})", None
