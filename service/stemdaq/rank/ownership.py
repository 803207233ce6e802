"""Which rank owns which frame: blocks of whole scan rows, dealt round-robin.

``block = image_id // (n_k * block_rows)``, ``rank = block % ranks``. The image id alone says
it (serpentine scans reverse the column, never the row), so a fan routes a frame without
decoding its payload, and each rank counts only the positions it owns as expected. A chunk is
K frames of one scan row, so a rank's chunks are whole: no two ranks ever write one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Ownership:
    """The share of one rank: ``index`` of ``ranks``, in blocks of ``block_rows`` scan rows."""

    ranks: int
    index: int
    block_rows: int
    scan_shape: tuple[int, int]

    def __post_init__(self) -> None:
        if self.ranks < 1 or not 0 <= self.index < self.ranks or self.block_rows < 1:
            raise ValueError(
                f"rank {self.index} of {self.ranks} in blocks of {self.block_rows} rows: "
                "need ranks >= 1, 0 <= rank_index < ranks, rank_block_rows >= 1"
            )

    @property
    def frames_per_block(self) -> int:
        """Image ids per block: ``n_k * block_rows``."""
        return self.scan_shape[1] * self.block_rows

    def owner(self, image_id: int) -> int:
        """The rank that owns ``image_id`` (any id, also outside the scan)."""
        return (image_id // self.frames_per_block) % self.ranks

    def row_blocks(self) -> Iterator[tuple[int, int]]:
        """``(first row, rows)`` of each block this rank owns, in scan order."""
        n_m, b = self.scan_shape[0], self.block_rows
        for row in range(self.index * b, n_m, self.ranks * b):
            yield row, min(b, n_m - row)

    def row_mask(self) -> np.ndarray:
        """bool [n_m]: the scan rows this rank owns."""
        mask = np.zeros(self.scan_shape[0], dtype=bool)
        for row, n in self.row_blocks():
            mask[row : row + n] = True
        return mask

    @property
    def owned_positions(self) -> int:
        """Scan positions this rank owns (its frames expected, per channel)."""
        return int(self.row_mask().sum()) * self.scan_shape[1]


def hyperslabs(
    ranks: int, index: int, block_rows: int, n_rows: int
) -> list[tuple[int, int, int, int]]:
    """The rows of rank ``index`` as HDF5 hyperslabs ``(start, stride, count, block)``.

    The regular part is one strided selection (stride ``ranks * block_rows``, block
    ``block_rows``); a last block cut short by the end of the scan is a selection of its own.
    """
    first = index * block_rows
    if first >= n_rows:
        return []
    stride = ranks * block_rows
    full = (n_rows - first) // stride + (1 if (n_rows - first) % stride >= block_rows else 0)
    out = [(first, stride, full, block_rows)] if full else []
    tail = first + full * stride
    if tail < n_rows:
        out.append((tail, stride, 1, min(block_rows, n_rows - tail)))
    return out
