"""Deterministic data order for training: which samples each rank sees at each step.

The order is a pure function of ``(seed, step)``: sample position ``p = step * G + j`` of
the run (``G`` = global batch) maps to epoch ``p // N`` and to slot ``p % N`` of that
epoch's seeded permutation of the ``N`` samples. So a run resumed at step ``s`` only needs
``s`` to see exactly the batches it would have seen, and the same global batch is split
identically whether it is spread over ranks, over accumulation micro-steps, or neither.

Each sample also carries a seed derived from ``(seed, p)``; the dataset draws its
augmentation from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["StepSampler"]

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads consecutive positions across seeds


@dataclass(frozen=True)
class StepSampler:
    """Yields, for steps ``start_step..end_step-1``, this rank's micro-batches as ``[(index, seed), ...]``.

    Within a step, micro-batch ``m`` of rank ``r`` holds global-batch slots
    ``[(m * world_size + r) * micro_batch, ... + micro_batch)``.
    """

    num_samples: int
    micro_batch: int
    grad_accum: int = 1
    world_size: int = 1
    rank: int = 0
    seed: int = 0
    start_step: int = 0
    end_step: int = 0

    def __post_init__(self) -> None:
        for name in ("num_samples", "micro_batch", "grad_accum", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"StepSampler.{name}: expected >= 1, got {getattr(self, name)}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"StepSampler.rank: expected 0 <= rank < {self.world_size}, got {self.rank}")
        if not 0 <= self.start_step <= self.end_step:
            raise ValueError(
                f"StepSampler: expected 0 <= start_step <= end_step, got {self.start_step} and {self.end_step}"
            )

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.grad_accum

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            for micro in range(self.grad_accum):
                offset = step * self.global_batch + (micro * self.world_size + self.rank) * self.micro_batch
                positions = np.arange(offset, offset + self.micro_batch)
                yield list(
                    zip(self.indices(positions).tolist(), self.sample_seeds(positions).tolist(), strict=True)
                )

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Dataset indices at run positions ``positions``."""
        epochs, slots = np.divmod(positions, self.num_samples)
        out = np.empty_like(positions)
        for epoch in np.unique(epochs):
            permutation = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples)
            chosen = epochs == epoch
            out[chosen] = permutation[slots[chosen]]
        return out

    def sample_seeds(self, positions: np.ndarray) -> np.ndarray:
        """Augmentation seeds (63-bit) of run positions ``positions``."""
        mixed = (positions.astype(np.uint64) + np.uint64(self.seed)) * np.uint64(_MIX)
        return (mixed >> np.uint64(1)).astype(np.int64)
