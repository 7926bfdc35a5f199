"""A plain float64 reference of every CogVLA stage, for checking ``cogvla.modeling``.

Written from the technical digest of the paper and its code (EFA-Routing: instruction
vector, FiLM'd ViT blocks, aggregation tokens, stream gate; LFP-Routing: FiLM'd router,
top-k of the vision tokens, compacted positions, MLP scaled by the router probability,
pass-through of pruned tokens; CAtten; the action head's shifted read window), plus the
two documented choices of this runtime: pads are excluded from the instruction vector
and the router condition, and RoPE positions count real tokens only.

Clarity over speed: one sample at a time, explicit loops over tokens, heads and layers,
and weights read by name from a state dict. Nothing from ``cogvla`` is called, so a
wrong stage in the model cannot also be wrong here. A padded sample is computed without
its pads: pads must never change a real token's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cogvla.config import CogVLAConfig, ViTConfig

__all__ = ["SampleTrace", "reference_forward"]

Weights = dict[str, torch.Tensor]

# segment kinds of the LLM sequence [BOS][vision][proprio][prompt][actions][stop]
BOS, VISION, PROPRIO, PROMPT, ACTION, STOP = "bos", "vision", "proprio", "prompt", "action", "stop"


@dataclass
class SampleTrace:
    """The reference's intermediates for one sample (pads removed, so ``S`` is its real length).

    Attributes:
        instruction: ``(D,)`` mean input embedding over BOS, real prompt tokens and stop.
        dino, siglip: ``(n_images, N, D_vit)`` stream outputs (aggregation tokens or patches).
        gate: ``(2,)`` EFA weights [DINOv2, SigLIP], or None without EFA.
        vision: ``(N_vis, D)`` vision tokens entering the LLM.
        embeds: ``(S, D)`` the LLM input sequence.
        kinds: segment kind of each of the ``S`` positions.
        allowed: ``(S, S)`` bool, True where query row may attend key column (full sequence).
        layer_outputs: per LLM layer, ``(S, D)`` hidden states after it.
        kept: per LLM layer, the sorted positions it processed, or None on a dense layer.
        head_rows: ``(A, D)`` final-norm hidden states the action head reads.
        actions: ``(chunk, action_dim)``.
    """

    instruction: torch.Tensor
    dino: torch.Tensor
    siglip: torch.Tensor
    gate: torch.Tensor | None
    vision: torch.Tensor
    embeds: torch.Tensor
    kinds: list[str]
    allowed: torch.Tensor
    layer_outputs: list[torch.Tensor]
    kept: list[list[int] | None]
    head_rows: torch.Tensor
    actions: torch.Tensor


def reference_forward(
    weights: Weights,
    config: CogVLAConfig,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    proprio: torch.Tensor,
) -> list[SampleTrace]:
    """Run every sample of a ``CogVLAModel.forward`` batch through the reference, in float64."""
    w = {name: value.detach().double() for name, value in weights.items()}
    traces = []
    for b in range(input_ids.shape[0]):
        prompt = [int(t) for t, keep in zip(input_ids[b], attention_mask[b], strict=True) if keep]
        traces.append(_sample(w, config, pixel_values[b].double(), prompt, proprio[b].double()))
    return traces


def _sample(
    w: Weights, config: CogVLAConfig, images: torch.Tensor, prompt: list[int], proprio: torch.Tensor
) -> SampleTrace:
    llm = config.llm
    table = w["llm.embed_tokens.weight"]
    bos, stop = table[llm.bos_token_id], table[llm.eos_token_id]
    text = [table[t] for t in prompt]
    instruction = torch.stack([bos, *text, stop]).mean(dim=0)

    cond = instruction if config.efa else None
    n_agg = config.num_aggregation_tokens if config.efa else None
    dino = torch.stack([_vit(w, "dino", config.dino, image, cond, n_agg) for image in images])
    siglip = torch.stack([_vit(w, "siglip", config.siglip, image, cond, n_agg) for image in images])
    if config.efa:
        logits = _linear(
            w, "vision_projector.gate.2", _gelu(_linear(w, "vision_projector.gate.0", instruction))
        )
        gate = torch.softmax(logits, dim=0)
        dino_tokens = _stream_projector(w, "vision_projector.dino_proj", dino.flatten(0, 1))
        siglip_tokens = _stream_projector(w, "vision_projector.siglip_proj", siglip.flatten(0, 1))
        vision = gate[0] * dino_tokens + gate[1] * siglip_tokens
    else:
        gate = None
        fused = torch.cat([dino, siglip], dim=-1).flatten(0, 1)  # DINOv2 channels first
        hidden = _gelu(_linear(w, "vision_projector.fc2", _gelu(_linear(w, "vision_projector.fc1", fused))))
        vision = _linear(w, "vision_projector.fc3", hidden)

    proprio_token = _linear(w, "proprio_projector.fc2", _gelu(_linear(w, "proprio_projector.fc1", proprio)))
    n_act = config.chunk_size * config.action_dim
    rows = [bos, *vision, proprio_token, *text, *([torch.zeros_like(bos)] * n_act), stop]
    kinds = [BOS] + [VISION] * len(vision) + [PROPRIO] + [PROMPT] * len(text) + [ACTION] * n_act + [STOP]
    embeds = torch.stack(rows)

    x = embeds
    ratios = _keep_ratios(config)
    layer_outputs, kept = [], []
    for layer, ratio in enumerate(ratios):
        x, chosen = _decoder_layer(w, config, layer, ratio, x, kinds)
        layer_outputs.append(x)
        kept.append(chosen)
    final = _rms_norm(x, w["llm.norm.weight"], llm.rms_norm_eps)

    # the reference's index arithmetic: the window shifted one left of the action slots,
    # i.e. the last prompt token and action slots 0..A-2; the stop row is never read
    seq = len(kinds)
    head_rows = final[seq - n_act - 2 : seq - 2]
    steps = head_rows.reshape(config.chunk_size, config.action_dim * llm.hidden_size)
    actions = _mlp_resnet(w, config, steps)
    return SampleTrace(
        instruction=instruction,
        dino=dino,
        siglip=siglip,
        gate=gate,
        vision=vision,
        embeds=embeds,
        kinds=kinds,
        allowed=_allowed(kinds, catten=config.catten),
        layer_outputs=layer_outputs,
        kept=kept,
        head_rows=head_rows,
        actions=actions,
    )


# ---- vision: one ViT stream over one image ----


def _vit(
    w: Weights,
    stream: str,
    vit: ViTConfig,
    image: torch.Tensor,
    cond: torch.Tensor | None,
    n_agg: int | None,
) -> torch.Tensor:
    """``image (3, H, W)`` in [0, 1] -> ``(N, D_vit)``: aggregation tokens, or patch tokens."""
    mean = torch.tensor(vit.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(vit.std, dtype=torch.float64).view(3, 1, 1)
    pixels = (image - mean) / std
    p = vit.patch_size
    grid = pixels.shape[-1] // p
    emb = f"{stream}.vit.embeddings"
    if vit.kind == "dinov2":
        kernel, kernel_bias = (
            w[f"{emb}.patch_embeddings.projection.weight"],
            w[f"{emb}.patch_embeddings.projection.bias"],
        )
    else:
        kernel, kernel_bias = w[f"{emb}.patch_embedding.weight"], w[f"{emb}.patch_embedding.bias"]
    patches = []
    for row in range(grid):
        for col in range(grid):
            patch = pixels[:, row * p : (row + 1) * p, col * p : (col + 1) * p]
            patches.append(kernel.flatten(1) @ patch.flatten() + kernel_bias)
    if vit.kind == "dinov2":
        position = w[f"{emb}.position_embeddings"][0]
        cls = w[f"{emb}.cls_token"][0, 0] + position[0]
        tokens = [cls, *w[f"{emb}.register_tokens"][0], *(t + position[1 + i] for i, t in enumerate(patches))]
    else:
        position = w[f"{emb}.position_embedding.weight"]
        tokens = [t + position[i] for i, t in enumerate(patches)]
    if n_agg is not None:
        # appended after the position embedding: they carry no position of their own
        tokens += list(w[f"{stream}.aggregation_tokens"][0])
    x = torch.stack(tokens)

    eps = vit.layer_norm_eps
    for index in range(vit.num_layers - 1):  # through block L-2; the last block is not used
        if vit.kind == "dinov2":
            block = f"{stream}.vit.encoder.layer.{index}"
            names = ("norm1", "attention", "o_proj", "norm2")
        else:
            block = f"{stream}.vit.encoder.layers.{index}"
            names = ("layer_norm1", "self_attn", "out_proj", "layer_norm2")
        norm1, attn, norm2 = (f"{block}.{name}" for name in (names[0], names[1], names[3]))
        out = f"{attn}.{names[2]}"
        attended = _vit_attention(w, attn, out, _layer_norm(w, norm1, x, eps), vit.num_heads)
        if vit.kind == "dinov2":
            attended = attended * w[f"{block}.layer_scale1.lambda1"]
        x = x + attended
        if cond is not None:
            film = f"{stream}.film.{index}"
            gamma, beta = _linear(w, f"{film}.scale", cond), _linear(w, f"{film}.shift", cond)
            x = x * (1 + gamma) + beta
        mlp = _linear(
            w, f"{block}.mlp.fc2", _gelu(_linear(w, f"{block}.mlp.fc1", _layer_norm(w, norm2, x, eps)))
        )
        if vit.kind == "dinov2":
            mlp = mlp * w[f"{block}.layer_scale2.lambda1"]
        x = x + mlp
    if n_agg is not None:
        return x[-n_agg:]
    prefix = vit.num_prefix_tokens
    return x[prefix : prefix + grid * grid]


def _vit_attention(w: Weights, attn: str, out: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Bidirectional multi-head self-attention with biases: ``(N, D)`` -> ``(N, D)``."""
    q, k, v = (_linear(w, f"{attn}.{name}", x) for name in ("q_proj", "k_proj", "v_proj"))
    d = x.shape[-1] // heads
    outputs = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(d)
        outputs.append(torch.softmax(scores, dim=-1) @ v[:, cols])
    return _linear(w, out, torch.cat(outputs, dim=-1))


def _stream_projector(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    return _linear(w, f"{name}.fc2", _gelu(_linear(w, f"{name}.fc1", x)))


# ---- the LLM ----


def _keep_ratios(config: CogVLAConfig) -> list[float | None]:
    """Shifted-cosine schedule: ``r_i = max(cos(i*pi/(L-1))/2 + avg, min)``, routed iff ``r_i <= max``."""
    layers = config.llm.num_layers
    if not config.lfp:
        return [None] * layers
    schedule = config.lfp_schedule
    ratios: list[float | None] = []
    for i in range(layers):
        r = max(math.cos(i * math.pi / (layers - 1)) / 2 + schedule.average, schedule.min_ratio)
        ratios.append(r if r <= schedule.max_ratio else None)
    return ratios


def _decoder_layer(
    w: Weights, config: CogVLAConfig, layer: int, ratio: float | None, x: torch.Tensor, kinds: list[str]
) -> tuple[torch.Tensor, list[int] | None]:
    """One Llama layer over ``x (S, D)``; a routed layer processes only its kept positions."""
    prefix = f"llm.layers.{layer}"
    seq = len(kinds)
    if ratio is None:
        return _llama_block(w, config, prefix, x, kinds, [1.0] * seq), None

    eps = config.llm.rms_norm_eps
    normed = _rms_norm(x, w[f"{prefix}.input_layernorm.weight"], eps)
    # the action intent: mean over the proprio token and the prompt tokens
    intent = torch.stack([normed[i] for i in range(seq) if kinds[i] in (PROPRIO, PROMPT)]).mean(dim=0)
    router = f"{prefix}.router"
    gamma = _linear(w, f"{router}.scale.2", _gelu(_linear(w, f"{router}.scale.0", intent)))
    beta = _linear(w, f"{router}.shift.2", _gelu(_linear(w, f"{router}.shift.0", intent)))
    probs = []
    for i in range(seq):
        # FiLM touches the vision rows only, and only for scoring
        scored = normed[i] * (1 + gamma) + beta if kinds[i] == VISION else normed[i]
        probs.append(float(torch.softmax(_linear(w, f"{router}.router", scored), dim=0)[1]))
    vision = [i for i in range(seq) if kinds[i] == VISION]
    keep = int(len(vision) * ratio)
    best = sorted(vision, key=lambda i: probs[i], reverse=True)[:keep]
    chosen = sorted(set(best) | {i for i in range(seq) if kinds[i] != VISION})

    out = x.clone()
    out[chosen] = _llama_block(
        w, config, prefix, x[chosen], [kinds[i] for i in chosen], [probs[i] for i in chosen]
    )
    return out, chosen


def _llama_block(
    w: Weights, config: CogVLAConfig, prefix: str, x: torch.Tensor, kinds: list[str], mlp_scale: list[float]
) -> torch.Tensor:
    """Pre-norm attention + SiLU MLP over ``x (S, D)``, positions numbered 0..S-1 in order.

    ``mlp_scale[i]`` multiplies position ``i``'s MLP output (the router probability on a
    routed layer, 1 on a dense one).
    """
    llm = config.llm
    eps = llm.rms_norm_eps
    seq = x.shape[0]
    heads, kv_heads, d = llm.num_heads, llm.kv_heads, llm.head_dim
    h = _rms_norm(x, w[f"{prefix}.input_layernorm.weight"], eps)
    q = _rope((h @ w[f"{prefix}.self_attn.q_proj.weight"].T).view(seq, heads, d), llm.rope_theta)
    k = _rope((h @ w[f"{prefix}.self_attn.k_proj.weight"].T).view(seq, kv_heads, d), llm.rope_theta)
    v = (h @ w[f"{prefix}.self_attn.v_proj.weight"].T).view(seq, kv_heads, d)
    allowed = _allowed(kinds, catten=config.catten)
    outputs = []
    for head in range(heads):
        kv = head // (heads // kv_heads)  # grouped-query: consecutive query heads share a KV head
        scores = (q[:, head] @ k[:, kv].T / math.sqrt(d)).masked_fill(~allowed, -math.inf)
        outputs.append(torch.softmax(scores, dim=-1) @ v[:, kv])
    x = x + torch.cat(outputs, dim=-1) @ w[f"{prefix}.self_attn.o_proj.weight"].T
    h = _rms_norm(x, w[f"{prefix}.post_attention_layernorm.weight"], eps)
    gate = h @ w[f"{prefix}.mlp.gate_proj.weight"].T
    up = h @ w[f"{prefix}.mlp.up_proj.weight"].T
    m = (gate * torch.sigmoid(gate) * up) @ w[f"{prefix}.mlp.down_proj.weight"].T
    return x + m * torch.tensor(mlp_scale, dtype=x.dtype)[:, None]


def _allowed(kinds: list[str], *, catten: bool) -> torch.Tensor:
    """CAtten: the prefix is causal, action slots and stop see every position; else all-to-all."""
    seq = len(kinds)
    allowed = torch.zeros(seq, seq, dtype=torch.bool)
    for i in range(seq):
        for j in range(seq):
            allowed[i, j] = not catten or j <= i or kinds[i] in (ACTION, STOP)
    return allowed


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Llama rotary embedding of ``x (S, H, d)``; position ``s`` is the row index."""
    seq, _, d = x.shape
    half = d // 2
    out = torch.empty_like(x)
    for s in range(seq):
        for i in range(half):
            angle = s / theta ** (2 * i / d)
            c, sn = math.cos(angle), math.sin(angle)
            # the pair (i, i + d/2) is rotated by the angle
            out[s, :, i] = x[s, :, i] * c - x[s, :, i + half] * sn
            out[s, :, i + half] = x[s, :, i + half] * c + x[s, :, i] * sn
    return out


# ---- the action head ----


def _mlp_resnet(w: Weights, config: CogVLAConfig, steps: torch.Tensor) -> torch.Tensor:
    """``(chunk, A * D)`` -> ``(chunk, A)``: LN, Linear, ReLU, residual blocks, LN, Linear."""
    head = "action_head.model"
    eps = 1e-5  # nn.LayerNorm's default, as the OpenVLA-OFT head uses
    x = torch.relu(_linear(w, f"{head}.fc1", _layer_norm(w, f"{head}.layer_norm1", steps, eps)))
    for block in range(config.action_head_blocks):
        name = f"{head}.mlp_resnet_blocks.{block}.ffn"
        x = x + torch.relu(_linear(w, f"{name}.1", _layer_norm(w, f"{name}.0", x, eps)))
    return _linear(w, f"{head}.fc2", _layer_norm(w, f"{head}.layer_norm2", x, eps))


# ---- primitives ----


def _linear(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _layer_norm(w: Weights, name: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    centered = x - x.mean(dim=-1, keepdim=True)
    variance = (centered**2).mean(dim=-1, keepdim=True)
    return centered / torch.sqrt(variance + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x**2).mean(dim=-1, keepdim=True) + eps) * weight
