"""LFP-Routing: instruction-conditioned pruning of vision tokens inside LLM layers.

Reference: CogVLA ``prismatic/models/modeling_llama.py`` (``FiLMedTokenRouter``,
``LlamaDecoderLFPLayer``). On a routed layer (see ``LFPConfig.keep_ratios``):

1. ``h = input_layernorm(x)``; the condition ``t`` is the mean of ``h`` over the proprio
   and prompt positions (pads excluded, see ``masked_mean``).
2. The vision positions of ``h`` are FiLM-modulated by ``t`` (for scoring only) and a
   Linear(D, 2) gives ``p = softmax(logits)[..., 1]`` for every position.
3. The top-k vision tokens (``k = int(N_vis * r_i)``) plus every non-vision token go
   through the layer, in their original order, with compacted RoPE positions; the MLP
   output of each kept token is scaled by its ``p`` (the router's only gradient path).
4. The results are scattered back; unselected tokens leave the layer exactly as they
   entered it and are scored again by the next layer.
"""

from __future__ import annotations

import torch
from torch import nn

from cogvla.film import FiLM

__all__ = ["TokenRouter", "gather_tokens", "masked_mean", "scatter_tokens", "select_tokens"]


class TokenRouter(FiLM):
    """FiLM'd scorer of vision tokens (weight names as the reference: ``scale``, ``shift``, ``router``).

    Shapes: ``normed (B, S, D)``, ``cond (B, D)`` -> ``probs (B, S)`` in (0, 1).
    """

    def __init__(self, dim: int, film_hidden: int) -> None:
        super().__init__(dim, dim, hidden=film_hidden)
        self.router = nn.Linear(dim, 2)

    def forward(  # type: ignore[override]
        self, normed: torch.Tensor, cond: torch.Tensor, vision: slice
    ) -> torch.Tensor:
        modulated = super().forward(normed[:, vision], cond)
        scored = torch.cat([normed[:, : vision.start], modulated, normed[:, vision.stop :]], dim=1)
        return torch.softmax(self.router(scored), dim=-1)[..., 1]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x (B, S, D)`` over the positions where ``mask (B, S)`` is True -> ``(B, D)``."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def select_tokens(probs: torch.Tensor, vision: slice, keep: int) -> torch.Tensor:
    """Sorted indices ``(B, S - N_vis + keep)`` of the tokens a routed layer processes.

    Every non-vision position is kept; of the vision positions in ``vision`` only the
    ``keep`` with the highest router probability.
    """
    batch, seq = probs.shape
    top = probs[:, vision].topk(keep, dim=1).indices.sort(dim=1).values + vision.start
    positions = torch.arange(seq, device=probs.device)
    before = positions[: vision.start].expand(batch, -1)
    after = positions[vision.stop :].expand(batch, -1)
    return torch.cat([before, top, after], dim=1)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index (B, K)`` of ``x (B, S, ...)`` -> ``(B, K, ...)``."""
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, expanded)


def scatter_tokens(x: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x`` with rows ``index (B, K)`` replaced by ``rows (B, K, D)``; other rows are untouched."""
    return x.scatter(1, index.unsqueeze(-1).expand_as(rows), rows)
