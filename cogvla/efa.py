"""Vision-to-LLM projection: EFA-Routing step 2 (per-stream projectors + instruction gate)
and the OpenVLA-OFT fused projector used when EFA is off.

Reference: CogVLA ``prismatic/models/router.py`` (``MoEAggregator``) and
``modeling_prismatic.py`` (``featurizer_proj``, ``fused_featurizer_proj``,
``aggregation_router``); OpenVLA ``PrismaticProjector`` for the fused path.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AggregationRouter", "FusedPatchProjector", "StreamProjector"]


class StreamProjector(nn.Module):
    """Two-layer GELU MLP from one encoder's width to the LLM width.

    Shapes: ``(..., D_vit)`` -> ``(..., D_llm)``.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AggregationRouter(nn.Module):
    """Mix the DINOv2 and SigLIP aggregation streams with an instruction-conditioned gate.

    ``alpha = softmax(MLP(e))`` is one weight per stream and sample, shared by every
    image and token: ``v = alpha_0 * proj_dino(v_dino) + alpha_1 * proj_siglip(v_siglip)``.

    Shapes: ``dino (B, n, N, D_dino)``, ``siglip (B, n, N, D_siglip)``, ``instruction (B, D)``
    -> ``tokens (B, n*N, D)``, ``gate (B, 2)``.
    """

    def __init__(self, dino_dim: int, siglip_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.dino_proj = StreamProjector(dino_dim, llm_dim)
        self.siglip_proj = StreamProjector(siglip_dim, llm_dim)
        self.gate = nn.Sequential(nn.Linear(llm_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, 2))

    def forward(
        self, dino: torch.Tensor, siglip: torch.Tensor, instruction: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gate = torch.softmax(self.gate(instruction), dim=-1)  # (B, 2)
        v_dino = self.dino_proj(dino).flatten(1, 2)  # (B, n*N, D)
        v_siglip = self.siglip_proj(siglip).flatten(1, 2)
        tokens = gate[:, 0, None, None] * v_dino + gate[:, 1, None, None] * v_siglip
        return tokens, gate

    @torch.no_grad()
    def pin_stream(self, stream: str, margin: float = 10.0) -> None:
        """Raise one stream's gate logit by ``margin`` for every instruction (weight ~1 - 2e-5 at 10).

        A small model trained from scratch can grow a large sample-independent component in
        one stream's tokens; through the gate's mix it then swamps the other stream, and the
        LLM, whose RMSNorm rescales each token, sees images as a few per cent of a constant
        vector. Pinning the gate hands the LLM the other stream whole. The softmax saturates,
        so the pin also holds through training.
        """
        streams = ("dino", "siglip")
        if stream not in streams:
            raise ValueError(f"pin_stream: expected one of {streams}, got {stream!r}")
        self.gate[-1].bias[streams.index(stream)] += margin


class FusedPatchProjector(nn.Module):
    """OpenVLA-OFT projector: channel-concatenated DINOv2||SigLIP patches, 3-layer GELU MLP.

    Widths follow OpenVLA: ``C -> 4C -> D -> D`` with ``C = D_dino + D_siglip``
    (7B: 2176 -> 8704 -> 4096 -> 4096).

    Shapes: ``dino (B, n, P, D_dino)``, ``siglip (B, n, P, D_siglip)`` -> ``(B, n*P, D)``.
    """

    def __init__(self, dino_dim: int, siglip_dim: int, llm_dim: int) -> None:
        super().__init__()
        in_dim = dino_dim + siglip_dim
        self.fc1 = nn.Linear(in_dim, 4 * in_dim)
        self.fc2 = nn.Linear(4 * in_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, dino: torch.Tensor, siglip: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([dino, siglip], dim=-1).flatten(1, 2)  # DINOv2 channels first, as in OpenVLA
        return self.fc3(self.act(self.fc2(self.act(self.fc1(fused)))))
