"""Locate the files of a released checkpoint directory and read the LoRA adapter config.

Component files are found the way the reference loaders find them (exactly one file
whose name contains the component name and ``checkpoint``, e.g.
``action_head--150000_checkpoint.pt``), but stricter: any other weight file in the
directory is an error rather than something silently left behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cogvla.convert.errors import CheckpointFileError, UnsupportedLayoutError
from cogvla.convert.layout import ReleasedConfig

__all__ = ["LoRASettings", "ReleasedFiles", "locate_files", "read_lora_settings"]

_COMPONENTS = (
    "action_head",
    "proprio_projector",
    "vision_backbone",
    "non_lora_trainables",
    "noisy_action_projector",
)


@dataclass(frozen=True)
class LoRASettings:
    """``lora_adapter/adapter_config.json``: rank and PEFT's merge scaling."""

    rank: int
    alpha: float
    use_rslora: bool

    @property
    def scaling(self) -> float:
        # PEFT: alpha / r, or alpha / sqrt(r) with rsLoRA (the LIBERO recipes use plain LoRA: 16/32)
        return self.alpha / (self.rank**0.5 if self.use_rslora else self.rank)


@dataclass(frozen=True)
class ReleasedFiles:
    directory: Path
    action_head: Path
    proprio_projector: Path
    vision_backbone: Path | None
    non_lora_trainables: Path | None
    adapter_config: Path | None


def _component_files(directory: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {name: [] for name in _COMPONENTS}
    strays = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".pt", ".pth", ".bin", ".ckpt"):
            continue
        names = [c for c in _COMPONENTS if c in path.name and "checkpoint" in path.name]
        if len(names) == 1:
            found[names[0]].append(path)
        else:
            strays.append(path.name)
    if strays:
        raise CheckpointFileError(
            f"{directory}: weight file(s) {', '.join(strays)} match none of the known components "
            f"({', '.join(_COMPONENTS)}); refusing to import around them"
        )
    for name, paths in found.items():
        if len(paths) > 1:
            raise CheckpointFileError(
                f"{directory}: expected one {name} checkpoint file, found {len(paths)}: "
                + ", ".join(p.name for p in paths)
            )
    return found


def locate_files(directory: str | Path, released: ReleasedConfig) -> ReleasedFiles:
    """The component files the layout needs; missing, duplicated or unexpected files are errors."""
    directory = Path(directory)
    found = _component_files(directory)
    one = {name: paths[0] if paths else None for name, paths in found.items()}
    for required in ("action_head", "proprio_projector"):
        if one[required] is None:
            raise CheckpointFileError(
                f"{directory}: no {required}--<STEP>_checkpoint.pt; the L1-regression LIBERO checkpoints "
                f"ship the {required.replace('_', ' ')} as a separate file"
            )
    if one["noisy_action_projector"] is not None:
        raise UnsupportedLayoutError(
            f"{one['noisy_action_projector']}: a diffusion-head checkpoint; only L1-regression heads are supported"
        )
    adapter = directory / "lora_adapter" / "adapter_config.json"
    if released.use_film:
        if one["vision_backbone"] is None:
            raise CheckpointFileError(
                f"{directory}: config.json has use_film=true but there is no vision_backbone--<STEP>_checkpoint.pt "
                "(it holds the FiLM weights, aggregation tokens and the fine-tuned vision tower)"
            )
        if not adapter.is_file():
            raise CheckpointFileError(
                f"{adapter}: missing; it gives the LoRA rank and alpha needed to merge the vision "
                "adapter stored in the vision_backbone checkpoint"
            )
    else:
        for name in ("vision_backbone", "non_lora_trainables"):
            if one[name] is not None:
                raise CheckpointFileError(
                    f"{one[name]}: unexpected for a config.json without use_film; it would not be imported"
                )
    return ReleasedFiles(
        directory=directory,
        action_head=one["action_head"],
        proprio_projector=one["proprio_projector"],
        vision_backbone=one["vision_backbone"],
        non_lora_trainables=one["non_lora_trainables"],
        adapter_config=adapter if adapter.is_file() else None,
    )


def read_lora_settings(path: str | Path) -> LoRASettings:
    """Rank, alpha and rsLoRA flag of a PEFT adapter; per-module patterns and DoRA are refused."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointFileError(f"{path}: not readable as JSON ({exc})") from exc
    for key in ("r", "lora_alpha"):
        if not isinstance(raw.get(key), int | float) or raw[key] <= 0:
            raise CheckpointFileError(f"{path}: {key}: expected a positive number, got {raw.get(key)!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        if raw.get(key):
            raise UnsupportedLayoutError(
                f"{path}: {key}: per-module LoRA ranks are not supported, got {raw[key]}"
            )
    if raw.get("use_dora"):
        raise UnsupportedLayoutError(f"{path}: use_dora: DoRA adapters are not supported, got true")
    return LoRASettings(
        rank=int(raw["r"]), alpha=float(raw["lora_alpha"]), use_rslora=bool(raw.get("use_rslora"))
    )
