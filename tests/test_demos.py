"""Demo generation: seeds, resume, DART bookkeeping, and one real `cogvla demos` run.

Budget, measured on 2 busy cores: ~4 s for the fake-env tests; the real oracle run
(1 task x 1 demo, 64 px, fast render) ~30-40 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cogvla.data.libero_hdf5 import Episode, append_episode, count_episodes, read_episodes
from deploy.chunker import WHOLE_CHUNK, ChunkerConfig
from eval.libero.demos import DemoConfig, DemoRenderError, attempt_seed, generate_demos
from eval.libero.episode import EnvSpec
from eval.libero.handover import HandoverPolicy

SUITE = "libero_spatial"


class FakeDemoEnv:
    """Succeeds after 6 steps when the reset seed is odd; images encode the step index."""

    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec
        self.t = 0
        self.seed = 0

    def _obs(self) -> dict:
        image = np.zeros((8, 8, 3), np.uint8)
        image[0, :, 0] = self.t  # top row: upright orientation must survive the round trip
        return {"image": image, "wrist_image": image.copy(), "state": np.zeros(8, np.float32), "prompt": "p"}

    def reset(self, *, seed=None, options=None):
        assert options.get("randomize") is True and set(options) <= {"randomize", "joint_noise"}, (
            "demos never use the benchmark's init states"
        )
        self.joint_noise = options.get("joint_noise")
        self.seed, self.t = seed, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        success = self.seed % 2 == 1 and self.t >= 6
        return self._obs(), float(success), success, False, {"is_success": success}

    def raw_fields(self) -> dict:
        return {
            "ee_pos": np.full(3, self.t, float),
            "ee_ori": np.zeros(3),
            "ee_quat": np.array([0, 0, 0, 1.0]),
            "gripper_states": np.zeros(2),
            # The reset's joint_noise option, -1 when it had none.
            "joint_states": np.full(7, -1.0 if self.joint_noise is None else self.joint_noise),
            "sim_state": np.full(5, self.seed, float),
        }

    def close(self) -> None:
        pass


class ConstantPolicy:
    def reset(self) -> None:
        pass

    def infer(self, obs):
        return np.full((1, 7), 0.5, np.float32)


def fake_demo_env(spec: EnvSpec) -> FakeDemoEnv:
    return FakeDemoEnv(spec)


def constant_policy(spec: str) -> ConstantPolicy:
    return ConstantPolicy()


class LearnerPolicy:
    """Chunks of 3 actions of -0.5: nothing the oracle (0.5) would ever output."""

    def reset(self) -> None:
        pass

    def infer(self, obs):
        return np.full((3, 7), -0.5, np.float32)


def learner_or_constant(spec: str):
    return LearnerPolicy() if spec == "learner" else ConstantPolicy()


def _attempts(folder, name) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{name}_attempts.jsonl").read_text().splitlines()]


def test_attempt_seeds_are_fixed_per_task_and_attempt():
    a = attempt_seed(0, SUITE, "task_a", 3)
    assert a == attempt_seed(0, SUITE, "task_a", 3)
    others = {
        attempt_seed(0, SUITE, "task_a", 4),
        attempt_seed(0, SUITE, "task_b", 3),
        attempt_seed(1, SUITE, "task_a", 3),
    }
    assert a not in others and len(others) == 3


def test_demos_resume_to_the_requested_count_without_reusing_seeds(tmp_path):
    config = DemoConfig(
        out=str(tmp_path),
        suite=SUITE,
        tasks=(0,),
        per_task=2,
        num_wait_steps=2,
        max_steps=10,
        post_success_steps=2,
        noise=0.3,
        workers=1,
    )
    first = generate_demos(config, env_factory=fake_demo_env, policy_factory=constant_policy)
    task = first["tasks"][0]
    assert task["demos"] == 2 and count_episodes(task["file"]) == 2
    more = DemoConfig(**{**config.__dict__, "per_task": 4, "workers": 2})
    second = generate_demos(more, env_factory=fake_demo_env, policy_factory=constant_policy)
    assert second["tasks"][0]["demos"] == 4 and count_episodes(task["file"]) == 4

    folder = tmp_path / SUITE
    attempts = _attempts(folder, task["task_name"])
    seeds = [a["seed"] for a in attempts]
    assert len(set(seeds)) == len(seeds), "a resumed run never repeats a seed"
    assert sorted(a["attempt"] for a in attempts) == list(range(len(attempts)))
    assert sum(a["success"] for a in attempts) == 4

    episodes = list(read_episodes(task["file"]))
    assert sorted(p.name for p in (folder / f"{task['task_name']}_demo").iterdir()) == [
        ".lock",
        *(f"demo_{i}.hdf5" for i in range(4)),
    ]
    kept_seeds = sorted(int(e.states[0, 0]) for e in episodes)
    assert kept_seeds == sorted(a["seed"] for a in attempts if a["success"])
    for episode in episodes:
        # 2 unrecorded settle steps; success on the 4th policy step, then 2 more recorded steps.
        assert len(episode) == 4 + 2
        np.testing.assert_array_equal(episode.agentview_rgb[:, 0, 0, 0], np.arange(2, 8))
        np.testing.assert_allclose(episode.actions, 0.5), "the clean action is recorded, not the noisy one"
        assert (
            episode.language
            == "pick up the black bowl between the plate and the ramekin and place it on the plate"
        )


@pytest.mark.parametrize(("field", "value"), [("mesh_faces", 0), ("fast_render", False), ("image_size", 64)])
def test_topping_up_demos_rendered_differently_is_refused_by_field(tmp_path, field, value):
    config = DemoConfig(out=str(tmp_path), suite=SUITE, tasks=(0,), per_task=1, num_wait_steps=0, max_steps=8)
    assert generate_demos(config, env_factory=fake_demo_env, policy_factory=constant_policy)["new_demos"] == 1
    other = DemoConfig(**{**config.__dict__, "per_task": 2, field: value})
    with pytest.raises(DemoRenderError, match=rf"{field}={getattr(config, field)} \(this run: {value}\)"):
        generate_demos(other, env_factory=fake_demo_env, policy_factory=constant_policy)
    same = DemoConfig(**{**config.__dict__, "per_task": 2})
    assert (
        generate_demos(same, env_factory=fake_demo_env, policy_factory=constant_policy)["tasks"][0]["demos"]
        == 2
    )


def test_demos_appended_by_an_earlier_run_count_and_stay_untouched(tmp_path):
    from envs.suites import get_task

    earlier = tmp_path / SUITE / f"{get_task(SUITE, 0).name}_demo.hdf5"
    append_episode(
        earlier,
        Episode(
            actions=np.zeros((4, 7)),
            agentview_rgb=np.zeros((4, 8, 8, 3), np.uint8),
            eye_in_hand_rgb=np.zeros((4, 8, 8, 3), np.uint8),
            ee_pos=np.zeros((4, 3)),
            ee_ori=np.zeros((4, 3)),
            gripper_states=np.zeros((4, 2)),
            joint_states=np.zeros((4, 7)),
            language=get_task(SUITE, 0).language,
        ),
    )
    before = earlier.read_bytes()
    config = DemoConfig(
        out=str(tmp_path), suite=SUITE, tasks=(0,), per_task=2, num_wait_steps=1, max_steps=10
    )
    report = generate_demos(config, env_factory=fake_demo_env, policy_factory=constant_policy)
    task = report["tasks"][0]
    assert task["demos"] == 2 and task["new_demos"] == 1 and count_episodes(task["file"]) == 1
    assert earlier.read_bytes() == before


def test_start_joint_noise_reaches_every_reset_and_is_recorded_with_the_demos(tmp_path):
    import h5py

    base = DemoConfig(out=str(tmp_path), suite=SUITE, tasks=(0,), per_task=2, num_wait_steps=0, max_steps=8)

    def demos(noise, out):
        config = DemoConfig(**{**base.__dict__, "out": str(out), "init_joint_noise": noise})
        report = generate_demos(config, env_factory=fake_demo_env, policy_factory=constant_policy)
        assert report["init_joint_noise"] == noise and report["new_demos"] == 2
        return sorted((out / SUITE).rglob("demo_*.hdf5"))

    noisy = demos(0.02, tmp_path / "noisy")
    for episode in read_episodes(noisy[0].parent):
        np.testing.assert_array_equal(episode.joint_states, 0.02)
    with h5py.File(noisy[0]) as handle:
        assert json.loads(handle["data"].attrs["env_args"])["generation"]["init_joint_noise"] == 0.02
    plain = demos(0.0, tmp_path / "plain")
    for episode in read_episodes(plain[0].parent):
        # No noise, no option: the fake recorded -1.
        np.testing.assert_array_equal(episode.joint_states, -1.0)


def test_handover_cuts_the_learners_chunk_at_the_handover_step():
    policy = HandoverPolicy(LearnerPolicy(), ConstantPolicy())
    policy.hand_over_at(5)
    policy.reset()
    chunks = [policy.infer({}) for _ in range(4)]
    assert [len(c) for c in chunks] == [3, 2, 1, 1]
    assert [float(c[0, 0]) for c in chunks] == [-0.5, -0.5, 0.5, 0.5]
    policy.reset()
    assert float(policy.infer({})[0, 0]) == -0.5, "every episode starts with the learner"


class LateGraspLearner:
    """Chunks of 4 rows numbered by query; each closes the gripper on its last two rows."""

    def __init__(self) -> None:
        self.queries = 0

    def reset(self) -> None:
        self.queries = 0

    def infer(self, obs):
        self.queries += 1
        chunk = np.full((4, 7), -0.1 * self.queries, np.float32)
        chunk[:, -1] = [-1, -1, 1, 1]
        return chunk


@pytest.mark.parametrize(
    ("requery", "arm", "gripper", "queries"),
    [
        (False, [-0.1, -0.1, -0.1, -0.1, -0.2], [-1, -1, 1, 1, -1], 2),
        # The stale close at step 2 is asked again; the fresh chunk runs until step 4.
        (True, [-0.1, -0.1, -0.2, -0.2, -0.3], [-1, -1, -1, -1, -1], 3),
    ],
)
def test_the_learner_acts_through_its_own_chunk_execution_until_the_handover(requery, arm, gripper, queries):
    learner = LateGraspLearner()
    chunking = ChunkerConfig(execute_steps=WHOLE_CHUNK, requery_before_grasp=requery)
    policy = HandoverPolicy(learner, ConstantPolicy(), chunking)
    policy.hand_over_at(5)
    policy.reset()
    chunks = [policy.infer({}) for _ in range(7)]
    assert [len(c) for c in chunks] == [1] * 7, "the learner acts one step per query"
    np.testing.assert_allclose([float(c[0, 0]) for c in chunks[:5]], arm, rtol=1e-6)
    assert [float(c[0, -1]) for c in chunks[:5]] == gripper
    np.testing.assert_allclose(np.concatenate(chunks[5:]), 0.5), "the expert acts from the handover on"
    assert learner.queries == queries
    policy.reset()
    assert learner.queries == 0 and float(policy.infer({})[0, 0]) == pytest.approx(-0.1)


def test_recovery_demos_record_their_rollin_execution(tmp_path):
    requery = ChunkerConfig(execute_steps=WHOLE_CHUNK, requery_before_grasp=True)
    report = _recovery_demos(tmp_path / "a", per_task=1, handover_steps=(2, 3), rollin_chunking=requery)
    assert report["rollin_execution"] == {"requery_before_grasp": True, "gripper_close_delay": 0}
    with h5py.File(next(Path(report["tasks"][0]["file"]).glob("demo_*.hdf5"))) as handle:
        generation = json.loads(handle["data"].attrs["env_args"])["generation"]
    assert generation["rollin_execution"] == report["rollin_execution"]
    plain = _recovery_demos(tmp_path / "b", per_task=1, handover_steps=(2, 3))
    assert plain["rollin_execution"] == {"requery_before_grasp": False, "gripper_close_delay": 0}
    with pytest.raises(ValueError, match="rollin_chunking: applies to a roll-in policy"):
        DemoConfig(out=str(tmp_path), rollin_chunking=requery)
    with pytest.raises(ValueError, match="rollin_chunking: the simulator waits for each roll-in query"):
        DemoConfig(
            out=str(tmp_path), rollin="learner", rollin_chunking=ChunkerConfig(execute_steps=4, prefetch=True)
        )


def test_the_cli_takes_the_rollin_execution_from_the_checkpoints_protocol(tmp_path):
    from eval.libero.demos_cli import _rollin_chunking

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    assert _rollin_chunking(str(checkpoint), "protocol") is None, "no protocol file: whole chunks"
    (checkpoint / "eval_protocol.json").write_text(json.dumps({"requery_before_grasp": True}))
    chunking = _rollin_chunking(str(checkpoint), "protocol")
    assert chunking.requery_before_grasp and chunking.execute_steps == WHOLE_CHUNK
    assert chunking.gripper_close_delay == 0
    assert _rollin_chunking(str(checkpoint), "whole-chunks") is None
    assert _rollin_chunking(None, "protocol") is None
    assert _rollin_chunking("tcp://127.0.0.1:5555", "protocol") is None, "a server carries no protocol file"


def _recovery_demos(tmp_path, **fields) -> dict:
    """Demos of task 0 where "learner" acts first; success at policy step 5 (1 settle step)."""
    config = DemoConfig(
        out=str(tmp_path),
        suite=SUITE,
        tasks=(0,),
        num_wait_steps=1,
        max_steps=12,
        post_success_steps=1,
        max_attempts_factor=4,
        rollin="learner",
        **fields,
    )
    return generate_demos(config, env_factory=fake_demo_env, policy_factory=learner_or_constant)


def test_recovery_demos_record_only_the_oracles_steps_from_the_handover(tmp_path):
    report = _recovery_demos(tmp_path, per_task=2, handover_steps=(2, 3))
    assert report["rollin_policy"] == "learner" and report["handover_steps"] == [2, 3]
    task = report["tasks"][0]
    assert task["demos"] == 2 and task["solved_before_handover"] == 0
    handovers = {a["seed"]: a["handover_step"] for a in _attempts(tmp_path / SUITE, task["task_name"])}
    assert set(handovers.values()) <= {2, 3}
    for episode in read_episodes(task["file"]):
        handover = handovers[int(episode.states[0, 0])]
        # Success at policy step 5, then 1 post-success step.
        assert len(episode) == 5 - handover + 1
        np.testing.assert_allclose(episode.actions, 0.5), "only the oracle's actions are recorded"
        np.testing.assert_array_equal(episode.ee_pos[:, 0], np.arange(1 + handover, 7))


def test_a_handover_at_step_0_records_the_whole_episode_after_a_later_handover():
    from eval.libero.demos import DemoJob, demo_job
    from eval.libero.episode import EpisodeSpec

    env_spec = EnvSpec(SUITE, 0)
    policy = HandoverPolicy(LearnerPolicy(), ConstantPolicy())
    lengths = []
    for attempt, handover in enumerate((3, 0)):
        episode = EpisodeSpec(env=env_spec, init_state_id=None, seed=1, max_steps=12, num_wait_steps=1)
        job = DemoJob(
            key=str(attempt), env_spec=env_spec, episode=episode, attempt=attempt, handover_step=handover
        )
        record = demo_job(FakeDemoEnv(env_spec), policy, job, heartbeat=lambda: None)
        np.testing.assert_allclose(record["arrays"]["actions"], 0.5)
        lengths.append(record["recorded_steps"])
    assert lengths == [5 - 3, 5], "success at policy step 5"


def test_an_attempt_the_learner_solves_before_the_handover_writes_no_demo(tmp_path):
    report = _recovery_demos(tmp_path, per_task=1, handover_steps=(8, 9))
    task = report["tasks"][0]
    attempts = _attempts(tmp_path / SUITE, task["task_name"])
    assert task["demos"] == 0 and count_episodes(task["file"]) == 0 and len(attempts) == 4
    solved = [a["solved_before_handover"] for a in attempts]
    assert solved == [a["success"] for a in attempts], "every success came before the handover"
    assert task["solved_before_handover"] == sum(solved) > 0
    assert task["oracle_success_rate"] == (0.0 if sum(solved) < 4 else None)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--rollin", "MISSING"], "policy: expected 'oracle', 'tcp://HOST:PORT' or a checkpoint folder"),
        (["--rollin", "oracle", "--handover-steps", "5"], "handover_steps: expected LOW,HIGH, got 5"),
        (["--rollin", "oracle", "--handover-steps", "9,3"], "handover_steps: expected 0 <= low <= high"),
        (["--init-joint-noise", "-0.1"], "init_joint_noise: expected >= 0, got -0.1"),
    ],
)
def test_bad_recovery_options_are_refused_by_name(options, expected, tmp_path, caplog):
    from cogvla.cli import main

    assert main(["demos", "--out", str(tmp_path), *options]) == 2
    assert expected in caplog.text
    assert not (tmp_path / SUITE).exists(), "nothing runs with a bad option"


@pytest.mark.libero
def test_cogvla_demos_writes_a_readable_file(tmp_path):
    pytest.importorskip("envs.oracle", reason="waits on the scripted oracle (envs/oracle.py)")
    from cogvla.cli import main

    rc = main(
        [
            "demos",
            "--suite",
            SUITE,
            "--tasks",
            "0",
            "--per-task",
            "1",
            "--out",
            str(tmp_path),
            "--image-size",
            "64",
            "--workers",
            "1",
            "--max-attempts-factor",
            "3",
            "--init-joint-noise",
            "0.02",
        ]
    )
    assert rc == 0
    folders = list((tmp_path / SUITE).glob("*_demo"))
    assert len(folders) == 1 and count_episodes(folders[0]) == 1
    (episode,) = read_episodes(folders[0])
    assert episode.agentview_rgb.shape[1:] == (64, 64, 3) and episode.actions.shape == (len(episode), 7)
    assert episode.states is not None and episode.state.shape == (len(episode), 8)
    # Randomized resets without joint noise start the hand at exactly (-0.208, 0.0, 1.173) m.
    start = episode.state[0, :3]
    assert 0.001 < np.linalg.norm(start - np.array([-0.208, 0.0, 1.173])) < 0.05, start
