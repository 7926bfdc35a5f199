"""Weight interpolation of checkpoints of one model (WiSE-FT style).

A fine-tune on a narrow data set gains where its data point and may lose elsewhere; the
weights on the line between it and the checkpoint it started from can keep some of both,
which only an evaluation can tell. ``average_checkpoints`` writes such a mix as an
ordinary checkpoint folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from cogvla.eval_protocol import EVAL_PROTOCOL_FILE, write_eval_protocol
from cogvla.modeling import CogVLAModel

__all__ = ["AverageError", "average_checkpoints"]


class AverageError(ValueError):
    """The checkpoints cannot be averaged (different models, stats or weights)."""


def average_checkpoints(checkpoints: Sequence[Path], weights: Sequence[float], out: Path) -> Path:
    """Write ``sum(w_i * theta_i)`` of ``checkpoints`` to ``out`` as a float32 checkpoint.

    Every checkpoint must have the same model config, normalization stats and prompt
    tokenizer (a fine-tune that kept its start's stats); ``weights`` must be non-negative and
    sum to 1. The first checkpoint's tokenizer, stats and eval protocol are kept.
    """
    if len(checkpoints) < 2 or len(weights) != len(checkpoints):
        raise AverageError(
            f"weights: expected one weight per checkpoint (at least 2), got {len(weights)} weights "
            f"for {len(checkpoints)} checkpoints"
        )
    if min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
        raise AverageError(f"weights: expected non-negative weights that sum to 1, got {list(weights)}")
    models = [CogVLAModel.from_pretrained(path, dtype=torch.float32) for path in checkpoints]
    first = models[0]
    for path, model in zip(checkpoints[1:], models[1:], strict=True):
        for field in ("config", "norm_stats"):
            if getattr(model, field) != getattr(first, field):
                raise AverageError(f"checkpoint {path}: its {field} differs from {checkpoints[0]}'s")
        if _tokenizer_key(model) != _tokenizer_key(first):
            raise AverageError(f"checkpoint {path}: its prompt tokenizer differs from {checkpoints[0]}'s")
    states = [model.state_dict() for model in models]
    mixed = {
        name: sum(weight * state[name] for weight, state in zip(weights, states, strict=True))
        if tensor.is_floating_point()
        else tensor
        for name, tensor in states[0].items()
    }
    first.load_state_dict(mixed)
    first.save_pretrained(out)
    protocol = Path(checkpoints[0]) / EVAL_PROTOCOL_FILE
    if protocol.is_file():
        write_eval_protocol(out, json.loads(protocol.read_text()))
    return Path(out)


def _tokenizer_key(model: CogVLAModel) -> tuple:
    tokenizer = model.tokenizer
    return (tokenizer.tokenizer.get_vocab(), tokenizer.suffix_ids, tokenizer.max_length)
