"""Steps whose loss or gradient is NaN/inf: skipped and counted, and too many in a row stop the run.

One bad batch (an fp16 overflow, a corrupt frame) should not poison the weights, and a run
that has diverged should stop with its reason instead of writing NaN checkpoints for hours.
"""

from __future__ import annotations

import logging

import torch

from cogvla.train.distributed import DistInfo, mean_across_ranks

__all__ = ["NonFiniteStepGuard", "NonFiniteTrainingError"]

logger = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient; the run stopped."""


class NonFiniteStepGuard:
    """Says whether a step's update may be applied; raises after ``limit`` refusals in a row."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit: expected >= 1, got {limit}")
        self.limit = limit
        self.in_a_row = 0

    def allows(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, info: DistInfo) -> bool:
        """Whether step ``step`` (1-based) is finite on every rank, so that all ranks skip together."""
        bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(grad_norm.detach())).float()
        if float(mean_across_ranks(bad, info)) == 0.0:
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        logger.warning(
            "step %d: non-finite loss (%s) or gradient norm (%s); update skipped (%d in a row)",
            step,
            float(loss),
            float(grad_norm),
            self.in_a_row,
        )
        if self.in_a_row >= self.limit:
            raise NonFiniteTrainingError(
                f"max_nonfinite_steps: {self.in_a_row} steps in a row (up to step {step}) had a non-finite "
                "loss or gradient; the run stopped and its newest checkpoint is the last finite one "
                "(lower the learning rate, check the data, or train in float32)"
            )
        return False
