"""Knob skill of the scripted oracle: grasp a knob's fin from above and twist it about its hinge.

The fin is the knob's tallest part; the fingers close across its long side at the point
nearest the hinge axis, so the twist is mostly a turn of the wrist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.oracle_decision import Decision
from envs.oracle_geometry import nearest_equivalent_yaw, wrap_angle
from envs.oracle_joint import (
    ArticulationConfig,
    JointBoxes,
    hand_state,
    holding,
    horizontal,
    rotate_about,
    state_sign,
    yaw_of_finger_axis,
)

__all__ = ["Fin", "knob_fin", "twist_knob"]

_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Fin:
    """A knob's grip: where the fingers close, along which axis, and how thick the fin is there."""

    # Grasp point (world).
    point: np.ndarray
    # Horizontal unit finger axis, across the fin.
    finger: np.ndarray
    # Half thickness of the fin along ``finger``.
    half_thickness: float


def knob_fin(priv: Mapping[str, Any], joint: str, config: ArticulationConfig) -> Fin:
    """The tallest box of the knob's moving body, as a grasp across its long horizontal side."""
    info = priv["joints"][joint]
    boxes = JointBoxes.of(info)
    tops = boxes.centre[:, 2] + boxes.extent_along(_UP)
    index = int(np.argmax(tops))
    rot, half, centre = boxes.rot[index], np.abs(boxes.half[index]), boxes.centre[index]
    reach = [half[k] * np.linalg.norm(rot[:2, k]) for k in range(3)]
    length = horizontal(rot[:, int(np.argmax(reach))])
    finger = np.cross(_UP, length)
    anchor = np.asarray(info["anchor"], dtype=np.float64)
    long_half = float(np.max(reach))
    # Grasp on the fin where it passes nearest the hinge axis, so the twist barely moves the hand.
    along = float(np.clip((anchor - centre) @ length, -long_half, long_half))
    point = centre + length * along
    point[2] = float(tops[index]) - config.finger_depth
    thickness = float(boxes.extent_along(finger)[index])
    return Fin(point, finger, thickness)


def twist_knob(priv: Mapping[str, Any], joint: str, state: str, config: ArticulationConfig) -> Decision:
    """Grasp the knob's fin and turn it towards ``state`` (turnon/turnoff)."""
    info = priv["joints"][joint]
    hand = hand_state(priv, info["owner"])
    fin = knob_fin(priv, joint, config)
    yaw = nearest_equivalent_yaw(yaw_of_finger_axis(fin.finger), hand.yaw)
    axis = np.asarray(info["axis"], dtype=np.float64)
    anchor = np.asarray(info["anchor"], dtype=np.float64)
    turn = state_sign(priv, joint, state) * config.twist_step * float(np.sign(axis[2]) or 1.0)

    error = fin.point - hand.pos
    off = float(np.linalg.norm(error[:2]))
    tol = config.grasp_tolerance
    on_fin = config.empty_gap < hand.gap <= 2 * fin.half_thickness + config.held_gap_margin
    if hand.contacts >= 1 and on_fin and off <= 3 * tol and abs(error[2]) <= 2 * tol:
        return Decision.down("twist", rotate_about(fin.point, anchor, axis, turn), hand.yaw + turn, 1.0)
    hover = fin.point + np.array([0.0, 0.0, config.travel_clearance])
    near = off <= 2 * tol and abs(error[2]) <= 2 * tol
    if hand.gap <= config.empty_gap and near:
        # Closed on nothing (the fin slipped out): open on the way back up.
        return Decision.down("reopen", hover, yaw, -1.0)
    closing = config.empty_gap < hand.gap < config.open_gap and near
    if (off <= tol and abs(error[2]) <= tol) or closing:
        return Decision.down("grip", fin.point, yaw, 1.0)
    aligned = abs(wrap_angle(yaw - hand.yaw)) <= config.rotation_tolerance
    if off <= tol and aligned and hand.gap >= config.open_gap:
        return Decision.down("descend", fin.point, yaw, -1.0)
    if off <= 2 * tol and aligned and hand.pos[2] < hover[2] - tol and hand.gap >= config.open_gap:
        return Decision.down("descend", fin.point, yaw, -1.0)
    if holding(priv, hand, config):
        # Let go of whatever the fingers hold before travelling.
        return Decision("release", hand.pos.copy(), hand.rot, -1.0)
    return Decision.down("approach", hover, yaw, -1.0)
