"""Moving an object too wide to grasp across the table to a target point.

Markovian like the rest of the oracle. A flat-topped object is pushed from behind: each
tick compares the hand with the object and the line from the object to its target, and
either moves the closed fingers over their pushing point (lifted clear of the object),
lowers them, or sweeps along the line with a sideways correction that keeps the push
through the object's centre.

A dished object (a plate: its middle lies lower than its rim) is dragged by a pinch of its
rim instead (``envs.oracle_drag``): its rim is low and sloped, so pushing fingers ride up
over it, or press it onto the table (from inside, against the rim's slope) so that it no
longer slides; behind LIBERO's plate there is no room for the hand either (a cabinet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.oracle_decision import Decision
from envs.oracle_drag import drag
from envs.oracle_geometry import nearest_equivalent_yaw
from envs.oracle_grasp import GraspConfig, lowest_part_top

__all__ = ["PushConfig", "push"]


@dataclass(frozen=True)
class PushConfig:
    """Distances (metres) of the push and drag skills."""

    # Gap between the fingers and the object's edge when lining up behind it.
    standoff: float = 0.025
    # A middle this much lower than the top makes an object dished (dragged, not pushed).
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
    # Let go of an object whose goal holds once its origin is this close to the target.
    release_distance: float = 0.02
    # Dishes: the pinch point's distance from the axis as a fraction of the half-width, and
    # the wall the rim-grasp planner expects.
    rim_ratio: float = 0.93
    rim_wall: float = 0.01
    # Dishes: grip-site height over the dish's bottom when pinching the rim (a plate's rim is
    # 2 cm high). From the bottom, which stays on the table when the dish tilts.
    pinch_height: float = 0.009
    # Dishes: grip site within this of the pinch point closes the fingers.
    pinch_tolerance: float = 0.008
    # Dishes: finger gaps above which the gripper counts as open, at most which it holds a rim,
    # and below which it closed on nothing.
    open_gap: float = 0.07
    pinch_gap: float = 0.05
    empty_gap: float = 0.003
    # Dishes: hover height over the pinch point before the straight descent.
    pinch_hover: float = 0.05
    # Dishes: wrist turn (rad) allowed before descending.
    yaw_tolerance: float = 0.1
    # Dishes: rim-grasp planning (gripper size, candidate sides).
    grasp: GraspConfig = field(default_factory=GraspConfig)


def push(
    priv: Mapping[str, Any], obj_name: str, target_xy: np.ndarray, current_yaw: float, cfg: PushConfig
) -> Decision:
    """The next hand pose that pushes ``obj_name`` towards ``target_xy``."""
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    obj = priv["objects"][obj_name]
    box = np.asarray(obj["aabb"], dtype=np.float64)
    pos = np.asarray(obj["pos"], dtype=np.float64)
    top = float(box[1, 2])
    offset = np.asarray(target_xy, dtype=np.float64) - pos[:2]
    distance = float(np.linalg.norm(offset))
    # LIBERO counts it there and it is clear of the region's edge (where it settling back
    # would undo the goal): let go where the hand is, then the planner finds the goal done.
    if distance <= cfg.release_distance and _placed(priv, obj_name):
        return Decision.down("release", eef.copy(), current_yaw, -1.0)
    # A dish: its middle lies lower than its rim (a tilt raises the rim more than the middle).
    if lowest_part_top(obj) < top - cfg.dish_depth:
        return drag(priv, obj_name, target_xy, current_yaw, cfg)
    if distance <= cfg.arrive_tolerance:
        return Decision.down("retreat", np.array([eef[0], eef[1], top + cfg.hover]), current_yaw, 1.0)
    along = offset / distance
    across = np.array([-along[1], along[0]])
    parts = np.asarray(obj["parts"], dtype=np.float64).reshape(-1, 2, 3)
    # Boxes overstate a round body's reach along a diagonal; its radius bounds it.
    radius = float(np.max(box[1, :2] - box[0, :2]) / 2.0)
    back = min(_reach(parts, pos, -along), radius)
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


def _placed(priv: Mapping[str, Any], obj_name: str) -> bool:
    """Whether LIBERO counts a goal atom placing ``obj_name`` as holding."""
    return any(
        holds and len(atom) == 3 and atom[1] == obj_name
        for atom, holds in zip(priv["goal"], priv["goal_status"])
    )


def _reach(parts: np.ndarray, pos: np.ndarray, direction: np.ndarray) -> float:
    """How far the object's parts ``(G, 2, 3)`` extend from its origin along a horizontal direction."""
    half = (parts[:, 1, :2] - parts[:, 0, :2]) / 2.0
    centre = (parts[:, 1, :2] + parts[:, 0, :2]) / 2.0
    return float(np.max((centre - pos[:2]) @ direction + half @ np.abs(direction)))
