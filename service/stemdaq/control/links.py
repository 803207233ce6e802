"""HTTP + JSON to the ranks and the fan of one acquisition (the engine's side of the wire).

Refusals come back as the :mod:`stemdaq.errors` class their HTTP status names, with the
rank's or the fan's own message, so the API answers a refused arm as it would for one process.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import httpx

from stemdaq.control.cluster import RankCluster
from stemdaq.errors import (
    BusyError,
    ConfigError,
    PathError,
    StemdaqError,
    StorageError,
    StreamError,
)

logger = logging.getLogger(__name__)

_ERRORS = {404: StemdaqError, 409: BusyError, 422: ConfigError, 507: StorageError}


def _error_from(resp: httpx.Response, who: str) -> StemdaqError:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    cls = PathError if "data folder" in str(detail) else _ERRORS.get(resp.status_code, StemdaqError)
    return cls(f"{who}: {detail}")


class RankLinks:
    """The control calls of one acquisition to ``cluster``'s ranks and fan."""

    def __init__(self, cluster: RankCluster, acq_id: str) -> None:
        self.cluster = cluster
        self.acq_id = acq_id
        self._http = httpx.Client(timeout=10)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def post(self, url: str, who: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; raise the StemdaqError the answer names (StreamError: no answer)."""
        return self.send("POST", url, who, body)

    def send(self, method: str, url: str, who: str, body: dict[str, Any]) -> dict[str, Any]:
        """``method`` (POST, PUT) ``body``; raise the StemdaqError the answer names."""
        try:
            resp = self._http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise StreamError(f"{who} at {url} does not answer: {exc}") from None
        if resp.status_code >= 400:
            raise _error_from(resp, who)
        return dict(resp.json())

    def post_quietly(self, url: str) -> None:
        """POST without a body; a failure is logged, never raised (stop, abort)."""
        try:
            self._http.post(url, timeout=5)
        except httpx.HTTPError as exc:
            logger.warning("acquisition %s: %s: %s", self.acq_id, url, exc)

    def get(self, url: str) -> dict[str, Any]:
        """GET JSON (raises httpx.HTTPError or ValueError)."""
        return dict(self._http.get(url, timeout=5).json())

    def get_response(
        self, url: str, params: dict[str, Any] | None = None, timeout: float = 5
    ) -> httpx.Response:
        """GET, the answer as it came (raises httpx.HTTPError when there is none)."""
        return self._http.get(url, params=params, timeout=timeout)

    def arm_rank(
        self,
        index: int,
        config: dict[str, Any],
        file_path: str,
        *,
        overwrite: bool,
        hold_starts: bool,
    ) -> None:
        """``POST /rank/arm`` to rank ``index``."""
        body = {
            "hold_starts": hold_starts,
            "acq_id": self.acq_id,
            "config": config,
            "file_path": file_path,
            "ranks": self.cluster.ranks,
            "rank_index": index,
            "block_rows": self.cluster.block_rows,
            "overwrite": overwrite,
        }
        self.post(self.cluster.rank_urls[index] + "/rank/arm", f"rank {index}", body)

    def arm_fan(self, stream_endpoint: str, n_k: int) -> None:
        """``POST /fan/arm``: route the detector's next series."""
        body = {
            "stream_endpoint": stream_endpoint,
            "n_k": n_k,
            "block_rows": self.cluster.block_rows,
            "ranks": self.cluster.ranks,
        }
        self.post(self.cluster.fan_url + "/fan/arm", "the fan", body)

    def to_ranks(self, command: str, skip: Collection[int] = ()) -> None:
        """``POST /rank/<command>`` to every rank not in ``skip``."""
        for i, url in enumerate(self.cluster.rank_urls):
            if i not in skip:
                self.post_quietly(f"{url}/rank/{command}")

    def expect_series(self, series_id: int, skip: Collection[int] = ()) -> None:
        """``POST /rank/series`` to every rank not in ``skip`` (a failure is logged)."""
        for i, url in enumerate(self.cluster.rank_urls):
            if i in skip:
                continue
            try:
                self.post(f"{url}/rank/series", f"rank {i}", {"series_id": series_id})
            except StemdaqError as exc:
                logger.warning("acquisition %s: %s", self.acq_id, exc)

    def fan_series(self, series_id: int) -> None:
        """``POST /fan/series`` (a failure is logged)."""
        try:
            self.post(self.cluster.fan_url + "/fan/series", "the fan", {"series_id": series_id})
        except StemdaqError as exc:
            logger.warning("acquisition %s: %s", self.acq_id, exc)

    def abort_fan(self) -> None:
        """``POST /fan/abort``."""
        self.post_quietly(self.cluster.fan_url + "/fan/abort")
