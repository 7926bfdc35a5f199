"""Articulation skills of the scripted oracle on hand-built privileged scenes, plus two short LIBERO runs."""

from __future__ import annotations

import numpy as np
import pytest
from libero_physics import physics_only_env

from envs.oracle_articulated import ArticulationConfig, ArticulationError, articulate
from envs.oracle_geometry import down_rotation, gripper_yaw, quat_to_mat
from envs.oracle_plan import SubGoal

CONFIG = ArticulationConfig()
# A drawer opening along +y: its front panel, and a handle bar along x sticking out 2.7 cm.
HANDLE = np.array([0.04, -0.132, 1.015])
PANEL = np.array([0.036, -0.159, 1.018])
# A stove knob on a hinge about +z; its fin runs along x through the axis.
KNOB_ANCHOR = np.array([-0.40, 0.20, 0.905])
# A door hinged about +z at DOOR_ANCHOR; open at -pi/2 (lying along -y), closed at 0 (along +x).
DOOR_ANCHOR = np.array([-0.18, 0.25, 1.016])


def _quat_xyzw(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix, from its largest component (stable everywhere)."""
    m = rot
    candidates = np.array(
        [
            1 + m[0, 0] - m[1, 1] - m[2, 2],
            1 - m[0, 0] + m[1, 1] - m[2, 2],
            1 - m[0, 0] - m[1, 1] + m[2, 2],
            1 + m[0, 0] + m[1, 1] + m[2, 2],
        ]
    )
    k = int(np.argmax(candidates))
    big = np.sqrt(candidates[k]) / 2.0
    pairs = {
        0: [
            big,
            (m[0, 1] + m[1, 0]) / (4 * big),
            (m[0, 2] + m[2, 0]) / (4 * big),
            (m[2, 1] - m[1, 2]) / (4 * big),
        ],
        1: [
            (m[0, 1] + m[1, 0]) / (4 * big),
            big,
            (m[1, 2] + m[2, 1]) / (4 * big),
            (m[0, 2] - m[2, 0]) / (4 * big),
        ],
        2: [
            (m[0, 2] + m[2, 0]) / (4 * big),
            (m[1, 2] + m[2, 1]) / (4 * big),
            big,
            (m[1, 0] - m[0, 1]) / (4 * big),
        ],
        3: [
            (m[2, 1] - m[1, 2]) / (4 * big),
            (m[0, 2] - m[2, 0]) / (4 * big),
            (m[1, 0] - m[0, 1]) / (4 * big),
            big,
        ],
    }
    return np.array(pairs[k])


def _boxes(centres, halves, rots=None):
    centres = np.asarray(centres, dtype=np.float64)
    rots = np.stack([np.eye(3)] * len(centres)) if rots is None else np.asarray(rots)
    return {"centre": centres, "rot": rots, "half": np.asarray(halves, dtype=np.float64)}


def _joint(owner, kind, qpos, limits, axis, anchor, boxes):
    return {
        "owner": owner,
        "type": kind,
        "qpos": qpos,
        "range": np.array(limits),
        "axis": axis,
        "anchor": anchor,
        "boxes": boxes,
    }


def _yaw_matrix(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _scene(
    eef=(-0.21, 0.0, 1.17),
    rot=None,
    gap=0.079,
    contacts=None,
    drawer_q=0.0,
    knob_q=0.0,
    door_q=-1.58,
):
    """Privileged state with a cabinet (one drawer), a stove knob and a hinged door."""
    contacts = contacts or {}
    shift = np.array([0.0, -drawer_q, 0.0])  # the joint axis is -y
    knob_rot = _yaw_matrix(knob_q)
    door_rot = _yaw_matrix(door_q)
    door_centre = DOOR_ANCHOR + door_rot @ np.array([0.13, -0.012, 0.0])
    objects = {
        "cabinet": {
            "aabb": np.array([[-0.09, -0.35, 0.91], [0.16, -0.12, 1.13]]),
            "articulation": {"open": np.array([-0.16, -0.14]), "close": np.array([0.0, 0.005])},
        },
        "stove": {
            "aabb": np.array([[-0.46, 0.10, 0.88], [-0.16, 0.30, 0.96]]),
            "articulation": {"turnon": np.array([0.5, 2.1]), "turnoff": np.array([-0.005, 0.0])},
        },
        "oven": {
            "aabb": np.array([[-0.25, 0.0, 0.92], [0.17, 0.45, 1.11]]),
            "articulation": {"open": np.array([-2.094, -1.3]), "close": np.array([-0.005, 0.0])},
        },
    }
    for name, obj in objects.items():
        obj.update(
            category=name,
            fixture=True,
            pos=obj["aabb"].mean(axis=0),
            quat=np.array([0, 0, 0, 1.0]),
            parts=obj["aabb"][None],
            finger_contacts=contacts.get(name, 0),
        )
    up = np.array([0.0, 0.0, 1.0])
    joints = {
        "drawer": _joint(
            "cabinet",
            "slide",
            drawer_q,
            (-0.16, 0.01),
            np.array([0.0, -1.0, 0.0]),
            np.array([0.04, -0.234, 0.905]),
            _boxes([PANEL + shift, HANDLE + shift], [[0.109, 0.003, 0.034], [0.044, 0.008, 0.008]]),
        ),
        "knob": _joint(
            "stove",
            "hinge",
            knob_q,
            (-0.005, 2.1),
            up,
            KNOB_ANCHOR,
            _boxes(
                [KNOB_ANCHOR + [0, 0, 0.007], KNOB_ANCHOR + knob_rot @ [-0.018, 0, 0.026]],
                [[0.034, 0.034, 0.006], [0.035, 0.012, 0.024]],
                [knob_rot, knob_rot],
            ),
        ),
        "door": _joint(
            "oven",
            "hinge",
            door_q,
            (-2.094, 0.0),
            up,
            DOOR_ANCHOR,
            _boxes([door_centre], [[0.13, 0.012, 0.092]], [door_rot]),
        ),
    }
    for name, joint in joints.items():
        objects[joint["owner"]]["joints"] = [name]
    hand = down_rotation(0.0) if rot is None else rot
    return {
        "goal": [],
        "goal_status": [],
        "eef_pos": np.asarray(eef, dtype=np.float64),
        "eef_quat": _quat_xyzw(hand),
        "gripper_qpos": np.array([gap / 2, -gap / 2]),
        "robot_base_pos": np.array([-0.66, 0.0, 0.912]),
        "objects": objects,
        "joints": joints,
        "sites": {},
    }


OPEN_DRAWER = SubGoal(kind="open", obj="cabinet_region", joints=("drawer",))
CLOSE_DRAWER = SubGoal(kind="close", obj="cabinet_region", joints=("drawer",))
TURN_ON = SubGoal(kind="turnon", obj="stove", joints=("knob",))
TURN_OFF = SubGoal(kind="turnoff", obj="stove", joints=("knob",))
CLOSE_DOOR = SubGoal(kind="close", obj="oven", joints=("door",))


def _hand_at_handle():
    """Orientation of a horizontal hand pointing into the cabinet (-y), fingers along z."""
    return articulate(_scene(), OPEN_DRAWER, CONFIG).rotation


def test_far_from_handle_approaches_in_front_of_it_pointing_in_with_open_fingers():
    decision = articulate(_scene(), OPEN_DRAWER, CONFIG)
    assert decision.phase == "approach"
    assert decision.gripper == -1.0
    # In front of the handle (the drawer opens along +y), hand pointing into the cabinet.
    assert decision.target[1] > HANDLE[1] + CONFIG.handle_standoff / 2
    np.testing.assert_allclose(decision.rotation[:, 2], [0.0, -1.0, 0.0], atol=1e-9)
    assert abs(decision.rotation[2, 1]) == pytest.approx(1.0)


def test_open_hand_aligned_in_front_of_handle_moves_in():
    rot = _hand_at_handle()
    decision = articulate(_scene(eef=HANDLE + [0, 0.05, 0], rot=rot), OPEN_DRAWER, CONFIG)
    assert decision.phase == "insert"
    np.testing.assert_allclose(decision.target, HANDLE)
    assert decision.gripper == -1.0


def test_misaligned_hand_in_front_of_handle_does_not_move_in():
    decision = articulate(_scene(eef=HANDLE + [0, 0.05, 0]), OPEN_DRAWER, CONFIG)
    assert decision.phase != "insert"


def test_open_hand_at_handle_closes():
    decision = articulate(_scene(eef=HANDLE, rot=_hand_at_handle()), OPEN_DRAWER, CONFIG)
    assert decision.phase == "grip"
    assert decision.gripper == 1.0


def test_hand_closed_on_handle_pulls_along_opening_direction():
    scene = _scene(eef=HANDLE + [0, 0.003, 0], rot=_hand_at_handle(), gap=0.017, contacts={"cabinet": 2})
    decision = articulate(scene, OPEN_DRAWER, CONFIG)
    assert decision.phase == "pull"
    assert decision.gripper == 1.0
    assert decision.target[1] - HANDLE[1] == pytest.approx(CONFIG.pull_step)


def test_hand_closed_on_nothing_at_handle_reopens_in_front_of_it():
    scene = _scene(eef=HANDLE, rot=_hand_at_handle(), gap=0.001, contacts={})
    decision = articulate(scene, OPEN_DRAWER, CONFIG)
    assert decision.phase == "reopen"
    assert decision.gripper == -1.0
    assert decision.target[1] > HANDLE[1]


def test_fingers_closed_on_nothing_at_knob_reopen_upwards():
    scene = _on_fin(0.2)
    scene["gripper_qpos"] = np.array([0.0005, -0.0005])
    scene["objects"]["stove"]["finger_contacts"] = 0
    decision = articulate(scene, TURN_ON, CONFIG)
    assert decision.phase == "reopen"
    assert decision.gripper == -1.0
    assert decision.target[2] > scene["eef_pos"][2]


def test_hand_low_over_the_cabinet_rises_before_coming_round_to_the_handle():
    decision = articulate(_scene(eef=(0.03, -0.25, 1.0), gap=0.02), OPEN_DRAWER, CONFIG)
    assert decision.phase == "rise"
    assert decision.target[2] > 1.13
    assert decision.gripper == -1.0


def test_drawer_already_open_lets_go_and_backs_off():
    rot = _hand_at_handle()
    held = _scene(eef=HANDLE + [0, 0.15, 0], rot=rot, gap=0.017, contacts={"cabinet": 2}, drawer_q=-0.15)
    decision = articulate(held, OPEN_DRAWER, CONFIG)
    assert decision.phase == "release"
    assert decision.gripper == -1.0
    released = _scene(eef=HANDLE + [0, 0.15, 0], rot=rot, gap=0.079, drawer_q=-0.15)
    decision = articulate(released, OPEN_DRAWER, CONFIG)
    assert decision.phase == "back_off"
    # Backing off is away from the handle, against the direction the hand points.
    assert decision.target[1] > HANDLE[1] + 0.15


def test_push_closed_approaches_over_the_cabinet_then_pushes_into_it():
    open_q = -0.146
    front = HANDLE + [0, -open_q + 0.008, 0]
    decision = articulate(_scene(drawer_q=open_q), CLOSE_DRAWER, CONFIG)
    assert decision.phase == "approach"
    assert decision.target[2] > 1.13
    decision = articulate(_scene(eef=front + [0, 0.03, 0], drawer_q=open_q, gap=0.0), CLOSE_DRAWER, CONFIG)
    assert decision.phase == "push"
    assert decision.target[1] < front[1] - 0.02
    assert decision.gripper == 1.0
    # The hand leans with its fingertips ahead of the wrist.
    assert decision.rotation[1, 2] < -0.3


def test_push_approach_turns_through_home_when_the_wrist_is_far_round():
    # The push wants the hand's x axis along the push (-y here); a hand turned the other way
    # goes back to the home orientation first instead of taking the shortest turn.
    far = articulate(_scene(rot=down_rotation(np.pi / 2 + 0.3), drawer_q=-0.146), CLOSE_DRAWER, CONFIG)
    np.testing.assert_allclose(far.rotation, down_rotation(0.0))
    near = articulate(_scene(drawer_q=-0.146), CLOSE_DRAWER, CONFIG)
    assert near.rotation[1, 0] < -0.8


@pytest.mark.parametrize("subgoal", [CLOSE_DOOR, TURN_ON])
def test_hand_still_closed_on_another_fixture_lets_go_before_travelling(subgoal):
    # Still holding the handle of the drawer it just pulled open.
    scene = _scene(
        eef=HANDLE + [0, 0.15, 0], rot=_hand_at_handle(), gap=0.017, contacts={"cabinet": 2}, drawer_q=-0.15
    )
    decision = articulate(scene, subgoal, CONFIG)
    assert decision.phase == "release"
    assert decision.gripper == -1.0
    np.testing.assert_allclose(decision.target, scene["eef_pos"])


def _on_fin(knob_q: float):
    yaw = knob_q + np.pi / 2  # fingers across a fin that runs along the knob's x axis
    grasp = KNOB_ANCHOR + [0.0, 0.0, 0.05 - CONFIG.finger_depth]
    return _scene(eef=grasp, rot=down_rotation(yaw), gap=0.025, contacts={"stove": 2}, knob_q=knob_q)


@pytest.mark.parametrize(("subgoal", "knob_q", "sign"), [(TURN_ON, 0.0, 1.0), (TURN_OFF, 1.0, -1.0)])
def test_knob_twists_towards_the_state(subgoal, knob_q, sign):
    scene = _on_fin(knob_q)
    decision = articulate(scene, subgoal, CONFIG)
    assert decision.phase == "twist"
    assert decision.gripper == 1.0
    turned = gripper_yaw(decision.rotation) - (knob_q + np.pi / 2)
    assert np.sign(np.arctan2(np.sin(turned), np.cos(turned))) == sign


def test_knob_far_away_hovers_over_the_fin_with_fingers_across_it():
    decision = articulate(_scene(knob_q=0.3), TURN_ON, CONFIG)
    assert decision.phase == "approach"
    np.testing.assert_allclose(decision.target[:2], KNOB_ANCHOR[:2], atol=1e-9)
    finger = decision.rotation[:, 1]
    fin = _yaw_matrix(0.3)[:, 0]
    assert abs(float(finger @ fin)) < 1e-9


def test_door_push_leads_along_the_closing_arc():
    door_q = -1.2
    # On the outer side of the door (opposite to where it swings), at its top edge.
    radial = _yaw_matrix(door_q) @ np.array([1.0, 0.0, 0.0])
    outward = -np.cross([0.0, 0.0, 1.0], radial)
    eef = DOOR_ANCHOR + radial * 0.2 + outward * 0.03 + [0, 0, 0.092 - CONFIG.finger_depth]
    decision = articulate(_scene(eef=eef, door_q=door_q, gap=0.0), CLOSE_DOOR, CONFIG)
    assert decision.phase == "push"
    # The target is turned towards the closed door (counter-clockwise from above).
    rel_now, rel_target = (eef - DOOR_ANCHOR)[:2], (decision.target - DOOR_ANCHOR)[:2]
    assert np.cross(rel_now, rel_target) > 0


def test_hand_inside_the_fixture_withdraws_before_closing_the_door():
    decision = articulate(_scene(eef=(-0.01, 0.35, 1.0), gap=0.03), CLOSE_DOOR, CONFIG)
    assert decision.phase == "withdraw"
    assert decision.gripper == -1.0
    assert decision.target[1] < DOOR_ANCHOR[1]


@pytest.mark.parametrize("yaw", [0.0, 1.0, np.pi / 2, 3.0])
def test_scene_quaternions_round_trip(yaw):
    for rot in (down_rotation(yaw), _hand_at_handle()):
        np.testing.assert_allclose(quat_to_mat(_quat_xyzw(rot)), rot, atol=1e-9)


def test_unknown_joint_is_a_typed_error():
    with pytest.raises(ArticulationError, match="subgoal.joints"):
        articulate(_scene(), SubGoal(kind="open", obj="x", joints=("nope",)), CONFIG)


@pytest.mark.libero
@pytest.mark.parametrize(("task_id", "steps"), [(0, 150), (7, 150)])
def test_oracle_opens_drawer_and_turns_on_stove_in_libero_goal(task_id, steps):
    from envs.oracle import ScriptedOracle
    from envs.privileged import privileged_state

    env = physics_only_env("libero_goal", task_id)
    try:
        oracle = ScriptedOracle()
        for _ in range(steps):
            priv = privileged_state(env)
            if all(priv["goal_status"]):
                break
            env.step(oracle.action(priv, oracle.decide(priv)))
        assert all(privileged_state(env)["goal_status"])
    finally:
        env.close()


def _too_short(eef=(-0.21, 0.0, 1.17), gap=0.079):
    """The drawer open by LIBERO's threshold, its region open from above too short for a bowl."""
    scene = _scene(eef=eef, gap=gap, drawer_q=-0.145)
    # The region spans y in [-0.3, -0.15] (front inside at -0.15); the panel above covers y < -0.2.
    scene["sites"]["cabinet_region"] = {
        "parent": "cabinet",
        "pos": np.array([0.04, -0.225, 0.98]),
        "rot": np.eye(3),
        "size": np.array([0.1, 0.075, 0.03]),
        "joints": ["drawer"],
    }
    scene["objects"]["cabinet"]["parts"] = np.array([[[-0.09, -0.35, 1.05], [0.16, -0.2, 1.13]]])
    bowl = np.array([[-0.3, 0.1, 0.9], [-0.2, 0.2, 0.95]])
    scene["objects"]["bowl"] = {
        **scene["objects"]["stove"],
        "fixture": False,
        "aabb": bowl,
        "parts": bowl[None],
    }
    scene["objects"]["bowl"]["finger_contacts"] = 0
    return scene


def test_a_drawer_open_too_little_is_pushed_further_out_from_inside():
    subgoal = SubGoal(kind="open", obj="cabinet_region", joints=("drawer",), fit="bowl")
    decision = articulate(_too_short(), subgoal, CONFIG)
    assert decision.phase == "approach"
    # Over the inside of the front, above the cabinet, fingers closed and pointing down.
    assert decision.target[1] == pytest.approx(-0.15 - CONFIG.inside_gap)
    assert decision.target[2] > 1.13
    assert decision.gripper == 1.0
    assert decision.rotation[2, 2] < -0.99
    inside = (0.04, -0.15 - CONFIG.inside_gap, 1.01 - CONFIG.inside_depth)
    decision = articulate(_too_short(eef=inside, gap=0.0), subgoal, CONFIG)
    assert decision.phase == "push_out"
    assert decision.target[1] > inside[1] + 0.03
    # Without an object to fit, LIBERO's threshold is enough: let go.
    assert articulate(_too_short(), OPEN_DRAWER, CONFIG).phase == "back_off"
