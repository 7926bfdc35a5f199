"""Scripted oracle: a mug slid into a roofed region (a microwave), on a hand-built scene.

The hand (10 cm tall) never fits under the microwave's roof, so the mug is held by its handle
from behind, set down low in front of the opening, slid in and, if short, pushed from behind.
"""

from __future__ import annotations

import numpy as np
from oracle_scenes import hand, still_body

from envs.oracle import ScriptedOracle
from envs.oracle_grasp import GraspConfig
from envs.oracle_insert import InsertConfig

TABLE_Z, FLOOR_Z, ROOF_FRONT = 0.9, 0.945, 0.27
MUG_HEIGHT = 0.103
# The mug's frame x (its handle side) points along world -y.
MUG_QUAT = np.array([0.0, 0.0, np.sqrt(0.5), -np.sqrt(0.5)])
# Collision boxes of LIBERO's microwave (door open, out of the way): walls, back, roof, floor.
MICROWAVE_PARTS = np.array(
    [
        [[-0.174, 0.27, 0.919], [-0.143, 0.471, 1.108]],
        [[0.062, 0.27, 0.919], [0.173, 0.471, 1.108]],
        [[-0.146, 0.438, 0.919], [0.063, 0.47, 1.108]],
        [[-0.145, ROOF_FRONT, 1.087], [0.064, 0.441, 1.108]],
        [[-0.145, ROOF_FRONT, 0.919], [0.064, 0.44, FLOOR_Z]],
    ]
)
REGION_CENTRE = np.array([-0.001, 0.369, 1.016])


def _mug(pos, contacts: int = 0) -> dict:
    pos = np.asarray(pos, dtype=np.float64)
    body = np.array([[-0.053, -0.034, 0.0], [0.053, 0.071, MUG_HEIGHT]])
    handle = np.array([[-0.009, -0.068, 0.017], [0.009, -0.015, 0.086]])
    parts = np.stack([body, handle]) + pos
    return {
        "category": "white_yellow_mug",
        "fixture": False,
        "pos": pos,
        "quat": MUG_QUAT,
        "aabb": np.array([parts[:, 0].min(axis=0), parts[:, 1].max(axis=0)]),
        "parts": parts,
        "finger_contacts": contacts,
        "joints": [],
        "articulation": {},
    }


def _scene(mug: dict, eef, gap: float, yaw: float = np.pi / 2) -> dict:
    return {
        "language": "put the yellow and white mug in the microwave",
        "goal": [["in", "white_yellow_mug_1", "microwave_1_heating_region"]],
        "goal_status": [False],
        **hand(eef, yaw, gap, [-0.66, 0.0, 0.912]),
        "objects": {
            "white_yellow_mug_1": mug,
            "microwave_1": still_body("microwave", [-0.001, 0.359, 0.919], MICROWAVE_PARTS, fixture=True),
        },
        "sites": {
            "microwave_1_heating_region": {
                "parent": "microwave_1",
                "pos": REGION_CENTRE,
                "rot": np.eye(3),
                "size": np.array([0.12, 0.084, 0.08]),
                "joints": [],
            }
        },
        "joints": {},
    }


def _handle_point(mug: dict) -> np.ndarray:
    # The handle's outer bar: 6 cm out of the origin along -y, 6.2 cm up.
    return mug["pos"] + np.array([0.0, -0.06, 0.062])


def test_mug_bound_under_a_roof_is_grasped_by_its_handle():
    mug = _mug([-0.02, -0.02, TABLE_Z])
    decision = ScriptedOracle().decide(_scene(mug, [-0.2, 0.0, 1.16], gap=0.078, yaw=0.0))
    assert decision.phase == "approach"
    assert np.linalg.norm(decision.target[:2] - _handle_point(mug)[:2]) < 0.005


def test_held_mug_high_in_front_is_set_down_outside_the_roof():
    mug = _mug([0.0, 0.05, 1.16], contacts=2)
    decision = ScriptedOracle().decide(_scene(mug, _handle_point(mug), gap=0.018))
    assert decision.phase == "carry"
    # The mug's front (7.1 cm ahead of its origin) must stay out from under the roof.
    mug_target = decision.target - (_handle_point(mug) - mug["pos"])
    assert mug_target[1] + 0.071 < ROOF_FRONT
    assert abs(mug_target[0] - REGION_CENTRE[0]) < 0.01


def test_held_mug_low_at_the_opening_slides_in_with_the_hand_outside():
    mug = _mug([-0.001, 0.17, FLOOR_Z + InsertConfig().floor_clearance], contacts=2)
    eef = _handle_point(mug)
    decision = ScriptedOracle().decide(_scene(mug, eef, gap=0.018))
    assert decision.phase == "insert"
    assert decision.target[1] > eef[1] + 0.05
    assert decision.target[1] + GraspConfig().hand_half_width < ROOF_FRONT
    assert abs(decision.target[2] - eef[2]) < 0.005
    assert decision.gripper > 0


def test_mug_set_down_short_of_the_region_is_pushed_from_behind():
    mug = _mug([-0.001, 0.275, FLOOR_Z])
    eef = np.array([-0.001, 0.275 - 0.08, FLOOR_Z + 0.05])
    decision = ScriptedOracle().decide(_scene(mug, eef, gap=0.0))
    assert decision.phase == "push"
    assert eef[1] < decision.target[1] <= ROOF_FRONT - GraspConfig().hand_half_width
