"""timm -> transformers mapping of OpenVLA's vision towers, checked against timm's math.

The reference forward below is written from the documented timm equations (fused qkv,
LayerScale, CLS + register tokens, patch-only position table for DINOv2, block L-2
output before any norm); the mapped weights must reproduce it in the HF modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic_checkpoints import SyntheticDims, dino_timm_tensors, siglip_timm_tensors
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from cogvla.convert.errors import KeyMismatchError, ShapeMismatchError
from cogvla.convert.execute import plan_to_state_dict
from cogvla.convert.plan import Discard, Plan
from cogvla.convert.sources import MemorySource
from cogvla.convert.timm_vit import dinov2_conversions, siglip_conversions

DIMS = SyntheticDims(
    dino_width=128, dino_depth=3, siglip_width=144, siglip_depth=3, siglip_mlp=200, image_size=56
)


def _timm_attention(x: torch.Tensor, t: dict, p: str, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    qkv = F.linear(x, t[f"{p}.attn.qkv.weight"], t[f"{p}.attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) * (d // heads) ** -0.5).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return F.linear(out, t[f"{p}.attn.proj.weight"], t[f"{p}.attn.proj.bias"])


def _layer_norm(x: torch.Tensor, t: dict, p: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], t[f"{p}.weight"], t[f"{p}.bias"], 1e-6)


def _timm_mlp(x: torch.Tensor, t: dict, p: str) -> torch.Tensor:
    hidden = F.gelu(F.linear(x, t[f"{p}.mlp.fc1.weight"], t[f"{p}.mlp.fc1.bias"]))
    return F.linear(hidden, t[f"{p}.mlp.fc2.weight"], t[f"{p}.mlp.fc2.bias"])


def _timm_features(pixels: torch.Tensor, t: dict, depth: int, heads: int, *, dinov2: bool) -> torch.Tensor:
    """Patch tokens after block L-2 (OpenVLA's ``get_intermediate_layers(n={L-2})``)."""
    x = F.conv2d(pixels, t["patch_embed.proj.weight"], t["patch_embed.proj.bias"], stride=DIMS.patch)
    x = x.flatten(2).transpose(1, 2) + t["pos_embed"]
    prefix = 0
    if dinov2:
        b = x.shape[0]
        x = torch.cat([t["cls_token"].expand(b, -1, -1), t["reg_token"].expand(b, -1, -1), x], dim=1)
        prefix = 1 + t["reg_token"].shape[1]
    for i in range(depth - 1):
        p = f"blocks.{i}"
        attn = _timm_attention(_layer_norm(x, t, f"{p}.norm1"), t, p, heads)
        x = x + (t[f"{p}.ls1.scale_factor"] * attn if dinov2 else attn)
        mlp = _timm_mlp(_layer_norm(x, t, f"{p}.norm2"), t, p)
        x = x + (t[f"{p}.ls2.scale_factor"] * mlp if dinov2 else mlp)
    return x[:, prefix:]


def _dinov2_hf() -> Dinov2WithRegistersModel:
    config = Dinov2WithRegistersConfig(
        hidden_size=DIMS.dino_width,
        num_hidden_layers=DIMS.dino_depth,
        num_attention_heads=DIMS.dino_width // 64,
        mlp_ratio=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        num_register_tokens=4,
        image_size=DIMS.image_size,
        patch_size=DIMS.patch,
    )
    return Dinov2WithRegistersModel(config).eval()


def _siglip_hf() -> SiglipVisionModel:
    config = SiglipVisionConfig(
        hidden_size=DIMS.siglip_width,
        intermediate_size=DIMS.siglip_mlp,
        num_hidden_layers=DIMS.siglip_depth,
        num_attention_heads=DIMS.siglip_width // 72,
        image_size=DIMS.image_size,
        patch_size=DIMS.patch,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        vision_use_head=False,
    )
    return SiglipVisionModel(config).eval()


def _load(model: torch.nn.Module, conversions, tensors: dict) -> None:
    plan = Plan(list(conversions))
    sources = {"timm": MemorySource("tower.pt", tensors)}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    plan.validate(sources, shapes)
    model.load_state_dict(plan_to_state_dict(plan, sources, shapes), strict=True)


def test_dinov2_timm_math_matches_hf_after_mapping():
    torch.manual_seed(0)
    tensors = dino_timm_tensors(DIMS)
    model = _dinov2_hf()
    _load(model, dinov2_conversions("timm", "", "", DIMS.dino_depth), tensors)
    pixels = torch.randn(2, 3, DIMS.image_size, DIMS.image_size)
    expected = _timm_features(pixels, tensors, DIMS.dino_depth, DIMS.dino_width // 64, dinov2=True)
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == DIMS.dino_depth + 1
    got = hidden[-2][:, 5:]
    assert got.shape == (2, DIMS.num_patches, DIMS.dino_width)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_siglip_timm_math_matches_hf_after_mapping():
    tensors = siglip_timm_tensors(DIMS)
    model = _siglip_hf()
    _load(model, siglip_conversions("timm", "", "", DIMS.siglip_depth), tensors)
    pixels = torch.randn(2, 3, DIMS.image_size, DIMS.image_size, generator=torch.Generator().manual_seed(1))
    expected = _timm_features(pixels, tensors, DIMS.siglip_depth, DIMS.siglip_width // 72, dinov2=False)
    with torch.no_grad():
        got = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_dinov2_class_position_row_is_zero_and_registers_unpositioned():
    tensors = dino_timm_tensors(DIMS)
    model = _dinov2_hf()
    _load(model, dinov2_conversions("timm", "", "", DIMS.dino_depth), tensors)
    table = model.embeddings.position_embeddings
    assert table.shape == (1, DIMS.num_patches + 1, DIMS.dino_width)
    assert torch.equal(table[:, 0], torch.zeros(1, DIMS.dino_width))
    embedded = model.embeddings(torch.zeros(1, 3, DIMS.image_size, DIMS.image_size))
    torch.testing.assert_close(embedded[:, 0], tensors["cls_token"][:, 0])
    torch.testing.assert_close(embedded[:, 1:5], tensors["reg_token"])


def test_siglip_head_is_an_explicit_discard():
    conversions = siglip_conversions("timm", "", "", DIMS.siglip_depth)
    discarded = {r.key for c in conversions if isinstance(c.transform, Discard) for r in c.inputs}
    assert {k for k in siglip_timm_tensors(DIMS) if k.startswith("attn_pool.")} == discarded


def test_dropped_last_block_is_discarded_not_loaded():
    tensors = dino_timm_tensors(DIMS)
    conversions = dinov2_conversions(
        "timm", "", "", DIMS.dino_depth, keep_last_block=False, keep_final_norm=False
    )
    targets = {k for c in conversions for k in c.outputs}
    assert not any(k.startswith((f"encoder.layer.{DIMS.dino_depth - 1}.", "layernorm")) for k in targets)
    discarded = {r.key for c in conversions if isinstance(c.transform, Discard) for r in c.inputs}
    assert {k for k in tensors if k.startswith(f"blocks.{DIMS.dino_depth - 1}.")} | {
        "norm.weight",
        "norm.bias",
    } == discarded


def test_unknown_timm_key_is_rejected():
    tensors = {**dino_timm_tensors(DIMS), "blocks.0.attn.q_norm.weight": torch.ones(DIMS.dino_width)}
    model = _dinov2_hf()
    with pytest.raises(
        KeyMismatchError, match=r"unknown keys(.|\n)*tower\.pt: 1 key\(s\): blocks\.0\.attn\.q_norm\.weight"
    ):
        _load(model, dinov2_conversions("timm", "", "", DIMS.dino_depth), tensors)


def test_qkv_with_wrong_rows_names_source_and_target():
    tensors = dino_timm_tensors(DIMS)
    tensors["blocks.1.attn.qkv.weight"] = tensors["blocks.1.attn.qkv.weight"][:-3]
    model = _dinov2_hf()
    with pytest.raises(
        ShapeMismatchError,
        match=r"tower\.pt:blocks\.1\.attn\.qkv\.weight .*encoder\.layer\.1\.attention\.q_proj\.weight",
    ):
        _load(model, dinov2_conversions("timm", "", "", DIMS.dino_depth), tensors)
