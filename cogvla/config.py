"""Typed configuration of the CogVLA model: component configs, named presets and variants.

A variant switches the three CogVLA stages on or off without forking the model:

- ``efa``: EFA-Routing. FiLM'd ViT blocks, learnable aggregation tokens and an
  instruction-conditioned gate over the two encoder streams. Off means the
  OpenVLA-OFT vision path: every patch token of both encoders, channel-concatenated
  DINOv2||SigLIP features through a 3-layer GELU projector.
- ``lfp``: LFP-Routing. Mixture-of-Depths style pruning of vision tokens inside the
  LLM layers chosen by the shifted-cosine schedule.
- ``catten``: V-L-A coupled attention. Causal prefix, bidirectional action block.
  Off means fully bidirectional attention, as in OpenVLA-OFT.

Presets: ``tiny`` (trains on a CPU in minutes), ``medium`` (CPU latency profiling)
and ``cogvla-7b`` (the paper's dimensions: Llama-2-7B, DINOv2 ViT-L/14-reg4,
SigLIP SO400M/14 at 224 px).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "PRESETS",
    "VARIANTS",
    "CogVLAConfig",
    "ConfigError",
    "LFPConfig",
    "LLMConfig",
    "ViTConfig",
    "get_preset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


# values of CogVLAConfig.image_preprocessing
IMAGE_PREPROCESSING = ("bicubic", "openvla", "openvla-tf")


class ConfigError(ValueError):
    """A configuration field has an invalid value or a config dict has odd keys."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class ViTConfig:
    """One vision encoder stream (built from the matching ``transformers`` model)."""

    # "dinov2": Dinov2WithRegistersModel (CLS + registers + layer-scale); "siglip": SiglipVisionModel
    kind: Literal["dinov2", "siglip"]
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    # DINOv2 register tokens; SigLIP has none
    num_register_tokens: int = 0
    layer_norm_eps: float = 1e-6
    # per-stream pixel normalization, applied inside the model to [0, 1] images
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        _require(
            self.kind in ("dinov2", "siglip"), f"vit.kind: expected 'dinov2' or 'siglip', got {self.kind!r}"
        )
        _require(
            self.hidden_size % self.num_heads == 0,
            f"vit.hidden_size: expected a multiple of num_heads={self.num_heads}, got {self.hidden_size}",
        )
        # features are read from block L-2, so at least two blocks must exist
        _require(self.num_layers >= 2, f"vit.num_layers: expected >= 2, got {self.num_layers}")
        _require(
            self.kind == "dinov2" or self.num_register_tokens == 0,
            f"vit.num_register_tokens: SigLIP has no registers, got {self.num_register_tokens}",
        )
        _require(
            self.kind == "siglip" or self.mlp_dim % self.hidden_size == 0,
            f"vit.mlp_dim: DINOv2 derives it from an integer mlp_ratio, so expected a multiple of "
            f"hidden_size={self.hidden_size}, got {self.mlp_dim}",
        )

    @property
    def mlp_ratio(self) -> int:
        return self.mlp_dim // self.hidden_size

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: DINOv2's CLS + registers, none for SigLIP."""
        return 1 + self.num_register_tokens if self.kind == "dinov2" else 0

    @property
    def feature_layer(self) -> int:
        """Index of the block whose output is used (L-2, as in OpenVLA/CogVLA)."""
        return self.num_layers - 2


@dataclass(frozen=True)
class LLMConfig:
    """The Llama decoder (built from ``transformers`` Llama pieces)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    num_kv_heads: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        _require(
            self.hidden_size % self.num_heads == 0,
            f"llm.hidden_size: expected a multiple of num_heads={self.num_heads}, got {self.hidden_size}",
        )
        _require(
            self.num_heads % self.kv_heads == 0,
            f"llm.num_kv_heads: expected a divisor of num_heads={self.num_heads}, got {self.kv_heads}",
        )
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            _require(
                0 <= value < self.vocab_size, f"llm.{name}: expected in [0, {self.vocab_size}), got {value}"
            )

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class LFPConfig:
    """Shifted-cosine keep-ratio schedule of LFP-Routing.

    Layer ``i`` of ``L`` keeps ``r_i = max(cos(i*pi/(L-1))/2 + average, min_ratio)`` of
    the vision tokens and is routed iff ``r_i <= max_ratio`` (paper: 0.85/0.15/0.5,
    which routes Llama layers 8-31).
    """

    max_ratio: float = 0.85
    min_ratio: float = 0.15
    average: float = 0.5
    # hidden width of the router's FiLM MLPs; None = half the LLM width (reference: 4096 -> 2048)
    film_hidden: int | None = None
    # the L in the schedule's cos(i*pi/(L-1)); None = the model's own depth. The reference
    # code fixes L = 32 whatever the depth, so released checkpoints of other depths need 32.
    schedule_layers: int | None = None

    def __post_init__(self) -> None:
        _require(0.0 < self.min_ratio <= 1.0, f"lfp.min_ratio: expected in (0, 1], got {self.min_ratio}")
        _require(0.0 < self.max_ratio <= 1.0, f"lfp.max_ratio: expected in (0, 1], got {self.max_ratio}")
        _require(
            self.min_ratio <= self.max_ratio,
            f"lfp.min_ratio: expected <= max_ratio={self.max_ratio}, got {self.min_ratio}",
        )
        _require(
            self.schedule_layers is None or self.schedule_layers >= 2,
            f"lfp.schedule_layers: expected None or >= 2, got {self.schedule_layers}",
        )

    def keep_ratios(self, num_layers: int) -> list[float | None]:
        """Per-layer keep ratio, or None for layers that see every vision token."""
        _require(num_layers >= 2, f"llm.num_layers: LFP needs >= 2 layers, got {num_layers}")
        span = (self.schedule_layers or num_layers) - 1
        ratios: list[float | None] = []
        for i in range(num_layers):
            ratio = max(math.cos(i * math.pi / span) / 2 + self.average, self.min_ratio)
            ratios.append(ratio if ratio <= self.max_ratio else None)
        return ratios


@dataclass(frozen=True)
class CogVLAConfig:
    """The whole policy model: two ViT streams, the LLM, the routers and the action head."""

    name: str
    variant: str
    dino: ViTConfig
    siglip: ViTConfig
    llm: LLMConfig
    lfp_schedule: LFPConfig = field(default_factory=LFPConfig)
    # the three CogVLA stages (see the module docstring)
    efa: bool = True
    lfp: bool = True
    catten: bool = True
    image_size: int = 224
    # cameras per observation, in order [agentview, wrist]
    num_images: int = 2
    # learnable aggregation tokens per encoder and image (EFA only)
    num_aggregation_tokens: int = 64
    chunk_size: int = 8
    action_dim: int = 7
    proprio_dim: int = 8
    action_head_blocks: int = 2
    # None = LLM width (reference: 4096)
    action_head_hidden: int | None = None
    # CAtten implementation: "split" = causal prefix call + action-rows call (flash-attn capable),
    # "mask" = one SDPA call with an explicit (B, 1, S, S) mask. Both give the same result.
    attention_impl: Literal["split", "mask"] = "split"
    # OpenVLA LIBERO protocol: 90%-area center crop at inference (training: matching random crop)
    center_crop: bool = True
    # how camera images become model input (cogvla.preprocess.model_images): "bicubic", this
    # project's resize; or OpenVLA's eval front-end that released weights expect (JPEG round
    # trip, lanczos3, uint8 crop): "openvla" without TensorFlow, "openvla-tf" with it, exact
    image_preprocessing: Literal["bicubic", "openvla", "openvla-tf"] = "bicubic"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _require(self.dino.kind == "dinov2", f"dino.kind: expected 'dinov2', got {self.dino.kind!r}")
        _require(self.siglip.kind == "siglip", f"siglip.kind: expected 'siglip', got {self.siglip.kind!r}")
        for stream in (self.dino, self.siglip):
            _require(
                self.image_size % stream.patch_size == 0,
                f"image_size: expected a multiple of {stream.kind} patch_size={stream.patch_size}, "
                f"got {self.image_size}",
            )
        _require(
            self.efa or self.dino.patch_size == self.siglip.patch_size,
            "efa=False concatenates DINOv2 and SigLIP patch features channel-wise, so both patch sizes "
            f"must match; got {self.dino.patch_size} and {self.siglip.patch_size}",
        )
        _require(self.num_images >= 1, f"num_images: expected >= 1, got {self.num_images}")
        _require(
            self.num_aggregation_tokens >= 1,
            f"num_aggregation_tokens: expected >= 1, got {self.num_aggregation_tokens}",
        )
        _require(
            self.attention_impl in ("split", "mask"),
            f"attention_impl: expected 'split' or 'mask', got {self.attention_impl!r}",
        )
        _require(
            self.image_preprocessing in IMAGE_PREPROCESSING,
            f"image_preprocessing: expected one of {', '.join(IMAGE_PREPROCESSING)}, "
            f"got {self.image_preprocessing!r}",
        )
        for name in ("chunk_size", "action_dim", "proprio_dim", "action_head_blocks"):
            _require(getattr(self, name) >= 1, f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lfp:
            self.lfp_schedule.keep_ratios(self.llm.num_layers)

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (both streams share the grid when ``efa`` is off)."""
        return (self.image_size // self.siglip.patch_size) ** 2

    @property
    def vision_tokens_per_image(self) -> int:
        return self.num_aggregation_tokens if self.efa else self.num_patches

    @property
    def num_vision_tokens(self) -> int:
        """Vision tokens entering the LLM for one observation."""
        return self.num_images * self.vision_tokens_per_image

    @property
    def num_action_tokens(self) -> int:
        """Zero-embedded action slots (chunk x action_dim)."""
        return self.chunk_size * self.action_dim

    @property
    def head_hidden(self) -> int:
        return self.action_head_hidden or self.llm.hidden_size

    @property
    def router_film_hidden(self) -> int:
        return self.lfp_schedule.film_hidden or self.llm.hidden_size // 2

    def keep_ratios(self) -> list[float | None]:
        """Per-LLM-layer keep ratio (None = no routing); all None when ``lfp`` is off."""
        if not self.lfp:
            return [None] * self.llm.num_layers
        return self.lfp_schedule.keep_ratios(self.llm.num_layers)

    def kept_vision_tokens(self) -> list[int]:
        """Vision tokens processed by each LLM layer: ``int(N_vis * r_i)`` on routed layers."""
        n_vis = self.num_vision_tokens
        return [n_vis if ratio is None else int(n_vis * ratio) for ratio in self.keep_ratios()]

    def replace(self, **changes: Any) -> CogVLAConfig:
        """A copy with some top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CogVLAConfig:
        """Inverse of ``to_dict``; unknown or missing keys raise ``ConfigError`` naming them."""
        nested = {"dino": ViTConfig, "siglip": ViTConfig, "llm": LLMConfig, "lfp_schedule": LFPConfig}
        values = _checked_fields(cls, data, "config")
        for key, sub_cls in nested.items():
            if key in values:
                values[key] = sub_cls(**_checked_fields(sub_cls, values[key], key))
        return cls(**values)


def _checked_fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    required = {
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if unknown or missing:
        raise ConfigError(f"{where}: unknown keys {unknown}, missing keys {missing}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}


# variant name -> (efa, lfp, catten)
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "cogvla": (True, True, True),
    "dense": (False, False, False),
    "no-efa": (False, True, True),
    "no-lfp": (True, False, True),
}


def _tiny() -> CogVLAConfig:
    # Sized for small data and CPU training: 128 px, patch 16 -> 64 patches, 16 aggregation tokens.
    vit = {"hidden_size": 128, "num_layers": 4, "num_heads": 2, "mlp_dim": 512, "patch_size": 16}
    return CogVLAConfig(
        name="tiny",
        variant="cogvla",
        dino=ViTConfig(kind="dinov2", num_register_tokens=4, **vit),
        siglip=ViTConfig(kind="siglip", mean=SIGLIP_MEAN, std=SIGLIP_STD, **vit),
        llm=LLMConfig(hidden_size=256, num_layers=6, num_heads=4, intermediate_size=688, vocab_size=1024),
        image_size=128,
        num_aggregation_tokens=16,
    )


def _medium() -> CogVLAConfig:
    # Big enough that routing savings show over framework overhead on a CPU (latency profiling).
    vit = {"hidden_size": 384, "num_layers": 8, "num_heads": 6, "mlp_dim": 1536, "patch_size": 16}
    return CogVLAConfig(
        name="medium",
        variant="cogvla",
        dino=ViTConfig(kind="dinov2", num_register_tokens=4, **vit),
        siglip=ViTConfig(kind="siglip", mean=SIGLIP_MEAN, std=SIGLIP_STD, **vit),
        llm=LLMConfig(hidden_size=640, num_layers=10, num_heads=10, intermediate_size=1728, vocab_size=32064),
        image_size=224,
        num_aggregation_tokens=48,
    )


def _cogvla_7b() -> CogVLAConfig:
    # Paper dimensions (reference sections 2.1 and 3):
    # OpenVLA-7B = Llama-2-7B + DINOv2-L/14-reg4 + SigLIP-SO400M/14.
    return CogVLAConfig(
        name="cogvla-7b",
        variant="cogvla",
        dino=ViTConfig(
            kind="dinov2",
            hidden_size=1024,
            num_layers=24,
            num_heads=16,
            mlp_dim=4096,
            patch_size=14,
            num_register_tokens=4,
        ),
        siglip=ViTConfig(
            kind="siglip",
            hidden_size=1152,
            num_layers=27,
            num_heads=16,
            mlp_dim=4304,
            patch_size=14,
            mean=SIGLIP_MEAN,
            std=SIGLIP_STD,
        ),
        llm=LLMConfig(
            hidden_size=4096,
            num_layers=32,
            num_heads=32,
            intermediate_size=11008,
            vocab_size=32064,
            rms_norm_eps=1e-6,
            pad_token_id=32000,
        ),
        image_size=224,
        num_aggregation_tokens=64,
    )


PRESETS = {"tiny": _tiny, "medium": _medium, "cogvla-7b": _cogvla_7b}


def get_preset(name: str, variant: str = "cogvla") -> CogVLAConfig:
    """The named preset with the named variant's stage switches applied."""
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        raise ConfigError(
            f"preset: expected one of {sorted(PRESETS)}, got {name!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    if variant not in VARIANTS:
        hint = difflib.get_close_matches(variant, VARIANTS, n=1)
        raise ConfigError(
            f"variant: expected one of {sorted(VARIANTS)}, got {variant!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    efa, lfp, catten = VARIANTS[variant]
    return PRESETS[name]().replace(variant=variant, efa=efa, lfp=lfp, catten=catten)
