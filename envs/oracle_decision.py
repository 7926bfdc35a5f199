"""One tick of the scripted oracle: a phase and a hand pose target, and the OSC command to reach it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cogvla.policy_api import ACTION_DIM
from envs.oracle_geometry import down_rotation, quat_to_mat, rotation_error

__all__ = ["Decision", "closing_on", "osc_command"]

# LIBERO's OSC_POSE maps an action of 1 to a 5 cm / 0.5 rad goal offset.
_POS_SCALE = 0.05
_ROT_SCALE = 0.5


@dataclass(frozen=True)
class Decision:
    """One tick's phase and the pose/gripper command it implies."""

    # Name of the skill's phase, e.g. "approach", "carry", "pull".
    phase: str
    # Grip-site target (world, metres).
    target: np.ndarray
    # Hand orientation target (3, 3), hand frame -> world.
    rotation: np.ndarray
    # -1 open, +1 close.
    gripper: float

    @classmethod
    def down(cls, phase: str, target: np.ndarray, yaw: float, gripper: float) -> Decision:
        """A decision with the hand pointing down and the finger axis at ``yaw``."""
        return cls(phase, target, down_rotation(yaw), gripper)


def osc_command(
    priv: Mapping[str, Any], decision: Decision, position_gain: float, rotation_gain: float
) -> np.ndarray:
    """Saturated proportional OSC_POSE command ``(7,)`` float32 towards ``decision``."""
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    position = position_gain * (decision.target - eef) / _POS_SCALE
    # Saturate the horizontal and vertical parts separately: a long descent must not
    # shrink the sideways correction that keeps the hand over the grasp point.
    horizontal = float(np.linalg.norm(position[:2]))
    if horizontal > 1.0:
        position[:2] /= horizontal
    position[2] = np.clip(position[2], -1.0, 1.0)
    current = quat_to_mat(priv["eef_quat"])
    rotation = rotation_gain * rotation_error(decision.rotation, current) / _ROT_SCALE
    out = np.zeros(ACTION_DIM, dtype=np.float32)
    out[:3] = position
    out[3:6] = np.clip(rotation, -1.0, 1.0)
    out[6] = decision.gripper
    return out


def closing_on(error: np.ndarray, gap: float, tol_xy: float, tol_z: float, open_gap: float) -> bool:
    """Whether to close the fingers on a grasp point ``error`` (target - hand) away: the hand is
    there, or the fingers are already closing (``gap`` < ``open_gap``) within twice the
    tolerance, so a grasp in progress is not abandoned for a small drift."""
    error_xy = float(np.linalg.norm(error[:2]))
    if error_xy <= tol_xy and abs(error[2]) <= tol_z:
        return True
    return gap < open_gap and error_xy <= 2 * tol_xy and abs(error[2]) <= 2 * tol_z
