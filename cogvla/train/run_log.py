"""The run's JSONL log (``RUN/log.jsonl``) and its loss-curve plot (``RUN/loss_curve.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "plot_loss_curve", "read_log"]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL log; a torn last line (crash mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLog:
    """Appends one JSON record per line; on resume, drops records past the resumed step."""

    def __init__(self, path: str | Path, resume_step: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def plot_loss_curve(log_path: str | Path, png_path: str | Path) -> None:
    """Plot training loss (log scale) and learning rate against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_log(log_path) if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if records:
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["loss"] for r in records], color="tab:blue", lw=1, label="L1 loss")
        ax.set_yscale("log")
        lr_axis = ax.twinx()
        lr_axis.plot(steps, [r["lr"] for r in records], color="tab:orange", lw=1, alpha=0.6)
        lr_axis.set_ylabel("learning rate", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("L1 loss (normalized actions)", color="tab:blue")
    ax.set_title(Path(log_path).parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
