"""Make a trained checkpoint the package's embedded default, with a model card.

Usage::

    .venv/bin/python -m eval.ship_default --checkpoint RUN/checkpoints/step_001000 \\
        --eval EVAL_DIR --demos DEMOS_REPORT.json --train-log RUN/log.jsonl

Writes ``cogvla/assets/default/``: the weights in float16 (to stay small; CPU inference
upcasts them), the tokenizer, the normalization stats, ``eval_protocol.json`` (the
protocol ``cogvla eval libero`` uses when run without flags) and ``README.md``, a model
card whose figures are read from the evaluation's ``summary.json`` and the run's log.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from cogvla.modeling import CogVLAModel
from cogvla.paths import DEFAULT_CHECKPOINT
from eval.cli import EVAL_PROTOCOL_FILE

__all__ = ["main", "ship"]

_MAX_BYTES = 20 * 1024 * 1024


def ship(
    checkpoint: Path,
    eval_dir: Path,
    demos_report: dict[str, Any],
    train_log: Path,
    out: Path = DEFAULT_CHECKPOINT,
    history: str = "",
) -> Path:
    """Copy ``checkpoint`` to ``out`` in fp16 with its eval protocol and a model card;
    ``history`` (markdown) tells where the weights the run started from came from."""
    # float16 over bfloat16: its 10 mantissa bits keep the served actions ~6x closer to the
    # float32 checkpoint's (mean 6e-5 against 4e-4 in model units, measured), at the same size.
    model = CogVLAModel.from_pretrained(checkpoint, dtype=torch.float16)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    if size > _MAX_BYTES:
        raise ValueError(f"checkpoint: expected at most {_MAX_BYTES} bytes to embed, got {size}")
    eval_config = json.loads((eval_dir / "config.json").read_text())
    summary = json.loads((eval_dir / "summary.json").read_text())
    protocol = {key: eval_config[key] for key in ("suites", "tasks", "image_size", "fast_render")}
    (out / EVAL_PROTOCOL_FILE).write_text(json.dumps(protocol, indent=2) + "\n")
    train_state = _last_log_line(train_log)
    card = _model_card(model, protocol, summary, train_state, demos_report, size)
    if history:
        card += f"\n## Training history\n{history.strip()}\n"
    (out / "README.md").write_text(card)
    return out


def _last_log_line(log: Path) -> dict[str, Any]:
    lines = [line for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def _model_card(
    model: CogVLAModel,
    protocol: dict[str, Any],
    summary: dict[str, Any],
    train_state: dict[str, Any],
    demos: dict[str, Any],
    size: int,
) -> str:
    overall = summary["overall"]
    rows = "\n".join(
        f"| {task['suite']} {task['task_id']} | {task['successes']}/{task['episodes']} "
        f"| {task['success_rate']:.2f} | [{task['ci95'][0]:.2f}, {task['ci95'][1]:.2f}] |"
        for task in summary["per_task"]
    )
    demo_rows = "\n".join(
        f"- task {task['task_id']} ({task['task_name']}): {task['demos']} demos, "
        f"oracle success {task['oracle_success_rate']:.2f} from randomized resets"
        for task in demos.get("tasks", [])
    )
    params = sum(p.numel() for p in model.parameters())
    return f"""# Embedded default policy: CogVLA `{model.config.name}` ({model.config.variant})

A {params / 1e6:.1f} M-parameter CogVLA model (EFA-Routing, LFP-Routing, CAtten) trained only on
this project's scripted-oracle demos, with no pretrained weights. Weights are stored in float16
({size / 1e6:.1f} MB on disk) and run in float32 on the CPU.

## Data
Scripted Markovian oracle, DART noise, LIBERO `libero_spatial`, randomized resets (the
benchmark's 50 fixed init states were never used for training), cameras at
{protocol["image_size"]} px with fast rendering:
{demo_rows}

## Training
`cogvla train --preset tiny` (AdamW, warm-up + cosine, L1, batch 16), {train_state.get("step", "?")} optimizer
steps at about {train_state.get("samples_per_s", float("nan")):.0f} samples/s on a 2-core CPU; last logged L1
loss {train_state.get("loss", float("nan")):.4f}.

## Measured success
`cogvla eval libero` on the fixed init states (suites {protocol["suites"]}, tasks {protocol["tasks"]},
{protocol["image_size"]} px, fast_render={protocol["fast_render"]}):

| task | successes | rate | 95% Wilson |
|---|---|---|---|
{rows}

Overall: {overall["successes"]}/{overall["episodes"]} = {overall["success_rate"]:.2f}
(95% Wilson [{overall["ci95"][0]:.2f}, {overall["ci95"][1]:.2f}]); mean of the per-task rates
{sum(task["success_rate"] for task in summary["per_task"]) / len(summary["per_task"]):.2f}.
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m eval.ship_default``."""
    parser = argparse.ArgumentParser(prog="python -m eval.ship_default", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a save_pretrained folder of a run")
    parser.add_argument("--eval", type=Path, required=True, help="a `cogvla eval libero` output folder")
    parser.add_argument("--demos", type=Path, required=True, help="the JSON report printed by `cogvla demos`")
    parser.add_argument(
        "--train-log", type=Path, required=True, help="the run's log.jsonl (up to this checkpoint)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT, help="where to write the default")
    parser.add_argument(
        "--history", type=Path, help="markdown file: where the run's starting weights came from (model card)"
    )
    args = parser.parse_args(argv)
    history = args.history.read_text() if args.history else ""
    demos = json.loads(args.demos.read_text())
    out = ship(args.checkpoint, args.eval, demos, args.train_log, args.out, history)
    print(json.dumps({"shipped": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
