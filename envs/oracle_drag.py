"""Dragging a dish too wide to grasp whole (a plate) across the table by a pinch of its rim.

A plate's rim is low and sloped: fingers pushing against it ride up over it or press the
plate onto the table, and a plate lifted by its rim slips out of the fingers. Pinched and
slid along the table it follows the hand: the fingers only have to overcome the plate's
friction with the table. Markovian like the rest of the oracle: a hand whose closed fingers
hold the rim drags; otherwise it picks the rim point as a rim grasp (``envs.oracle_grasp``,
which keeps the fingers clear of neighbours), hovers over it, descends open and closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.oracle_decision import Decision, closing_on
from envs.oracle_geometry import nearest_equivalent_yaw, wrap_angle
from envs.oracle_grasp import GraspSpec, plan_grasp

if TYPE_CHECKING:
    from envs.oracle_push import PushConfig

__all__ = ["drag"]


def drag(
    priv: Mapping[str, Any], obj_name: str, target_xy: np.ndarray, current_yaw: float, cfg: PushConfig
) -> Decision:
    """The next hand pose that drags the dish ``obj_name`` towards ``target_xy`` by its rim."""
    obj = priv["objects"][obj_name]
    box = np.asarray(obj["aabb"], dtype=np.float64)
    pos = np.asarray(obj["pos"], dtype=np.float64)
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    gap = float(priv["gripper_qpos"][0] - priv["gripper_qpos"][1])
    offset = np.asarray(target_xy, dtype=np.float64) - pos[:2]
    distance = float(np.linalg.norm(offset))
    # From the bottom, which stays on the table when the dish tilts (its top rises).
    pinch_z = float(box[0, 2]) + cfg.pinch_height
    inside = bool(np.all(eef[:2] >= box[0, :2]) and np.all(eef[:2] <= box[1, :2]))
    pinched = inside and int(obj["finger_contacts"]) >= 1 and cfg.empty_gap < gap <= cfg.pinch_gap
    if pinched:
        step = offset if distance <= cfg.stride else offset * (cfg.stride / distance)
        return Decision.down("drag", np.array([*(eef[:2] + step), pinch_z]), current_yaw, 1.0)
    extent = box[1, :2] - box[0, :2]
    spec = GraspSpec(
        kind="rim",
        rim_radius=cfg.rim_ratio * float(np.max(extent)) / 2.0,
        height=pinch_z - float(pos[2]),
        rim_thickness=cfg.rim_wall,
    )
    grasp = plan_grasp(priv, obj_name, {obj["category"]: spec}, cfg.grasp)
    yaw = nearest_equivalent_yaw(grasp.yaw, current_yaw)
    hover = grasp.point + np.array([0.0, 0.0, cfg.pinch_hover])
    if gap <= cfg.empty_gap:
        return Decision.down("reopen", hover, yaw, -1.0)
    error = grasp.point - eef
    error_xy = float(np.linalg.norm(error[:2]))
    if closing_on(error, gap, cfg.pinch_tolerance, cfg.pinch_tolerance, cfg.open_gap):
        return Decision.down("pinch", grasp.point, yaw, 1.0)
    turned = abs(wrap_angle(yaw - current_yaw)) <= cfg.yaw_tolerance
    # Once on the way down, a small drift is corrected in place rather than by climbing back.
    descending = error_xy <= 2 * cfg.line_tolerance and eef[2] < hover[2] - cfg.pinch_tolerance
    if (error_xy <= cfg.line_tolerance or descending) and turned and gap >= cfg.open_gap:
        return Decision.down("descend", grasp.point, yaw, -1.0)
    return Decision.down("approach", hover, yaw, -1.0)
