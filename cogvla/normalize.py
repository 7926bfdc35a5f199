"""Action and proprio normalization (OpenVLA's BOUNDS_Q99) and the gripper convention.

Conventions (CogVLA reference, section 6.1):
- Robot units: LIBERO's gripper command is -1 = open, +1 = close.
- Model units: the gripper dimension is mapped to 1 = open, 0 = close and is not
  quantile-normalized; every other action dimension and every proprio dimension is
  mapped to ``clip(2 (x - q01) / (q99 - q01 + eps) - 1, -1, 1)``.

A checkpoint may hold the stats of several datasets under their keys (a released
checkpoint's ``dataset_statistics.json`` has one per LIBERO suite, named
``{suite}_no_noops``); ``suite_norm_key`` picks a suite's key as the reference eval does,
and ``check_suite_norm_key`` refuses stats that belong to another suite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NORM_TABLE_FILE",
    "NormKeyError",
    "NormStats",
    "check_suite_norm_key",
    "gripper_to_model",
    "gripper_to_robot",
    "load_norm_table",
    "resolve_norm_key",
    "save_norm_table",
    "suite_norm_key",
    "use_suite_stats",
]

_EPS = 1e-8
# checkpoint file holding every dataset's stats by key (next to the default key's norm_stats.json)
NORM_TABLE_FILE = "norm_stats_by_key.json"
# suffix of the reference's LIBERO dataset keys (demos with no-op actions removed)
NO_NOOPS = "_no_noops"
# dataset keys of LIBERO suites start with this; other keys (a project run's) name no suite
_SUITE_PREFIX = "libero_"


class NormKeyError(ValueError):
    """A normalization key is unknown, ambiguous, or belongs to another suite than the one asked for."""


def gripper_to_model(gripper: np.ndarray) -> np.ndarray:
    """Robot gripper command (-1 open, +1 close) -> model target (1 open, 0 close)."""
    return 1.0 - np.clip(gripper, 0.0, 1.0)


def gripper_to_robot(gripper: np.ndarray) -> np.ndarray:
    """Model gripper output (1 open, 0 close) -> binary robot command (-1 open, +1 close)."""
    binary = np.sign(2.0 * np.asarray(gripper) - 1.0)
    binary[binary == 0] = 1.0  # exactly 0.5 counts as open, so the robot never gets a 0 command
    return -binary


@dataclass(frozen=True)
class NormStats:
    """Per-dimension q01/q99 bounds; ``action_mask[i]`` is False for dims left as they are."""

    action_q01: tuple[float, ...]
    action_q99: tuple[float, ...]
    action_mask: tuple[bool, ...]
    proprio_q01: tuple[float, ...]
    proprio_q99: tuple[float, ...]

    @classmethod
    def from_data(cls, actions: np.ndarray, proprio: np.ndarray, gripper_dim: int = -1) -> NormStats:
        """Stats of ``actions (N, A)`` in robot units and ``proprio (N, P)``; the gripper dim is masked."""
        mask = np.ones(actions.shape[1], dtype=bool)
        mask[gripper_dim] = False
        return cls(
            action_q01=tuple(np.quantile(actions, 0.01, axis=0).tolist()),
            action_q99=tuple(np.quantile(actions, 0.99, axis=0).tolist()),
            action_mask=tuple(mask.tolist()),
            proprio_q01=tuple(np.quantile(proprio, 0.01, axis=0).tolist()),
            proprio_q99=tuple(np.quantile(proprio, 0.99, axis=0).tolist()),
        )

    @property
    def gripper_dims(self) -> np.ndarray:
        return ~np.asarray(self.action_mask)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Robot units ``(..., A)`` -> model units."""
        out = _to_unit(actions, self.action_q01, self.action_q99)
        grip = self.gripper_dims
        out[..., grip] = gripper_to_model(np.asarray(actions)[..., grip])
        return out.astype(np.float32)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Model units ``(..., A)`` -> robot units, with a binarized gripper."""
        q01, q99 = np.asarray(self.action_q01), np.asarray(self.action_q99)
        out = 0.5 * (np.asarray(actions, dtype=np.float64) + 1.0) * (q99 - q01 + _EPS) + q01
        grip = self.gripper_dims
        out[..., grip] = gripper_to_robot(np.asarray(actions)[..., grip])
        return out.astype(np.float32)

    def normalize_proprio(self, proprio: np.ndarray) -> np.ndarray:
        """Raw proprio ``(..., P)`` -> [-1, 1]."""
        return _to_unit(proprio, self.proprio_q01, self.proprio_q99).astype(np.float32)

    def proprio_map_from(self, other: NormStats) -> tuple[np.ndarray, np.ndarray]:
        """``(a, c)``, each ``(P,)``: ``a * u + c`` turns a proprio ``u`` normalized by ``other``
        into the same proprio normalized by these stats (exact inside both ranges, unclipped)."""
        lo, hi = np.asarray(self.proprio_q01), np.asarray(self.proprio_q99)
        other_lo, other_hi = np.asarray(other.proprio_q01), np.asarray(other.proprio_q99)
        if lo.shape != other_lo.shape:
            raise ValueError(
                f"proprio stats: expected {len(lo)} dims in both, got {len(lo)} and {len(other_lo)}"
            )
        span = hi - lo + _EPS
        scale = (other_hi - other_lo + _EPS) / span
        return scale, scale + 2.0 * (other_lo - lo) / span - 1.0

    def with_proprio_margin(self, margin: float) -> NormStats:
        """These stats with each proprio range widened by ``margin`` of itself on both sides."""
        lo, hi = np.asarray(self.proprio_q01), np.asarray(self.proprio_q99)
        pad = margin * (hi - lo)
        return replace(self, proprio_q01=tuple((lo - pad).tolist()), proprio_q99=tuple((hi + pad).tolist()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> NormStats:
        """Stats from their JSON fields; ``where`` names the source in errors."""
        expected = set(cls.__dataclass_fields__)
        if not isinstance(raw, dict) or set(raw) != expected:
            found = set(raw) if isinstance(raw, dict) else set()
            raise ValueError(
                f"{where}: normalization stats must have keys {sorted(expected)}, "
                f"missing {sorted(expected - found)}, unexpected {sorted(found - expected)}"
            )
        return cls(**{key: tuple(value) for key, value in raw.items()})


def _to_unit(x: np.ndarray, q01: tuple[float, ...], q99: tuple[float, ...]) -> np.ndarray:
    lo, hi = np.asarray(q01), np.asarray(q99)
    return np.clip(2.0 * (np.asarray(x, dtype=np.float64) - lo) / (hi - lo + _EPS) - 1.0, -1.0, 1.0)


def resolve_norm_key(keys: Iterable[str], wanted: str) -> str:
    """``wanted`` if it is one of ``keys``, else ``wanted + "_no_noops"``; else ``NormKeyError``."""
    available = sorted(keys)
    for candidate in (wanted, f"{wanted}{NO_NOOPS}"):
        if candidate in available:
            return candidate
    raise NormKeyError(f"unnorm_key: {wanted!r} not found; available keys: {', '.join(available) or 'none'}")


def suite_norm_key(suite: str, keys: Iterable[str]) -> str | None:
    """The key of ``suite``'s stats among ``keys`` (``{suite}_no_noops`` or ``{suite}``), or None."""
    try:
        return resolve_norm_key(keys, suite)
    except NormKeyError:
        return None


def check_suite_norm_key(suite: str, norm_key: str | None, *, force: bool = False) -> None:
    """Refuse ``norm_key`` when it names another LIBERO suite than ``suite`` (unless ``force``).

    Keys that name no suite (a project training run's, ``identity``) pass: they say nothing
    about which suite the stats came from.
    """
    if norm_key is None or force:
        return
    named = norm_key.removesuffix(NO_NOOPS)
    if named.startswith(_SUITE_PREFIX) and named != suite:
        raise NormKeyError(
            f"unnorm_key: the policy's normalization stats are for {norm_key!r}, not for suite {suite!r}; "
            "actions would be scaled for another dataset (pass --force-norm-key to run anyway)"
        )


def use_suite_stats(policy: Any, suite: str) -> None:
    """Switch ``policy`` to ``suite``'s normalization stats when it holds several (others: no-op).

    The evaluation harness calls this before each episode, so one import evaluates every
    suite with its own stats, as the reference eval does; the refusal of another suite's
    stats happens once, before the run (``cogvla.policy.check_checkpoint_suites``).
    """
    select = getattr(policy, "use_suite", None)
    if select is not None:
        select(suite, force=True)


def save_norm_table(path: str | Path, table: Mapping[str, NormStats]) -> None:
    """Write several datasets' stats as ``{key: NormStats fields}``."""
    Path(path).write_text(json.dumps({key: asdict(stats) for key, stats in sorted(table.items())}, indent=2))


def load_norm_table(path: str | Path) -> dict[str, NormStats]:
    """Inverse of ``save_norm_table``."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected an object keyed by dataset name, got {type(raw).__name__}")
    return {key: NormStats.from_dict(value, f"{path}: {key}") for key, value in raw.items()}
