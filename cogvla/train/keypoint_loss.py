"""Auxiliary regression of the next gripper-switch point (``cogvla.data.keypoints``).

Two sources (``TrainConfig.keypoint_source``):

- ``"vision"``: the point itself, centred on the data's mean, from the vision tokens as they
  enter the LLM. Neither the arm's state nor the LLM can help, so the encoders must locate
  the object.
- ``"actions"``: its offset from the hand, from the hidden states the action head reads.

Trained beside the action loss and dropped at export: the served model is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cogvla.config import CogVLAConfig
from cogvla.data.frame_cache import FrameCache
from cogvla.data.keypoints import KEYPOINT_SCALE, KEYPOINT_SOURCES, next_switch_points
from cogvla.modeling import CogVLAOutput

__all__ = ["KeypointHead", "keypoint_targets"]


class KeypointHead(nn.Module):
    """LayerNorm per token -> one Linear over all of them: a linear read-out of the source's tokens.

    Shapes: ``(B, N, D)`` tokens (``N`` = the model's vision tokens, or its
    ``chunk * action_dim`` action positions) -> ``(B, 3)``.
    """

    def __init__(self, source: str, config: CogVLAConfig) -> None:
        super().__init__()
        if source not in KEYPOINT_SOURCES:
            raise ValueError(f"keypoint source: expected one of {KEYPOINT_SOURCES}, got {source!r}")
        self.source = source
        num_tokens = config.num_vision_tokens if source == "vision" else config.num_action_tokens
        dim = config.llm.hidden_size
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(num_tokens * dim, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(tokens).flatten(1))

    def loss(self, out: CogVLAOutput, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 of the read-out of ``out``'s source tokens against ``target (B, 3)``."""
        prediction = self(out.vision_tokens if self.source == "vision" else out.action_hidden)
        if tuple(target.shape) != tuple(prediction.shape):
            raise ValueError(f"keypoint: expected shape {tuple(prediction.shape)}, got {tuple(target.shape)}")
        return (prediction - target.to(prediction.dtype)).abs().mean()


def keypoint_targets(frames: FrameCache, source: str) -> np.ndarray:
    """``(N, 3)`` targets in model units: each frame's next gripper-switch point, centred on
    the mean over all frames ("vision"), or its offset from the hand ("actions")."""
    hand = frames.proprio[:, :3]
    points = next_switch_points(hand, frames.actions[:, 6], frames.episode_starts, frames.episode_lengths)
    origin = points.mean(axis=0) if source == "vision" else hand
    return (points - origin) * np.float32(KEYPOINT_SCALE)
