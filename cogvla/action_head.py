"""L1-regression action head (MLPResNet) and the proprio projector.

Reference: OpenVLA-OFT ``prismatic/models/action_heads.py`` (``L1RegressionActionHead``,
``MLPResNet``) and ``projectors.py`` (``ProprioProjector``); weight names match them
(``model.layer_norm1``, ``model.fc1``, ``model.mlp_resnet_blocks.{i}.ffn.{0,1}``, ...).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["L1RegressionHead", "MLPResNet", "ProprioProjector"]


class MLPResNetBlock(nn.Module):
    """``x + ReLU(Linear(LayerNorm(x)))``. Shapes: ``(..., D)`` -> ``(..., D)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LN -> Linear -> ReLU -> residual blocks -> LN -> Linear. Shapes: ``(..., in)`` -> ``(..., out)``."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionHead(nn.Module):
    """Maps the hidden states of the action positions to an action chunk.

    The ``chunk * A`` hidden states are regrouped per time step, ``(B, chunk, A * D)``,
    so each step's ``A`` positions predict its ``A`` action dims together.

    Shapes: ``(B, chunk * A, D)`` -> ``(B, chunk, A)``.
    """

    def __init__(
        self, llm_dim: int, hidden_dim: int, chunk_size: int, action_dim: int, num_blocks: int
    ) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.action_dim = action_dim
        self.model = MLPResNet(num_blocks, action_dim * llm_dim, hidden_dim, action_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch = hidden.shape[0]
        return self.model(hidden.reshape(batch, self.chunk_size, -1))


class ProprioProjector(nn.Module):
    """Robot state to one LLM token: Linear -> GELU -> Linear. Shapes: ``(B, P)`` -> ``(B, D)``."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))
