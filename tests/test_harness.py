"""The evaluation harness: records, summary, resume, error handling, worker supervision, Ray.

Most tests drive the harness with a cheap fake env and fake policies (module-level, so
that spawned workers and Ray actors can unpickle them). Budget, measured on 2 busy cores:
~55 s for the fake-env tests (Ray ~30 s of it); the LIBERO tests add ~145 s (oracle on
2 tasks x 2 init states ~115 s, real-env resume ~30 s).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cogvla.policy_api import Policy
from eval.libero.config import EvalConfig
from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode
from eval.libero.harness import OutputExistsError, ResumeMismatchError, run_eval
from eval.libero.results import EpisodeLog, summarize
from eval.stats import wilson_interval

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
SUITE = "libero_spatial"


class FakeEnv:
    """Succeeds after 3 steps from even init states and never from odd ones.

    ``state[0]`` carries the init state id so that fake policies can misbehave on cue.
    """

    def __init__(self, spec: EnvSpec, step_delay: float = 0.0) -> None:
        self.spec = spec
        self.step_delay = step_delay
        self.init_state_id = None
        self.t = 0

    def _obs(self) -> dict:
        image = np.zeros((8, 8, 3), np.uint8)
        state = np.zeros(8, np.float32)
        state[0] = -1 if self.init_state_id is None else self.init_state_id
        return {"image": image, "wrist_image": image, "state": state, "prompt": "fake task"}

    def reset(self, *, seed=None, options=None):
        self.init_state_id = (options or {}).get("init_state_id")
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        assert np.shape(action) == (7,)
        time.sleep(self.step_delay)
        self.t += 1
        success = self.init_state_id is not None and self.init_state_id % 2 == 0 and self.t >= 13
        return self._obs(), float(success), success, False, {"is_success": success}

    def close(self) -> None:
        pass


class CrashingEnv(FakeEnv):
    """Kills its worker process when it runs init state 1."""

    def step(self, action):
        if self.init_state_id == 1:
            os._exit(3)
        return super().step(action)


class HangingEnv(FakeEnv):
    """Never returns from a step of init state 1."""

    def step(self, action):
        if self.init_state_id == 1:
            time.sleep(3600)
        return super().step(action)


class RaisingEnv(FakeEnv):
    """Raises from the simulator on init state 1."""

    def step(self, action):
        if self.init_state_id == 1:
            raise RuntimeError("simulated MuJoCo instability")
        return super().step(action)


def fake_env(spec: EnvSpec) -> FakeEnv:
    return FakeEnv(spec)


def slow_fake_env(spec: EnvSpec) -> FakeEnv:
    return FakeEnv(spec, step_delay=0.02)


def crashing_env(spec: EnvSpec) -> FakeEnv:
    return CrashingEnv(spec)


def hanging_env(spec: EnvSpec) -> FakeEnv:
    return HangingEnv(spec)


def raising_env(spec: EnvSpec) -> FakeEnv:
    return RaisingEnv(spec)


class ZeroPolicy:
    """A well-behaved policy: chunks of 4 no-op actions."""

    def reset(self) -> None:
        pass

    def infer(self, obs):
        return np.zeros((4, 7), np.float32)


class FlakyPolicy(ZeroPolicy):
    """Misbehaves by init state: 1 -> NaN, 2 -> wrong shape, 3 -> raises."""

    def infer(self, obs):
        init = int(obs["state"][0])
        if init == 1:
            return np.full((4, 7), np.nan, np.float32)
        if init == 2:
            return np.zeros((4, 6), np.float32)
        if init == 3:
            raise RuntimeError("model exploded")
        return super().infer(obs)


def fake_policy(spec: str):
    return FlakyPolicy() if spec == "flaky" else ZeroPolicy()


def failing_policy(spec: str):
    raise FileNotFoundError("no weights in fake-checkpoint")


def _config(tmp_path: Path, **overrides) -> EvalConfig:
    values = dict(
        out=str(tmp_path / "run"),
        policy="zero",
        suites=(SUITE,),
        tasks=(0, 1),
        trials=3,
        max_steps=20,
        num_wait_steps=2,
        image_size=8,
        workers=2,
        hang_timeout_s=5.0,
    )
    values.update(overrides)
    return EvalConfig(**values)


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in Path(out, "episodes.jsonl").read_text().splitlines()]


def test_run_episode_stops_at_success_and_reports_latency():
    spec = EpisodeSpec(env=EnvSpec(SUITE, 0), init_state_id=0, seed=7, max_steps=50, num_wait_steps=10)
    result = run_episode(FakeEnv(spec.env), ZeroPolicy(), spec)
    assert result.success and result.policy_failure is None
    assert result.steps == 3  # the fake succeeds at its 13th step, 10 of which are settle steps
    assert result.num_queries == 1
    assert set(result.latency_ms) == {"mean", "p50", "max"}


def test_run_episode_observes_clean_actions_and_executes_noisy_ones():
    executed, observed = [], []

    class Recorder(FakeEnv):
        def step(self, action):
            executed.append(np.array(action))
            return super().step(action)

    spec = EpisodeSpec(
        env=EnvSpec(SUITE, 0), init_state_id=1, seed=3, max_steps=8, num_wait_steps=0, action_noise=0.2
    )
    run_episode(Recorder(spec.env), ZeroPolicy(), spec, observers=[lambda env, obs, a: observed.append(a)])
    assert len(executed) == 8 and observed[-1] is None
    clean = np.stack(observed[:-1])
    noisy = np.stack(executed)
    assert np.all(clean == 0)
    assert np.all(noisy[:, 6] == 0), "the gripper dim is never perturbed"
    assert np.abs(noisy[:, :6]).max() > 0 and np.abs(noisy).max() <= 1.0


def test_start_joint_noise_is_a_reset_option_of_randomized_episodes_only():
    seen = []

    class Recorder(FakeEnv):
        def reset(self, *, seed=None, options=None):
            seen.append(dict(options))
            return super().reset(seed=seed, options=options)

    spec = EpisodeSpec(
        env=EnvSpec(SUITE, 0),
        init_state_id=None,
        seed=3,
        max_steps=2,
        num_wait_steps=0,
        init_joint_noise=0.02,
    )
    run_episode(Recorder(spec.env), ZeroPolicy(), spec)
    assert seen[0]["joint_noise"] == 0.02 and seen[0]["randomize"] is True
    with pytest.raises(ValueError, match="init_joint_noise: applies to randomized resets only"):
        EpisodeSpec(env=EnvSpec(SUITE, 0), init_state_id=4, seed=3, max_steps=2, init_joint_noise=0.02)
    with pytest.raises(ValueError, match="init_joint_noise: expected >= 0, got -0.1"):
        EpisodeSpec(env=EnvSpec(SUITE, 0), init_state_id=None, seed=3, max_steps=2, init_joint_noise=-0.1)


def test_run_episode_keeps_acting_after_success_when_asked():
    spec = EpisodeSpec(
        env=EnvSpec(SUITE, 0), init_state_id=0, seed=7, max_steps=50, num_wait_steps=10, steps_after_success=4
    )
    result = run_episode(FakeEnv(spec.env), ZeroPolicy(), spec)
    assert result.success and result.steps == 3 + 4


def test_harness_writes_records_and_summary(tmp_path):
    config = _config(tmp_path)
    summary = run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    lines = _lines(config.out)
    assert sorted(r["key"] for r in lines) == sorted(f"{SUITE}/{t}/{i}" for t in (0, 1) for i in range(3))
    for record in lines:
        for field in (
            "suite",
            "task_id",
            "task_name",
            "init_state_id",
            "seed",
            "success",
            "steps",
            "wall_time_s",
            "latency_ms",
            "outcome",
            "policy_failure",
            "error",
        ):
            assert field in record
        assert record["success"] == (record["init_state_id"] % 2 == 0)
        assert record["seed"] == 7 + record["init_state_id"]
    assert summary["overall"]["success_rate"] == pytest.approx(4 / 6)
    assert summary["overall"]["ci95"] == [round(v, 4) for v in wilson_interval(4, 6)]
    assert [t["episodes"] for t in summary["per_task"]] == [3, 3]
    assert summary["per_suite"][SUITE]["successes"] == 4
    saved = json.loads(Path(config.out, "summary.json").read_text())
    assert saved["overall"] == summary["overall"]
    assert json.loads(Path(config.out, "config.json").read_text())["max_steps_per_suite"] == {SUITE: 20}


def test_malformed_policy_output_is_the_policys_failure_and_the_run_goes_on(tmp_path):
    config = _config(tmp_path, policy="flaky", tasks=(0,), trials=5)
    summary = run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    records = {r["init_state_id"]: r for r in _lines(config.out)}
    failures = {i: r["policy_failure"] for i, r in records.items()}
    assert "expected finite values" in failures[1]
    assert "expected shape (chunk>=1, 7), got (4, 6)" in failures[2]
    assert "policy raised RuntimeError" in failures[3] and "model exploded" in failures[3]
    assert failures[0] is None and failures[4] is None
    assert [records[i]["outcome"] for i in range(5)] == ["success"] + ["failure"] * 3 + ["success"]
    assert all(r["error"] is None for r in records.values())
    assert summary["overall"] | {"ci95": None} == {
        "episodes": 5,
        "successes": 2,
        "policy_failures": 3,
        "errors": 0,
        "success_rate": 0.4,
        "ci95": None,
        "failure_modes": {},
    }


@pytest.mark.parametrize(
    "factory, reason", [(crashing_env, "died"), (hanging_env, "hung"), (raising_env, "MuJoCo")]
)
def test_failed_worker_is_replaced_and_its_episode_retried_then_recorded(tmp_path, factory, reason):
    config = _config(tmp_path, tasks=(0,), trials=4, hang_timeout_s=3.0, max_attempts=2)
    summary = run_eval(config, env_factory=factory, policy_factory=fake_policy)
    records = {r["init_state_id"]: r for r in _lines(config.out)}
    assert sorted(records) == [0, 1, 2, 3]
    assert records[1]["outcome"] == "error"
    assert reason in records[1]["error"] and "gave up after 2 attempts" in records[1]["error"]
    assert [records[i]["error"] for i in (0, 2, 3)] == [None, None, None]
    # The errored episode is not scored: 2 successes out of the 3 that finished.
    assert summary["overall"] | {"ci95": None} == {
        "episodes": 3,
        "successes": 2,
        "policy_failures": 0,
        "errors": 1,
        "success_rate": 2 / 3,
        "ci95": None,
        "failure_modes": {},
    }
    assert summary["partial"] and summary["missing"] == 1


def test_policy_that_cannot_load_stops_the_run_with_its_reason(tmp_path):
    config = _config(tmp_path, tasks=(0,), trials=1, workers=1)
    with pytest.raises(RuntimeError, match="no weights in fake-checkpoint"):
        run_eval(config, env_factory=fake_env, policy_factory=failing_policy)


def test_existing_results_need_resume_and_the_same_protocol(tmp_path):
    config = _config(tmp_path, tasks=(0,), trials=1, workers=1)
    run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    with pytest.raises(OutputExistsError, match="--resume"):
        run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    changed = _config(tmp_path, tasks=(0,), trials=1, workers=1, resume=True, seed=8)
    with pytest.raises(ResumeMismatchError, match=r"seed: the run .* used 7, this one asks for 8"):
        run_eval(changed, env_factory=fake_env, policy_factory=fake_policy)


def test_episode_log_drops_a_partial_last_line(tmp_path):
    log = EpisodeLog(tmp_path / "episodes.jsonl")
    log.append({"key": "a", "outcome": "success"})
    with open(log.path, "a") as handle:
        handle.write('{"key": "b", "outc')
    assert list(log.load()) == ["a"]
    log.append({"key": "c", "outcome": "failure"})
    assert list(log.load()) == ["a", "c"]


def test_episode_log_names_the_bytes_it_drops_and_passes_blank_lines_in_silence(tmp_path, caplog):
    log = EpisodeLog(tmp_path / "episodes.jsonl")
    log.append({"key": "a", "outcome": "success"})
    with open(log.path, "a") as handle:
        handle.write('\n  \n{"key": "b", "outc')
    size = log.path.stat().st_size
    with caplog.at_level(logging.WARNING, logger="eval.libero.results"):
        assert list(log.load()) == ["a"]
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "dropping a partial last line (18 bytes) left by a killed run"
    ]
    assert log.path.stat().st_size == size - 18


def test_episode_log_reads_lines_written_before_records_had_an_outcome(tmp_path):
    log = EpisodeLog(tmp_path / "attempts.jsonl")
    with open(log.path, "w") as handle:
        for key, success, error in (("a", True, None), ("b", False, None), ("c", False, "worker died")):
            handle.write(json.dumps({"key": key, "success": success, "error": error}) + "\n")
        handle.write("{}\n")
    records = log.load()
    assert {key: record["outcome"] for key, record in records.items()} == {
        "a": "success",
        "b": "failure",
        "c": "error",
    }


def test_resume_after_kill_gives_no_duplicates_and_no_missing_episodes(tmp_path):
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        from eval.libero.config import EvalConfig
        from eval.libero.harness import run_eval
        from test_harness import slow_fake_env, fake_policy
        config = EvalConfig(out={str(out)!r}, policy="zero", suites=({SUITE!r},), tasks=(0, 1, 2), trials=6,
                            max_steps=20, num_wait_steps=2, image_size=8, workers=2, resume=True)
        run_eval(config, env_factory=slow_fake_env, policy_factory=fake_policy)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO)]))
    stderr = tmp_path / "killed.stderr"
    with open(stderr, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    log_path = out / "episodes.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not log_path.exists() or len(log_path.read_text().splitlines()) < 4
    ):
        assert proc.poll() is None, f"the run to be killed ended early:\n{stderr.read_text()}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(log_path.read_text().splitlines())
    assert 4 <= before < 18, "the run was killed part-way"

    config = EvalConfig(
        out=str(out),
        policy="zero",
        suites=(SUITE,),
        tasks=(0, 1, 2),
        trials=6,
        max_steps=20,
        num_wait_steps=2,
        image_size=8,
        workers=2,
        resume=True,
    )
    resumed = run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    keys = [json.loads(line)["key"] for line in log_path.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 18
    reference = run_eval(
        _config(tmp_path, tasks=(0, 1, 2), trials=6), env_factory=fake_env, policy_factory=fake_policy
    )
    for field in ("overall", "per_suite", "per_task", "missing"):
        assert resumed[field] == reference[field]


def test_summary_counts_each_planned_episode_once():
    records = {
        "s/0/0": {
            "suite": "s",
            "task_id": 0,
            "task_name": "t",
            "success": True,
            "steps": 3,
            "wall_time_s": 1.0,
            "outcome": "success",
            "error": None,
            "latency_ms": {"mean": 2.0},
        },
        "s/0/1": {
            "suite": "s",
            "task_id": 0,
            "task_name": "t",
            "success": False,
            "steps": 9,
            "wall_time_s": 1.0,
            "outcome": "failure",
            "policy_failure": "boom",
            "error": None,
            "latency_ms": {"mean": None},
        },
    }
    summary = summarize(["s/0/0", "s/0/1", "s/0/2"], records)
    assert summary["overall"]["episodes"] == 2 and summary["missing"] == 1 and summary["partial"]
    assert summary["overall"]["policy_failures"] == 1 and summary["overall"]["success_rate"] == 0.5
    assert summary["mean_query_latency_ms"] == 2.0


def test_ray_backend_gives_the_same_summary(tmp_path):
    ray = pytest.importorskip("ray")
    # Ray workers import this module by name to unpickle the fakes.
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO)])}}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    try:
        ray_summary = run_eval(
            _config(tmp_path, out=str(tmp_path / "ray"), backend="ray", trials=2),
            env_factory=fake_env,
            policy_factory=fake_policy,
        )
        crashed = run_eval(
            _config(
                tmp_path, out=str(tmp_path / "ray-crash"), backend="ray", tasks=(0,), trials=3, max_attempts=2
            ),
            env_factory=crashing_env,
            policy_factory=fake_policy,
        )
    finally:
        ray.shutdown()
    errors = {r["init_state_id"]: r["error"] for r in _lines(str(tmp_path / "ray-crash"))}
    assert errors[0] is None and errors[2] is None
    assert "died" in errors[1] and "gave up after 2 attempts" in errors[1]
    assert crashed["overall"]["errors"] == 1
    local = run_eval(
        _config(tmp_path, out=str(tmp_path / "local"), trials=2),
        env_factory=fake_env,
        policy_factory=fake_policy,
    )
    for field in ("overall", "per_suite", "per_task", "missing"):
        assert ray_summary[field] == local[field]
    assert len(_lines(str(tmp_path / "ray"))) == 4


@pytest.mark.libero
def test_oracle_succeeds_through_the_harness(tmp_path):
    pytest.importorskip("envs.oracle", reason="waits on the scripted oracle (envs/oracle.py)")
    config = EvalConfig(
        out=str(tmp_path / "oracle"),
        policy="oracle",
        suites=(SUITE,),
        tasks=(0, 1),
        trials=2,
        image_size=64,
        fast_render=True,
        workers=2,
    )
    summary = run_eval(config)
    assert summary["overall"]["errors"] == 0, _lines(config.out)
    assert summary["overall"]["successes"] == 4, [(r["key"], r["steps"]) for r in _lines(config.out)]


@pytest.mark.libero
def test_real_env_resume_runs_only_the_new_episodes(tmp_path):
    common = dict(
        out=str(tmp_path / "real"),
        policy="zero",
        suites=(SUITE,),
        tasks=(0,),
        max_steps=3,
        num_wait_steps=1,
        image_size=32,
        fast_render=True,
        workers=1,
        videos=1,
    )
    first = run_eval(EvalConfig(trials=1, **common), policy_factory=fake_policy)
    assert first["overall"]["episodes"] == 1
    second = run_eval(EvalConfig(trials=2, resume=True, **common), policy_factory=fake_policy)
    records = _lines(common["out"])
    assert [r["init_state_id"] for r in records] == [0, 1]
    assert second["overall"]["episodes"] == 2 and second["missing"] == 0
    assert records[0]["video"].endswith("--trial000--init000--failure.mp4") and records[1]["video"] is None
    assert (Path(common["out"]) / "videos" / records[0]["video"]).stat().st_size > 0


class _ServedZeroPolicy(Policy):
    def infer(self, obs):
        return np.zeros((4, 7), np.float32)


def fake_env_32px(spec: EnvSpec) -> FakeEnv:
    class Env32(FakeEnv):
        def _obs(self) -> dict:
            obs = super()._obs()
            obs["image"] = obs["wrist_image"] = np.zeros((32, 32, 3), np.uint8)
            return obs

    return Env32(spec)


def test_remote_policy_over_zeromq(tmp_path):
    from deploy.core import InferenceCore
    from deploy.handler import RequestHandler
    from deploy.server import ZmqPolicyServer, ZmqServerConfig

    core = InferenceCore(_ServedZeroPolicy()).start()
    server = ZmqPolicyServer(RequestHandler(core), ZmqServerConfig(port=0)).start()
    try:
        config = _config(tmp_path, policy=server.endpoint, tasks=(0,), trials=2, workers=1)
        summary = run_eval(config, env_factory=fake_env_32px)
    finally:
        server.stop()
        core.stop()
    records = {r["init_state_id"]: r for r in _lines(config.out)}
    assert [records[i]["error"] for i in (0, 1)] == [None, None]
    assert records[0]["success"] and not records[1]["success"]
    assert records[1]["num_queries"] == 5 and records[1]["latency_ms"]["mean"] > 0
    assert summary["overall"]["successes"] == 1
