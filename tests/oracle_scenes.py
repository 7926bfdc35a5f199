"""Synthetic privileged states for oracle tests: a hand above the table and still bodies."""

from __future__ import annotations

from typing import Any

import numpy as np


def hand(eef, yaw: float, gap: float, base) -> dict[str, Any]:
    """The robot's part of a privileged state: a hand pointing down, finger axis at ``yaw``."""
    return {
        "eef_pos": np.asarray(eef, dtype=np.float64),
        "eef_quat": np.array([np.cos(yaw / 2), np.sin(yaw / 2), 0.0, 0.0]),
        "gripper_qpos": np.array([gap / 2, -gap / 2]),
        "robot_base_pos": np.asarray(base, dtype=np.float64),
    }


def still_body(category: str, pos, parts: np.ndarray, *, fixture: bool) -> dict[str, Any]:
    """An unrotated object or fixture with no joints, untouched by the fingers."""
    parts = np.asarray(parts, dtype=np.float64)
    return {
        "category": category,
        "fixture": fixture,
        "pos": np.asarray(pos, dtype=np.float64),
        "quat": np.array([0.0, 0.0, 0.0, 1.0]),
        "aabb": np.array([parts[:, 0].min(axis=0), parts[:, 1].max(axis=0)]),
        "parts": parts,
        "finger_contacts": 0,
        "joints": [],
        "articulation": {},
    }
