"""What one acquisition's engine knows of its ranks and its fan: their last reports, and the lost.

:class:`RankRoster` reads ``GET /fan`` and each rank's ``GET /rank`` when the engine
(``control/ranked.py``) polls, keeps the last answers (a rank's acquisition status and its
series start) and says what they add up to: every rank opened the series, every rank ended,
which ranks are lost and why, the errors and warnings the ranks reported. What that means for
the acquisition (trigger, fail, close the master) is the engine's business.

A rank is *lost* when its process ended, when it does not answer :data:`LOST_AFTER` polls in a
row, or when it answers for another acquisition (it restarted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from stemdaq.control.cluster import RankCluster
from stemdaq.control.links import RankLinks
from stemdaq.models import AcquisitionState

#: failed polls in a row before a rank counts as lost
LOST_AFTER = 3
_GONE = ("its process ended", "it restarted")  # a lost rank whose writer surely stopped


class RankRoster:
    """The last reports of ``cluster``'s ranks and fan for acquisition ``acq_id``."""

    def __init__(self, cluster: RankCluster, acq_id: str, links: RankLinks) -> None:
        self.cluster = cluster
        self.acq_id = acq_id
        self._links = links
        n = cluster.ranks
        self.status: list[dict[str, Any] | None] = [None] * n  # last /rank answer's acquisition
        self.start: list[dict[str, Any] | None] = [None] * n  # ... and its series start
        self.lost: dict[int, str] = {}  # index -> why
        self.fan: dict[str, Any] = {}  # last /fan answer
        self._failures = [0] * n

    # -- polling ------------------------------------------------------------------------------

    def poll_fan(self) -> str | None:
        """Read the fan's status; why it could not be read (:attr:`fan` is then empty), or None."""
        try:
            self.fan = self._links.get(self.cluster.fan_url + "/fan")
        except (httpx.HTTPError, ValueError) as exc:
            self.fan = {}
            return f"the fan at {self.cluster.fan_url} does not answer: {exc}"
        return None

    def poll_ranks(self, on_lost: Callable[[int, str], None]) -> None:
        """Read every rank not lost; a rank found lost is recorded in :attr:`lost`, then
        ``on_lost(index, why)`` is called (before the next rank is read)."""
        for i, url in enumerate(self.cluster.rank_urls):
            if i in self.lost:
                continue
            why = self._poll_rank(i, url)
            if why is not None:
                self.lost[i] = why
                on_lost(i, why)

    def _poll_rank(self, index: int, url: str) -> str | None:
        """Read rank ``index``'s status; the reason it is lost, or None."""
        note = self.cluster.exit_note(f"rank {index}")
        if note is not None:
            return f"its process ended ({note})"
        try:
            body = self._links.get(url + "/rank")
        except (httpx.HTTPError, ValueError) as exc:
            self._failures[index] += 1
            if self._failures[index] >= LOST_AFTER:
                return f"it does not answer at {url}: {exc}"
            return None
        self._failures[index] = 0
        acq = body.get("acquisition") or {}
        if acq.get("id") != f"{self.acq_id}/r{index:02d}":
            return f"it restarted (it now holds {acq.get('id') or 'no acquisition'})"
        self.status[index] = acq
        self.start[index] = body.get("series_start")
        return None

    # -- what the reports add up to -----------------------------------------------------------

    def reported(self) -> list[dict[str, Any]]:
        """The last status of every rank that answered at least once."""
        return [s for s in self.status if s is not None]

    def opened(self) -> bool:
        """Every rank answered, and none is still armed: each opened the series."""
        states = [s.get("state") for s in self.status if s is not None]
        return len(states) == self.cluster.ranks and all(
            AcquisitionState(state) is not AcquisitionState.ARMED for state in states
        )

    def acquiring(self) -> bool:
        """Some rank is acquiring."""
        states = [s.get("state") for s in self.status if s is not None]
        return AcquisitionState.ACQUIRING.value in states

    def all_final(self) -> bool:
        """Every rank not lost has ended."""
        for i in range(self.cluster.ranks):
            if i in self.lost:
                continue
            s = self.status[i]
            if s is None or not AcquisitionState(s["state"]).is_final:
                return False
        return True

    def all_completed(self) -> bool:
        """Every rank ended ``completed``."""
        return all(
            s is not None and s["state"] == AcquisitionState.COMPLETED.value for s in self.status
        )

    def gone(self) -> list[int]:
        """The lost ranks whose writer surely stopped (never one that merely does not answer:
        it may still write)."""
        return [i for i, why in self.lost.items() if why.startswith(_GONE)]

    def add_warnings(self, warnings: list[str]) -> None:
        """Append each rank's error (lost ranks: their reason is there already) and warnings,
        as ``rank <i>: ...``, each once."""
        for i, s in enumerate(self.status):
            if s is not None and s.get("error") and i not in self.lost:
                warnings.append(f"rank {i}: {s['error']}")
            for w in (s or {}).get("warnings", []):
                if f"rank {i}: {w}" not in warnings:
                    warnings.append(f"rank {i}: {w}")

    def first_error(self) -> str:
        """The first rank's error, as ``rank <i>: ...``, else ``a rank failed``."""
        return next(
            (f"rank {i}: {s['error']}" for i, s in enumerate(self.status) if s and s.get("error")),
            "a rank failed",
        )
