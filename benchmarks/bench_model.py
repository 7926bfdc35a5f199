"""Forward-pass latency of the model on random inputs (batch 1 by default), as JSON.

Usage::

    .venv/bin/python benchmarks/bench_model.py --preset tiny --variants cogvla dense --iters 100

Warm-up passes run first and are not timed; each timed pass is one ``torch.inference_mode``
forward, clocked with ``time.perf_counter`` (after ``torch.cuda.synchronize`` on CUDA).
The analytic FLOPs of the same query are reported next to the latency.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cogvla.config import PRESETS, VARIANTS, get_preset
from cogvla.fake_data import fake_batch
from cogvla.flops import DEFAULT_PROMPT_TOKENS, count_flops
from cogvla.modeling import CogVLAModel

__all__ = ["bench_variant", "main"]

logger = logging.getLogger(__name__)
FORWARD_KEYS = ("pixel_values", "input_ids", "attention_mask", "proprio")


def bench_variant(
    preset: str, variant: str, *, warmup: int, iters: int, batch_size: int, prompt_tokens: int, device: str
) -> dict:
    """Latency statistics (milliseconds) of one preset/variant."""
    torch.manual_seed(0)
    config = get_preset(preset, variant)
    model = CogVLAModel(config).to(device).eval()
    batch = fake_batch(config, batch_size=batch_size, prompt_tokens=prompt_tokens)
    inputs = {key: batch[key].to(device) for key in FORWARD_KEYS}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(**inputs)
        sync()
        for _ in tqdm(range(iters), desc=f"{preset}/{variant}", leave=False):
            start = time.perf_counter()
            model(**inputs)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    ms = np.asarray(times)
    flops = count_flops(config, prompt_tokens=prompt_tokens, batch_size=batch_size).total
    return {
        "variant": variant,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "gflops": flops / 1e9,
        "achieved_gflops_per_s": flops / 1e9 / (float(np.percentile(ms, 50)) / 1e3),
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["cogvla"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = [
        bench_variant(
            args.preset,
            variant,
            warmup=args.warmup,
            iters=args.iters,
            batch_size=args.batch_size,
            prompt_tokens=args.prompt_tokens,
            device=args.device,
        )
        for variant in args.variants
    ]
    report = {
        "benchmark": "model_forward",
        "preset": args.preset,
        "batch_size": args.batch_size,
        "prompt_tokens": args.prompt_tokens,
        "warmup": args.warmup,
        "iters": args.iters,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text)
        logger.info("wrote %s", args.out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
