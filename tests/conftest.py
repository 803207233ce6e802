"""Fixtures shared by every test package."""

from __future__ import annotations

import os

# bitshuffle's OpenMP threads oversubscribe the 2-core CI machine
os.environ.setdefault("OMP_NUM_THREADS", "1")
