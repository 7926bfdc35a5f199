"""Scripted oracle: objects planned in their own frame (a turned book), on hand-built scenes."""

from __future__ import annotations

import numpy as np
from oracle_scenes import hand, still_body

from envs.oracle import ScriptedOracle
from envs.oracle_geometry import gripper_yaw, wrap_angle
from envs.oracle_grasp import GRASP_SPECS, GraspConfig, grasp_width_bound, plan_grasp
from envs.oracle_regions import fitting_turn, region_placement

TABLE_Z = 0.9
# A book standing on its spine edge: 2.9 cm thick, 11 cm wide, 13.4 cm tall.
BOOK_HALF = np.array([0.0143, 0.0552, 0.067])
BOOK_YAW = np.deg2rad(-130.0)
# A caddy's back slot: 5.6 cm across x, 12.4 cm along y.
SLOT_CENTRE, SLOT_SIZE = np.array([-0.424, -0.142, 0.973]), np.array([0.028, 0.062, 0.06])


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)])


def _book(pos, yaw: float, contacts: int = 0) -> dict:
    pos = np.asarray(pos, dtype=np.float64)
    local = np.array([-BOOK_HALF, BOOK_HALF]) + np.array([0.0, 0.0, BOOK_HALF[2]])
    c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
    half_xy = np.array([c * BOOK_HALF[0] + s * BOOK_HALF[1], s * BOOK_HALF[0] + c * BOOK_HALF[1]])
    box = np.array([[*(pos[:2] - half_xy), pos[2]], [*(pos[:2] + half_xy), pos[2] + 2 * BOOK_HALF[2]]])
    return {
        "category": "black_book",
        "fixture": False,
        "pos": pos,
        "quat": _yaw_quat(yaw),
        "aabb": box,
        "parts": box[None],
        "frame_box": local,
        "finger_contacts": contacts,
        "joints": [],
        "articulation": {},
    }


def _scene(book: dict, eef, yaw: float, gap: float = 0.078) -> dict:
    # The caddy's floor and its back wall, whose top sets the carry height.
    caddy_parts = np.array(
        [[[-0.466, -0.359, 0.888], [-0.315, 0.075, 0.901]], [[-0.462, -0.352, 0.892], [-0.453, 0.067, 1.055]]]
    )
    return {
        "language": "pick up the book and place it in the back compartment of the caddy",
        "goal": [["in", "black_book_1", "desk_caddy_1_back_contain_region"]],
        "goal_status": [False],
        **hand(eef, yaw, gap, [-0.75, 0.0, 0.912]),
        "objects": {
            "black_book_1": book,
            "desk_caddy_1": still_body("desk_caddy", [-0.391, -0.142, 0.887], caddy_parts, fixture=False),
        },
        "sites": {
            "desk_caddy_1_back_contain_region": {
                "parent": "desk_caddy_1",
                "pos": SLOT_CENTRE,
                "rot": np.eye(3),
                "size": SLOT_SIZE,
                "joints": [],
            }
        },
        "joints": {},
    }


def test_top_grasp_straddles_a_turned_book_across_its_own_thickness():
    book = _book([-0.21, 0.164, TABLE_Z], BOOK_YAW)
    priv = _scene(book, [-0.3, 0.0, 1.17], yaw=0.0)
    # Its world box is nearly square (10 x 9 cm), too wide to straddle; its own frame is not.
    assert grasp_width_bound(priv, "black_book_1", GRASP_SPECS, GraspConfig()) <= GraspConfig().max_width
    grasp = plan_grasp(priv, "black_book_1", GRASP_SPECS, GraspConfig())
    thickness_axis = np.array([np.cos(BOOK_YAW), np.sin(BOOK_YAW)])
    finger_axis = np.array([np.sin(grasp.yaw), -np.cos(grasp.yaw)])
    assert abs(finger_axis @ thickness_axis) > np.cos(np.deg2rad(31.0))
    assert np.linalg.norm(grasp.point[:2] - book["pos"][:2]) < 0.025
    assert ScriptedOracle().decide(priv).phase == "approach"


def test_fitting_turn_lines_a_book_up_with_a_narrow_slot():
    priv = _scene(_book([-0.42, -0.14, 1.1], BOOK_YAW), [-0.42, -0.14, 1.2], yaw=0.0)
    placement = region_placement(priv, "black_book_1", "in", "desk_caddy_1_back_contain_region")
    turn = fitting_turn(priv["objects"]["black_book_1"], placement)
    # Its long side must end up along the slot's (world y): the book's own y axis at yaw + turn.
    assert abs(wrap_angle(2.0 * (BOOK_YAW + turn))) < 1e-6
    assert abs(turn) <= np.pi / 2
    aligned = _book([-0.42, -0.14, 1.1], 0.05)
    assert fitting_turn(aligned, placement) == 0.0


def test_a_held_book_turns_over_the_slot_before_it_is_lowered():
    carry_z = 1.105  # the wall's top plus the carry clearance
    oracle = ScriptedOracle()

    def decide(book_yaw: float):
        book = _book([-0.424, -0.142, carry_z], book_yaw, contacts=2)
        grip = book["pos"] + np.array([0.0, 0.0, 0.1])
        return grip, oracle.decide(_scene(book, grip, yaw=book_yaw + np.pi / 2, gap=0.029))

    grip, turning = decide(BOOK_YAW)
    assert turning.phase == "lower"
    # Held at the carry height while the fingers turn the book in line with the slot...
    assert turning.target[2] >= grip[2] - 1e-6
    assert abs(wrap_angle(2.0 * (gripper_yaw(turning.rotation) - BOOK_YAW - np.pi / 2))) > 0.5
    # ...and lowered once it is.
    grip, lowering = decide(0.0)
    assert lowering.target[2] < grip[2] - 0.1
