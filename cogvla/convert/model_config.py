"""The :class:`~cogvla.config.CogVLAConfig` that reproduces a released checkpoint.

Facts come from three places:

- ``config.json`` (via :class:`ReleasedConfig`): the layout (OFT -> variant ``dense``:
  no EFA, no LFP, all-bidirectional attention, as OFT was trained; CogVLA -> EFA, CAtten,
  and LFP iff ``use_lfp``), the Llama hyper-parameters, image size, aggregation tokens.
- tensor shapes: ViT widths, depths, MLP sizes, patch size and register count (the
  config only names the timm models), action and proprio dims, head widths. Head counts
  follow the timm models' head sizes: 64 for DINOv2 ViT-L, 72 for SigLIP SO400M.
- the LIBERO protocol, which no file records: 2 cameras and a chunk of 8.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cogvla.config import CogVLAConfig, LFPConfig, LLMConfig, ViTConfig
from cogvla.convert.errors import ShapeMismatchError, UnsupportedLayoutError
from cogvla.convert.layout import SCHEDULE_LAYERS, ReleasedConfig
from cogvla.convert.processor import ImagePreprocessing
from cogvla.convert.sources import TensorSource

__all__ = ["DINO_HEAD_DIM", "SIGLIP_HEAD_DIM", "released_model_config"]

DINO_HEAD_DIM = 64
SIGLIP_HEAD_DIM = 72


def _indices(keys: list[str], prefix: str, source: TensorSource) -> int:
    """Number of ``{prefix}{i}.`` groups; they must be numbered 0..n-1."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = sorted({int(m.group(1)) for key in keys if (m := pattern.match(key))})
    if not found or found != list(range(len(found))):
        raise ShapeMismatchError(
            f"{source.name}: {prefix}<i>.*: expected groups numbered 0..n-1, got {found}"
        )
    return len(found)


def _shape(source: TensorSource, key: str) -> tuple[int, ...]:
    if key not in set(source.tensor_keys()):
        raise ShapeMismatchError(f"{source.name}: {key}: missing; needed to size the model")
    return source.info(key).shape


def _vit(
    source: TensorSource, prefix: str, kind: str, head_dim: int, block_infix: str, mean, std
) -> ViTConfig:
    keys = source.tensor_keys()
    width = _shape(source, f"{prefix}patch_embed.proj.weight")[0]
    if width % head_dim:
        raise ShapeMismatchError(
            f"{source.name}: {prefix}patch_embed.proj.weight: width {width} is not a multiple of the "
            f"{kind} head size {head_dim}"
        )
    return ViTConfig(
        kind=kind,
        hidden_size=width,
        num_layers=_indices(keys, f"{prefix}blocks.", source),
        num_heads=width // head_dim,
        mlp_dim=_shape(source, f"{prefix}blocks.0{block_infix}.mlp.fc1.weight")[0],
        patch_size=_shape(source, f"{prefix}patch_embed.proj.weight")[-1],
        num_register_tokens=_shape(source, f"{prefix}reg_token")[1] if kind == "dinov2" else 0,
        mean=mean,
        std=std,
    )


def released_model_config(
    released: ReleasedConfig,
    sources: Mapping[str, TensorSource],
    preprocessing: ImagePreprocessing,
    *,
    chunk_size: int = 8,
    num_images: int = 2,
    image_preprocessing: str = "openvla",
) -> CogVLAConfig:
    """The model config for ``released``; ``sources`` as in :func:`~cogvla.convert.mapping.released_plan`.

    ``image_preprocessing`` defaults to OpenVLA's eval front-end, which the released
    weights were trained and evaluated with (``openvla-tf`` computes it with TensorFlow).
    """
    cogvla = released.kind == "cogvla"
    vision = sources["vision" if cogvla else "weights"]
    infix = ".block" if cogvla else ""
    dino = _vit(
        vision,
        "vision_backbone.featurizer.",
        "dinov2",
        DINO_HEAD_DIM,
        infix,
        preprocessing.dino_mean,
        preprocessing.dino_std,
    )
    siglip = _vit(
        vision,
        "vision_backbone.fused_featurizer.",
        "siglip",
        SIGLIP_HEAD_DIM,
        infix,
        preprocessing.siglip_mean,
        preprocessing.siglip_std,
    )
    text = released.text
    llm = LLMConfig(
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        intermediate_size=text.intermediate_size,
        vocab_size=text.vocab_size,
        num_kv_heads=text.num_key_value_heads,
        rms_norm_eps=text.rms_norm_eps,
        rope_theta=text.rope_theta,
        max_position_embeddings=text.max_position_embeddings,
        pad_token_id=text.pad_token_id,
    )
    lfp = LFPConfig()
    if released.lfp is not None:
        if not released.lfp.enable_film:
            raise UnsupportedLayoutError(
                "config.json: text_config.lfp_enable_film: expected true (FiLM-conditioned LFP routers), got false"
            )
        first = released.lfp_layers[0]
        film_hidden = _shape(
            sources["weights"], f"language_model.model.layers.{first}.router.scale.0.weight"
        )[0]
        lfp = LFPConfig(
            max_ratio=released.lfp.max_ratio,
            min_ratio=released.lfp.min_ratio,
            average=released.lfp.average,
            film_hidden=film_hidden,
            schedule_layers=SCHEDULE_LAYERS,
        )
    head, proprio = sources["action_head"], sources["proprio"]
    head_hidden = _shape(head, "model.fc1.weight")[0]
    optional = {"num_aggregation_tokens": released.num_vision_aggr} if cogvla else {}
    return CogVLAConfig(
        name=f"imported-{released.kind}",
        variant=("cogvla" if released.lfp else "no-lfp") if cogvla else "dense",
        dino=dino,
        siglip=siglip,
        llm=llm,
        lfp_schedule=lfp,
        efa=cogvla,
        lfp=released.lfp is not None,
        catten=cogvla,
        image_size=released.image_size,
        num_images=num_images,
        chunk_size=chunk_size,
        action_dim=_shape(head, "model.fc2.weight")[0],
        proprio_dim=_shape(proprio, "fc1.weight")[1],
        action_head_blocks=_indices(head.tensor_keys(), "model.mlp_resnet_blocks.", head),
        action_head_hidden=head_hidden if head_hidden != text.hidden_size else None,
        center_crop=True,
        image_preprocessing=image_preprocessing,
        **optional,
    )
