"""Summaries for noisy measurements: medians, percentiles, spreads and ratios. Pure.

This machine is shared and noisy, so no figure is a single timing: every headline number is a
median over runs, reported with its spread (the lowest and highest run), and comparisons are
ratios of medians (plus the spread of the per-run ratios, where runs are paired).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def latency(values_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of one run's latencies (ms), and how many there were."""
    return {
        "n": float(len(values_ms)),
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "max": float(max(values_ms)) if values_ms else math.nan,
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median over runs with the lowest and highest run: the shape every figure is reported in."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "runs": 0.0}
    return {
        "median": statistics.median(finite),
        "min": min(finite),
        "max": max(finite),
        "runs": float(len(finite)),
    }


def over_runs(runs: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """`spread()` of every key the per-run summaries share."""
    if not runs:
        return {}
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: spread([r[k] for r in runs]) for k in keys}


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or not math.isfinite(denominator) or not math.isfinite(numerator):
        return math.nan
    return numerator / denominator


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, float]:
    """Spread of the per-run ratios of two interleaved series (run i of one against run i)."""
    return spread([ratio(n, d) for n, d in zip(numerators, denominators, strict=False)])


def clean(obj: object) -> object:
    """JSON-safe copy: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj
