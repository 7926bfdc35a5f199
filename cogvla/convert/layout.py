"""What kind of released checkpoint a directory holds, read from its ``config.json``.

OpenVLA-OFT and CogVLA both save an ``OpenVLAConfig`` (``model_type="openvla"``).
CogVLA adds ``vision_aggregate_type``/``use_aggr``/``use_film``/``num_vision_aggr`` at
the top level and ``use_lfp``/``lfp_*`` inside ``text_config``; OFT has none of them,
so an absent ``vision_aggregate_type`` means OFT's channel-concat projector (the
CogVLA code's own default of ``"moe"`` would misread every OFT checkpoint).

``text_config`` is serialized as a diff against ``LlamaConfig()`` of transformers
4.40.1, so every field it omits takes that version's default. Note that this default
``rms_norm_eps`` is 1e-6, not Llama-2's 1e-5: OFT and CogVLA were fine-tuned with 1e-6.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cogvla.convert.errors import CheckpointFileError, UnsupportedLayoutError

__all__ = [
    "LLAMA_4_40_DEFAULTS",
    "SCHEDULE_LAYERS",
    "LFPSchedule",
    "LayoutKind",
    "ReleasedConfig",
    "TextConfig",
    "parse_released_config",
    "read_released_config",
]

LayoutKind = Literal["oft", "cogvla"]

# LlamaConfig() defaults in transformers 4.40.1, the version both releases pin.
LLAMA_4_40_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# the L of the reference's LFP schedule cos(i*pi/(L-1)): its default, never overridden
SCHEDULE_LAYERS = 32

_EXPECTED_TIMM_IDS = ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224")


@dataclass(frozen=True)
class TextConfig:
    """The Llama decoder's hyper-parameters, with 4.40.1 defaults filled in."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    pad_token_id: int


@dataclass(frozen=True)
class LFPSchedule:
    """CogVLA's ``lfp_type`` parsed: ``shiftedcos_decay_MAX_MIN`` with ``lfp_average_factor``.

    Layer ``i`` keeps ``max(cos(i pi / 31) / 2 + average, min_ratio)`` of the vision tokens
    and is routed iff that ratio is ``<= max_ratio``. The reference code's denominator is
    fixed for 32 layers (``SCHEDULE_LAYERS``) whatever the LLM's depth: a 16-layer model
    routes layers 8-15.
    """

    max_ratio: float
    min_ratio: float
    average: float
    enable_film: bool

    def ratio(self, layer: int) -> float:
        return max(math.cos(layer * math.pi / (SCHEDULE_LAYERS - 1)) / 2 + self.average, self.min_ratio)

    def target_layers(self, num_layers: int) -> tuple[int, ...]:
        """Indices of the routed layers; 8..31 for the LIBERO recipe at 32 layers."""
        return tuple(i for i in range(num_layers) if self.ratio(i) <= self.max_ratio)


@dataclass(frozen=True)
class ReleasedConfig:
    """The facts of a released ``config.json`` that decide how to import it."""

    kind: LayoutKind
    text: TextConfig
    image_size: int
    use_film: bool
    use_aggr: bool
    num_vision_aggr: int
    lfp: LFPSchedule | None
    raw: dict[str, Any]

    @property
    def lfp_layers(self) -> tuple[int, ...]:
        return self.lfp.target_layers(self.text.num_hidden_layers) if self.lfp else ()


def read_released_config(directory: str | Path) -> ReleasedConfig:
    """Parse ``DIR/config.json`` of an OpenVLA-OFT or CogVLA checkpoint."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointFileError(f"{path}: missing; a released checkpoint directory has a config.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointFileError(f"{path}: not valid JSON ({exc})") from exc
    return parse_released_config(raw, source=str(path))


def parse_released_config(raw: dict[str, Any], source: str = "config.json") -> ReleasedConfig:
    """``parse`` half of :func:`read_released_config`, for an already-loaded dict."""
    model_type = raw.get("model_type")
    if model_type != "openvla":
        raise UnsupportedLayoutError(f"{source}: model_type: expected 'openvla', got {model_type!r}")
    _check_vision_backbone(raw, source)
    aggregate = raw.get("vision_aggregate_type", "concat")
    use_aggr = bool(raw.get("use_aggr", False))
    use_film = bool(raw.get("use_film", False))
    text_raw = raw.get("text_config", {})
    if aggregate == "concat":
        if use_aggr:
            raise UnsupportedLayoutError(
                f"{source}: use_aggr: aggregation tokens need vision_aggregate_type 'moe', got 'concat'"
            )
        kind: LayoutKind = "oft"
    elif aggregate == "moe":
        if not (use_aggr and use_film):
            raise UnsupportedLayoutError(
                f"{source}: vision_aggregate_type 'moe' is supported with use_aggr=true and use_film=true "
                f"(CogVLA's EFA-Routing), got use_aggr={use_aggr}, use_film={use_film}"
            )
        kind = "cogvla"
    else:
        raise UnsupportedLayoutError(
            f"{source}: vision_aggregate_type: expected 'concat' (OFT) or 'moe' (CogVLA), got {aggregate!r}"
        )
    image_sizes = raw.get("image_sizes", [224, 224])
    if len(set(image_sizes)) != 1:
        raise UnsupportedLayoutError(
            f"{source}: image_sizes: expected equal sizes per tower, got {image_sizes}"
        )
    return ReleasedConfig(
        kind=kind,
        text=_text_config(text_raw, raw, source),
        image_size=int(image_sizes[0]),
        use_film=use_film,
        use_aggr=use_aggr,
        num_vision_aggr=int(raw.get("num_vision_aggr", 32)) if use_aggr else 0,
        lfp=_lfp_schedule(text_raw, source) if kind == "cogvla" and text_raw.get("use_lfp", False) else None,
        raw=raw,
    )


def _check_vision_backbone(raw: dict[str, Any], source: str) -> None:
    timm_ids = tuple(raw.get("timm_model_ids", _EXPECTED_TIMM_IDS))
    if timm_ids != _EXPECTED_TIMM_IDS:
        raise UnsupportedLayoutError(
            f"{source}: timm_model_ids: expected {list(_EXPECTED_TIMM_IDS)} (DINOv2-reg4 featurizer, "
            f"SigLIP fused_featurizer), got {list(timm_ids)}"
        )
    if not raw.get("use_fused_vision_backbone", True):
        raise UnsupportedLayoutError(f"{source}: use_fused_vision_backbone: expected true, got false")
    overrides = raw.get("timm_override_act_layers", [None, None])
    if any(layer is not None for layer in overrides):
        raise UnsupportedLayoutError(
            f"{source}: timm_override_act_layers: expected [null, null] (exact GELU), got {overrides}"
        )


def _text_config(text_raw: dict[str, Any], raw: dict[str, Any], source: str) -> TextConfig:
    merged = {**LLAMA_4_40_DEFAULTS, **text_raw}
    if merged.get("rope_scaling") is not None:
        raise UnsupportedLayoutError(
            f"{source}: text_config.rope_scaling: expected null, got {merged['rope_scaling']}"
        )
    if merged.get("hidden_act") != "silu":
        raise UnsupportedLayoutError(
            f"{source}: text_config.hidden_act: expected 'silu', got {merged['hidden_act']!r}"
        )
    if merged.get("attention_bias"):
        raise UnsupportedLayoutError(f"{source}: text_config.attention_bias: expected false, got true")
    if merged.get("tie_word_embeddings"):
        raise UnsupportedLayoutError(f"{source}: text_config.tie_word_embeddings: expected false, got true")
    heads = int(merged["num_attention_heads"])
    return TextConfig(
        vocab_size=int(merged["vocab_size"]),
        hidden_size=int(merged["hidden_size"]),
        intermediate_size=int(merged["intermediate_size"]),
        num_hidden_layers=int(merged["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(merged["num_key_value_heads"] or heads),
        max_position_embeddings=int(merged["max_position_embeddings"]),
        rms_norm_eps=float(merged["rms_norm_eps"]),
        rope_theta=float(merged["rope_theta"]),
        pad_token_id=int(raw.get("pad_token_id", text_raw.get("pad_token_id", 32000))),
    )


def _lfp_schedule(text_raw: dict[str, Any], source: str) -> LFPSchedule:
    lfp_type = str(text_raw.get("lfp_type", "shiftedcos_decay_0.85_0.15"))
    parts = lfp_type.split("_")
    if len(parts) != 4 or parts[:2] != ["shiftedcos", "decay"]:
        raise UnsupportedLayoutError(
            f"{source}: text_config.lfp_type: expected 'shiftedcos_decay_MAX_MIN', got {lfp_type!r}"
        )
    try:
        max_ratio, min_ratio = float(parts[2]), float(parts[3])
    except ValueError as exc:
        raise UnsupportedLayoutError(
            f"{source}: text_config.lfp_type: MAX and MIN must be numbers, got {lfp_type!r}"
        ) from exc
    return LFPSchedule(
        max_ratio=max_ratio,
        min_ratio=min_ratio,
        average=float(text_raw.get("lfp_average_factor", 0.5)),
        enable_film=bool(text_raw.get("lfp_enable_film", False)),
    )
