"""``cogvla train``: train a policy on LIBERO-format HDF5 demos.

From scratch (the ``tiny`` preset), resumable::

    cogvla train --preset tiny --data ~/.cache/cogvla/recipe/demos --out ~/.cache/cogvla/recipe/run --resume

LoRA fine-tuning of a pretrained checkpoint, on 8 GPUs (or ``--nnodes N`` for several machines)::

    torchrun --nproc_per_node 8 -m cogvla.cli train --preset cogvla-libero --init-from CKPT --data DEMOS --out RUN

Prints a JSON summary (steps, final loss, samples/s, last checkpoint) when done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the verb's flags."""
    from cogvla.data.keypoints import KEYPOINT_SOURCES
    from cogvla.train.config import TRAIN_PRESETS

    parser.add_argument("--preset", default="tiny", choices=sorted(TRAIN_PRESETS), help="training preset")
    parser.add_argument(
        "--data", nargs="+", required=True, help="demo files or folders of *.hdf5 (LIBERO schema)"
    )
    parser.add_argument("--out", required=True, help="run folder: log.jsonl, loss_curve.png, checkpoints/")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument(
        "--init-from",
        default=None,
        help="checkpoint to start from: LoRA fine-tuning, or for the tiny preset full training "
        "that keeps its normalization stats (--init-mode overrides)",
    )
    parser.add_argument("--init-mode", choices=("lora", "full"), help="how --init-from weights are trained")
    parser.add_argument(
        "--steps",
        type=int,
        help="optimizer steps (overrides the preset; a longer preset warm-up shrinks to steps/10)",
    )
    parser.add_argument("--batch", type=int, help="global batch size (overrides the preset)")
    parser.add_argument("--grad-accum", type=int, help="gradient-accumulation micro-steps per optimizer step")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up steps")
    parser.add_argument("--workers", type=int, help="data-loader worker processes per rank")
    parser.add_argument("--save-every", type=int, help="checkpoint interval in steps")
    parser.add_argument("--log-every", type=int, help="log interval in steps")
    parser.add_argument(
        "--max-nonfinite-steps",
        type=int,
        help="steps in a row with a NaN/inf loss or gradient (each skipped) that stop the run (default: 5)",
    )
    parser.add_argument("--seed", type=int, help="seed of init, data order and augmentation")
    parser.add_argument("--variant", help="model variant: cogvla, dense, no-efa, no-lfp")
    parser.add_argument(
        "--new-stats",
        action="store_true",
        help="with --init-mode full: compute normalization stats from --data instead of keeping the checkpoint's",
    )
    parser.add_argument(
        "--refit-proprio-stats",
        action="store_true",
        help="with --init-mode full: proprio quantiles from --data, the projector rescaled to match; actions keep the checkpoint's",
    )
    parser.add_argument(
        "--refit-proprio-margin",
        type=float,
        metavar="FRACTION",
        help="with --refit-proprio-stats: widen the fitted proprio range by this fraction on each side "
        "(default 0), so states beyond the data's 1st/99th percentiles are not clipped",
    )
    parser.add_argument("--no-augment", action="store_true", help="disable colour jitter and random crops")
    parser.add_argument(
        "--keypoint-weight",
        type=float,
        help="weight of the auxiliary loss on the next gripper-switch point (0 = off, the default)",
    )
    parser.add_argument(
        "--keypoint-source",
        choices=KEYPOINT_SOURCES,
        help="what the auxiliary head reads: the vision tokens (default) or the action positions",
    )
    parser.add_argument(
        "--proprio-noise",
        type=float,
        metavar="METRES",
        help="std of Gaussian noise on the hand position of the training proprio (0 = off, the default)",
    )
    parser.add_argument(
        "--proprio-dropout",
        type=float,
        metavar="P",
        help="probability that a training sample's proprio is replaced by zeros (0 = off, the default)",
    )
    parser.add_argument(
        "--phase-start-weight",
        type=float,
        metavar="W",
        help="loss weight of the first steps after each episode start and gripper switch (1 = off, the default)",
    )
    parser.add_argument(
        "--phase-start-steps",
        type=int,
        metavar="K",
        help="how many steps of each phase start --phase-start-weight covers (default: 16)",
    )
    parser.add_argument(
        "--pin-gate",
        choices=("dino", "siglip"),
        help="before the first step, pin the EFA gate to this encoder stream (default: as trained)",
    )
    parser.add_argument(
        "--reinit",
        nargs="+",
        metavar="MODULE",
        help="modules (e.g. dino vision_projector.dino_proj) freshly initialized before the first step",
    )
    parser.add_argument(
        "--train-only",
        nargs="+",
        metavar="MODULE",
        help="train only these modules' parameters (default: all)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads of the training process (overrides the preset)"
    )
    parser.add_argument("--cache", default=None, help="frame-cache folder (default: the cogvla cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Train and print the JSON summary; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cogvla.data.frame_cache import find_demo_files

    # A mistyped --data fails here, not after the seconds torch and the trainer take to import.
    find_demo_files(args.data)
    from cogvla.train.config import get_train_preset
    from cogvla.train.trainer import train

    overrides = {
        "intra_op_threads": args.threads,
        "steps": args.steps,
        "global_batch": args.batch,
        "grad_accum": args.grad_accum,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "num_workers": args.workers,
        "save_every": args.save_every,
        "log_every": args.log_every,
        "max_nonfinite_steps": args.max_nonfinite_steps,
        "seed": args.seed,
        "variant": args.variant,
        "init_mode": args.init_mode,
        "keypoint_weight": args.keypoint_weight,
        "keypoint_source": args.keypoint_source,
        "proprio_noise": args.proprio_noise,
        "proprio_dropout": args.proprio_dropout,
        # Set together: the config checks that a margin comes with a refit.
        "refit_proprio_stats": True if args.refit_proprio_stats else None,
        "refit_proprio_margin": args.refit_proprio_margin,
        "phase_start_weight": args.phase_start_weight,
        "phase_start_steps": args.phase_start_steps,
        "pin_gate": args.pin_gate,
        "reinit_modules": tuple(args.reinit) if args.reinit else None,
        "trainable_modules": tuple(args.train_only) if args.train_only else None,
    }
    preset = get_train_preset(args.preset)
    if args.steps is not None and args.warmup_steps is None and preset.warmup_steps >= args.steps:
        overrides["warmup_steps"] = args.steps // 10
    config = dataclasses.replace(
        preset, **{key: value for key, value in overrides.items() if value is not None}
    )
    if args.no_augment:
        config = dataclasses.replace(config, augment=None)
    if args.new_stats:
        config = dataclasses.replace(config, keep_stats=False)
    result = train(
        config,
        args.data,
        args.out,
        resume=args.resume,
        init_from=args.init_from,
        cache_root=args.cache,
        progress=not args.no_progress,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_dict(), indent=2))
    return 0
