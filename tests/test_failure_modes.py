"""Failure modes: each mode from scripted object tracks, their counts, and the harness's records."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from test_harness import FakeEnv, _config, _lines, fake_env, fake_policy

from eval.libero.episode import EnvSpec
from eval.libero.failure_modes import (
    FAILURE_MODES,
    LIFT_M,
    SLIDE_M,
    FailureDiagnosis,
    FailureRecorder,
    count_failure_modes,
)
from eval.libero.harness import run_eval

BOWL, PLATE, RAMEKIN = "bowl", "plate", "ramekin"
BASKET_REGION = "basket_contain_region"
TRAY_REGION = "tray_region"
STEPS = 10
# Half-width of the plate's box around its centre, in x and y.
PLATE_HALF = 0.07

Track = Callable[[int], dict[str, tuple[float, float, float]]]


def still(t: int) -> dict[str, tuple[float, float, float]]:
    return {BOWL: (0.0, 0.0, 0.9), PLATE: (0.2, 0.0, 0.9), RAMEKIN: (-0.2, 0.0, 0.9)}


def bowl_at(path: Callable[[int], tuple[float, float, float]]) -> Track:
    return lambda t: {**still(t), BOWL: path(t)}


class GroundTruthEnv:
    """Object positions from ``track(tick)`` and a final privileged state with ``goal``."""

    def __init__(self, track: Track, goal: list[list[str]], holds: list[bool], contacts: int = 0) -> None:
        self.track, self.goal, self.holds, self.contacts = track, goal, holds, contacts
        self.tick = 0

    def object_positions(self) -> dict[str, np.ndarray]:
        return {name: np.array(pos) for name, pos in self.track(self.tick).items()}

    def privileged_state(self) -> dict:
        objects = {
            name: {"finger_contacts": self.contacts if name == BOWL else 0, "pos": np.array(pos)}
            for name, pos in self.track(self.tick).items()
        }
        centre = objects[PLATE]["pos"]
        objects[PLATE]["aabb"] = np.array([centre - PLATE_HALF, centre + PLATE_HALF])
        objects["cabinet"] = {"joints": ["cabinet_drawer"], "articulation": {"open": [0.1, 0.2]}}
        # A region 0.10 m long in its own x, which the quarter turn lays along the world's y.
        quarter_turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        basket = {
            "parent": "",
            "pos": np.array([0.0, 0.5, 0.9]),
            "rot": quarter_turn,
            "size": np.array([0.05, 0.02, 0.05]),
            "joints": [],
        }
        # A region whose own y is its height: a quarter turn about the world's x, 1 m up.
        tray = {**basket, "pos": np.array([0.0, 0.5, 1.9]), "size": np.array([0.05, 0.5, 0.02])}
        tray["rot"] = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        return {
            "goal": self.goal,
            "goal_status": self.holds,
            "objects": objects,
            "sites": {BASKET_REGION: basket, TRAY_REGION: tray},
        }


def diagnose(
    track: Track, gripper: Callable[[int], float] = lambda t: -1.0, **env_args
) -> FailureDiagnosis | None:
    env = GroundTruthEnv(
        track, env_args.pop("goal", [["on", BOWL, PLATE]]), env_args.pop("holds", [False]), **env_args
    )
    recorder = FailureRecorder()
    for t in range(STEPS):
        env.tick = t
        recorder(env, {}, np.array([0, 0, 0, 0, 0, 0, gripper(t)], np.float32))
    env.tick = STEPS
    recorder(env, {}, None)
    return recorder.diagnose()


def mode_of(track: Track, gripper: Callable[[int], float] = lambda t: -1.0, **env_args) -> str | None:
    diagnosis = diagnose(track, gripper, **env_args)
    return None if diagnosis is None else diagnosis.mode


def rise_from(step: int, height: float) -> Callable[[int], tuple[float, float, float]]:
    return lambda t: (0.0, 0.0, 0.9 + (height if t >= step else 0.0))


def close_from(step: int) -> Callable[[int], float]:
    return lambda t: 1.0 if t >= step else -1.0


def test_a_bowl_that_never_moved_is_a_missed_grasp_or_a_gripper_that_never_closed() -> None:
    assert mode_of(still) == "never_closed"
    assert mode_of(still, close_from(5)) == "missed_grasp"
    # A gripper command of exactly 0 is not a close.
    assert mode_of(still, lambda t: 0.0) == "never_closed"


def test_lifted_bowls_are_held_or_dropped_by_the_fingers_at_the_end() -> None:
    up_and_down = bowl_at(lambda t: (0.1 * (t >= 6), 0.0, 0.95 if 3 <= t < 6 else 0.9))
    assert mode_of(up_and_down, close_from(2), contacts=2) == "still_holding"
    assert mode_of(up_and_down, close_from(2), contacts=1) == "dropped"
    assert mode_of(bowl_at(rise_from(3, 0.05)), close_from(2), contacts=2) == "still_holding"


def set_down_at(x: float, y: float) -> Track:
    """The bowl lifted at ticks 3-5 and set down at ``(x, y)`` from tick 6."""
    return bowl_at(lambda t: (x, y, 0.9) if t >= 6 else (0.0, 0.0, 0.95 if t >= 3 else 0.9))


def test_a_bowl_let_go_over_its_target_is_misplaced_not_dropped() -> None:
    plate_x = still(0)[PLATE][0]
    assert mode_of(set_down_at(plate_x, 0.0), close_from(2)) == "misplaced"
    # The target's box counts up to its edges, and no further.
    assert mode_of(set_down_at(plate_x - PLATE_HALF, PLATE_HALF), close_from(2)) == "misplaced"
    assert mode_of(set_down_at(plate_x - PLATE_HALF - 1e-4, 0.0), close_from(2)) == "dropped"
    assert mode_of(set_down_at(plate_x, PLATE_HALF + 1e-4), close_from(2)) == "dropped"
    # Still between both fingers over the plate is carried, not placed.
    assert mode_of(set_down_at(plate_x, 0.0), close_from(2), contacts=2) == "still_holding"


def test_a_region_target_is_judged_in_its_own_frame() -> None:
    into_basket = {"goal": [["in", BOWL, BASKET_REGION]]}
    # The region runs 5 cm either way along the world's y and 2 cm along its x.
    assert mode_of(set_down_at(0.0, 0.54), close_from(2), **into_basket) == "misplaced"
    assert mode_of(set_down_at(0.015, 0.5), close_from(2), **into_basket) == "misplaced"
    assert mode_of(set_down_at(0.03, 0.5), close_from(2), **into_basket) == "dropped"
    assert mode_of(set_down_at(0.0, 0.56), close_from(2), **into_basket) == "dropped"
    # Only the horizontal place counts, along whichever of the region's axes lie level.
    onto_tray = {"goal": [["in", BOWL, TRAY_REGION]]}
    assert mode_of(set_down_at(0.045, 0.515), close_from(2), **onto_tray) == "misplaced"
    assert mode_of(set_down_at(0.0, 0.53), close_from(2), **onto_tray) == "dropped"
    # A target that is neither an object with a box nor a region: nothing to be over.
    assert mode_of(set_down_at(0.0, 0.5), close_from(2), goal=[["on", BOWL, "shelf"]]) == "dropped"


def test_a_rise_or_slide_below_the_thresholds_is_no_lift_and_no_push() -> None:
    assert mode_of(bowl_at(rise_from(3, 0.029)), close_from(2), contacts=2) == "missed_grasp"
    assert mode_of(bowl_at(lambda t: (0.029 * (t >= 4), 0.0, 0.9)), close_from(2)) == "missed_grasp"
    assert mode_of(bowl_at(lambda t: (0.02 * (t >= 4), 0.025 * (t >= 4), 0.9)), close_from(2)) == "pushed"


def test_a_rise_or_slide_of_exactly_the_threshold_counts() -> None:
    exact = {BOWL: (0.0, 0.0, 0.0), PLATE: (0.5, 0.5, 0.0)}
    rises = lambda t: {**exact, BOWL: (0.0, 0.0, LIFT_M * (t >= 4))}
    slides = lambda t: {**exact, BOWL: (SLIDE_M * (t >= 4), 0.0, 0.0)}
    assert mode_of(rises, close_from(2), contacts=2) == "still_holding"
    assert mode_of(slides, close_from(2)) == "pushed"


def test_another_object_lifted_is_the_wrong_object_and_a_slide_is_a_push() -> None:
    ramekin_up = lambda t: {**still(t), RAMEKIN: (-0.2, 0.0, 0.9 + 0.05 * (t >= 4))}
    assert diagnose(ramekin_up, close_from(3)) == FailureDiagnosis("wrong_object", BOWL, (RAMEKIN,))
    assert mode_of(bowl_at(lambda t: (0.04 * (t >= 4), 0.0, 0.9)), close_from(3)) == "pushed"


def test_objects_taken_instead_are_named_highest_rise_first() -> None:
    both_up = lambda t: {
        BOWL: (0.0, 0.0, 0.9),
        PLATE: (0.2, 0.0, 0.9 + 0.04 * (t >= 4)),
        RAMEKIN: (-0.2, 0.0, 0.9 + 0.08 * (t >= 6)),
    }
    assert diagnose(both_up, close_from(3)).taken == (RAMEKIN, PLATE)
    # The target's own lift wins over another object's.
    bowl_and_ramekin = lambda t: {**both_up(t), BOWL: (0.0, 0.0, 0.9 + 0.05 * (t >= 4))}
    assert diagnose(bowl_and_ramekin, close_from(3)) == FailureDiagnosis("dropped", BOWL)
    # Another object's rise counts from the same threshold as the target's.
    ramekin_at_threshold = lambda t: {**still(t), RAMEKIN: (-0.2, 0.0, 0.9 + LIFT_M * (t >= 4))}
    assert diagnose(ramekin_at_threshold, close_from(3)).mode == "wrong_object"


def test_a_target_the_env_never_reported_was_neither_lifted_nor_pushed() -> None:
    assert diagnose(still, close_from(5), goal=[["on", "mug", PLATE]]) == FailureDiagnosis(
        "missed_grasp", "mug"
    )


def test_the_diagnosis_names_the_object_of_the_unmet_subgoal() -> None:
    assert diagnose(still, close_from(5)) == FailureDiagnosis("missed_grasp", BOWL)
    assert diagnose(still, goal=[["on", PLATE, BOWL]]) == FailureDiagnosis("never_closed", PLATE)
    assert diagnose(still, holds=[True]) == FailureDiagnosis("goal_met")


def test_the_first_unmet_subgoal_decides_and_a_met_goal_is_said_so() -> None:
    assert diagnose(
        still, goal=[["open", "cabinet"], ["on", BOWL, PLATE]], holds=[False, False]
    ) == FailureDiagnosis("articulation", "cabinet")
    # The drawer is open: what is left is the bowl, which never moved.
    assert (
        mode_of(still, goal=[["open", "cabinet"], ["on", BOWL, PLATE]], holds=[True, False]) == "never_closed"
    )
    assert mode_of(still, holds=[True]) == "goal_met"


def test_a_goal_the_planner_does_not_know_has_no_mode() -> None:
    assert mode_of(still, goal=[["stacked", BOWL, PLATE]]) is None


def test_the_diagnosis_is_asked_for_only_after_the_episode() -> None:
    recorder = FailureRecorder()
    recorder(GroundTruthEnv(still, [["on", BOWL, PLATE]], [False]), {}, np.zeros(7, np.float32))
    with pytest.raises(RuntimeError, match="has not ended"):
        recorder.diagnose()


def test_counts_follow_the_modes_order_and_skip_successes_and_unexplained_failures() -> None:
    records = [
        {"outcome": "failure", "failure_mode": "never_closed"},
        {"outcome": "failure", "failure_mode": "dropped"},
        {"outcome": "failure", "failure_mode": "never_closed"},
        {"outcome": "failure", "failure_mode": None},
        {"outcome": "success", "failure_mode": None},
        {"outcome": "error", "failure_mode": None},
    ]
    counts = count_failure_modes(records)
    assert counts == {"dropped": 1, "never_closed": 2}
    assert list(counts) == [mode for mode in FAILURE_MODES if mode in counts]
    assert count_failure_modes([]) == {}


class ExplainedFakeEnv(FakeEnv):
    """The harness's fake env with ground truth: on odd init states (which fail) the bowl is
    lifted from the 5th step and stays between the fingers when the state id is 1 mod 4."""

    def object_positions(self) -> dict[str, np.ndarray]:
        lifted = self.init_state_id % 2 == 1 and self.t >= 5
        return {BOWL: np.array([0.0, 0.0, 0.95 if lifted else 0.9]), PLATE: np.array([0.2, 0.0, 0.9])}

    def privileged_state(self) -> dict:
        held = 2 if self.init_state_id % 4 == 1 else 0
        objects = {BOWL: {"finger_contacts": held}, PLATE: {"finger_contacts": 0}}
        return {"goal": [["on", BOWL, PLATE]], "goal_status": [False], "objects": objects, "sites": {}}


def explained_env(spec: EnvSpec) -> FakeEnv:
    return ExplainedFakeEnv(spec)


def test_the_harness_records_each_failures_mode_and_counts_them_per_task(tmp_path) -> None:
    config = _config(tmp_path, tasks=(0,), trials=4)
    summary = run_eval(config, env_factory=explained_env, policy_factory=fake_policy)
    records = {r["init_state_id"]: r for r in _lines(config.out)}
    assert [records[i]["failure_mode"] for i in range(4)] == [None, "still_holding", None, "dropped"]
    assert [records[i]["failure_object"] for i in range(4)] == [None, BOWL, None, BOWL]
    assert [records[i]["failure_taken"] for i in range(4)] == [None, [], None, []]
    assert summary["per_task"][0]["failure_modes"] == {"still_holding": 1, "dropped": 1}
    assert summary["overall"]["failure_modes"] == {"still_holding": 1, "dropped": 1}


def test_envs_without_ground_truth_record_no_mode(tmp_path) -> None:
    config = _config(tmp_path, tasks=(0,), trials=2)
    summary = run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    fields = [(r["failure_mode"], r["failure_object"], r["failure_taken"]) for r in _lines(config.out)]
    assert fields == [(None, None, None)] * 2
    assert summary["per_task"][0]["failure_modes"] == {}


class BrokenTruthEnv(ExplainedFakeEnv):
    def privileged_state(self) -> dict:
        raise RuntimeError("simulator state unreadable")


def broken_truth_env(spec: EnvSpec) -> FakeEnv:
    return BrokenTruthEnv(spec)


def test_a_diagnosis_that_fails_leaves_the_episodes_result(tmp_path) -> None:
    config = _config(tmp_path, tasks=(0,), trials=2, workers=1)
    summary = run_eval(config, env_factory=broken_truth_env, policy_factory=fake_policy)
    records = {r["init_state_id"]: r for r in _lines(config.out)}
    assert [records[i]["outcome"] for i in (0, 1)] == ["success", "failure"]
    assert records[1]["failure_mode"] is None and records[1]["failure_object"] is None
    assert records[1]["error"] is None
    assert summary["overall"]["episodes"] == 2 and summary["overall"]["failure_modes"] == {}
