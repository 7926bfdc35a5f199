"""Training throughput (samples/s) of a model preset on this machine, as JSON.

Usage::

    .venv/bin/python benchmarks/bench_train.py --preset tiny --batch 16 --threads 1 --out bench_train.json
    .venv/bin/python benchmarks/bench_train.py --threads 1 2 --steps 3          # quick run, thread sweep
    .venv/bin/python benchmarks/bench_train.py --baseline ../baseline --steps 8 --rounds 2   # A/B

Three measurements, each after warm-up steps:

- ``model``: one optimizer step (forward, backward, AdamW) on a random batch, split into
  forward / backward / optimizer time; this bounds what any data pipeline can reach;
- ``data``: ``DemoDataset`` micro-batches (gather from the frame cache, augmentation,
  prompt encoding, normalization) in one process, i.e. what one loader worker delivers;
- ``trainer``: ``cogvla.train.trainer.train`` end to end on synthetic 128 px demos, with
  its data-loader workers; the samples/s it logs is what a real run sees.

With ``--baseline CHECKOUT`` it measures only ``trainer``, with the train preset's own
settings and torch's default threads, in that checkout and in this tree (or
``--candidate``), interleaved (``benchmarks/side_by_side.py``), on the same synthetic demos
and seed, and compares samples/s and the two loss curves step by step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cogvla.config import get_preset
from cogvla.data.augment import AugmentConfig
from cogvla.data.dataset import DemoDataset, compute_norm_stats, select_training_frames
from cogvla.data.frame_cache import find_demo_files, load_frame_cache
from cogvla.data.libero_hdf5 import Episode, append_episode
from cogvla.data.sampler import StepSampler
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel
from cogvla.tokenizer import PromptTokenizer
from cogvla.train.config import get_train_preset
from cogvla.train.run_log import read_log
from cogvla.train.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import add_arguments, compare_rounds, emit

INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def bench_model(preset: str, batch: int, steps: int, warmup: int) -> dict:
    """Seconds per forward, backward and AdamW step on random batches."""
    config = get_preset(preset)
    model = CogVLAModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = fake_batch(config, batch_size=batch, prompt_tokens=30)
    times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss, _ = model.compute_loss(data)
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        if step >= warmup:
            times["forward"].append(forward - start)
            times["backward"].append(backward - forward)
            times["optimizer"].append(done - backward)
    medians = {key: statistics.median(values) for key, values in times.items()}
    step_s = sum(medians.values())
    return {
        "batch": batch,
        "median_s": medians,
        "step_s": step_s,
        "samples_per_s": batch / step_s,
        "params": sum(p.numel() for p in model.parameters()),
    }


def write_synthetic_demos(folder: Path, episodes: int, length: int, size: int) -> None:
    """Random-image demos in the LIBERO schema (content is irrelevant to throughput)."""
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        append_episode(
            folder / "task.hdf5",
            Episode(
                actions=rng.uniform(-1, 1, (length, 7)),
                agentview_rgb=rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
                eye_in_hand_rgb=rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
                ee_pos=rng.normal(size=(length, 3)),
                ee_ori=rng.normal(size=(length, 3)),
                gripper_states=rng.normal(size=(length, 2)),
                joint_states=rng.normal(size=(length, 7)),
                language=INSTRUCTION,
            ),
        )


def bench_data(demos: Path, cache: Path, batch: int, batches: int) -> dict:
    """Micro-batches per second of ``DemoDataset`` with augmentation, in this process."""
    frames = load_frame_cache(find_demo_files([demos]), cache)
    selection = select_training_frames(frames, 8, 1e-4)
    tokenizer = PromptTokenizer.train([INSTRUCTION])
    dataset = DemoDataset(
        frames, selection, compute_norm_stats(frames, selection), tokenizer.encode_batch, AugmentConfig()
    )
    sampler = iter(StepSampler(num_samples=len(dataset), micro_batch=batch, end_step=batches + 2))
    dataset[next(sampler)]
    times = []
    for items in list(sampler)[:batches]:
        start = time.perf_counter()
        dataset[items]
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"batch": batch, "median_s": seconds, "samples_per_s": batch / seconds}


def bench_trainer(
    demos: Path, cache: Path, run_dir: Path, preset: str, batch: int, steps: int, workers: int
) -> dict:
    """Samples/s that ``train`` logs (its second half, after warm-up)."""
    config = dataclasses.replace(
        get_train_preset(preset),
        steps=steps,
        global_batch=batch,
        warmup_steps=1,
        save_every=steps,
        log_every=1,
        num_workers=workers,
    )
    start = time.perf_counter()
    train(config, [demos], run_dir, cache_root=cache, progress=False)
    wall = time.perf_counter() - start
    records = read_log(run_dir / "log.jsonl")
    rates = [record["samples_per_s"] for record in records]
    return {
        "batch": batch,
        "steps": steps,
        "workers": workers,
        "samples_per_s": statistics.median(rates[len(rates) // 2 :]),
        "wall_s_including_setup": wall,
        "losses": [round(record["loss"], 5) for record in records],
    }


def side_by_side(args: argparse.Namespace) -> dict:
    """Baseline and candidate ``trainer`` runs, interleaved, with their loss curves compared."""
    side_args = [
        "--preset",
        args.preset,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.warmup + args.steps),
    ]
    result = compare_rounds(
        str(Path(__file__).resolve()),
        args.baseline.resolve(),
        args.candidate.resolve(),
        [*side_args, "--workers", str(args.workers)],
        args.rounds,
        rate=lambda side: side["samples_per_s"],
    )
    for run in result["rounds"]:
        base, new = np.array(run["baseline"]["losses"]), np.array(run["candidate"]["losses"])
        run["loss_max_relative_difference"] = round(float(np.max(np.abs(new - base) / np.abs(base))), 4)
    return result


def run_side(args: argparse.Namespace) -> dict:
    """One side of ``side_by_side``: the trainer on fresh synthetic demos, in this process's tree."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_synthetic_demos(scratch / "demos", episodes=4, length=100, size=128)
        return bench_trainer(
            scratch / "demos",
            scratch / "cache",
            scratch / "run",
            args.preset,
            args.batch,
            args.steps,
            args.workers,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="model preset (and train preset of the same name)")
    parser.add_argument("--batch", type=int, default=16, help="global batch size")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="torch intra-op thread counts to try"
    )
    parser.add_argument("--steps", type=int, default=5, help="measured steps (model and trainer)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured model steps first")
    parser.add_argument("--workers", type=int, default=1, help="data-loader workers of the trainer run")
    parser.add_argument("--skip-trainer", action="store_true", help="only the model and data measurements")
    parser.add_argument("--out", help="also write the JSON here")
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.side:
        print(json.dumps(run_side(args)))
        return
    if args.baseline is not None:
        emit({"benchmark": "train", "preset": args.preset, **side_by_side(args)}, args.out)
        return

    result = {
        "preset": args.preset,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_avg_1min_at_start": os.getloadavg()[0],
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        write_synthetic_demos(scratch / "demos", episodes=4, length=100, size=128)
        for threads in args.threads:
            torch.set_num_threads(threads)
            entry = {
                "threads": threads,
                "model": bench_model(args.preset, args.batch, args.steps, args.warmup),
            }
            entry["data"] = bench_data(scratch / "demos", scratch / "cache", args.batch, batches=10)
            if not args.skip_trainer:
                entry["trainer"] = bench_trainer(
                    scratch / "demos",
                    scratch / "cache",
                    scratch / f"run_{threads}",
                    args.preset,
                    args.batch,
                    steps=args.warmup + args.steps,
                    workers=args.workers,
                )
            result["runs"].append(entry)
    result["machine"]["load_avg_1min_at_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
