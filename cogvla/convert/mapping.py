"""Released OpenVLA-OFT / CogVLA state-dict keys -> :class:`~cogvla.modeling.CogVLAModel` keys.

Sources (names used in the plan):

- ``weights``: the merged HF safetensors (``module.`` stripped).
- ``vision``: CogVLA's ``vision_backbone--*.pt`` with its LoRA merged (see
  ``LoRAMergedSource``); it replaces every ``vision_backbone.*`` tensor of ``weights``,
  because the offline merge script skipped the wrapped vision adapter and left the
  un-fine-tuned openvla-7b vision weights in the shards.
- ``trainables``: CogVLA's ``non_lora_trainables--*.pt``, a duplicate of the projector,
  gate and LFP-router tensors in ``weights``; each is checked equal, then dropped.
- ``action_head`` / ``proprio``: the separate head files (``module.`` stripped).

| reference | model |
|---|---|
| ``vision_backbone.featurizer.*`` (timm DINOv2) | ``dino.vit.*`` (HF, see ``timm_vit``) |
| ``vision_backbone.fused_featurizer.*`` (timm SigLIP) | ``siglip.vit.*`` |
| ``vision_backbone.{tower}.blocks.i.{scale,shift}.*`` | ``{dino,siglip}.film.i.{scale,shift}.*`` |
| ``vision_aggr_featurizer`` / ``vision_aggr_fused_featurizer`` | ``{dino,siglip}.aggregation_tokens`` |
| ``projector.fc{1,2,3}.*`` (OFT) | ``vision_projector.fc{1,2,3}.*`` |
| ``featurizer_proj.*`` / ``fused_featurizer_proj.*`` | ``vision_projector.{dino,siglip}_proj.*`` |
| ``aggregation_router.router.{0,2}.*`` | ``vision_projector.gate.{0,2}.*`` |
| ``language_model.model.*`` | ``llm.*`` (same names below, incl. ``layers.i.router.*``) |
| ``language_model.lm_head.weight`` | dropped: the L1 head reads hidden states |
| ``action_head--*.pt``: ``model.*`` | ``action_head.model.*`` |
| ``proprio_projector--*.pt``: ``fc1.*``, ``fc2.*`` | ``proprio_projector.fc1.*``, ``.fc2.*`` |
"""

from __future__ import annotations

from cogvla.config import CogVLAConfig
from cogvla.convert.plan import Conversion, Discard, Plan, SourceRef, VerifyEqual, copy_tensor
from cogvla.convert.timm_vit import dinov2_conversions, siglip_conversions

__all__ = ["TOWERS", "released_plan"]

# reference tower name -> model stream
TOWERS = {"featurizer": "dino", "fused_featurizer": "siglip"}

_LM_HEAD_UNUSED = "the L1-regression action head reads hidden states; the language-model head is never run"
_STALE_VISION = (
    "superseded by vision_backbone--*.pt: CogVLA's offline LoRA merge skipped the FiLM-wrapped vision "
    "adapter, so these are the un-fine-tuned openvla-7b vision weights"
)
_LLAMA_LAYER = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)
_LFP_ROUTER = tuple(
    f"router.{m}.{p}"
    for m in ("router", "scale.0", "scale.2", "shift.0", "shift.2")
    for p in ("weight", "bias")
)


def _pairs(source: str, src: str, dst: str, modules: tuple[str, ...]) -> list[Conversion]:
    return [
        copy_tensor(source, f"{src}{m}.{p}", f"{dst}{m}.{p}") for m in modules for p in ("weight", "bias")
    ]


def _vision_towers(config: CogVLAConfig, source: str, *, block_infix: str) -> list[Conversion]:
    return [
        *dinov2_conversions(
            source,
            "vision_backbone.featurizer.",
            "dino.vit.",
            config.dino.num_layers,
            block_infix=block_infix,
        ),
        *siglip_conversions(
            source,
            "vision_backbone.fused_featurizer.",
            "siglip.vit.",
            config.siglip.num_layers,
            block_infix=block_infix,
        ),
    ]


def _llm(config: CogVLAConfig) -> list[Conversion]:
    out = [copy_tensor("weights", "language_model.model.embed_tokens.weight", "llm.embed_tokens.weight")]
    for i, ratio in enumerate(config.keep_ratios()):
        names = _LLAMA_LAYER + (_LFP_ROUTER if ratio is not None else ())
        out += [
            copy_tensor("weights", f"language_model.model.layers.{i}.{n}", f"llm.layers.{i}.{n}")
            for n in names
        ]
    out.append(copy_tensor("weights", "language_model.model.norm.weight", "llm.norm.weight"))
    out.append(
        Conversion((SourceRef("weights", "language_model.lm_head.weight"),), (), Discard(_LM_HEAD_UNUSED))
    )
    return out


def _heads(config: CogVLAConfig) -> list[Conversion]:
    modules = ("model.layer_norm1", "model.fc1", "model.layer_norm2", "model.fc2")
    modules += tuple(
        f"model.mlp_resnet_blocks.{b}.ffn.{j}" for b in range(config.action_head_blocks) for j in (0, 1)
    )
    return [
        *_pairs("action_head", "", "action_head.", modules),
        *_pairs("proprio", "", "proprio_projector.", ("fc1", "fc2")),
    ]


def _cogvla_vision_extras(config: CogVLAConfig) -> list[Conversion]:
    out = []
    for tower, stream in TOWERS.items():
        depth = getattr(config, stream).num_layers
        for i in range(depth):
            out += _pairs(
                "vision", f"vision_backbone.{tower}.blocks.{i}.", f"{stream}.film.{i}.", ("scale", "shift")
            )
        out.append(copy_tensor("vision", f"vision_aggr_{tower}", f"{stream}.aggregation_tokens"))
    return out


def _efa_projector() -> list[Conversion]:
    return [
        *_pairs("weights", "featurizer_proj.", "vision_projector.dino_proj.", ("fc1", "fc2")),
        *_pairs("weights", "fused_featurizer_proj.", "vision_projector.siglip_proj.", ("fc1", "fc2")),
        *_pairs("weights", "aggregation_router.router.", "vision_projector.gate.", ("0", "2")),
    ]


def released_plan(config: CogVLAConfig, *, has_trainables: bool = False) -> Plan:
    """The full conversion plan for a released checkpoint whose model config is ``config``.

    ``config.efa`` selects the CogVLA layout (vision from ``vision``, stale shard vision
    weights dropped); otherwise the OFT layout (vision and fused projector from ``weights``).
    """
    plan = Plan()
    if config.efa:
        stale = [ref for c in _vision_towers(config, "weights", block_infix="") for ref in c.inputs]
        plan.add(Conversion(tuple(stale), (), Discard(_STALE_VISION)))
        plan.extend(_vision_towers(config, "vision", block_infix=".block"))
        plan.extend(_cogvla_vision_extras(config))
        projector = _efa_projector()
    else:
        plan.extend(_vision_towers(config, "weights", block_infix=""))
        projector = _pairs("weights", "projector.", "vision_projector.", ("fc1", "fc2", "fc3"))
    plan.extend(projector)
    llm = _llm(config)
    plan.extend(llm)
    plan.extend(_heads(config))
    if has_trainables:
        duplicated = [r for c in projector + llm if c.outputs for r in c.inputs]
        duplicated = [r for r in duplicated if not r.key.startswith("language_model.") or ".router." in r.key]
        plan.extend(
            Conversion((SourceRef("trainables", r.key),), (), VerifyEqual(), refs=(r,)) for r in duplicated
        )
    return plan
