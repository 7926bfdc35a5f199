"""timm -> transformers key mapping for OpenVLA's two vision towers.

OpenVLA stores its towers in timm layout (``vision_backbone.featurizer.*`` =
DINOv2 ViT-L/14-reg4, ``vision_backbone.fused_featurizer.*`` = SigLIP SO400M/14;
the reference code's comments have these two backwards). The model runs them as
transformers' ``Dinov2WithRegistersModel`` and ``SiglipVisionModel``, whose key names
(transformers 5.x) are the targets here, relative to the wrapped HF module.

The non-trivial rules:
- timm fuses q, k, v into one ``attn.qkv`` (rows q, k, v); HF has three projections.
- OpenVLA renamed timm's LayerScale ``gamma`` to ``scale_factor``; HF calls it ``lambda1``.
- timm's DINOv2 has the class position folded into ``cls_token`` and a patch-only
  ``pos_embed`` (N rows); HF adds row 0 of an (N+1)-row table to the class token, so
  that row is zero. Register tokens get no position in either.
- SigLIP's ``pos_embed`` has a leading batch axis in timm, none in HF.
- SigLIP's attention-pool head and both towers' final norms are never run: OpenVLA
  reads the output of block L-2, before any norm. The last block's output is unused
  too; whether the target keeps it is the caller's choice (``keep_last_block``).
"""

from __future__ import annotations

from cogvla.convert.plan import (
    Conversion,
    Discard,
    PadClassPosition,
    SourceRef,
    SplitRows,
    Squeeze0,
    Zeros,
    copy_tensor,
)

__all__ = ["SIGLIP_HEAD_KEYS", "dinov2_conversions", "siglip_conversions"]

SIGLIP_HEAD_KEYS = (
    "attn_pool.latent",
    "attn_pool.q.weight",
    "attn_pool.q.bias",
    "attn_pool.kv.weight",
    "attn_pool.kv.bias",
    "attn_pool.proj.weight",
    "attn_pool.proj.bias",
    "attn_pool.norm.weight",
    "attn_pool.norm.bias",
    "attn_pool.mlp.fc1.weight",
    "attn_pool.mlp.fc1.bias",
    "attn_pool.mlp.fc2.weight",
    "attn_pool.mlp.fc2.bias",
)

_UNUSED_LAST_BLOCK = "features come from block L-2, so the last block's output is never used"
_UNUSED_NORM = "features come from block L-2 before any norm, so the final norm is never used"
_UNUSED_HEAD = "the MAP attention-pool head is never run (OpenVLA reads patch tokens of block L-2)"


def _split_qkv(source: str, src: str, dst: tuple[str, str, str]) -> list[Conversion]:
    return [
        Conversion((SourceRef(source, f"{src}.{p}"),), tuple(f"{name}.{p}" for name in dst), SplitRows(3))
        for p in ("weight", "bias")
    ]


def _pair(source: str, src: str, dst: str) -> list[Conversion]:
    return [copy_tensor(source, f"{src}.{p}", f"{dst}.{p}") for p in ("weight", "bias")]


def _discard(source: str, keys: list[str], reason: str) -> Conversion:
    return Conversion(tuple(SourceRef(source, key) for key in keys), (), Discard(reason))


def _block_keys(src: str, *, layer_scale: bool) -> list[str]:
    names = [
        f"{src}.{m}.{p}"
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias")
    ]
    return names + ([f"{src}.ls1.scale_factor", f"{src}.ls2.scale_factor"] if layer_scale else [])


def dinov2_conversions(
    source: str,
    src_prefix: str,
    dst_prefix: str,
    depth: int,
    *,
    block_infix: str = "",
    keep_last_block: bool = True,
    keep_final_norm: bool = True,
) -> list[Conversion]:
    """Conversions for a timm DINOv2-reg tower at ``src_prefix`` into an HF module at ``dst_prefix``.

    ``block_infix`` is ``".block"`` for towers whose blocks are wrapped (CogVLA's FiLM
    wrapper stores ``blocks.i.block.attn...``); the wrapper's own keys are left to the caller.
    """
    out = [
        copy_tensor(source, f"{src_prefix}cls_token", f"{dst_prefix}embeddings.cls_token"),
        copy_tensor(source, f"{src_prefix}reg_token", f"{dst_prefix}embeddings.register_tokens"),
        Conversion(
            (SourceRef(source, f"{src_prefix}pos_embed"),),
            (f"{dst_prefix}embeddings.position_embeddings",),
            PadClassPosition(),
        ),
        Conversion((), (f"{dst_prefix}embeddings.mask_token",), Zeros()),
        *_pair(
            source, f"{src_prefix}patch_embed.proj", f"{dst_prefix}embeddings.patch_embeddings.projection"
        ),
    ]
    for i in range(depth):
        src = f"{src_prefix}blocks.{i}{block_infix}"
        if i == depth - 1 and not keep_last_block:
            out.append(_discard(source, _block_keys(src, layer_scale=True), _UNUSED_LAST_BLOCK))
            continue
        dst = f"{dst_prefix}encoder.layer.{i}"
        out += _pair(source, f"{src}.norm1", f"{dst}.norm1")
        out += _split_qkv(source, f"{src}.attn.qkv", tuple(f"{dst}.attention.{n}_proj" for n in "qkv"))
        out += _pair(source, f"{src}.attn.proj", f"{dst}.attention.o_proj")
        out.append(copy_tensor(source, f"{src}.ls1.scale_factor", f"{dst}.layer_scale1.lambda1"))
        out += _pair(source, f"{src}.norm2", f"{dst}.norm2")
        out += _pair(source, f"{src}.mlp.fc1", f"{dst}.mlp.fc1")
        out += _pair(source, f"{src}.mlp.fc2", f"{dst}.mlp.fc2")
        out.append(copy_tensor(source, f"{src}.ls2.scale_factor", f"{dst}.layer_scale2.lambda1"))
    if keep_final_norm:
        out += _pair(source, f"{src_prefix}norm", f"{dst_prefix}layernorm")
    else:
        out.append(_discard(source, [f"{src_prefix}norm.weight", f"{src_prefix}norm.bias"], _UNUSED_NORM))
    return out


def siglip_conversions(
    source: str,
    src_prefix: str,
    dst_prefix: str,
    depth: int,
    *,
    block_infix: str = "",
    keep_last_block: bool = True,
    keep_final_norm: bool = True,
) -> list[Conversion]:
    """Conversions for a timm SigLIP tower into an HF ``SiglipVisionModel`` (no head) at ``dst_prefix``."""
    out = [
        Conversion(
            (SourceRef(source, f"{src_prefix}pos_embed"),),
            (f"{dst_prefix}embeddings.position_embedding.weight",),
            Squeeze0(),
        ),
        *_pair(source, f"{src_prefix}patch_embed.proj", f"{dst_prefix}embeddings.patch_embedding"),
        _discard(source, [f"{src_prefix}{key}" for key in SIGLIP_HEAD_KEYS], _UNUSED_HEAD),
    ]
    for i in range(depth):
        src = f"{src_prefix}blocks.{i}{block_infix}"
        if i == depth - 1 and not keep_last_block:
            out.append(_discard(source, _block_keys(src, layer_scale=False), _UNUSED_LAST_BLOCK))
            continue
        dst = f"{dst_prefix}encoder.layers.{i}"
        out += _pair(source, f"{src}.norm1", f"{dst}.layer_norm1")
        out += _split_qkv(source, f"{src}.attn.qkv", tuple(f"{dst}.self_attn.{n}_proj" for n in "qkv"))
        out += _pair(source, f"{src}.attn.proj", f"{dst}.self_attn.out_proj")
        out += _pair(source, f"{src}.norm2", f"{dst}.layer_norm2")
        out += _pair(source, f"{src}.mlp.fc1", f"{dst}.mlp.fc1")
        out += _pair(source, f"{src}.mlp.fc2", f"{dst}.mlp.fc2")
    if keep_final_norm:
        out += _pair(source, f"{src_prefix}norm", f"{dst_prefix}post_layernorm")
    else:
        out.append(_discard(source, [f"{src_prefix}norm.weight", f"{src_prefix}norm.bias"], _UNUSED_NORM))
    return out
