"""One data process's work: receive -> place -> write, its bookkeeping and its counters."""

from stemdaq.rank.accounting import LATENCY_BUCKETS
from stemdaq.rank.datapath import DataPath, Signals

__all__ = ["LATENCY_BUCKETS", "DataPath", "Signals"]
