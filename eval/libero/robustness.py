"""The robustness table of a perturbed run: per task, the nominal rate against each
LIBERO-PRO perturbation's, in ``summary.json`` and as a bar chart."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eval.libero.results import rate_block

__all__ = ["NOMINAL", "plot_robustness", "robustness_summary", "variant_of"]

NOMINAL = "nominal"


def variant_of(record: Mapping[str, Any]) -> str:
    """``"nominal"`` or the perturbation kind an episode record ran under."""
    perturbation = record.get("perturbation")
    return perturbation["kind"] if perturbation else NOMINAL


def robustness_summary(
    planned_keys: Iterable[str], records: Mapping[str, Mapping[str, Any]], variants: Iterable[str]
) -> dict[str, Any]:
    """Per task and pooled over tasks, a Wilson-interval rate block for each variant.

    Returns ``{"variants": [...], "per_task": [{"suite", "task_id", "task_name",
    VARIANT: rate_block, ...}], "pooled": {VARIANT: rate_block}}``; a variant with no
    logged episode of a task still gets a block (0 episodes), so the table is rectangular.
    """
    variants = list(variants)
    logged = [records[key] for key in planned_keys if key in records]
    by_task: dict[tuple[str, int], dict[str, list[Mapping[str, Any]]]] = {}
    names: dict[tuple[str, int], str] = {}
    for record in logged:
        task = (record["suite"], record["task_id"])
        names[task] = record["task_name"]
        by_task.setdefault(task, {}).setdefault(variant_of(record), []).append(record)
    per_task = [
        {
            "suite": suite,
            "task_id": task_id,
            "task_name": names[(suite, task_id)],
            **{variant: rate_block(by_task[(suite, task_id)].get(variant, [])) for variant in variants},
        }
        for suite, task_id in sorted(by_task)
    ]
    pooled = {variant: rate_block(r for r in logged if variant_of(r) == variant) for variant in variants}
    return {"variants": variants, "per_task": per_task, "pooled": pooled}


def plot_robustness(table: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Grouped bars (one group per task, one bar per variant) with 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = table["variants"]
    rows = table["per_task"]
    width = 0.8 / max(len(variants), 1)
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(rows) * len(variants) / 3 + 2), 3.6))
    x = np.arange(len(rows))
    for index, variant in enumerate(variants):
        blocks = [row[variant] for row in rows]
        # A block without episodes has no rate: draw nothing rather than a misleading 0.
        shown = [(i, b) for i, b in enumerate(blocks) if b["episodes"] > 0]
        offset = (index - (len(variants) - 1) / 2) * width
        rates = [b["success_rate"] for _, b in shown]
        errors = [
            [rate - b["ci95"][0] for rate, (_, b) in zip(rates, shown)],
            [b["ci95"][1] - rate for rate, (_, b) in zip(rates, shown)],
        ]
        axes.bar([x[i] + offset for i, _ in shown], rates, width, yerr=errors, capsize=2, label=variant)
    axes.set_xticks(x, [f"{row['suite']}/{row['task_id']}" for row in rows])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("success rate (95% Wilson CI)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7, ncol=min(len(variants), 6), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
