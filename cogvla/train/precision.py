"""The training step's precision: bfloat16 autocast on CUDA, and on CPUs with native bf16.

Weights, gradients and optimizer state stay float32 either way; autocast only runs the
matmuls and convolutions in bfloat16. On a CPU with AVX512-BF16 or AMX that makes a
``tiny`` step about 1.5x faster; on one without, bf16 is emulated and slower, so
``"auto"`` turns it on only where oneDNN reports native support.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["CpuAutocast", "cpu_bf16_supported", "step_autocast", "uses_bf16"]

CpuAutocast = Literal["auto", "bf16", "off"]


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_bf16(cpu_autocast: CpuAutocast, device: torch.device) -> bool:
    """Whether training steps on ``device`` run under bfloat16 autocast."""
    if device.type == "cuda":
        return True
    return cpu_autocast == "bf16" or (cpu_autocast == "auto" and cpu_bf16_supported())


@contextmanager
def step_autocast(cpu_autocast: CpuAutocast, device: torch.device) -> Iterator[None]:
    """The context a training step's forward pass runs in."""
    if not uses_bf16(cpu_autocast, device):
        yield
        return
    if device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
        return
    # The CPU flash-attention kernel's bf16 backward is slower than its float32 one; the
    # math kernel's bf16 matmuls are faster than either (tiny, batch 16: 0.89 s vs 1.04 s a step).
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.MATH):
        yield
