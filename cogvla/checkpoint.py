"""One-folder checkpoints: config, safetensors weights, tokenizer and normalization stats.

Layout of a checkpoint folder::

    config.json          {"format": "cogvla", "format_version": 1, "norm_key": str | null, "config": {...}}
    model.safetensors    the model's state dict (HF key names inside the ViT streams and LLM)
    norm_stats.json      cogvla.normalize.NormStats (optional)
    tokenizer/           cogvla.tokenizer.PromptTokenizer files (optional)

Loading is strict: a missing, unexpected or mis-shaped weight raises ``CheckpointError``
naming the keys and shapes, instead of silently leaving random weights in place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cogvla.config import CogVLAConfig, ConfigError
from cogvla.normalize import NormStats

if TYPE_CHECKING:
    from cogvla.modeling import CogVLAModel
    from cogvla.tokenizer import PromptTokenizer

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "NORM_STATS_FILE",
    "TOKENIZER_DIR",
    "WEIGHTS_FILE",
    "CheckpointError",
    "check_state_dict",
    "load_checkpoint",
    "read_config",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORM_STATS_FILE = "norm_stats.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1
_LIST_LIMIT = 10


class CheckpointError(ValueError):
    """A checkpoint folder is missing files or its contents do not match the model."""


def save_checkpoint(
    model: CogVLAModel,
    directory: str | Path,
    *,
    tokenizer: PromptTokenizer | None = None,
    norm_stats: NormStats | None = None,
    norm_key: str | None = None,
) -> Path:
    """Write ``model`` (and optionally its tokenizer and stats) into ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and tokenizer.vocab_size > model.config.llm.vocab_size:
        raise CheckpointError(
            f"tokenizer: expected at most {model.config.llm.vocab_size} tokens (llm.vocab_size), "
            f"got {tokenizer.vocab_size}"
        )
    header = {
        "format": "cogvla",
        "format_version": FORMAT_VERSION,
        "norm_key": norm_key,
        "config": model.config.to_dict(),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(header, indent=2))
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    if norm_stats is not None:
        norm_stats.save(directory / NORM_STATS_FILE)
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER_DIR)
    logger.info("saved checkpoint to %s", directory)
    return directory


def read_config(directory: str | Path) -> tuple[CogVLAConfig, str | None]:
    """The model config and normalization key stored in a checkpoint folder."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {directory} a cogvla checkpoint folder?")
    try:
        header = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != "cogvla":
        raise CheckpointError(
            f'{path}: expected a cogvla config ("format": "cogvla"), got {str(header)[:80]}'
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: expected format_version {FORMAT_VERSION}, got {header.get('format_version')!r}"
        )
    try:
        return CogVLAConfig.from_dict(header.get("config")), header.get("norm_key")
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys of ``found``."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{key}: expected {tuple(expected[key].shape)}, got {tuple(found[key].shape)}"
        for key in sorted(set(expected) & set(found))
        if tuple(expected[key].shape) != tuple(found[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys {_abbreviate(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys {_abbreviate(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches {_abbreviate(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the config: " + "; ".join(problems))


def load_checkpoint(directory: str | Path, *, device: str | torch.device = "cpu") -> CogVLAModel:
    """Build the model from ``config.json``, load its weights strictly, attach tokenizer and stats.

    The returned model is in eval mode; ``model.tokenizer``, ``model.norm_stats`` and
    ``model.norm_key`` are None when the checkpoint has none.
    """
    from cogvla.modeling import CogVLAModel
    from cogvla.tokenizer import PromptTokenizer

    directory = Path(directory)
    config, norm_key = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: cannot be read as safetensors ({exc})") from exc
    model = CogVLAModel(config)
    check_state_dict(model.state_dict(), state, str(weights_path))
    model.load_state_dict(state)
    model.to(device).eval()
    stats_path = directory / NORM_STATS_FILE
    if stats_path.is_file():
        try:
            model.norm_stats = NormStats.load(stats_path)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{stats_path}: invalid normalization stats: {exc}") from exc
    if (directory / TOKENIZER_DIR).is_dir():
        model.tokenizer = PromptTokenizer.load(directory / TOKENIZER_DIR)
    model.norm_key = norm_key
    return model


def _abbreviate(items: list[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:_LIST_LIMIT])
    return f"[{shown}{', ...' if len(items) > _LIST_LIMIT else ''}]"
