"""Import time and peak memory of ``cogvla import`` on a large synthetic OFT checkpoint.

Usage::

    .venv/bin/python benchmarks/bench_import.py --out bench_import.json
    .venv/bin/python benchmarks/bench_import.py --llm-layers 2 --dtypes bf16    # quick run

Builds an OpenVLA-OFT-layout checkpoint (reference key names, bf16 shards, separate
head files) of about 1 B parameters, then imports it in a fresh subprocess per target
dtype, recording wall time and peak RSS (``VmHWM``) of that subprocess (Linux only),
first for the import alone, then including ``save_pretrained`` of the result (what
``cogvla import`` does). The
result extrapolates linearly in the parameter count to the 7.5 B dense model
(7,562,602,743 parameters, the ``cogvla-7b`` preset with variant ``dense``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
TARGET_7B_PARAMS = 7_562_602_743

# The child process: import, then report time, peak RSS and the parameter count as JSON.
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child would report
# the parent's peak (the checkpoint builder's) instead of its own.
_CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from cogvla.convert.load import DTYPES, import_released

def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

base = status_mb("VmRSS")
start = time.perf_counter()
result = import_released(sys.argv[1], dtype=DTYPES[sys.argv[2]], progress=False)
seconds = time.perf_counter() - start
peak = status_mb("VmHWM")
start = time.perf_counter()
result.model.save_pretrained(sys.argv[3], tokenizer=result.tokenizer, norm_stats=result.norm_stats)
print(json.dumps({
    "seconds": seconds,
    "baseline_rss_mb": base,
    "peak_rss_mb": peak,
    "save_seconds": time.perf_counter() - start,
    "peak_rss_with_save_mb": status_mb("VmHWM"),
    "params": result.report["target"]["total_params"],
    "source_keys": result.report["source_keys"]["total"],
}))
"""


def _dims(args: argparse.Namespace):
    sys.path.insert(0, str(TESTS))  # the synthetic builders live with the tests that use them
    from synthetic_checkpoints import SyntheticDims

    return SyntheticDims(
        dino_width=512,
        dino_depth=12,
        siglip_width=576,
        siglip_depth=12,
        siglip_mlp=2304,
        image_size=224,
        llm_hidden=2048,
        llm_layers=args.llm_layers,
        llm_heads=16,
        llm_intermediate=5504,
        shards=4,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--llm-layers", type=int, default=16, help="16 gives about 1.08 B parameters")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to build (default: a temp dir, removed)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    dims = _dims(args)
    from synthetic_checkpoints import build_oft_checkpoint

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_import_"))
    path = workdir / "oft-synthetic"
    start = time.perf_counter()
    build_oft_checkpoint(path, dims, keep_weights=False)
    build_seconds = time.perf_counter() - start
    disk_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    runs = {}
    for dtype in args.dtypes:
        out_dir = workdir / f"imported-{dtype}"
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), dtype, str(out_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        shutil.rmtree(out_dir)
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        scale = TARGET_7B_PARAMS / run["params"]
        grown = run["peak_rss_mb"] - run["baseline_rss_mb"]
        run["rss_growth_mb"] = grown
        run["bytes_per_param"] = grown * 2**20 / run["params"]
        with_save = run["peak_rss_with_save_mb"] - run["baseline_rss_mb"]
        run["extrapolated_7_5b"] = {
            "seconds": run["seconds"] * scale,
            "peak_rss_gb": (run["baseline_rss_mb"] + grown * scale) / 1024,
            "save_seconds": run["save_seconds"] * scale,
            "peak_rss_with_save_gb": (run["baseline_rss_mb"] + with_save * scale) / 1024,
        }
        runs[dtype] = run
    if args.workdir is None:
        shutil.rmtree(workdir)
    result = {
        "benchmark": "import",
        "layout": "oft",
        "dims": asdict(dims),
        "checkpoint_disk_gb": disk_bytes / 2**30,
        "build_seconds": build_seconds,
        "threads": 1,
        "target_7_5b_params": TARGET_7B_PARAMS,
        "runs": runs,
        "note": "CPU import; a GPU import (--device cuda) keeps only a few tensors on the host at a time",
    }
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
