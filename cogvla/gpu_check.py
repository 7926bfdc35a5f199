"""First-run GPU check: a few minutes on one card, one JSON file of facts.

With random bf16 weights at the 7B preset it measures:

- flash-attn against SDPA: the largest absolute action difference of one forward pass;
- the p50 latency of one observation for the ``cogvla`` and ``dense`` variants;
- the peak device memory of each variant;
- the vision tokens each LLM layer processes (LFP keeps fewer in layers 8-31).

``--cpu`` is the reduced mode CI runs: the ``tiny`` preset in float32 on the CPU, no
flash-attn, peak memory as the process's maximum resident set. Usage::

    bash scripts/gpu_check.sh --out gpu_check.json
    bash scripts/gpu_check.sh --cpu --out cpu_check.json
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cogvla import catten
from cogvla.config import get_preset
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel

__all__ = ["main", "run_check"]

FORWARD_KEYS = ("pixel_values", "input_ids", "attention_mask", "proprio")
VARIANTS = ("cogvla", "dense")


@contextmanager
def sdpa_only() -> Iterator[None]:
    """Attention through PyTorch SDPA even where flash-attn is installed."""
    saved = catten.flash_attn_func
    catten.flash_attn_func = None
    try:
        yield
    finally:
        catten.flash_attn_func = saved


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def _build(preset: str, variant: str, device: torch.device, dtype: torch.dtype) -> CogVLAModel:
    """A random-weight model created directly on ``device`` in ``dtype`` (no fp32 copy of 7B)."""
    torch.manual_seed(0)
    with _default_dtype(dtype), device:
        return CogVLAModel(get_preset(preset, variant)).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward(model: CogVLAModel, inputs: list[torch.Tensor]):
    with torch.inference_mode():
        return model(*inputs, padded=False)


def _latency_ms(
    model: CogVLAModel, inputs: list[torch.Tensor], device: torch.device, iters: int
) -> list[float]:
    _forward(model, inputs)  # warm-up: kernels, caches, allocator
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        _forward(model, inputs)
        _sync(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _check_variant(
    preset: str, variant: str, device: torch.device, dtype: torch.dtype, iters: int
) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = _build(preset, variant, device, dtype)
    batch = fake_batch(model.config, batch_size=1, prompt_tokens=20)
    inputs = [batch[key].to(device) for key in FORWARD_KEYS]
    inputs[0], inputs[3] = inputs[0].to(dtype), inputs[3].to(dtype)
    out = _forward(model, inputs)
    result: dict[str, Any] = {"kept_vision_tokens_per_layer": out.kept_per_layer}
    if catten.flash_available(inputs[0]):
        with sdpa_only():
            reference = _forward(model, inputs).actions
        result["flash_vs_sdpa_max_abs_action_diff"] = (out.actions - reference).abs().max().item()
    else:
        result["flash_vs_sdpa_max_abs_action_diff"] = None
    times = _latency_ms(model, inputs, device, iters)
    result.update(
        p50_latency_ms=round(statistics.median(times), 3),
        latency_ms=[round(t, 3) for t in times],
        peak_memory_mb=round(_peak_memory_mb(device), 1),
        params=sum(p.numel() for p in model.parameters()),
    )
    del model, out
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_check(*, cpu: bool, iters: int) -> dict[str, Any]:
    """The check's JSON record; ``cpu`` selects the reduced mode."""
    started = time.perf_counter()
    device = torch.device("cpu" if cpu else "cuda")
    preset, dtype = ("tiny", torch.float32) if cpu else ("cogvla-7b", torch.bfloat16)
    record: dict[str, Any] = {
        "mode": "cpu" if cpu else "gpu",
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "flash_attn_installed": catten.flash_attn_func is not None,
        "peak_memory_source": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "ru_maxrss",
    }
    record["variants"] = {
        variant: _check_variant(preset, variant, device, dtype, iters) for variant in VARIANTS
    }
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="reduced mode: tiny preset, float32, CPU")
    parser.add_argument("--iters", type=int, default=10, help="timed forward passes per variant (default 10)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f"--iters: expected >= 1, got {args.iters}")
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device here; pass --cpu for the reduced mode")
    record = run_check(cpu=args.cpu, iters=args.iters)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for values in record["variants"].values():
        values.pop("latency_ms")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
