"""`cogvla eval libero --resets randomized`: held-out scenes for choosing checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cogvla.cli import main
from envs.suites import get_task
from eval.libero.config import EvalConfig
from eval.libero.harness import PlanError, ResumeMismatchError, plan_episodes, run_eval
from eval.libero.seeds import attempt_seed, validation_seed
from tests.test_harness import FakeEnv, _config, fake_policy

SUITE = "libero_spatial"


class SceneEnv(FakeEnv):
    """Succeeds on every randomized reset whose seed is even, and never on a fixed init state."""

    def reset(self, *, seed=None, options=None):
        self.seed = seed
        self.options = dict(options or {})
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, _, _, truncated, _ = super().step(action)
        success = self.options.get("randomize") is True and self.seed % 2 == 0 and self.t >= 3
        return obs, float(success), success, truncated, {"is_success": success}


def scene_env(spec):
    return SceneEnv(spec)


def test_validation_seeds_are_fixed_and_apart_from_every_demo_attempt():
    name = get_task(SUITE, 0).name
    seeds = [validation_seed(7, SUITE, name, index) for index in range(200)]
    assert seeds == [validation_seed(7, SUITE, name, index) for index in range(200)]
    assert len(set(seeds)) == 200
    assert all(0 <= seed < 2**32 for seed in seeds)
    demo = {attempt_seed(base, SUITE, name, attempt) for base in range(20) for attempt in range(200)}
    assert not demo & set(seeds)
    assert validation_seed(7, SUITE, get_task(SUITE, 1).name, 0) != seeds[0]
    assert validation_seed(8, SUITE, name, 0) != seeds[0]


def test_both_seed_streams_are_pinned_across_releases():
    # Changing either stream moves every demo set's or every validation run's scenes.
    assert attempt_seed(0, "libero_spatial", "t", 0) == 2634857860
    assert attempt_seed(7, "libero_object", "pick_up_the_ketchup", 3) == 1148013810
    assert validation_seed(0, "libero_spatial", "t", 0) == 2266524433
    assert validation_seed(7, "libero_object", "pick_up_the_ketchup", 3) == 3691980832


def test_randomized_plan_samples_held_out_scenes_with_start_pose_noise(tmp_path):
    config = _config(tmp_path, resets="randomized", init_joint_noise=0.03, tasks=(0, 4), start=48, trials=5)
    plan = plan_episodes(config)
    assert [job.key for job in plan] == [f"{SUITE}/{t}/reset{k}" for t in (0, 4) for k in range(48, 53)]
    for job in plan:
        name = get_task(SUITE, job.env_spec.task_id).name
        assert job.episode.init_state_id is None
        assert job.episode.init_joint_noise == 0.03
        assert job.episode.seed == validation_seed(7, SUITE, name, 48 + job.trial)
    with pytest.raises(PlanError, match="start \\+ trials must be <= 50 init states"):
        plan_episodes(_config(tmp_path, tasks=(0,), start=48, trials=5))
    fixed = plan_episodes(_config(tmp_path, tasks=(0,), trials=2))
    assert [(j.key, j.episode.init_state_id, j.episode.init_joint_noise) for j in fixed] == [
        (f"{SUITE}/0/0", 0, 0.0),
        (f"{SUITE}/0/1", 1, 0.0),
    ]


def test_a_randomized_run_records_its_scenes_and_resumes_only_as_randomized(tmp_path):
    config = _config(tmp_path, resets="randomized", tasks=(0,), trials=4, workers=1)
    summary = run_eval(config, env_factory=scene_env, policy_factory=fake_policy)
    records = [json.loads(line) for line in Path(config.out, "episodes.jsonl").read_text().splitlines()]
    name = get_task(SUITE, 0).name
    expected = {
        validation_seed(7, SUITE, name, k): validation_seed(7, SUITE, name, k) % 2 == 0 for k in range(4)
    }
    assert {r["seed"]: r["success"] for r in records} == expected
    assert all(r["init_state_id"] is None for r in records)
    assert summary["overall"]["successes"] == sum(expected.values())
    saved = json.loads(Path(config.out, "config.json").read_text())
    assert (saved["resets"], saved["init_joint_noise"]) == ("randomized", 0.02)
    fixed = _config(tmp_path, tasks=(0,), trials=4, workers=1, resume=True)
    with pytest.raises(
        ResumeMismatchError, match="resets: the run .* used 'randomized', this one asks for 'fixed'"
    ):
        run_eval(fixed, env_factory=scene_env, policy_factory=fake_policy)


def test_a_run_from_before_resets_were_recorded_resumes_as_fixed(tmp_path):
    config = _config(tmp_path, tasks=(0,), trials=1, workers=1)
    run_eval(config, env_factory=scene_env, policy_factory=fake_policy)
    path = Path(config.out, "config.json")
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("resets", "init_joint_noise")}
    path.write_text(json.dumps(old))
    resumed = _config(tmp_path, tasks=(0,), trials=2, workers=1, resume=True)
    assert run_eval(resumed, env_factory=scene_env, policy_factory=fake_policy)["overall"]["episodes"] == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"resets": "random"}, "resets: expected one of fixed, randomized, got 'random'"),
        (
            {"resets": "randomized", "init_joint_noise": -0.1},
            "init_joint_noise: expected a finite value >= 0",
        ),
        (
            {"resets": "randomized", "init_joint_noise": math.nan},
            "init_joint_noise: expected a finite value >= 0",
        ),
        (
            {"resets": "randomized", "perturb": ("language",)},
            "perturb: LIBERO-PRO variants are drawn around the fixed init states",
        ),
    ],
)
def test_bad_reset_settings_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(out="x", policy="oracle", **changes)


def test_the_cli_refuses_joint_noise_on_the_fixed_states(tmp_path, caplog):
    args = [
        "eval",
        "libero",
        "--policy",
        "oracle",
        "--init-joint-noise",
        "0.01",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "init_joint_noise: the fixed init states carry their own start poses" in caplog.text
    assert not (tmp_path / "o").exists()
