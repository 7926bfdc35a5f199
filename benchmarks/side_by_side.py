"""Run one measurement in two source trees, interleaved, and compare them.

A shared machine's load changes by the minute, so absolute times from different runs say
little. The bench scripts instead run the same measurement on the same inputs in a
baseline checkout (for example ``git worktree add ../baseline 2c1709b``) and in this
tree, alternating which goes first in each round, and report candidate / baseline ratios
per round. Each side runs in a fresh process whose ``PYTHONPATH`` starts with its tree, so
``cogvla``, ``envs`` and ``eval`` are imported from that tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["THIS_TREE", "add_arguments", "compare_rounds", "emit", "parse_or_run_side", "run_side"]

THIS_TREE = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every side-by-side bench takes, and the hidden ``--side`` its sides run with."""
    parser.add_argument("--baseline", type=Path, help="checkout of the code to compare against")
    parser.add_argument("--candidate", type=Path, default=THIS_TREE, help="checkout measured against it")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved baseline/candidate rounds")
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)


def parse_or_run_side(
    parser: argparse.ArgumentParser, side: Callable[[argparse.Namespace], dict[str, Any]]
) -> argparse.Namespace | None:
    """The parsed arguments of a side-by-side run, or None after running ``side`` and printing
    its JSON when this process is one of the sides."""
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args)))
        return None
    if args.baseline is None:
        parser.error("--baseline: expected the path of a baseline checkout")
    return args


def emit(result: dict[str, Any], out: str | Path | None) -> None:
    """Print ``result`` as JSON and also write it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def run_side(script: str, tree: Path, args: Sequence[str]) -> dict[str, Any]:
    """Run ``script --side ARGS`` with ``tree`` first on the import path; returns its JSON (last stdout line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("MUJOCO_GL", "egl")
    done = subprocess.run(
        [sys.executable, script, "--side", *args],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} in {tree} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_rounds(
    script: str,
    baseline: Path,
    candidate: Path,
    args: Sequence[str],
    rounds: int,
    rate: Callable[[dict[str, Any]], float],
    baseline_args: Sequence[str] = (),
) -> dict[str, Any]:
    """``rounds`` interleaved runs of each side; ``rate(result)`` is the throughput compared (higher
    is better); ``baseline_args`` are passed to the baseline side only."""
    runs: list[dict[str, Any]] = []
    for index in range(rounds):
        order = [("baseline", baseline, [*args, *baseline_args]), ("candidate", candidate, list(args))]
        if index % 2:
            order.reverse()
        results = {name: run_side(script, tree, side_args) for name, tree, side_args in order}
        ratio = rate(results["candidate"]) / rate(results["baseline"])
        runs.append({"first": order[0][0], "speedup": round(ratio, 3), **results})
    speedups = [run["speedup"] for run in runs]
    return {
        "baseline_tree": str(baseline),
        "candidate_tree": str(candidate),
        "load_avg_1min": os.getloadavg()[0],
        "speedup_median": round(statistics.median(speedups), 3),
        "speedup_min": min(speedups),
        "rounds": runs,
    }
