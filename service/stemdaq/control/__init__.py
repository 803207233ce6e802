"""Driving ranks: the engine of a scale-out acquisition and where its ranks run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from stemdaq.control.cluster import RankCluster, cluster_from_settings
from stemdaq.control.ranked import RankedAcquisition
from stemdaq.settings import Settings

__all__ = [
    "RankCluster",
    "RankedAcquisition",
    "close_with_app",
    "cluster_from_settings",
    "ranked_factory",
]


def ranked_factory(settings: Settings) -> tuple[Any, RankCluster]:
    """An acquisition factory for the manager over ``settings.ranks`` ranks, and their cluster
    (started here unless ``rank_urls`` names them; close it at shutdown)."""
    cluster = cluster_from_settings(settings)
    return partial(RankedAcquisition, cluster=cluster), cluster


def close_with_app(app: Any, cluster: RankCluster) -> None:
    """Stop ``cluster``'s local processes when ``app`` shuts down, after its own shutdown (which
    aborts a running acquisition through the ranks). uvicorn re-raises SIGTERM/SIGINT once it
    has shut down, so code after ``Server.run()`` never runs on a signal: this does."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        try:
            async with inner(a) as state:
                yield state
        finally:
            await asyncio.to_thread(cluster.close)

    app.router.lifespan_context = lifespan
