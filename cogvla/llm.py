"""The Llama decoder with CAtten attention and LFP-routed layers.

Built from ``transformers`` Llama pieces (``LlamaAttention`` projections, ``LlamaMLP``,
``LlamaRMSNorm``) so weight names follow HF (``layers.{i}.self_attn.q_proj`` ...), but
driven by this module's own loop and attention call: the CAtten pattern and the
LFP gather/scatter need control that ``LlamaModel.forward`` does not offer.

Positions: ``cumsum(valid) - 1`` over the (possibly compacted) sequence, so pads never
shift the RoPE position of a real token and routed layers renumber their kept tokens
``0..kept-1`` in order (reference: ``position_ids = arange(kept_length)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaMLP,
    LlamaRMSNorm,
    apply_rotary_pos_emb,
)

from cogvla.catten import attend
from cogvla.config import LLMConfig
from cogvla.lfp import TokenRouter, gather_tokens, masked_mean, scatter_tokens, select_tokens

__all__ = [
    "DecoderLayer",
    "LayerInputs",
    "LlamaBackbone",
    "SequenceLayout",
    "hf_llama_config",
    "positions_from_valid",
    "rotary_cos_sin",
]


@dataclass(frozen=True)
class SequenceLayout:
    """Where each segment sits in ``[BOS][vision][proprio][prompt][actions][stop]``."""

    num_vision: int
    # proprio + prompt: the LFP router's condition
    cond_start: int
    cond_end: int
    # actions + stop, at the very end
    num_action_block: int
    vision_start: int = 1
    # whether any position is a pad; True is always correct, False lets attention skip the
    # key mask. A Python bool, so no layer has to read the mask back from the device.
    padded: bool = True

    @property
    def vision(self) -> slice:
        return slice(self.vision_start, self.vision_start + self.num_vision)


@dataclass
class LayerInputs:
    """What every decoder layer needs besides the hidden states (built by ``LlamaBackbone.prepare``)."""

    valid: torch.Tensor  # (B, S) bool, False at pads
    cos_sin: tuple[torch.Tensor, torch.Tensor]  # RoPE tables, each (B, S, head_dim)
    cond_mask: torch.Tensor  # (B, S) bool, the real proprio + prompt positions
    inv_freq: torch.Tensor  # (head_dim / 2,), for the compacted positions of routed layers
    layout: SequenceLayout


def hf_llama_config(config: LLMConfig) -> LlamaConfig:
    """The ``transformers`` config matching ``config`` (Llama-2 style: SiLU MLP, no biases)."""
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.kv_heads,
        hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


class DecoderLayer(nn.Module):
    """One pre-norm Llama block; LFP-routed when ``keep_ratio`` is set.

    Shapes: ``x (B, S, D)`` -> ``(B, S, D)``, plus the kept indices ``(B, K)`` of a routed layer.
    """

    def __init__(
        self,
        hf_config: LlamaConfig,
        layer_idx: int,
        *,
        keep_ratio: float | None,
        router_film_hidden: int,
        catten: bool,
        attention_impl: str,
    ) -> None:
        super().__init__()
        dim = hf_config.hidden_size
        self.self_attn = LlamaAttention(hf_config, layer_idx)
        self.mlp = LlamaMLP(hf_config)
        self.input_layernorm = LlamaRMSNorm(dim, eps=hf_config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(dim, eps=hf_config.rms_norm_eps)
        self.keep_ratio = keep_ratio
        self.router = TokenRouter(dim, router_film_hidden) if keep_ratio is not None else None
        self.catten = catten
        self.attention_impl = attention_impl

    def _block(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        layout: SequenceLayout,
        mlp_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attn = self.self_attn
        h = self.input_layernorm(x)
        shape = (*x.shape[:2], -1, attn.head_dim)
        q = attn.q_proj(h).view(shape).transpose(1, 2)  # (B, H, S, d)
        k = attn.k_proj(h).view(shape).transpose(1, 2)  # (B, H_kv, S, d)
        v = attn.v_proj(h).view(shape).transpose(1, 2)
        # RoPE in the projections' dtype, so bf16 autocast keeps q/k/v in one dtype (flash-attn needs it)
        q, k = apply_rotary_pos_emb(q, k, *(table.to(q.dtype) for table in cos_sin))
        o = attend(
            q,
            k,
            v,
            valid,
            layout.num_action_block,
            catten=self.catten,
            impl=self.attention_impl,
            padded=layout.padded,
        )
        x = x + attn.o_proj(o.transpose(1, 2).flatten(2))
        m = self.mlp(self.post_attention_layernorm(x))
        if mlp_scale is not None:
            m = m * mlp_scale.unsqueeze(-1).to(m.dtype)
        return x + m

    def forward(self, x: torch.Tensor, inputs: LayerInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        layout = inputs.layout
        if self.router is None:
            return self._block(x, inputs.valid, inputs.cos_sin, layout), None
        normed = self.input_layernorm(x)
        cond = masked_mean(normed, inputs.cond_mask)
        probs = self.router(normed, cond, layout.vision)
        index = select_tokens(probs, layout.vision, int(layout.num_vision * self.keep_ratio))
        valid = torch.gather(inputs.valid, 1, index)
        kept = self._block(
            gather_tokens(x, index),
            valid,
            rotary_cos_sin(positions_from_valid(valid), inputs.inv_freq, x.dtype),
            layout,
            mlp_scale=torch.gather(probs, 1, index),
        )
        return scatter_tokens(x, index, kept), index


class LlamaBackbone(nn.Module):
    """Token embedding table, decoder layers and final RMSNorm.

    ``keep_ratios[i]`` is layer ``i``'s LFP keep ratio, or None for a dense layer.

    Shapes: ``embeds (B, S, D)``, ``valid (B, S)`` bool -> ``(B, S, D)`` after the final norm.
    """

    def __init__(
        self,
        config: LLMConfig,
        keep_ratios: list[float | None],
        *,
        router_film_hidden: int,
        catten: bool,
        attention_impl: str,
    ) -> None:
        super().__init__()
        self.config = config
        hf_config = hf_llama_config(config)
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.layers = nn.ModuleList(
            DecoderLayer(
                hf_config,
                i,
                keep_ratio=keep_ratios[i],
                router_film_hidden=router_film_hidden,
                catten=catten,
                attention_impl=attention_impl,
            )
            for i in range(config.num_layers)
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """RoPE inverse frequencies ``(head_dim / 2,)``, computed on the fly (no buffer to load)."""
        dim = self.config.head_dim
        exponent = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
        return 1.0 / (self.config.rope_theta**exponent)

    def prepare(self, embeds: torch.Tensor, valid: torch.Tensor, layout: SequenceLayout) -> LayerInputs:
        """Masks and RoPE tables shared by every layer for ``embeds (B, S, D)`` and ``valid (B, S)``."""
        positions = torch.arange(embeds.shape[1], device=embeds.device)
        cond_segment = (positions >= layout.cond_start) & (positions < layout.cond_end)
        inv_freq = self.inv_freq(embeds.device)
        return LayerInputs(
            valid=valid,
            cos_sin=rotary_cos_sin(positions_from_valid(valid), inv_freq, embeds.dtype),
            cond_mask=valid & cond_segment,
            inv_freq=inv_freq,
            layout=layout,
        )

    def forward(
        self, embeds: torch.Tensor, valid: torch.Tensor, layout: SequenceLayout
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Final hidden states and, per layer, the kept token indices (None on dense layers)."""
        inputs = self.prepare(embeds, valid, layout)
        x = embeds
        kept: list[torch.Tensor | None] = []
        for layer in self.layers:
            x, index = layer(x, inputs)
            kept.append(index)
        return self.norm(x), kept


def positions_from_valid(valid: torch.Tensor) -> torch.Tensor:
    """RoPE positions ``(B, S)``: real tokens numbered 0, 1, ... in order; pads reuse a neighbour's."""
    return (valid.long().cumsum(dim=1) - 1).clamp(min=0)


def rotary_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama RoPE tables ``(B, S, head_dim)`` for integer ``positions (B, S)``."""
    freqs = positions.unsqueeze(-1).float() * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)
