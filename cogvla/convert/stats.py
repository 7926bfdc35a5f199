"""``dataset_statistics.json`` of a released checkpoint -> the project's :class:`NormStats`.

Schema (OpenVLA ``save_dataset_statistics``)::

    {"<unnorm_key>": {"action": {"q01": [A], "q99": [A], "mask": [bool x A], ...},
                      "proprio": {"q01": [P], "q99": [P], ...}, ...}, ...}

LIBERO uses BOUNDS_Q99 and ``action.mask = [true]*6 + [false]``: the gripper is not
normalized, which is exactly NormStats' convention for ``action_mask`` False dims.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cogvla.convert.errors import CheckpointFileError, UnnormKeyError
from cogvla.normalize import NormKeyError, NormStats, resolve_norm_key

__all__ = ["all_norm_stats", "read_dataset_statistics", "resolve_unnorm_key", "select_norm_stats"]

log = logging.getLogger(__name__)

FILE_NAME = "dataset_statistics.json"


def read_dataset_statistics(directory: str | Path) -> dict[str, Any]:
    """The parsed ``DIR/dataset_statistics.json`` (every dataset key)."""
    path = Path(directory) / FILE_NAME
    if not path.is_file():
        raise CheckpointFileError(
            f"{path}: missing; released checkpoints ship their action/proprio statistics"
        )
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(stats, dict) or not stats:
        raise CheckpointFileError(
            f"{path}: expected an object keyed by dataset name, got {type(stats).__name__}"
        )
    return stats


def resolve_unnorm_key(stats: dict[str, Any], unnorm_key: str | None) -> str:
    """The dataset key to use: ``unnorm_key``, else ``unnorm_key + "_no_noops"`` (as the
    reference LIBERO eval resolves suite names), else the only key when none is given."""
    available = sorted(stats)
    if unnorm_key is None:
        if len(available) == 1:
            return available[0]
        raise UnnormKeyError(
            f"{FILE_NAME}: holds statistics for {len(available)} datasets, pick one with --unnorm-key; "
            f"available keys: {', '.join(available)}"
        )
    try:
        return resolve_norm_key(available, unnorm_key)
    except NormKeyError as exc:
        raise UnnormKeyError(f"{FILE_NAME}: {exc}") from exc


def select_norm_stats(
    stats: dict[str, Any], unnorm_key: str | None, *, action_dim: int, proprio_dim: int
) -> tuple[str, NormStats]:
    """``(resolved key, NormStats)`` for one dataset, with lengths checked against the model."""
    key = resolve_unnorm_key(stats, unnorm_key)
    return key, _entry_stats(stats[key], key, action_dim=action_dim, proprio_dim=proprio_dim)


def all_norm_stats(stats: dict[str, Any], *, action_dim: int, proprio_dim: int) -> dict[str, NormStats]:
    """Every dataset's ``NormStats`` by key, each checked as in :func:`select_norm_stats`."""
    return {
        key: _entry_stats(entry, key, action_dim=action_dim, proprio_dim=proprio_dim)
        for key, entry in stats.items()
    }


def _entry_stats(entry: Any, key: str, *, action_dim: int, proprio_dim: int) -> NormStats:
    action = _block(entry, "action", key)
    proprio = _block(entry, "proprio", key)
    mask = action.get("mask")
    if mask is None:
        log.warning(
            "%s: %s.action has no mask; every action dim is normalized (reference default)", FILE_NAME, key
        )
        mask = [True] * len(action["q01"])
    fields = {
        "action.q01": (action["q01"], action_dim),
        "action.q99": (action["q99"], action_dim),
        "action.mask": (mask, action_dim),
        "proprio.q01": (proprio["q01"], proprio_dim),
        "proprio.q99": (proprio["q99"], proprio_dim),
    }
    for name, (values, expected) in fields.items():
        if len(values) != expected:
            raise CheckpointFileError(
                f"{FILE_NAME}: {key}.{name}: expected {expected} values, got {len(values)}"
            )
    return NormStats(
        action_q01=tuple(float(v) for v in action["q01"]),
        action_q99=tuple(float(v) for v in action["q99"]),
        action_mask=tuple(bool(v) for v in mask),
        proprio_q01=tuple(float(v) for v in proprio["q01"]),
        proprio_q99=tuple(float(v) for v in proprio["q99"]),
    )


def _block(entry: Any, name: str, key: str) -> dict[str, Any]:
    block = entry.get(name) if isinstance(entry, dict) else None
    if not isinstance(block, dict) or "q01" not in block or "q99" not in block:
        raise CheckpointFileError(f"{FILE_NAME}: {key}.{name}: expected an object with q01 and q99 lists")
    return block
