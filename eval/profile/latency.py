"""Latency summaries: percentiles and mean of a list of durations in milliseconds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["SUMMARY_KEYS", "EmptySampleError", "summarize", "summarize_columns"]

SUMMARY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms")


class EmptySampleError(ValueError):
    """A latency summary was asked for an empty sample."""


def summarize(samples_ms: Sequence[float], name: str = "samples") -> dict[str, float]:
    """``{"p50_ms", "p90_ms", "p99_ms", "mean_ms"}`` of ``samples_ms``.

    Percentiles interpolate linearly between order statistics, so with fewer than
    100 samples ``p99_ms`` lies between the two largest values.
    """
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise EmptySampleError(
            f"{name}: expected a non-empty 1-D list of durations, got shape {values.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError(
            f"{name}: expected finite durations, got {int((~np.isfinite(values)).sum())} NaN/inf"
        )
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(values.mean())}


def summarize_columns(columns: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """``summarize`` applied to every named column."""
    return {name: summarize(values, name) for name, values in columns.items()}
