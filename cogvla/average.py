"""Weight interpolation of checkpoints of one model (WiSE-FT style).

A fine-tune on a narrow data set gains where its data point and may lose elsewhere; the
weights on the line between it and the checkpoint it started from can keep some of both,
which only an evaluation can tell. ``average_checkpoints`` writes such a mix as an
ordinary checkpoint folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cogvla.eval_protocol import read_eval_protocol, write_eval_protocol
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
    if len(checkpoints) < 2:
        raise AverageError(f"checkpoints: expected at least 2 to average, got {len(checkpoints)}")
    if len(weights) != len(checkpoints):
        raise AverageError(
            f"weights: expected one weight per checkpoint, got {len(weights)} weights "
            f"for {len(checkpoints)} checkpoints"
        )
    if min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
        raise AverageError(f"weights: expected non-negative weights that sum to 1, got {list(weights)}")
    # One checkpoint in memory beside the running sum, so a 7B mix needs two models' RAM, not N.
    first = CogVLAModel.from_pretrained(checkpoints[0], dtype=torch.float32)
    # Integer buffers (ids, counters) are not weights: the first checkpoint's are kept.
    mixed = {
        name: weights[0] * tensor if tensor.is_floating_point() else tensor
        for name, tensor in first.state_dict().items()
    }
    for path, weight in zip(checkpoints[1:], weights[1:], strict=True):
        model = CogVLAModel.from_pretrained(path, dtype=torch.float32)
        for field in ("config", "norm_stats"):
            if getattr(model, field) != getattr(first, field):
                raise AverageError(f"checkpoint {path}: its {field} differs from {checkpoints[0]}'s")
        if _tokenizer_key(model) != _tokenizer_key(first):
            raise AverageError(f"checkpoint {path}: its prompt tokenizer differs from {checkpoints[0]}'s")
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                mixed[name] += weight * tensor
        del model
    first.load_state_dict(mixed)
    first.save_pretrained(out)
    protocol = read_eval_protocol(checkpoints[0])
    if protocol is not None:
        write_eval_protocol(out, protocol)
    return Path(out)


def _tokenizer_key(model: CogVLAModel) -> tuple:
    tokenizer = model.tokenizer
    return (tokenizer.tokenizer.get_vocab(), tokenizer.suffix_ids, tokenizer.max_length)
