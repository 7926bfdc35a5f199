"""The narrow interface that models, the scripted oracle, remote servers and harnesses meet at.

Observation schema (one dict per control tick; every image is upright, i.e. LIBERO's
renders already rotated by 180 degrees)::

    "image":       uint8   (H, W, 3)  third-person (agentview) camera
    "wrist_image": uint8   (H, W, 3)  eye-in-hand camera
    "state":       float32 (8,)       eef_pos(3), eef axis-angle(3), gripper qpos(2)
    "prompt":      str                the task instruction (the LIBERO benchmark's task language)

Action chunk: float32 ``(chunk, 7)`` in robot units (LIBERO's OSC_POSE deltas, each in
[-1, 1]; gripper -1 = open, +1 = close). Harnesses execute the rows in order.

Anything with ``infer(obs) -> actions`` is a policy; ``Policy`` adds the optional parts
(``reset``, ``infer_batch``, ``metadata``) with sensible defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ACTION_DIM",
    "OBS_IMAGE",
    "OBS_KEYS",
    "OBS_PROMPT",
    "OBS_STATE",
    "OBS_WRIST_IMAGE",
    "STATE_DIM",
    "Policy",
    "PolicyOutputError",
    "all_finite",
    "validate_action_chunk",
]

OBS_IMAGE = "image"
OBS_WRIST_IMAGE = "wrist_image"
OBS_STATE = "state"
OBS_PROMPT = "prompt"
OBS_KEYS = (OBS_IMAGE, OBS_WRIST_IMAGE, OBS_STATE, OBS_PROMPT)
STATE_DIM = 8
ACTION_DIM = 7


class Policy:
    """Base class for policies; subclasses implement ``infer``."""

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Return a ``(chunk, action_dim)`` float32 action chunk for one observation."""
        raise NotImplementedError

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Action chunks for several observations; models override this with one forward pass."""
        return [self.infer(obs) for obs in observations]

    def reset(self) -> None:
        """Forget per-episode state (called at the start of every episode)."""

    def metadata(self) -> dict[str, Any]:
        """What a client needs to know to talk to this policy."""
        return {"name": type(self).__name__, "action_dim": ACTION_DIM, "state_dim": STATE_DIM}


class PolicyOutputError(ValueError):
    """A policy returned something that is not a valid action chunk."""


def all_finite(array: np.ndarray) -> bool:
    """Whether every entry of a float32 array (or a smaller float type) is finite.

    A Python sum of the entries is finite exactly when every entry is (float32 values
    cannot overflow it); on the cold caches a server request runs on, it costs half of
    ``np.isfinite(array).all()``, whose ufunc machinery must be fetched back each time.
    """
    return math.isfinite(sum(array.ravel().tolist()))


def validate_action_chunk(actions: Any, action_dim: int = ACTION_DIM) -> np.ndarray:
    """Check a policy's output and return it as a float32 ``(chunk, action_dim)`` array.

    Raises ``PolicyOutputError`` naming what was expected and what came back, so a
    harness can record the episode as an error instead of stepping the simulator with
    garbage.
    """
    try:
        array = np.asarray(actions, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise PolicyOutputError(
            f"actions: expected a numeric array of shape (chunk, {action_dim}), got {type(actions).__name__}"
        ) from exc
    if array.ndim != 2 or array.shape[1] != action_dim or array.shape[0] == 0:
        raise PolicyOutputError(f"actions: expected shape (chunk>=1, {action_dim}), got {tuple(array.shape)}")
    if not all_finite(array):
        bad = int((~np.isfinite(array)).sum())
        raise PolicyOutputError(f"actions: expected finite values, got {bad} NaN/inf entries")
    return array
