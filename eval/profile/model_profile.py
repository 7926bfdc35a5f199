"""Side-by-side latency, FLOPs and memory of CogVLA variants (``cogvla profile model``).

Every variant of one preset is built in the same process and fed the same synthetic
query (random images, an unpadded prompt of ``prompt_tokens`` random ids, a random
proprio vector). After the warm-up, the timed iterations run the variants round-robin
(one forward of each variant per round), so a change of machine load during the run
hits every variant alike instead of whichever happened to run last.

Stages are the model's own submodules, timed by hooks during the real forward
(``eval.profile.stage_timer``); their names match ``cogvla.flops`` stages:

- ``vision_encoders``: both ViT streams (with EFA: FiLM in every block and the
  aggregation tokens), ``model.dino`` + ``model.siglip``;
- ``projector_gate``: ``model.vision_projector`` (EFA: two stream projectors + gate;
  dense: the fused 3-layer projector);
- ``llm``: ``model.llm``, the prefill over the whole sequence with the LFP routers;
- ``action_head``: ``model.action_head``.

What the stages leave out (input checks, token embedding, the instruction vector, the
proprio projector, sequence assembly) is reported as ``unattributed``.

On CUDA the forward runs under bf16 autocast, as ``CogVLAPolicy`` serves it; on the CPU
in fp32. Peak memory is described in ``eval.profile.memory``.

FLOPs: ``tflops`` is the analytic count of ``cogvla.flops.count_flops`` for one query;
``measured_tflops`` is ``torch.utils.flop_counter.FlopCounterMode`` over one real
forward, divided by the batch size.
"""

from __future__ import annotations

import logging
import platform
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from cogvla.config import VARIANTS, get_preset
from cogvla.flops import DEFAULT_PROMPT_TOKENS, count_flops, count_params
from cogvla.modeling import CogVLAModel
from eval.profile.latency import summarize
from eval.profile.memory import peak_memory_mb
from eval.profile.stage_timer import TOTAL, StageTimer

__all__ = [
    "STAGES",
    "ModelProfileConfig",
    "ProfileConfigError",
    "cpu_model",
    "load_average",
    "measured_flops",
    "profile_models",
    "stage_modules",
    "synthetic_inputs",
]

logger = logging.getLogger(__name__)

STAGES = ("vision_encoders", "projector_gate", "llm", "action_head")
UNATTRIBUTED = "unattributed"

_aten = torch.ops.aten


class ProfileConfigError(ValueError):
    """A profiling option has an invalid value."""


@dataclass(frozen=True)
class ModelProfileConfig:
    """What ``profile_models`` measures and how."""

    preset: str = "medium"
    variants: tuple[str, ...] = ("cogvla", "dense", "no-efa", "no-lfp")
    batch: int = 1
    # untimed forwards per variant before the timed rounds (allocator and kernel caches)
    warmup: int = 3
    # timed forwards per variant
    iters: int = 20
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    device: str = "cpu"
    # torch intra-op threads; None keeps torch's default
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.variants:
            raise ProfileConfigError("variants: expected at least one variant, got none")
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown:
            raise ProfileConfigError(
                f"variants: expected names from {sorted(VARIANTS)}, got unknown {unknown}"
            )
        if len(set(self.variants)) != len(self.variants):
            raise ProfileConfigError(f"variants: expected distinct names, got {list(self.variants)}")
        for name, minimum in (("batch", 1), ("iters", 1), ("warmup", 0), ("prompt_tokens", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ProfileConfigError(f"{name}: expected an int >= {minimum}, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ProfileConfigError(f"threads: expected None or an int >= 1, got {self.threads!r}")
        device = torch.device(self.device)
        if device.type not in ("cpu", "cuda"):
            raise ProfileConfigError(f"device: expected 'cpu' or 'cuda[:N]', got {self.device!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ProfileConfigError(f"device: {self.device!r} requested but CUDA is not available")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``)."""
    with open("/proc/loadavg") as handle:
        return [float(value) for value in handle.read().split()[:3]]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the architecture."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def stage_modules(model: CogVLAModel) -> dict[str, list[torch.nn.Module]]:
    """The submodules whose forward time makes up each stage of ``STAGES``."""
    return {
        "vision_encoders": [model.dino, model.siglip],
        "projector_gate": [model.vision_projector],
        "llm": [model.llm],
        "action_head": [model.action_head],
    }


def synthetic_inputs(
    model: CogVLAModel, batch: int, prompt_tokens: int, seed: int
) -> tuple[torch.Tensor, ...]:
    """``(pixel_values, input_ids, attention_mask, proprio)`` of ``batch`` unpadded random queries."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    side = config.image_size
    pixels = torch.rand(batch, config.num_images, 3, side, side, generator=generator)
    # ids 0-3 are the special tokens (pad, BOS, stop, unk); a prompt never holds them
    ids = torch.randint(4, config.llm.vocab_size, (batch, prompt_tokens), generator=generator)
    mask = torch.ones(batch, prompt_tokens, dtype=torch.long)
    proprio = torch.rand(batch, config.proprio_dim, generator=generator) * 2 - 1
    return pixels, ids, mask, proprio


def _sdpa_cpu_flops(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    # FlopCounterMode has formulas for the CUDA SDPA kernels only; the CPU flash kernel
    # would count as zero. Scores (Sq x Sk x d) plus values (Sq x Sk x d_v), 2 FLOPs per MAC.
    batch, heads, queries, head_dim = query
    keys, value_dim = key[-2], value[-1]
    return 2 * batch * heads * queries * keys * (head_dim + value_dim)


def _autocast(device: torch.device) -> Any:
    # what CogVLAPolicy runs on CUDA (bf16 autocast); fp32 on the CPU
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def measured_flops(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward as counted by ``FlopCounterMode`` (CPU SDPA kernel included)."""
    mapping = {_aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}
    device = inputs[0].device
    with (
        torch.inference_mode(),
        _autocast(device),
        FlopCounterMode(display=False, custom_mapping=mapping) as counter,
    ):
        model(*inputs)
    return int(counter.get_total_flops())


@dataclass
class _Subject:
    """One variant under test, with its timer and collected samples."""

    name: str
    model: CogVLAModel
    inputs: tuple[torch.Tensor, ...]
    timer: StageTimer
    samples: dict[str, list[float]]
    kept_per_layer: list[int] = field(default_factory=list)

    def forward(self) -> None:
        with torch.inference_mode(), _autocast(self.inputs[0].device):
            self.timer.start()
            out = self.model(*self.inputs)
            self.timer.stop()
        self.kept_per_layer = list(out.kept_per_layer)

    def record(self) -> None:
        times = self.timer.read()
        for key, value in times.items():
            self.samples[key].append(value)
        self.samples[UNATTRIBUTED].append(times[TOTAL] - sum(times[name] for name in STAGES))


def _build(config: ModelProfileConfig, variant: str, device: torch.device) -> _Subject:
    model_config = get_preset(config.preset, variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = CogVLAModel(model_config)
    model = model.to(device).eval()
    inputs = tuple(
        t.to(device) for t in synthetic_inputs(model, config.batch, config.prompt_tokens, config.seed)
    )
    timer = StageTimer(stage_modules(model), device)
    samples: dict[str, list[float]] = {name: [] for name in (*STAGES, TOTAL, UNATTRIBUTED)}
    return _Subject(variant, model, inputs, timer, samples)


def _variant_static(subject: _Subject, config: ModelProfileConfig, device: torch.device) -> dict[str, Any]:
    """FLOPs, token budget, parameters and memory of one variant (untimed passes)."""
    model = subject.model
    report = count_flops(model.config, prompt_tokens=config.prompt_tokens, batch_size=1)
    measured = measured_flops(model, subject.inputs) / config.batch
    peak_mb, memory_method = peak_memory_mb(subject.forward, device)
    params = sum(p.numel() for p in model.parameters())
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / (1024.0 * 1024.0)
    return {
        "tflops": report.total / 1e12,
        "measured_tflops": measured / 1e12,
        "stage_tflops": {name: value / 1e12 for name, value in report.stages.items()},
        "llm_tokens": report.seq_len,
        "vision_tokens": report.vision_tokens_in_llm,
        "kept_per_layer": list(subject.kept_per_layer),
        "analytic_kept_per_layer": list(report.kept_per_layer),
        "peak_mem_mb": peak_mb,
        "memory_method": memory_method,
        "weights_mb": weights_mb,
        "params": params,
        "analytic_params": count_params(model.config)["total"],
        "chunk_size": model.config.chunk_size,
    }


def profile_models(config: ModelProfileConfig, out_png: Path | None = None) -> dict[str, Any]:
    """Profile every variant of ``config`` and return the JSON-able result.

    Result schema::

        {"preset", "device", "batch", "warmup", "iters", "threads", "prompt_tokens",
         "loadavg": {"before": [1m, 5m, 15m], "after": [...]},
         "variants": {NAME: {"tflops", "measured_tflops", "stage_tflops", "total": SUMMARY,
                             "stages": {STAGE: SUMMARY}, "unattributed": SUMMARY,
                             "llm_tokens", "vision_tokens", "kept_per_layer", "peak_mem_mb", ...}}}

    with ``SUMMARY = {"p50_ms", "p90_ms", "p99_ms", "mean_ms"}``.
    """
    device = torch.device(config.device)
    default_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    threads = torch.get_num_threads()
    loadavg_before = load_average()
    subjects: list[_Subject] = []
    try:
        subjects.extend(_build(config, variant, device) for variant in config.variants)
        for _ in range(config.warmup):
            for subject in subjects:
                subject.forward()
        static = {subject.name: _variant_static(subject, config, device) for subject in subjects}
        for _ in tqdm(range(config.iters), desc=f"profile {config.preset}", unit="round", leave=False):
            for subject in subjects:
                subject.forward()
                subject.record()
    finally:
        for subject in subjects:
            subject.timer.close()
        torch.set_num_threads(default_threads)
    variants: dict[str, Any] = {}
    for subject in subjects:
        variants[subject.name] = {
            **static[subject.name],
            "total": summarize(subject.samples[TOTAL], f"{subject.name}.total"),
            "stages": {name: summarize(subject.samples[name], f"{subject.name}.{name}") for name in STAGES},
            UNATTRIBUTED: summarize(subject.samples[UNATTRIBUTED], f"{subject.name}.{UNATTRIBUTED}"),
        }
    result = {
        "preset": config.preset,
        "device": str(device),
        "batch": config.batch,
        "warmup": config.warmup,
        "iters": config.iters,
        "threads": threads,
        "prompt_tokens": config.prompt_tokens,
        "seed": config.seed,
        "schedule": "round-robin over variants after per-variant warm-up",
        "timing_method": "cuda events, one synchronize per forward"
        if device.type == "cuda"
        else "time.perf_counter",
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "torch_version": torch.__version__,
        "machine": cpu_model(),
        "loadavg": {"before": loadavg_before, "after": load_average()},
        "variants": variants,
    }
    if out_png is not None:
        from eval.profile.plots import plot_model_profile

        plot_model_profile(result, out_png)
    return result
