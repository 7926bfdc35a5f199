"""Optimizer and learning-rate schedule: AdamW, linear warm-up, cosine decay (CogVLA's recipe)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["WarmupCosine", "build_optimizer", "build_scheduler"]

# Devices with a fused AdamW kernel in torch.
_FUSED_DEVICES = frozenset({"cpu", "cuda"})


class WarmupCosine:
    """LR multiplier: linear ramp to 1 over ``warmup_steps``, then cosine to ``min_ratio`` at ``total_steps``.

    A callable object rather than a lambda, so ``LambdaLR.state_dict`` can save it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(
                f"WarmupCosine: expected warmup_steps >= 0 and total_steps >= 1, got {warmup_steps} and {total_steps}"
            )
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"WarmupCosine.min_ratio: expected a value in [0, 1], got {min_ratio}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # (step + 1): the first update already moves the weights.
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW over the parameters that require gradients; the fused kernel where torch has one."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("build_optimizer: expected at least one parameter with requires_grad=True, got none")
    # One fused kernel instead of a dozen ops per tensor (tiny on a CPU: ~15 ms vs ~55 ms a step).
    fused = all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in trainable)
    return torch.optim.AdamW(trainable, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, lr: float, min_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with ``WarmupCosine`` from ``lr`` down to ``min_lr``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr / lr))
