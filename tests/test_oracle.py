"""Scripted oracle: Markov decisions on hand-built scenes, typed errors, one real LIBERO rollout.

Budget: ~1 s for the hand-built scenes, ~15 s for the rollout (env creation dominates).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from libero_physics import physics_only_env

from envs.oracle import OracleTaskError, PrivilegedObservationError, ScriptedOracle
from envs.oracle_geometry import down_rotation, quat_to_mat, rotation_error
from envs.oracle_grasp import GRASP_SPECS, GraspConfig, grasp_spec, plan_grasp

TABLE_Z = 0.9
BOWL_RADIUS, BOWL_HEIGHT = 0.0535, 0.051
PLATE_XY = np.array([0.05, 0.2])
OPEN_GAP, RIM_GAP = 0.078, 0.004


def _home_quat(yaw: float = 0.0) -> np.ndarray:
    """Hand pointing down with the finger axis at ``yaw``, as an (x, y, z, w) quaternion."""
    return np.array([np.cos(yaw / 2), np.sin(yaw / 2), 0.0, 0.0])


def _body(category: str, pos, half_xy: float, height: float, contacts: int = 0) -> dict:
    pos = np.asarray(pos, dtype=np.float64)
    box = np.array(
        [[pos[0] - half_xy, pos[1] - half_xy, pos[2]], [pos[0] + half_xy, pos[1] + half_xy, pos[2] + height]]
    )
    return {
        "category": category,
        "fixture": False,
        "pos": pos,
        "quat": np.array([0.0, 0.0, 0.0, 1.0]),
        "aabb": box,
        "parts": box[None],
        "finger_contacts": contacts,
    }


def _scene(bowl_pos, eef, gap: float = OPEN_GAP, contacts: int = 0, yaw: float = 0.0) -> dict:
    """A bowl and a plate on a table, goal (on bowl plate), in the privileged-state schema."""
    return {
        "language": "pick up the black bowl and place it on the plate",
        "goal": [["on", "akita_black_bowl_1", "plate_1"]],
        "goal_status": [False],
        "eef_pos": np.asarray(eef, dtype=np.float64),
        "eef_quat": _home_quat(yaw),
        "gripper_qpos": np.array([gap / 2, -gap / 2]),
        "robot_base_pos": np.array([-0.66, 0.0, 0.912]),
        "objects": {
            "akita_black_bowl_1": _body("akita_black_bowl", bowl_pos, BOWL_RADIUS, BOWL_HEIGHT, contacts),
            "plate_1": _body("plate", [*PLATE_XY, TABLE_Z + 0.002], 0.068, 0.017),
        },
        "sites": {},
        "joints": {},
    }


def _rim_grasp_scene(bowl_pos, **kwargs) -> dict:
    """Scene with the hand exactly at the planned rim grasp, turned to its yaw."""
    probe = _scene(bowl_pos, [0.0, 0.0, 1.2])
    grasp = plan_grasp(probe, "akita_black_bowl_1", GRASP_SPECS, GraspConfig())
    return _scene(bowl_pos, grasp.point, yaw=grasp.yaw, **kwargs)


def _held_bowl_scene(bowl_pos) -> dict:
    return _rim_grasp_scene(bowl_pos, gap=RIM_GAP, contacts=2)


def test_rim_grasp_keeps_the_outer_finger_off_a_neighbour():
    bowl = np.array([0.0, 0.2, TABLE_Z])
    priv = _scene(bowl, [-0.2, 0.0, 1.17])
    free = plan_grasp(priv, "akita_black_bowl_1", GRASP_SPECS, GraspConfig())
    side = (free.point[:2] - bowl[:2]) / np.linalg.norm(free.point[:2] - bowl[:2])
    # A ramekin right where the outer finger of that grasp would go.
    priv["objects"]["ramekin_1"] = _body("ramekin", [*(bowl[:2] + 0.1 * side), TABLE_Z], 0.045, 0.042)
    blocked = plan_grasp(priv, "akita_black_bowl_1", GRASP_SPECS, GraspConfig())
    assert float((blocked.point[:2] - bowl[:2]) @ side) < 0.01


def test_bowl_in_a_drawer_is_pinched_along_the_drawer_length():
    bowl = np.array([0.1, -0.13, 1.06])
    priv = _scene(bowl, [-0.2, 0.0, 1.17])
    angle = np.deg2rad(24.0)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    priv["sites"]["cabinet_top_region"] = {
        "parent": "wooden_cabinet_1",
        "pos": bowl + np.array([0.0, 0.0, 0.03]),
        "rot": rot,
        "size": np.array([0.1, 0.075, 0.03]),
    }
    grasp = plan_grasp(priv, "akita_black_bowl_1", GRASP_SPECS, GraspConfig())
    finger_axis = np.array([np.sin(grasp.yaw), -np.cos(grasp.yaw)])
    assert abs(finger_axis @ rot[:2, 1]) < 1e-6  # across the drawer's short side: no room there


def test_infer_returns_a_deterministic_float32_chunk():
    oracle = ScriptedOracle()
    obs = {"privileged": _scene([-0.05, 0.0, TABLE_Z], [-0.2, 0.0, 1.17])}
    first, second = oracle.infer(obs), oracle.infer(obs)
    assert first.shape == (1, 7) and first.dtype == np.float32
    assert np.all(np.abs(first) <= 1.0)
    np.testing.assert_array_equal(first, second)


def test_far_from_bowl_moves_towards_it_with_gripper_open():
    oracle = ScriptedOracle()
    bowl = np.array([0.0, 0.15, TABLE_Z])
    eef = np.array([-0.25, -0.1, 1.17])
    priv = _scene(bowl, eef)
    action = oracle.infer({"privileged": priv})[0]
    assert oracle.decide(priv).phase == "approach"
    assert action[6] == -1.0
    assert float(action[:2] @ (bowl[:2] - eef[:2])) > 0.0
    assert np.max(np.abs(action[:3])) == pytest.approx(1.0)  # saturated when far


def test_hand_at_rim_with_open_fingers_closes_without_moving_away():
    oracle = ScriptedOracle()
    priv = _rim_grasp_scene([-0.05, 0.0, TABLE_Z])
    action = oracle.infer({"privileged": priv})[0]
    assert oracle.decide(priv).phase == "close"
    assert action[6] == 1.0
    assert np.max(np.abs(action[:3])) < 0.05


def test_fingers_closed_on_nothing_reopen():
    oracle = ScriptedOracle()
    priv = _rim_grasp_scene([-0.05, 0.0, TABLE_Z], gap=0.002, contacts=0)
    assert oracle.decide(priv).phase == "reopen"
    assert oracle.infer({"privileged": priv})[0, 6] == -1.0


def test_holding_bowl_far_from_plate_lifts_it():
    oracle = ScriptedOracle()
    priv = _held_bowl_scene([-0.05, 0.0, TABLE_Z])
    action = oracle.infer({"privileged": priv})[0]
    assert oracle.decide(priv).phase == "lift"
    assert action[2] > 0.5 and action[6] == 1.0


def test_holding_bowl_high_over_plate_lowers_it():
    oracle = ScriptedOracle()
    priv = _held_bowl_scene([*PLATE_XY, TABLE_Z + 0.1])
    action = oracle.infer({"privileged": priv})[0]
    assert oracle.decide(priv).phase == "lower"
    assert action[2] < -0.5 and action[6] == 1.0


def test_holding_bowl_centred_one_cm_above_plate_opens():
    oracle = ScriptedOracle()
    plate_top = TABLE_Z + 0.002 + 0.017
    priv = _held_bowl_scene([*PLATE_XY, plate_top + 0.01])
    action = oracle.infer({"privileged": priv})[0]
    assert oracle.decide(priv).phase == "release"
    assert action[6] == -1.0
    assert np.allclose(action[:3], 0.0)


def test_holding_bowl_beside_plate_does_not_open():
    oracle = ScriptedOracle()
    plate_top = TABLE_Z + 0.002 + 0.017
    priv = _held_bowl_scene([PLATE_XY[0] + 0.04, PLATE_XY[1], plate_top + 0.01])
    assert oracle.infer({"privileged": priv})[0, 6] == 1.0


def test_released_bowl_on_plate_retreats_upwards():
    oracle = ScriptedOracle()
    priv = _scene([*PLATE_XY, TABLE_Z + 0.01], [*PLATE_XY, TABLE_Z + 0.05])
    action = oracle.infer({"privileged": priv})[0]
    assert oracle.decide(priv).phase == "retreat"
    assert action[2] > 0.5 and action[6] == -1.0


def test_oracle_keeps_no_episode_state():
    oracle = ScriptedOracle()
    before = copy.deepcopy(vars(oracle))
    scene_a = {"privileged": _scene([-0.05, 0.0, TABLE_Z], [-0.2, 0.0, 1.17])}
    scene_b = {"privileged": _held_bowl_scene([-0.05, 0.0, TABLE_Z])}
    first = oracle.infer(scene_a)
    oracle.infer(scene_b)
    np.testing.assert_array_equal(oracle.infer(scene_a), first)
    np.testing.assert_array_equal(ScriptedOracle().infer(scene_a), first)
    assert repr(vars(oracle)) == repr(before)


def test_missing_privileged_observation_raises_typed_error():
    with pytest.raises(PrivilegedObservationError, match=r"obs\['privileged'\] is missing"):
        ScriptedOracle().infer({"state": np.zeros(8, np.float32)})


def test_missing_privileged_field_is_named():
    priv = _scene([-0.05, 0.0, TABLE_Z], [-0.2, 0.0, 1.17])
    del priv["gripper_qpos"]
    with pytest.raises(PrivilegedObservationError, match="gripper_qpos"):
        ScriptedOracle().infer({"privileged": priv})
    priv = _scene([-0.05, 0.0, TABLE_Z], [-0.2, 0.0, 1.17])
    del priv["objects"]["akita_black_bowl_1"]["aabb"]
    with pytest.raises(PrivilegedObservationError, match="akita_black_bowl_1.*aabb"):
        ScriptedOracle().infer({"privileged": priv})


def test_unsupported_goal_is_rejected():
    priv = _scene([-0.05, 0.0, TABLE_Z], [-0.2, 0.0, 1.17])
    priv["goal"] = [["stack", "akita_black_bowl_1", "plate_1"]]
    with pytest.raises(OracleTaskError, match="goal"):
        ScriptedOracle().infer({"privileged": priv})


@pytest.mark.parametrize("yaw", [0.0, 0.7, -2.0])
def test_home_quaternion_matches_down_rotation(yaw):
    assert np.allclose(rotation_error(down_rotation(yaw), quat_to_mat(_home_quat(yaw))), 0.0, atol=1e-9)


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (str, bool, int, float, np.ndarray))


@pytest.mark.libero
def test_oracle_puts_the_first_of_two_objects_in_the_basket_then_turns_to_the_second():
    from envs.oracle_plan import next_subgoal
    from envs.privileged import privileged_state

    env = physics_only_env("libero_10", 0, 0)  # alphabet soup and tomato sauce in the basket
    try:
        oracle = ScriptedOracle()
        first, second = (atom[1] for atom in privileged_state(env)["goal"])
        for _ in range(150):
            priv = privileged_state(env)
            if priv["goal_status"][0] and next_subgoal(priv).obj == second:
                break
            env.step(oracle.infer({"privileged": priv})[0])
        else:
            pytest.fail(f"{first} was not placed and let go within 150 steps")
        assert not priv["goal_status"][1]
    finally:
        env.close()


@pytest.mark.libero
def test_oracle_solves_libero_spatial_task0_init0_without_rendering():
    from envs.privileged import privileged_state

    env = physics_only_env("libero_spatial", 0, 0)
    try:
        oracle = ScriptedOracle()
        priv = privileged_state(env)
        assert _plain(priv)
        assert priv["goal"] == [["on", "akita_black_bowl_1", "plate_1"]]
        success = False
        for _ in range(220):
            env.step(oracle.infer({"privileged": privileged_state(env)})[0])
            if env.check_success():
                success = True
                break
        assert success
    finally:
        env.close()


def _vessel(half_xy: float, height: float, floor: float) -> dict:
    """A round object of the given size; ``floor`` < ``height`` makes its middle lower than its rim."""
    body = _body("unknown_bowl", [0.0, 0.0, TABLE_Z], half_xy, height)
    wall = body["aabb"].copy()
    bottom = body["aabb"].copy()
    bottom[1, 2] = TABLE_Z + floor
    body["parts"] = np.stack([wall, bottom])
    return body


def test_an_unknown_bowl_too_wide_to_straddle_gets_a_rim_grasp_scaled_from_its_size():
    cfg = GraspConfig()
    spec = grasp_spec(_vessel(0.079, 0.06, 0.01), GRASP_SPECS, cfg)
    assert spec.kind == "rim"
    assert 0.06 < spec.rim_radius < 0.079
    assert spec.height == pytest.approx(0.06 - cfg.vessel_rim_depth)


def test_narrow_or_solid_unknown_objects_keep_the_top_grasp():
    cfg = GraspConfig()
    assert grasp_spec(_vessel(0.03, 0.06, 0.01), GRASP_SPECS, cfg).kind == "top"  # narrow enough
    assert grasp_spec(_vessel(0.079, 0.06, 0.06), GRASP_SPECS, cfg).kind == "top"  # no hollow
    assert grasp_spec(_vessel(0.079, 0.019, 0.005), GRASP_SPECS, cfg).kind == "top"  # a dish: dragged
    bowl = _body("akita_black_bowl", [0.0, 0.0, TABLE_Z], BOWL_RADIUS, BOWL_HEIGHT)
    assert grasp_spec(bowl, GRASP_SPECS, cfg) == GRASP_SPECS["akita_black_bowl"]


def _hand_at_a_drawer_handle(eef, gap: float, pointing_down: bool = False) -> dict:
    """The bowl-on-plate scene plus a drawer whose front (the handle) is at ``(0.04, 0.0, 1.09)``,
    and a hand pointing sideways into it (along -y), as a drawer pull leaves it."""
    priv = _scene([-0.25, 0.0, TABLE_Z], eef, gap=gap)
    if not pointing_down:
        priv["eef_quat"] = np.array([np.sin(np.pi / 4), 0.0, 0.0, np.cos(np.pi / 4)])
    priv["joints"] = {
        "cabinet_1_top": {
            "owner": "cabinet_1",
            "type": "slide",
            "qpos": -0.15,
            "range": np.array([-0.16, 0.01]),
            "axis": np.array([0.0, -1.0, 0.0]),
            "anchor": np.zeros(3),
            "boxes": {
                "centre": np.array([[0.04, -0.1, 1.09]]),
                "rot": np.eye(3)[None],
                "half": np.array([[0.1, 0.1, 0.03]]),
            },
        }
    }
    return priv


def test_a_sideways_hand_at_a_handle_lets_go_backs_off_and_comes_in_before_turning_down():
    oracle = ScriptedOracle()
    at_handle = [0.04, 0.01, 1.09]
    assert np.allclose(quat_to_mat(_hand_at_a_drawer_handle(at_handle, 0.02)["eef_quat"])[:, 2], [0, -1, 0])
    assert oracle.decide(_hand_at_a_drawer_handle(at_handle, 0.02)).phase == "release"
    decision = oracle.decide(_hand_at_a_drawer_handle(at_handle, OPEN_GAP))
    assert decision.phase == "back_off"
    # Away from the drawer, against the pointing direction, and in towards the robot's base.
    assert decision.target[1] > at_handle[1] + 0.05
    assert decision.target[0] < at_handle[0] - 0.03
    # Clear of the drawer but still far out: only in towards the robot.
    far_out = [0.0, 0.15, 1.09]
    decision = oracle.decide(_hand_at_a_drawer_handle(far_out, OPEN_GAP))
    assert decision.phase == "back_off"
    np.testing.assert_allclose(np.linalg.norm(decision.target[:2] - [-0.66, 0.0]), 0.64, atol=1e-6)
    # Clear and near: the pick-and-place skill takes over and turns the hand down.
    near = [-0.2, 0.15, 1.09]
    assert oracle.decide(_hand_at_a_drawer_handle(near, OPEN_GAP)).phase == "approach"
    # A hand pointing down at the handle is left to the skill.
    assert (
        oracle.decide(_hand_at_a_drawer_handle(at_handle, OPEN_GAP, pointing_down=True)).phase == "approach"
    )
