"""Driving ranks: the engine of a scale-out acquisition and where its ranks run."""

from __future__ import annotations

from functools import partial
from typing import Any

from stemdaq.config import Settings
from stemdaq.control.cluster import RankCluster, cluster_from_settings
from stemdaq.control.ranked import RankedAcquisition

__all__ = ["RankCluster", "RankedAcquisition", "cluster_from_settings", "ranked_factory"]


def ranked_factory(settings: Settings) -> tuple[Any, RankCluster]:
    """An acquisition factory for the manager over ``settings.ranks`` ranks, and their cluster
    (started here unless ``rank_urls`` names them; close it at shutdown)."""
    cluster = cluster_from_settings(settings)
    return partial(RankedAcquisition, cluster=cluster), cluster
