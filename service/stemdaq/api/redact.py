"""Keep the API token out of the logs.

Browsers cannot set headers on a WebSocket, so the live view's WebSocket takes the token as
``?token=...`` (``api/routes/live.py``), and uvicorn logs request paths with their query string
(``uvicorn.access`` for HTTP, ``uvicorn.error`` for a WebSocket's "[accepted]" line). The filter
replaces the value of every ``token=`` query parameter in those records with ``***``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_TOKEN = re.compile(r"(?<![A-Za-z0-9_])(token=)[^&\s\"']+", re.IGNORECASE)
REDACTED = "***"
#: the loggers whose records carry request paths
LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    """``text`` with the value of each ``token=`` query parameter replaced."""
    return _TOKEN.sub(r"\g<1>" + REDACTED, text) if "oken=" in text.lower() else text


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactToken(logging.Filter):
    """A filter that redacts ``token=`` values in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


def install() -> None:
    """Add the filter to uvicorn's loggers (once; call after uvicorn configured its logging)."""
    for name in LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, RedactToken) for f in log.filters):
            log.addFilter(RedactToken())
