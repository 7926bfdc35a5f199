"""Goal planning of the scripted oracle: sub-goal order, thresholds, placements, on hand-built scenes."""

from __future__ import annotations

import numpy as np
import pytest

from envs.oracle_clear import clearing_spot, open_footprint
from envs.oracle_plan import OracleTaskError, SubGoal, articulation_state, next_subgoal
from envs.oracle_regions import region_placement

TABLE_Z = 0.9
DRAWER_RANGES = {"open": np.array([-0.16, -0.14]), "close": np.array([0.0, 0.005])}
STOVE_RANGES = {"turnon": np.array([0.5, 2.1]), "turnoff": np.array([-0.005, 0.0])}


def _box(lo, hi) -> np.ndarray:
    return np.array([lo, hi], dtype=np.float64)


def _object(pos, box, *, fixture=False, contacts=0, joints=(), articulation=None) -> dict:
    return {
        "category": "thing",
        "fixture": fixture,
        "pos": np.asarray(pos, dtype=np.float64),
        "quat": np.array([0.0, 0.0, 0.0, 1.0]),
        "aabb": box,
        "parts": box[None],
        "finger_contacts": contacts,
        "joints": list(joints),
        "articulation": articulation or {},
    }


def _joint(owner: str, qpos: float) -> dict:
    return {
        "owner": owner,
        "type": "slide",
        "qpos": qpos,
        "range": np.array([-0.16, 0.01]),
        "axis": np.array([0.0, -1.0, 0.0]),
        "anchor": np.zeros(3),
        "boxes": {"centre": np.zeros((0, 3)), "rot": np.zeros((0, 3, 3)), "half": np.zeros((0, 3))},
    }


def _kitchen(goal, status, *, drawer=0.0, knob=0.0, bowl_contacts=0) -> dict:
    """A bowl, a cabinet with one drawer region, a stove with a knob and its cook region."""
    cabinet_box = _box([0.0, -0.35, TABLE_Z], [0.25, -0.12, 1.13])
    stove_box = _box([-0.45, 0.1, TABLE_Z], [-0.15, 0.3, 0.95])
    return {
        "goal": goal,
        "goal_status": status,
        "eef_pos": np.array([-0.2, 0.0, 1.17]),
        "eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
        "gripper_qpos": np.array([0.039, -0.039]),
        "robot_base_pos": np.array([-0.66, 0.0, 0.912]),
        "objects": {
            "bowl_1": _object(
                [-0.1, 0.0, TABLE_Z],
                _box([-0.15, -0.05, TABLE_Z], [-0.05, 0.05, 0.95]),
                contacts=bowl_contacts,
            ),
            "pot_1": _object([0.1, 0.1, TABLE_Z], _box([0.07, 0.07, TABLE_Z], [0.13, 0.13, 1.0])),
            "pot_2": _object([0.1, 0.25, TABLE_Z], _box([0.07, 0.22, TABLE_Z], [0.13, 0.28, 1.0])),
            "cabinet_1": _object(
                [0.12, -0.23, TABLE_Z],
                cabinet_box,
                fixture=True,
                joints=["cabinet_1_top"],
                articulation=DRAWER_RANGES,
            ),
            "stove_1": _object(
                [-0.4, 0.2, TABLE_Z],
                stove_box,
                fixture=True,
                joints=["stove_1_knob"],
                articulation=STOVE_RANGES,
            ),
        },
        "sites": {
            "cabinet_1_top_region": {
                "parent": "cabinet_1",
                "pos": np.array([0.12, -0.25 + 0.15, 1.09]),
                "rot": np.eye(3),
                "size": np.array([0.1, 0.076, 0.03]),
                "joints": ["cabinet_1_top"],
            },
            "stove_1_cook_region": {
                "parent": "stove_1",
                "pos": np.array([-0.25, 0.2, 0.905]),
                "rot": np.eye(3),
                "size": np.array([0.075, 0.075, 0.002]),
                "joints": [],
            },
        },
        "joints": {"cabinet_1_top": _joint("cabinet_1", drawer), "stove_1_knob": _joint("stove_1", knob)},
    }


IN_DRAWER = ["in", "bowl_1", "cabinet_1_top_region"]
CLOSE_DRAWER = ["close", "cabinet_1_top_region"]


def test_a_closed_drawer_is_opened_before_something_goes_in():
    priv = _kitchen([IN_DRAWER], [False], drawer=0.0)
    assert next_subgoal(priv) == SubGoal(
        kind="open", obj="cabinet_1_top_region", joints=("cabinet_1_top",), fit="bowl_1"
    )


def test_an_open_drawer_gets_the_object():
    priv = _kitchen([IN_DRAWER], [False], drawer=-0.155)
    assert next_subgoal(priv) == SubGoal(kind="in", obj="bowl_1", target="cabinet_1_top_region")


def test_closing_waits_until_the_object_is_in_whatever_order_the_goal_lists_them():
    priv = _kitchen([CLOSE_DRAWER, IN_DRAWER], [False, False], drawer=-0.155)
    assert next_subgoal(priv).kind == "in"
    priv = _kitchen([CLOSE_DRAWER, IN_DRAWER], [False, True], drawer=-0.155)
    assert next_subgoal(priv) == SubGoal(kind="close", obj="cabinet_1_top_region", joints=("cabinet_1_top",))


def test_the_knob_comes_before_the_pot_goes_on_the_stove():
    goal = [["on", "pot_1", "stove_1_cook_region"], ["turnon", "stove_1"]]
    assert next_subgoal(_kitchen(goal, [False, False])).kind == "turnon"
    assert next_subgoal(_kitchen(goal, [False, True], knob=0.8)).kind == "on"


def test_a_slip_that_undoes_an_earlier_step_makes_it_current_again():
    goal = [["turnon", "stove_1"], ["on", "pot_1", "stove_1_cook_region"]]
    assert next_subgoal(_kitchen(goal, [False, True])).kind == "turnon"


def test_an_object_still_in_the_fingers_is_not_placed_yet():
    priv = _kitchen([IN_DRAWER, CLOSE_DRAWER], [True, False], drawer=-0.155, bowl_contacts=2)
    subgoal = next_subgoal(priv)
    assert subgoal.kind == "in" and subgoal.resting
    priv = _kitchen([IN_DRAWER, CLOSE_DRAWER], [True, False], drawer=-0.155, bowl_contacts=0)
    assert next_subgoal(priv).kind == "close"


def test_nothing_left_when_every_atom_holds():
    assert next_subgoal(_kitchen([IN_DRAWER, CLOSE_DRAWER], [True, True])) is None


@pytest.mark.parametrize(
    ("joint", "qpos", "state", "expected"),
    [
        ("cabinet_1_top", -0.15, "open", True),
        ("cabinet_1_top", -0.13, "open", False),
        ("cabinet_1_top", 0.001, "close", True),
        ("cabinet_1_top", -0.001, "close", False),
        ("stove_1_knob", 0.6, "turnon", True),
        ("stove_1_knob", 0.4, "turnon", False),
        ("stove_1_knob", -0.001, "turnoff", True),
    ],
)
def test_articulation_states_follow_libero_thresholds(joint, qpos, state, expected):
    priv = _kitchen([IN_DRAWER], [False])
    priv["joints"][joint]["qpos"] = qpos
    assert articulation_state(priv, joint, state) is expected


def test_malformed_goals_raise_typed_errors():
    with pytest.raises(OracleTaskError, match="goal_status"):
        next_subgoal(_kitchen([IN_DRAWER], [False, False]))
    with pytest.raises(OracleTaskError, match="expected"):
        next_subgoal(_kitchen([["in", "bowl_1"]], [False]))
    with pytest.raises(OracleTaskError, match="no joint"):
        next_subgoal(_kitchen([["open", "bowl_1"]], [False]))


def test_an_object_goes_where_the_drawer_is_open_from_above():
    priv = _kitchen([IN_DRAWER], [False], drawer=-0.15)
    # The cabinet's top panel covers the drawer region's far half (y < -0.125).
    priv["objects"]["cabinet_1"]["parts"] = np.array([[[0.0, -0.35, 1.12], [0.25, -0.125, 1.13]]])
    placement = region_placement(priv, "bowl_1", "in", "cabinet_1_top_region")
    site = priv["sites"]["cabinet_1_top_region"]
    assert placement.xy[1] > -0.125 + 0.04  # clear of the panel by about the bowl's radius
    assert abs(placement.xy[1] - site["pos"][1]) <= site["size"][1]  # still inside the region
    assert placement.support_z == pytest.approx(site["pos"][2] - site["size"][2])


def test_two_objects_on_one_region_get_separate_spots_inside_it():
    goal = [["on", "pot_1", "stove_1_cook_region"], ["on", "pot_2", "stove_1_cook_region"]]
    priv = _kitchen(goal, [False, False])
    first = region_placement(priv, "pot_1", "on", "stove_1_cook_region")
    second = region_placement(priv, "pot_2", "on", "stove_1_cook_region")
    centre, size = priv["sites"]["stove_1_cook_region"]["pos"], priv["sites"]["stove_1_cook_region"]["size"]
    assert np.linalg.norm(first.xy - second.xy) >= 0.09
    for placement in (first, second):
        assert np.all(np.abs(placement.xy - centre[:2]) < size[:2])


def test_a_drawer_nothing_goes_into_is_closed_before_another_is_opened():
    priv = _kitchen([["open", "cabinet_1_top_region"], ["close", "cabinet_1_low_region"]], [False, False])
    priv["sites"]["cabinet_1_low_region"] = {
        **priv["sites"]["cabinet_1_top_region"],
        "joints": ["cabinet_1_low"],
    }
    priv["joints"]["cabinet_1_low"] = _joint("cabinet_1", -0.15)
    priv["objects"]["cabinet_1"]["joints"].append("cabinet_1_low")
    assert next_subgoal(priv) == SubGoal(kind="close", obj="cabinet_1_low_region", joints=("cabinet_1_low",))


def test_a_drawer_open_too_little_for_the_bowl_is_opened_further_up_to_its_end():
    # The panel above covers the drawer region but for a strip 7 cm deep (y > -0.095): a
    # 10 cm bowl does not fit there, though LIBERO already counts the drawer open.
    panel = np.array([[[0.0, -0.35, 1.12], [0.25, -0.095, 1.13]]])
    priv = _kitchen([IN_DRAWER], [False], drawer=-0.145)
    priv["objects"]["cabinet_1"]["parts"] = panel
    assert next_subgoal(priv) == SubGoal(
        kind="open", obj="cabinet_1_top_region", joints=("cabinet_1_top",), fit="bowl_1"
    )
    # Pulled out as far as it goes: the bowl goes in where there is room.
    priv["joints"]["cabinet_1_top"]["qpos"] = -0.158
    assert next_subgoal(priv).kind == "in"
    # A strip wide enough for the bowl needs no further opening.
    priv = _kitchen([IN_DRAWER], [False], drawer=-0.145)
    priv["objects"]["cabinet_1"]["parts"] = panel - np.array([0.0, 0.04, 0.0])
    assert next_subgoal(priv).kind == "in"


def test_a_loose_object_under_the_drawer_takes_no_room_in_it():
    panel = np.array([[[0.0, -0.35, 1.12], [0.25, -0.135, 1.13]]])
    priv = _kitchen([IN_DRAWER], [False], drawer=-0.145)
    priv["objects"]["cabinet_1"]["parts"] = panel
    # A pot on the table right under the open part of the drawer, below its floor.
    priv["objects"]["pot_1"]["aabb"] = _box([0.05, -0.09, TABLE_Z], [0.2, 0.0, 1.0])
    assert next_subgoal(priv).kind == "in"


def _bowl_in_the_drawers_way(**kwargs) -> dict:
    """The kitchen with a drawer body (travel 0.16 m along +y, out to y = 0.04) and the bowl
    on the table in front of the cabinet, under where the open drawer will be."""
    priv = _kitchen([IN_DRAWER], [False], **kwargs)
    priv["joints"]["cabinet_1_top"]["boxes"] = {
        "centre": np.array([[0.12, -0.23, 1.09]]),
        "rot": np.eye(3)[None],
        "half": np.array([[0.1, 0.11, 0.03]]),
    }
    priv["sites"]["table_region"] = {
        "parent": "",
        "pos": np.array([-0.1, 0.0, TABLE_Z - 0.005]),
        "rot": np.eye(3),
        "size": np.array([0.1, 0.1, 0.005]),
        "joints": [],
    }
    _move(priv["objects"]["bowl_1"], [0.05, -0.02])
    return priv


def _move(obj: dict, xy, z: float = TABLE_Z) -> None:
    shift = np.array([xy[0], xy[1], z]) - obj["pos"]
    obj["pos"] = obj["pos"] + shift
    obj["aabb"] = obj["aabb"] + shift
    obj["parts"] = obj["parts"] + shift


def test_an_object_where_the_drawer_will_open_is_set_aside_first():
    priv = _bowl_in_the_drawers_way()
    aside = next_subgoal(priv)
    assert (aside.kind, aside.obj, aside.joints) == ("clear", "bowl_1", ("cabinet_1_top",))
    spot = clearing_spot(priv, "bowl_1", ("cabinet_1_top",))
    np.testing.assert_allclose(aside.spot, spot)
    footprint = open_footprint(priv, ("cabinet_1_top",))
    np.testing.assert_allclose(footprint[:, :2], [[0.02, -0.34], [0.22, 0.04]], atol=1e-9)
    # The bowl's 10 cm footprint at the spot keeps clear of the open drawer and the pots.
    bowl = np.array([spot - 0.05, spot + 0.05])
    for box in (footprint, *(priv["objects"][n]["aabb"] for n in ("pot_1", "pot_2", "cabinet_1", "stove_1"))):
        gap = np.maximum(box[0, :2] - bowl[1], 0.0) + np.maximum(bowl[0] - box[1, :2], 0.0)
        assert np.linalg.norm(gap) > 0.0099
    assert np.linalg.norm(spot - priv["robot_base_pos"][:2]) <= 0.72
    # Put down there, the bowl is out of the way: the drawer opens next.
    _move(priv["objects"]["bowl_1"], spot)
    assert next_subgoal(priv).kind == "open"


def test_the_spot_stays_put_while_the_object_is_carried_there():
    priv = _bowl_in_the_drawers_way()
    start = priv["objects"]["bowl_1"]["pos"][:2].copy()
    spot = clearing_spot(priv, "bowl_1", ("cabinet_1_top",))
    for fraction in (0.3, 0.6, 0.9):
        xy = start + fraction * (spot - start)
        _move(priv["objects"]["bowl_1"], xy, TABLE_Z + 0.1)
        priv["eef_pos"] = np.array([xy[0], xy[1], TABLE_Z + 0.13])
        priv["objects"]["bowl_1"]["finger_contacts"] = 2
        np.testing.assert_allclose(clearing_spot(priv, "bowl_1", ("cabinet_1_top",)), spot, atol=0.011)
        # Lifted in the hand it is still being set aside, even once it is out of the way.
        assert next_subgoal(priv).kind == "clear"


def test_nothing_is_set_aside_when_the_drawer_misses_it_or_is_open_already():
    priv = _bowl_in_the_drawers_way()
    _move(priv["objects"]["bowl_1"], [-0.2, 0.0])
    assert next_subgoal(priv).kind == "open"
    priv = _bowl_in_the_drawers_way(drawer=-0.155)
    assert next_subgoal(priv).kind == "in"
    # A drawer with no collision geoms sweeps nothing.
    priv = _bowl_in_the_drawers_way()
    priv["joints"]["cabinet_1_top"]["boxes"] = _joint("cabinet_1", 0.0)["boxes"]
    assert next_subgoal(priv).kind == "open"
