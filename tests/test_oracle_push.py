"""Moving objects too wide to grasp: a plate is dragged by a pinch of its rim, a flat box pushed.

Hand-built privileged states shaped like LIBERO's plate (a thin floor and a sloped rim of
higher parts) and its "push the plate to the front of the stove" task; no simulator.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.oracle_grasp import lowest_part_top
from envs.oracle_push import PushConfig, push

TABLE_Z = 0.9
PLATE_XY = np.array([0.05, -0.03])
TARGET_XY = np.array([-0.05, 0.21])
PLATE_RADIUS, RIM_TOP = 0.068, TABLE_Z + 0.019


def _plate(xy, lift: float = 0.0, contacts: int = 0) -> dict:
    """LIBERO's plate at ``xy``; ``lift`` raises its top and rim as when it tilts on one edge."""
    x, y = xy
    floor = np.array([[x - 0.03, y - 0.03, TABLE_Z + 0.003], [x + 0.03, y + 0.03, TABLE_Z + 0.008]])
    rim = []
    for angle in np.deg2rad(np.arange(0.0, 360.0, 45.0)):
        cx, cy = x + 0.048 * np.cos(angle), y + 0.048 * np.sin(angle)
        rim.append([[cx - 0.02, cy - 0.02, TABLE_Z], [cx + 0.02, cy + 0.02, RIM_TOP + lift]])
    parts = np.concatenate([floor[None], np.asarray(rim)])
    box = np.stack([parts[:, 0].min(axis=0), parts[:, 1].max(axis=0)])
    box[:, :2] = [[x - PLATE_RADIUS, y - PLATE_RADIUS], [x + PLATE_RADIUS, y + PLATE_RADIUS]]
    return {
        "category": "plate",
        "fixture": False,
        "pos": np.array([x, y, TABLE_Z + 0.0025]),
        "quat": np.array([0.0, 0.0, 0.0, 1.0]),
        "aabb": box,
        "parts": parts,
        "finger_contacts": contacts,
    }


def _scene(plate: dict, eef, gap: float = 0.078) -> dict:
    return {
        "language": "push the plate to the front of the stove",
        "goal": [["on", "plate_1", "main_table_stove_front_region"]],
        "goal_status": [False],
        "eef_pos": np.asarray(eef, dtype=np.float64),
        "eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
        "gripper_qpos": np.array([gap / 2, -gap / 2]),
        "robot_base_pos": np.array([-0.66, 0.0, 0.912]),
        "objects": {"plate_1": plate},
        "sites": {},
        "joints": {},
    }


def test_a_plate_far_from_the_hand_is_approached_from_above_its_rim():
    cfg = PushConfig()
    assert lowest_part_top(_plate(PLATE_XY)) < RIM_TOP - cfg.dish_depth  # a dish
    decision = push(_scene(_plate(PLATE_XY), [-0.2, 0.0, 1.17]), "plate_1", TARGET_XY, 0.0, cfg)
    assert decision.phase == "approach"
    assert decision.gripper == -1.0
    # Over the rim, not inside the plate's middle (where pushing presses it onto the table).
    rim_distance = float(np.linalg.norm(decision.target[:2] - PLATE_XY))
    assert rim_distance == pytest.approx(cfg.rim_ratio * PLATE_RADIUS, abs=1e-6)
    assert decision.target[2] > RIM_TOP


def test_fingers_closed_on_the_rim_drag_the_plate_along_the_table_towards_the_target():
    cfg = PushConfig()
    eef = np.array([*(PLATE_XY + [0.0, 0.063]), TABLE_Z + cfg.pinch_height])
    priv = _scene(_plate(PLATE_XY, contacts=2), eef, gap=0.035)
    decision = push(priv, "plate_1", TARGET_XY, 0.0, cfg)
    assert decision.phase == "drag"
    assert decision.gripper == 1.0
    step = decision.target[:2] - eef[:2]
    heading = (TARGET_XY - PLATE_XY) / np.linalg.norm(TARGET_XY - PLATE_XY)
    np.testing.assert_allclose(step, cfg.stride * heading, atol=1e-9)
    assert decision.target[2] == pytest.approx(TABLE_Z + cfg.pinch_height)


def test_a_dragged_plate_that_tilts_is_held_at_table_height():
    # Its rim rising (it met something) must not lift the hand: that tips it out of the fingers.
    cfg = PushConfig()
    eef = np.array([*(PLATE_XY + [0.0, 0.063]), TABLE_Z + cfg.pinch_height])
    priv = _scene(_plate(PLATE_XY, lift=0.02, contacts=1), eef, gap=0.03)
    decision = push(priv, "plate_1", TARGET_XY, 0.0, cfg)
    assert decision.phase == "drag"
    assert decision.target[2] == pytest.approx(TABLE_Z + cfg.pinch_height)


def test_fingers_closed_on_nothing_reopen_over_the_rim():
    cfg = PushConfig()
    eef = np.array([*(PLATE_XY + [0.0, 0.063]), TABLE_Z + cfg.pinch_height])
    decision = push(_scene(_plate(PLATE_XY), eef, gap=0.001), "plate_1", TARGET_XY, 0.0, cfg)
    assert decision.phase == "reopen"
    assert decision.gripper == -1.0


def test_a_plate_libero_counts_placed_is_let_go_clear_of_the_region_edge():
    # The region's edge already counts, but a plate let go there can settle back out of it.
    cfg = PushConfig()
    eef = np.array([*(TARGET_XY + [0.0, -0.1]), TABLE_Z + cfg.pinch_height])
    at_edge = _scene(_plate(TARGET_XY - [0.0, 0.035], contacts=2), eef, gap=0.035)
    at_edge["goal_status"] = [True]
    assert push(at_edge, "plate_1", TARGET_XY, 0.0, cfg).phase == "drag"
    inside = _scene(_plate(TARGET_XY - [0.0, 0.015], contacts=2), eef, gap=0.035)
    inside["goal_status"] = [True]
    decision = push(inside, "plate_1", TARGET_XY, 0.0, cfg)
    assert decision.phase == "release"
    assert decision.gripper == -1.0
    np.testing.assert_allclose(decision.target, eef)


def test_a_flat_box_is_still_pushed_from_behind():
    cfg = PushConfig()
    box = _plate(PLATE_XY)
    box["category"] = "tray"
    box["parts"] = box["aabb"][None].copy()
    decision = push(_scene(box, [-0.2, 0.0, 1.17]), "plate_1", TARGET_XY, 0.0, cfg)
    assert decision.phase == "line_up"
    heading = (TARGET_XY - PLATE_XY) / np.linalg.norm(TARGET_XY - PLATE_XY)
    assert float((decision.target[:2] - PLATE_XY) @ heading) < -PLATE_RADIUS
