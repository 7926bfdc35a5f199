"""Interpolate the weights of checkpoints of one model into a new checkpoint.

Usage::

    cogvla average --checkpoints START FINETUNED --weights 0.5 0.5 --out MIXED
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cogvla.average import average_checkpoints

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoints", type=Path, nargs="+", required=True, help="save_pretrained folders of one model"
    )
    parser.add_argument(
        "--weights", type=float, nargs="+", help="one weight per checkpoint, summing to 1 (default: equal)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the averaged checkpoint")


def run(args: argparse.Namespace) -> int:
    weights = args.weights or [1.0 / len(args.checkpoints)] * len(args.checkpoints)
    out = average_checkpoints(args.checkpoints, weights, args.out)
    print(json.dumps({"checkpoint": str(out), "weights": weights}))
    return 0
