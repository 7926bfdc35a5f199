"""Action and proprio normalization (OpenVLA's BOUNDS_Q99) and the gripper convention.

Conventions (CogVLA reference, section 6.1):
- Robot units: LIBERO's gripper command is -1 = open, +1 = close.
- Model units: the gripper dimension is mapped to 1 = open, 0 = close and is not
  quantile-normalized; every other action dimension and every proprio dimension is
  mapped to ``clip(2 (x - q01) / (q99 - q01 + eps) - 1, -1, 1)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["NormStats", "gripper_to_model", "gripper_to_robot"]

_EPS = 1e-8


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

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        raw = json.loads(Path(path).read_text())
        expected = set(cls.__dataclass_fields__)
        if set(raw) != expected:
            raise ValueError(
                f"{path}: normalization stats must have keys {sorted(expected)}, "
                f"missing {sorted(expected - set(raw))}, unexpected {sorted(set(raw) - expected)}"
            )
        return cls(**{key: tuple(value) for key, value in raw.items()})


def _to_unit(x: np.ndarray, q01: tuple[float, ...], q99: tuple[float, ...]) -> np.ndarray:
    lo, hi = np.asarray(q01), np.asarray(q99)
    return np.clip(2.0 * (np.asarray(x, dtype=np.float64) - lo) / (hi - lo + _EPS) - 1.0, -1.0, 1.0)
