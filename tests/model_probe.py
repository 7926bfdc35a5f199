"""Shared helpers of the model reference and property tests: a small config, weights under
which every branch of every stage matters, and the model's intermediates read by hooks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cogvla.config import SIGLIP_MEAN, SIGLIP_STD, VARIANTS, CogVLAConfig, LLMConfig, ViTConfig
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel, CogVLAOutput

__all__ = ["FORWARD_KEYS", "ModelTrace", "lively_model", "micro_config", "micro_inputs", "trace_model"]

FORWARD_KEYS = ("pixel_values", "input_ids", "attention_mask", "proprio")


def micro_config(variant: str = "cogvla", attention_impl: str = "split") -> CogVLAConfig:
    """A model small enough for a Python-loop reference, with every stage's structure.

    Two streams of different widths (a swapped stream fails loudly), DINOv2 registers,
    3 ViT blocks (features from block 1), grouped-query attention, 6 LLM layers of
    which 4 are routed (12 vision tokens kept as 7, 4, 1, 1), chunk 2 x 7 actions.
    """
    efa, lfp, catten = VARIANTS[variant]
    return CogVLAConfig(
        name="micro",
        variant=variant,
        dino=ViTConfig(
            kind="dinov2",
            hidden_size=24,
            num_layers=3,
            num_heads=2,
            mlp_dim=48,
            patch_size=8,
            num_register_tokens=2,
        ),
        siglip=ViTConfig(
            kind="siglip",
            hidden_size=20,
            num_layers=3,
            num_heads=2,
            mlp_dim=40,
            patch_size=8,
            mean=SIGLIP_MEAN,
            std=SIGLIP_STD,
        ),
        llm=LLMConfig(
            hidden_size=32, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=48, vocab_size=64
        ),
        efa=efa,
        lfp=lfp,
        catten=catten,
        image_size=24,
        num_aggregation_tokens=6,
        chunk_size=2,
        action_head_hidden=24,
        attention_impl=attention_impl,
    )


def lively_model(config: CogVLAConfig, seed: int = 0) -> CogVLAModel:
    """A float64 model whose weights make every branch matter.

    The default init (N(0, 0.02), zero biases) leaves FiLM near identity, routers and the
    stream gate near 0.5 and the LLM near identity, so a wrong stage barely moves the
    output. Here linears have unit-gain weights and non-zero biases, norms non-unit
    gains, FiLM visibly scales and shifts, router scores spread and the gate favours
    DINOv2 by about 3:1.
    """
    torch.manual_seed(seed)
    model = CogVLAModel(config).double().eval()
    generator = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, mean: float, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype) * std + mean)

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1 and name.endswith("bias"):
                normal(param, 0.0, 0.1)
            elif param.dim() == 1:  # norm gains, layer scales
                normal(param, 1.0, 0.2)
            elif name.endswith("weight") and param.dim() >= 2 and "embed" not in name:
                normal(param, 0.0, param[0].numel() ** -0.5)
            else:  # embedding tables, position embeddings, CLS, registers, aggregation tokens
                normal(param, 0.0, 1.0)
        if config.efa:
            model.vision_projector.gate[2].bias.copy_(torch.tensor([0.6, -0.6], dtype=torch.float64))
    return model


def micro_inputs(config: CogVLAConfig, *, padded: bool = True) -> dict[str, torch.Tensor]:
    """Two samples of 5 prompt tokens; with ``padded`` the second is left-padded by 2.

    Both forms are needed: attention takes a different path when no token is a pad.
    """
    batch = fake_batch(config, batch_size=2, prompt_tokens=5, seed=1, left_pad=[0, 2] if padded else None)
    inputs = {key: batch[key] for key in FORWARD_KEYS}
    inputs["pixel_values"] = inputs["pixel_values"].double()
    inputs["proprio"] = inputs["proprio"].double()
    return inputs


@dataclass
class ModelTrace:
    """The model's intermediates of one forward pass, read through forward hooks."""

    out: CogVLAOutput
    dino: torch.Tensor  # (B, n, N, D_dino) stream output
    siglip: torch.Tensor
    instruction: torch.Tensor | None  # (B, D) the streams' FiLM condition
    embeds: torch.Tensor  # (B, S, D) LLM input
    valid: torch.Tensor  # (B, S) bool
    layer_inputs: list[torch.Tensor]  # per layer (B, S, D)
    layer_outputs: list[torch.Tensor]
    head_rows: torch.Tensor  # (B, A, D) what the action head reads


def trace_model(model: CogVLAModel, inputs: dict[str, torch.Tensor]) -> ModelTrace:
    """Run ``model`` on ``inputs`` (no grad) and collect its intermediates."""
    seen: dict[str, object] = {"layer_inputs": [], "layer_outputs": []}

    def keep_output(key: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            seen[key] = output

        return hook

    def keep_stream(key: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen[key] = output
            seen["instruction"] = args[1] if len(args) > 1 else None

        return hook

    def on_llm(module: nn.Module, args: tuple) -> None:
        seen["embeds"], seen["valid"] = args[0], args[1]

    def on_layer(module: nn.Module, args: tuple, output: tuple) -> None:
        seen["layer_inputs"].append(args[0])
        seen["layer_outputs"].append(output[0])

    def on_head(module: nn.Module, args: tuple) -> None:
        seen["head_rows"] = args[0]

    handles = [
        model.dino.register_forward_hook(keep_stream("dino")),
        model.siglip.register_forward_hook(keep_stream("siglip")),
        model.llm.register_forward_pre_hook(on_llm),
        model.action_head.register_forward_pre_hook(on_head),
        *(layer.register_forward_hook(on_layer) for layer in model.llm.layers),
    ]
    try:
        with torch.no_grad():
            out = model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return ModelTrace(out=out, **seen)
