"""Auxiliary regression of the next gripper-switch point (``cogvla.data.keypoints``).

Trained beside the action loss and dropped at export: the served model is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KeypointHead"]


class KeypointHead(nn.Module):
    """Mean over the action positions -> LayerNorm -> Linear.

    Shapes: ``(B, chunk * action_dim, D)`` action hidden states -> ``(B, 3)`` offset.
    """

    def __init__(self, llm_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(llm_dim)
        self.proj = nn.Linear(llm_dim, 3)

    def forward(self, action_hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(action_hidden.mean(dim=1)))

    def loss(self, action_hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 against ``target (B, 3)``."""
        prediction = self(action_hidden)
        if tuple(target.shape) != tuple(prediction.shape):
            raise ValueError(f"keypoint: expected shape {tuple(prediction.shape)}, got {tuple(target.shape)}")
        return (prediction - target.to(prediction.dtype)).abs().mean()
