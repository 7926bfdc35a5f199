"""One vision encoder stream: a ``transformers`` ViT driven block by block, with optional
Encoder-FiLM and learnable aggregation tokens (EFA-Routing step 1).

Reference: CogVLA ``prismatic/models/vit_wrapper_reg.py`` and ``film_vit_wrapper.py``.
The HF model (``Dinov2WithRegistersModel`` or ``SiglipVisionModel``) is built whole from
its own config, so the stream's state-dict keys under ``vit.`` are the HF keys; this
module only calls its embeddings and per-block sub-modules in its own loop, so FiLM can
sit between the attention and MLP residuals.

Per image and block::

    x = x + attn(norm1(x))            # (DINOv2: times layer-scale 1)
    x = x * (1 + gamma(e)) + beta(e)  # FiLM, every token, only when conditioned
    x = x + mlp(norm2(x))             # (DINOv2: times layer-scale 2)

Features are the output of block L-2 (OpenVLA's ``get_intermediate_layers(n={L-2})``,
before the final norm). The last block and the final norm are kept as parameters so HF
checkpoints load key for key, but are never run: their outputs would be discarded.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from cogvla.config import ViTConfig
from cogvla.film import FiLM

__all__ = ["ViTStream", "build_hf_vit"]


def build_hf_vit(config: ViTConfig, image_size: int) -> nn.Module:
    """The ``transformers`` vision model with ``config``'s dimensions (random weights, SDPA attention)."""
    if config.kind == "dinov2":
        hf_config = Dinov2WithRegistersConfig(
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            hidden_act="gelu",
            layer_norm_eps=config.layer_norm_eps,
            image_size=image_size,
            patch_size=config.patch_size,
            num_register_tokens=config.num_register_tokens,
            qkv_bias=True,
            layerscale_value=1.0,
            attn_implementation="sdpa",
        )
        return Dinov2WithRegistersModel(hf_config)
    hf_config = SiglipVisionConfig(
        hidden_size=config.hidden_size,
        intermediate_size=config.mlp_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        image_size=image_size,
        patch_size=config.patch_size,
        layer_norm_eps=config.layer_norm_eps,
        # exact GELU: timm 0.9 (which OpenVLA trained with) does not use the tanh approximation
        hidden_act="gelu",
        vision_use_head=False,
        attn_implementation="sdpa",
    )
    return SiglipVisionModel(hf_config)


class ViTStream(nn.Module):
    """A ViT over a batch of camera images, returning aggregation tokens or patch tokens.

    Args:
        config: the encoder's dimensions.
        image_size: square input side in pixels.
        cond_dim: width of the FiLM condition (the LLM width); None disables FiLM.
        num_aggregation_tokens: learnable tokens appended after the position embedding
            (no position embedding of their own); None returns the patch tokens instead.

    Shapes: ``images (B, n, 3, H, W)`` in [0, 1], ``cond (B, cond_dim)`` or None
    -> ``(B, n, N, D_vit)`` with ``N`` = aggregation tokens or patches.
    """

    def __init__(
        self,
        config: ViTConfig,
        image_size: int,
        *,
        cond_dim: int | None,
        num_aggregation_tokens: int | None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_patches = (image_size // config.patch_size) ** 2
        self.vit = build_hf_vit(config, image_size)
        self.film = (
            nn.ModuleList(FiLM(cond_dim, config.hidden_size) for _ in range(config.num_layers))
            if cond_dim is not None
            else None
        )
        self.aggregation_tokens = (
            nn.Parameter(torch.randn(1, num_aggregation_tokens, config.hidden_size))
            if num_aggregation_tokens is not None
            else None
        )

    @property
    def blocks(self) -> nn.ModuleList:
        return self.vit.encoder.layer if self.config.kind == "dinov2" else self.vit.encoder.layers

    def _attention_branch(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "dinov2":
            return block.layer_scale1(block.attention(block.norm1(x))[0])
        return block.self_attn(block.layer_norm1(x))[0]

    def _mlp_branch(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "dinov2":
            return block.layer_scale2(block.mlp(block.norm2(x)))
        return block.mlp(block.layer_norm2(x))

    def forward(self, images: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        batch, n_images = images.shape[:2]
        mean = torch.tensor(self.config.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        pixels = (images.flatten(0, 1) - mean) / std  # (B*n, 3, H, W)
        x = self.vit.embeddings(pixels)  # (B*n, prefix + P, D)
        if self.aggregation_tokens is not None:
            x = torch.cat([x, self.aggregation_tokens.expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)
        for index in range(self.config.feature_layer + 1):
            block = self.blocks[index]
            x = x + self._attention_branch(block, x)
            if self.film is not None:
                # FiLM parameters are per sample; every camera image of a sample shares them
                x = self.film[index](x, cond, rows_per_sample=n_images)
            x = x + self._mlp_branch(block, x)
        if self.aggregation_tokens is not None:
            tokens = x[:, -self.aggregation_tokens.shape[1] :]
        else:
            prefix = self.config.num_prefix_tokens
            tokens = x[:, prefix : prefix + self.num_patches]
        return tokens.reshape(batch, n_images, tokens.shape[1], tokens.shape[2])
