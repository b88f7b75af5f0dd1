"""Model metrics: parameters, MACs (attention matmuls included), latency and accuracy."""

from vitcompress.metrics.accuracy import evaluate, topk_correct
from vitcompress.metrics.latency import LatencyResult, measure_latency
from vitcompress.metrics.macs import count_macs, count_macs_by_module
from vitcompress.metrics.params import count_params
from vitcompress.metrics.profile import Profile, profile

__all__ = [
    "LatencyResult",
    "Profile",
    "count_macs",
    "count_macs_by_module",
    "count_params",
    "evaluate",
    "measure_latency",
    "profile",
    "topk_correct",
]
