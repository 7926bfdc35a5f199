"""Pushing an object too wide to grasp (a plate) across the table to a target point.

Markovian like the rest of the oracle: each tick compares the hand with the object and the
line from the object to its target, and either moves the closed fingers over their pushing
point (lifted clear of the object), lowers them, or sweeps along the line with a sideways
correction that keeps the push through the object's centre.

A dished object (a plate: its middle lies lower than its rim) is pushed from inside, the
fingertips against the inner wall of the rim that faces the target; the hand then stays
over the object instead of reaching around its far side, which for a plate in the middle
of the table is at the edge of the arm's reach. A flat-topped object is pushed from behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.oracle_decision import Decision
from envs.oracle_geometry import nearest_equivalent_yaw
from envs.oracle_grasp import lowest_part_top

__all__ = ["PushConfig", "push"]


@dataclass(frozen=True)
class PushConfig:
    """Distances (metres) of the push skill."""

    # Gap between the fingers and the object's edge when lining up behind it.
    standoff: float = 0.025
    # Dished objects: fingers this far inside the rim's outer edge; the grip site this far above the
    # middle's surface (fingertips 2 mm above it: pressing into it tilts the object onto its rim).
    rim_inset: float = 0.05
    floor_clearance: float = 0.015
    # A middle this much lower than the top makes an object dished.
    dish_depth: float = 0.005
    # Hover height over the object's top while moving around it.
    hover: float = 0.05
    # Fingertips this far below the object's top while pushing.
    depth: float = 0.008
    # Hand within this distance of the push line (sideways) and of the standoff point counts as lined up.
    line_tolerance: float = 0.015
    # How far ahead of the pushing point each push tick aims.
    stride: float = 0.04
    # Stop pushing when the object's origin is this close to the target.
    arrive_tolerance: float = 0.01


def push(
    priv: Mapping[str, Any], obj_name: str, target_xy: np.ndarray, current_yaw: float, cfg: PushConfig
) -> Decision:
    """The next hand pose that pushes ``obj_name`` towards ``target_xy``."""
    obj = priv["objects"][obj_name]
    box = np.asarray(obj["aabb"], dtype=np.float64)
    pos = np.asarray(obj["pos"], dtype=np.float64)
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    offset = np.asarray(target_xy, dtype=np.float64) - pos[:2]
    distance = float(np.linalg.norm(offset))
    top = float(box[1, 2])
    if distance <= cfg.arrive_tolerance:
        return Decision.down("retreat", np.array([eef[0], eef[1], top + cfg.hover]), current_yaw, 1.0)
    along = offset / distance
    across = np.array([-along[1], along[0]])
    parts = np.asarray(obj["parts"], dtype=np.float64).reshape(-1, 2, 3)
    # Boxes overstate a round body's reach along a diagonal; its radius bounds it.
    radius = float(np.max(box[1, :2] - box[0, :2]) / 2.0)
    front, back = min(_reach(parts, pos, along), radius), min(_reach(parts, pos, -along), radius)
    # Capped halfway up from the origin: the estimate stays steady while the pushed object
    # tilts (every part's box then grows).
    floor = min(lowest_part_top(obj), pos[2] + (top - pos[2]) / 2.0)
    if floor < top - cfg.dish_depth:
        offset_along, push_z = front - cfg.rim_inset, floor + cfg.floor_clearance
    else:
        offset_along, push_z = -(back + cfg.standoff), top - cfg.depth
    # Fingers across the push direction, so the closed fingertips meet the object side by side.
    yaw = nearest_equivalent_yaw(float(np.arctan2(across[0], -across[1])), current_yaw)
    start = pos[:2] + along * offset_along
    hand = eef[:2] - pos[:2]
    sideways = float(hand @ across)
    lead = float(hand @ along) - offset_along
    lined_up = abs(sideways) <= cfg.line_tolerance and -cfg.stride <= lead <= cfg.stride + cfg.line_tolerance
    # Below the rim's top is low enough to keep pushing: the pushing height itself moves when
    # the pressed object tilts.
    if lined_up and eef[2] <= top + cfg.depth:
        # Aim a stride ahead of the pushing point, on the line: the push moves with the object
        # and keeps going through its centre (an off-centre push turns it).
        aim = start + along * cfg.stride
        return Decision.down("push", np.array([*aim, push_z]), yaw, 1.0)
    if np.linalg.norm(eef[:2] - start) <= cfg.line_tolerance:
        return Decision.down("lower", np.array([*start, push_z]), yaw, 1.0)
    return Decision.down("line_up", np.array([*start, top + cfg.hover]), yaw, 1.0)


def _reach(parts: np.ndarray, pos: np.ndarray, direction: np.ndarray) -> float:
    """How far the object's parts ``(G, 2, 3)`` extend from its origin along a horizontal direction."""
    half = (parts[:, 1, :2] - parts[:, 0, :2]) / 2.0
    centre = (parts[:, 1, :2] + parts[:, 0, :2]) / 2.0
    return float(np.max((centre - pos[:2]) @ direction + half @ np.abs(direction)))
