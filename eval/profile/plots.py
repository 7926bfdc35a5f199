"""PNG figures of profiling results (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

# the backend must be chosen before pyplot is imported
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_model_profile", "plot_server_histogram"]


def plot_model_profile(result: Mapping[str, Any], path: str | Path) -> Path:
    """Stacked mean stage times per variant (left) and vision tokens kept per LLM layer (right)."""
    variants = result["variants"]
    names = list(variants)
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(12, 4.5))
    segments = {
        stage: [variants[name]["stages"][stage]["mean_ms"] for name in names]
        for stage in next(iter(variants.values()))["stages"]
    }
    # stages are sub-intervals of the call, so this is >= 0 up to float rounding
    segments["unattributed"] = [max(variants[name]["unattributed"]["mean_ms"], 0.0) for name in names]
    bottom = np.zeros(len(names))
    for segment, values in segments.items():
        bars.bar(names, values, bottom=bottom, label=segment)
        bottom += np.asarray(values)
    for index, name in enumerate(names):
        info = variants[name]
        bars.annotate(
            f"{info['total']['mean_ms']:.0f} ms\n{info['tflops'] * 1e3:.1f} GFLOP",
            (index, bottom[index]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    bars.set_ylim(0, bottom.max() * 1.2 if bottom.max() > 0 else 1)
    bars.set_ylabel("mean latency per forward (ms)")
    bars.set_title(
        f"{result['preset']} on {result['device']}, batch {result['batch']}, {result['threads']} threads"
    )
    bars.legend(fontsize=8)
    for name in names:
        kept = variants[name]["kept_per_layer"]
        curve.plot(range(len(kept)), kept, marker="o", label=name)
    curve.set_xlabel("LLM layer")
    curve.set_ylabel("vision tokens processed")
    curve.set_title("LFP: vision tokens kept per layer")
    curve.set_ylim(bottom=0)
    curve.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_server_histogram(runs: Mapping[str, Sequence[float]], path: str | Path, title: str) -> Path:
    """Histogram of client-observed round-trip latency, one series per client count."""
    fig, axis = plt.subplots(figsize=(7, 4))
    everything = np.concatenate([np.asarray(values, dtype=np.float64) for values in runs.values()])
    bins = np.linspace(everything.min(), everything.max(), 40) if everything.size else 10
    for label, values in runs.items():
        axis.hist(values, bins=bins, alpha=0.6, label=label)
    axis.set_xlabel("client-observed latency per request (ms)")
    axis.set_ylabel("requests")
    axis.set_title(title)
    axis.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
