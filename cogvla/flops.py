"""Analytic FLOPs and parameter accounting of a ``CogVLAConfig``, per stage and variant.

FLOPs are ``2 x MACs`` of every matmul and convolution the forward pass executes, plus
the attention score (``QK^T``) and value (``PV``) matmuls counted over the full
query x key rectangle each attention call computes (as ``torch.utils.flop_counter``
does; causal masking saves nothing in these kernels). Norms, activations, softmax,
RoPE and gathers are not counted. The counts mirror ``CogVLAModel.forward`` exactly:
ViTs run blocks ``0..L-2`` only, LFP layers process their compacted sequence, CAtten's
``split`` form attends ``prefix x prefix`` plus ``action block x all``.

One query = one observation of ``config.num_images`` images, the proprio token and a
prompt of ``prompt_tokens`` tokens (``DEFAULT_PROMPT_TOKENS`` ~ a LIBERO instruction in
the OpenVLA template).

Pure Python: importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cogvla.config import CogVLAConfig, ViTConfig

__all__ = ["DEFAULT_PROMPT_TOKENS", "FlopsReport", "count_flops", "count_params"]

# A LIBERO prompt in the OpenVLA template is ~20-35 Llama tokens; 20 keeps the four
# variants' totals comparable to the paper's Table 3 (the paper does not state its prompt).
DEFAULT_PROMPT_TOKENS = 20


@dataclass(frozen=True)
class FlopsReport:
    """FLOPs of one forward pass, by stage, and the token budget behind them."""

    preset: str
    variant: str
    prompt_tokens: int
    batch_size: int
    seq_len: int
    vision_tokens_in_llm: int
    kept_per_layer: list[int]
    stages: dict[str, int]
    detail: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.stages.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "variant": self.variant,
            "prompt_tokens": self.prompt_tokens,
            "batch_size": self.batch_size,
            "flops": self.total,
            "tflops": self.total / 1e12,
            "seq_len": self.seq_len,
            "vision_tokens_in_llm": self.vision_tokens_in_llm,
            "vision_token_layers": sum(self.kept_per_layer),
            "kept_per_layer": list(self.kept_per_layer),
            "stages": {name: value / 1e12 for name, value in self.stages.items()},
            "detail_tflops": {name: value / 1e12 for name, value in self.detail.items()},
        }


def _linear(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def _attention(queries: int, keys: int, width: int) -> int:
    # scores and values, summed over heads: 2 matmuls x 2 FLOPs x Sq x Sk x (H * head_dim)
    return 4 * queries * keys * width


def _vit_flops(vit: ViTConfig, config: CogVLAConfig, batch: int) -> int:
    """One stream over every image of the batch (blocks 0..L-2), FiLM linears included."""
    patches = (config.image_size // vit.patch_size) ** 2
    tokens = vit.num_prefix_tokens + patches + (config.num_aggregation_tokens if config.efa else 0)
    width = vit.hidden_size
    blocks = vit.feature_layer + 1
    per_image = _linear(patches, 3 * vit.patch_size**2, width) + blocks * (
        _linear(tokens, width, 4 * width)
        + _attention(tokens, tokens, width)
        + _linear(tokens, width, vit.mlp_dim) * 2
    )
    film = blocks * 2 * _linear(1, config.llm.hidden_size, width) if config.efa else 0
    return batch * (config.num_images * per_image + film)


def _llm_flops(config: CogVLAConfig, prompt_tokens: int, batch: int) -> dict[str, int]:
    llm = config.llm
    dim, kv_dim = llm.hidden_size, llm.kv_heads * llm.head_dim
    n_vis = config.num_vision_tokens
    block = config.num_action_tokens + 1
    seq = 1 + n_vis + 1 + prompt_tokens + block
    out = {"llm_projections": 0, "llm_mlp": 0, "llm_attention": 0, "llm_routers": 0}
    for ratio, kept in zip(config.keep_ratios(), config.kept_vision_tokens(), strict=True):
        tokens = seq - n_vis + kept
        if ratio is not None:
            film = 2 * (
                _linear(1, dim, config.router_film_hidden) + _linear(1, config.router_film_hidden, dim)
            )
            out["llm_routers"] += film + _linear(seq, dim, 2)
        out["llm_projections"] += _linear(tokens, dim, 2 * dim + 2 * kv_dim)
        out["llm_mlp"] += 3 * _linear(tokens, dim, llm.intermediate_size)
        if config.catten and config.attention_impl == "split":
            prefix = tokens - block
            out["llm_attention"] += _attention(prefix, prefix, dim) + _attention(block, tokens, dim)
        else:
            out["llm_attention"] += _attention(tokens, tokens, dim)
    return {name: batch * value for name, value in out.items()}


def count_flops(
    config: CogVLAConfig, *, prompt_tokens: int = DEFAULT_PROMPT_TOKENS, batch_size: int = 1
) -> FlopsReport:
    """Analytic FLOPs of ``CogVLAModel(config)`` on ``batch_size`` unpadded queries."""
    if prompt_tokens < 1:
        raise ValueError(f"prompt_tokens: expected >= 1, got {prompt_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    dim = config.llm.hidden_size
    per_image = config.vision_tokens_per_image
    images = batch_size * config.num_images
    if config.efa:
        dino_dim, siglip_dim = config.dino.hidden_size, config.siglip.hidden_size
        projector = images * (
            _linear(per_image, dino_dim, dim)
            + _linear(per_image, siglip_dim, dim)
            + 2 * _linear(per_image, dim, dim)
        ) + batch_size * (_linear(1, dim, dim) + _linear(1, dim, 2))
    else:
        fused = config.dino.hidden_size + config.siglip.hidden_size
        projector = images * (
            _linear(per_image, fused, 4 * fused)
            + _linear(per_image, 4 * fused, dim)
            + _linear(per_image, dim, dim)
        )
    hidden = config.head_hidden
    head_rows = batch_size * config.chunk_size
    action_head = (
        _linear(head_rows, config.action_dim * dim, hidden)
        + config.action_head_blocks * _linear(head_rows, hidden, hidden)
        + _linear(head_rows, hidden, config.action_dim)
    )
    llm = _llm_flops(config, prompt_tokens, batch_size)
    dino = _vit_flops(config.dino, config, batch_size)
    siglip = _vit_flops(config.siglip, config, batch_size)
    stages = {
        "vision_encoders": dino + siglip,
        "projector_gate": projector,
        "proprio": _linear(batch_size, config.proprio_dim, dim) + _linear(batch_size, dim, dim),
        "llm": sum(llm.values()),
        "action_head": action_head,
    }
    return FlopsReport(
        preset=config.name,
        variant=config.variant,
        prompt_tokens=prompt_tokens,
        batch_size=batch_size,
        seq_len=1 + config.num_vision_tokens + 1 + prompt_tokens + config.num_action_tokens + 1,
        vision_tokens_in_llm=config.num_vision_tokens,
        kept_per_layer=config.kept_vision_tokens(),
        stages=stages,
        detail={"vision_dino": dino, "vision_siglip": siglip, **llm},
    )


def _vit_params(vit: ViTConfig, image_size: int) -> int:
    width, mlp = vit.hidden_size, vit.mlp_dim
    patches = (image_size // vit.patch_size) ** 2
    conv = 3 * vit.patch_size**2 * width + width
    layer = 2 * 2 * width + 4 * (width * width + width) + width * mlp + mlp + mlp * width + width
    if vit.kind == "dinov2":
        # CLS, mask token, CLS+patch position table, registers; two layer-scales per block
        embeddings = conv + 2 * width + (patches + 1) * width + vit.num_register_tokens * width
        layer += 2 * width
    else:
        embeddings = conv + patches * width
    return embeddings + vit.num_layers * layer + 2 * width


def count_params(config: CogVLAConfig) -> dict[str, int]:
    """Parameters of ``CogVLAModel(config)`` by component, with ``base``/``new``/``total`` sums.

    ``base`` = the parts an OpenVLA checkpoint provides (both ViTs, the Llama decoder and,
    without EFA, the fused projector); ``new`` = everything CogVLA/OFT adds.
    """
    dim, llm = config.llm.hidden_size, config.llm
    kv_dim = llm.kv_heads * llm.head_dim
    dino_dim, siglip_dim = config.dino.hidden_size, config.siglip.hidden_size
    counts = {
        "vision_dino": _vit_params(config.dino, config.image_size),
        "vision_siglip": _vit_params(config.siglip, config.image_size),
    }
    llm_layer = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * llm.intermediate_size + 2 * dim
    counts["llm"] = llm.vocab_size * dim + llm.num_layers * llm_layer + dim
    if config.efa:
        film = sum(
            vit.num_layers * 2 * (dim * vit.hidden_size + vit.hidden_size)
            for vit in (config.dino, config.siglip)
        )
        counts["vision_film"] = film
        counts["aggregation_tokens"] = config.num_aggregation_tokens * (dino_dim + siglip_dim)
        counts["projector_gate"] = sum(d * dim + dim + dim * dim + dim for d in (dino_dim, siglip_dim)) + (
            dim * dim + dim + 2 * dim + 2
        )
    else:
        fused = dino_dim + siglip_dim
        counts["fused_projector"] = fused * 4 * fused + 4 * fused + 4 * fused * dim + dim + dim * dim + dim
    film_hidden = config.router_film_hidden
    router = 2 * (dim * film_hidden + film_hidden + film_hidden * dim + dim) + 2 * dim + 2
    counts["lfp_routers"] = router * sum(ratio is not None for ratio in config.keep_ratios())
    counts["proprio_projector"] = config.proprio_dim * dim + dim + dim * dim + dim
    hidden, head_in = config.head_hidden, config.action_dim * dim
    counts["action_head"] = (
        2 * head_in
        + head_in * hidden
        + hidden
        + config.action_head_blocks * (2 * hidden + hidden * hidden + hidden)
        + 2 * hidden
        + hidden * config.action_dim
        + config.action_dim
    )
    base_keys = {"vision_dino", "vision_siglip", "llm", "fused_projector"}
    counts["base"] = sum(value for key, value in counts.items() if key in base_keys)
    counts["new"] = sum(value for key, value in counts.items() if key not in base_keys and key != "base")
    counts["total"] = counts["base"] + counts["new"]
    return counts
