"""Latency summaries shared by the demo and the load generator."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """mean/p50/p90/p99/max in milliseconds."""
    ordered = sorted(latencies_s)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return {
        "mean": mean * 1e3,
        "p50": percentile(ordered, 0.50) * 1e3,
        "p90": percentile(ordered, 0.90) * 1e3,
        "p99": percentile(ordered, 0.99) * 1e3,
        "max": (ordered[-1] if ordered else 0.0) * 1e3,
    }


def log_edges_ms(low_ms: float, high_ms: float, per_decade: int = 10) -> list[float]:
    """Log-spaced histogram edges covering [low, high]."""
    low = 10 ** math.floor(math.log10(max(low_ms, 1e-3)))
    high = max(high_ms, low * 10)
    count = math.ceil(math.log10(high / low) * per_decade)
    return [low * 10 ** (step / per_decade) for step in range(count + 1)]


def histogram(latencies_s: Sequence[float], edges_ms: Sequence[float]) -> list[int]:
    """Counts per [edge_j, edge_j+1); the last bin also takes its upper edge."""
    import bisect

    counts = [0] * (len(edges_ms) - 1)
    for value in latencies_s:
        slot = bisect.bisect_right(edges_ms, value * 1e3) - 1
        counts[min(max(slot, 0), len(counts) - 1)] += 1
    return counts
