"""The grasp probe: where a policy closes against where the planner aims, per episode and summarized."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cogvla.cli import main as cogvla_main
from deploy.chunker import ChunkerConfig
from eval.grasp_probe import GraspRecorder, probe_grasps, summarize_grasps
from eval.libero.episode import WHOLE_CHUNKS, EnvSpec

SPOT = np.array([0.1, -0.2, 1.0])


class SceneEnv:
    """An object placed by the reset seed; the hand jumps to each action's first three entries."""

    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec
        self.closed = False

    def _obs(self) -> dict:
        priv = {"eef_pos": self.hand.copy(), "object_pos": self.object.copy()}
        image = np.zeros((8, 8, 3), np.uint8)
        return {"image": image, "wrist_image": image, "state": np.zeros(8, np.float32), "privileged": priv}

    def reset(self, *, seed=None, options=None):
        rng = np.random.default_rng(seed)
        self.object = np.array([*rng.uniform(-0.1, 0.1, size=2), 1.0])
        self.hand = np.array([0.0, 0.0, 1.3])
        self.closed = False
        return self._obs(), {}

    def step(self, action):
        self.hand = np.asarray(action[:3], dtype=np.float64)
        self.closed = self.closed or action[6] > 0
        success = self.closed and np.linalg.norm(self.hand[:2] - self.object[:2]) < 0.01
        return self._obs(), 0.0, bool(success), False, {}


class ReachPolicy:
    """Goes to ``where(obs)``, then closes there; never closes when ``where`` is None."""

    def __init__(self, where) -> None:
        self.where = where

    def reset(self) -> None:
        pass

    def infer(self, obs) -> np.ndarray:
        target = self.where(obs["privileged"])
        if target is None:
            return np.array([[0.0, 0.0, 1.3, 0, 0, 0, -1.0]], np.float32)
        return np.array([[*target, 0, 0, 0, -1.0], [*target, 0, 0, 0, 1.0]], np.float32)


def _probe(policy, episodes: int = 6, chunking: ChunkerConfig = WHOLE_CHUNKS) -> dict:
    return probe_grasps(
        policy,
        EnvSpec("libero_spatial", 0),
        [(None, seed) for seed in range(episodes)],
        max_steps=3,
        chunking=chunking,
        env_factory=SceneEnv,
        planner=lambda priv: priv["object_pos"],
    )


def test_a_policy_that_follows_the_object_has_slope_one_and_no_miss() -> None:
    report = _probe(ReachPolicy(lambda priv: priv["object_pos"] + [0.01, 0.0, 0.0]))
    summary = report["summary"]
    assert summary["episodes"] == summary["closed"] == 6
    assert summary["x"]["slope"] == pytest.approx(1.0) and summary["x"]["correlation"] == pytest.approx(1.0)
    assert summary["x"]["mean_miss_cm"] == pytest.approx(1.0) and summary["x"][
        "std_miss_cm"
    ] == pytest.approx(0.0)
    assert summary["y"]["slope"] == pytest.approx(1.0) and summary["y"]["mean_miss_cm"] == pytest.approx(0.0)
    assert all(row["close_step"] == 1 for row in report["episodes"])
    # The probe reads privileged state, so the env it reports ran with it.
    assert report["env"]["privileged"] is True and report["env"]["task_id"] == 0


def test_a_policy_that_replays_one_spot_has_slope_zero_and_its_miss_spreads_with_the_object() -> None:
    report = _probe(ReachPolicy(lambda priv: SPOT))
    summary = report["summary"]
    for axis in ("x", "y"):
        assert summary[axis]["slope"] == pytest.approx(0.0, abs=1e-9)
        # A constant close position has no correlation to speak of.
        assert summary[axis]["correlation"] is None
        assert summary[axis]["std_miss_cm"] == pytest.approx(summary[axis]["target_std_cm"])
    assert summary["successes"] == 0
    for row in report["episodes"]:
        assert row["close"] == pytest.approx(SPOT.tolist())
        assert row["miss_xy"] == pytest.approx((SPOT[:2] - np.asarray(row["target"][:2])).tolist(), abs=1e-4)


def test_episodes_that_never_close_count_but_leave_the_figures_undefined() -> None:
    summary = _probe(ReachPolicy(lambda priv: None), episodes=3)["summary"]
    assert summary["episodes"] == 3 and summary["closed"] == 0
    assert summary["x"] == {
        "mean_miss_cm": None,
        "std_miss_cm": None,
        "target_std_cm": None,
        "correlation": None,
        "slope": None,
    }


def test_the_planner_is_asked_once_per_episode_at_the_first_step() -> None:
    calls = []
    recorder = GraspRecorder(planner=lambda priv: calls.append(priv["eef_pos"]) or np.zeros(3))
    for step, gripper in enumerate([-1.0, -1.0, 1.0, 1.0]):
        priv = {"eef_pos": np.array([step, 0.0, 0.0])}
        recorder(None, {"privileged": priv}, np.array([0, 0, 0, 0, 0, 0, gripper]))
    recorder(None, {"privileged": {"eef_pos": np.zeros(3)}}, None)
    assert len(calls) == 1 and calls[0][0] == 0
    assert recorder.close_step == 2 and recorder.row()["close"] == [2.0, 0.0, 0.0]


def test_two_episodes_give_no_slope() -> None:
    rows = [
        {"success": True, "target": [0.0, 0.0, 1.0], "close": [0.0, 0.0, 1.0]},
        {"success": False, "target": [0.1, 0.1, 1.0], "close": [0.1, 0.1, 1.0]},
    ]
    summary = summarize_grasps(rows)
    assert summary["successes"] == 1 and summary["x"]["slope"] is None and summary["x"]["mean_miss_cm"] == 0.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--task", "99"], "--task: expected 0 <= task < 10, got 99"),
        (["--task", "0", "--trials", "0"], "--trials: expected >= 1, got 0"),
        (["--task", "0", "--start", "-1"], "--start: expected >= 0, got -1"),
        (["--task", "0", "--mesh-faces", "-5"], "--mesh-faces: expected >= 0, got -5"),
        (["--task", "0", "--gripper-close-delay", "-1"], "--gripper-close-delay: expected >= 0, got -1"),
    ],
)
def test_bad_options_are_refused_by_name(argv, expected, caplog, capsys) -> None:
    code = cogvla_main(["eval", "grasp", "--policy", "oracle", "--suite", "libero_spatial", *argv])
    assert code == 2
    assert expected in caplog.text
    assert capsys.readouterr().out == ""


def test_the_probe_executes_chunks_as_told_and_records_the_executed_close() -> None:
    reach = ReachPolicy(lambda priv: priv["object_pos"])
    assert _probe(reach)["summary"]["closed"] == 6
    # Every chunk closes on its last row only, so a close that waits one step never happens.
    delayed = _probe(reach, chunking=ChunkerConfig(execute_steps=2, gripper_close_delay=1))
    assert delayed["summary"]["closed"] == 0 and delayed["summary"]["successes"] == 0


def test_report_is_json_ready() -> None:
    report = _probe(ReachPolicy(lambda priv: priv["object_pos"]), episodes=3)
    assert json.loads(json.dumps(report)) == report
