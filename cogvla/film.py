"""Feature-wise linear modulation (FiLM): ``x * (1 + gamma(c)) + beta(c)``.

Used twice in CogVLA: in every ViT block (conditioned on the instruction vector,
reference ``FiLMedVisionTransformerBlock``) and in the LFP routers (conditioned on the
mean proprio+prompt hidden state, reference ``FiLMedTokenRouter``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FiLM"]


class FiLM(nn.Module):
    """Per-sample affine modulation of token features.

    ``scale``/``shift`` are one Linear each (``hidden=None``, the ViT blocks) or a
    Linear-GELU-Linear MLP (the LFP routers), matching the reference weight names.

    Shapes: ``x (B*n, N, D)``, ``cond (B, C)`` -> ``(B*n, N, D)``, where the ``n`` rows of a
    sample (its camera images; 1 by default) share its parameters.
    """

    def __init__(self, cond_dim: int, feature_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.scale = _make_map(cond_dim, feature_dim, hidden)
        self.shift = _make_map(cond_dim, feature_dim, hidden)

    def params(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gamma, beta)``, each ``(B, 1, D)``, ready to broadcast over tokens."""
        return self.scale(cond).unsqueeze(1), self.shift(cond).unsqueeze(1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rows_per_sample: int = 1) -> torch.Tensor:
        gamma, beta = (p.repeat_interleave(rows_per_sample, 0) for p in self.params(cond))
        return x * (1 + gamma) + beta


def _make_map(cond_dim: int, feature_dim: int, hidden: int | None) -> nn.Module:
    if hidden is None:
        return nn.Linear(cond_dim, feature_dim)
    return nn.Sequential(nn.Linear(cond_dim, hidden), nn.GELU(), nn.Linear(hidden, feature_dim))
