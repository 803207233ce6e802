"""What the ranks report, turned into the service's vocabulary (RankInfo, SeriesStart)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stemdaq.models import DetectorInfo, RankInfo, SeriesStart


def rank_infos(
    urls: Sequence[str],
    statuses: Sequence[Mapping[str, Any] | None],
    lost: Mapping[int, str],
) -> list[RankInfo]:
    """One :class:`RankInfo` per rank from its last status (``lost``: index -> why)."""
    out = []
    for i, url in enumerate(urls):
        s = statuses[i] or {}
        out.append(
            RankInfo(
                index=i,
                url=url,
                state="lost" if i in lost else s.get("state", "armed"),
                file_path=s.get("file_path"),
                frames_expected=s.get("frames_expected", 0),
                frames_written=s.get("frames_written", 0),
                frames_dropped=s.get("frames_dropped", 0),
                frames_per_second=s.get("frames_per_second", 0.0),
                error=lost.get(i) or s.get("error"),
            )
        )
    return out


def series_start(start: Mapping[str, Any] | None, status: Mapping[str, Any]) -> SeriesStart:
    """The series start a rank reported (``GET /rank``'s ``series_start``), for the master."""
    if not start:
        return SeriesStart(series_id=int(status.get("series_id") or 0), protocol="stream2")
    shape = start.get("frame_shape")
    return SeriesStart(
        series_id=int(start["series_id"]),
        protocol=start.get("protocol", "stream2"),
        unique_id=start.get("unique_id"),
        n_images=start.get("n_images"),
        frame_shape=(int(shape[0]), int(shape[1])) if shape else None,
        dtype=start.get("dtype"),
        channels=tuple(start.get("channels") or ()),
        detector=DetectorInfo.model_validate(start.get("detector") or {}),
        raw=dict(start.get("raw") or {}),
    )
