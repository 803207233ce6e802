"""One data process's work: receive -> place -> write, its bookkeeping and its counters."""

from stemdaq.rank.datapath import LATENCY_BUCKETS, DataPath, Signals

__all__ = ["LATENCY_BUCKETS", "DataPath", "Signals"]
