"""Auxiliary regression of the next gripper-switch point (``cogvla.data.keypoints``).

Two sources (``TrainConfig.keypoint_source``):

- ``"vision"``: the point itself, centred on the data's mean, from the vision tokens as they
  enter the LLM. Neither the arm's state nor the LLM can help, so the encoders must locate
  the object.
- ``"actions"``: its offset from the hand, from the hidden states the action head reads.

Trained beside the action loss and dropped at export: the served model is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KeypointHead"]


class KeypointHead(nn.Module):
    """LayerNorm per token -> one Linear over all of them: a linear read-out of a token set.

    Shapes: ``(B, N, D)`` tokens (the action positions' LLM states, or the vision tokens)
    -> ``(B, 3)``.
    """

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(num_tokens * dim, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(tokens).flatten(1))

    def loss(self, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 against ``target (B, 3)``."""
        prediction = self(tokens)
        if tuple(target.shape) != tuple(prediction.shape):
            raise ValueError(f"keypoint: expected shape {tuple(prediction.shape)}, got {tuple(target.shape)}")
        return (prediction - target.to(prediction.dtype)).abs().mean()
