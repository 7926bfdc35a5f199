"""Harness faults and chunk execution: infrastructure errors are retried and run again, never
scored; partial runs say so; repeated indices and corrupt log lines; open-loop, ensembled and
asynchronous chunk execution. The fakes live in test_harness (spawned workers import them)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from test_harness import SUITE, FakeEnv, ZeroPolicy, _config, _lines, crashing_env, fake_env, fake_policy

from deploy.client import ServerTimeout
from eval.libero.config import EvalConfig
from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode
from eval.libero.harness import ResumeMismatchError, run_eval
from eval.libero.results import summarize


class ServerDownPolicy(ZeroPolicy):
    """A remote policy whose server does not answer during init state 1."""

    def infer(self, obs):
        if int(obs["state"][0]) == 1:
            raise ServerTimeout("no reply from tcp://127.0.0.1:9 within 10 ms")
        return super().infer(obs)


def server_down_policy(spec: str) -> ServerDownPolicy:
    return ServerDownPolicy()


def test_unreachable_policy_server_is_an_error_not_a_policy_failure(tmp_path):
    config = _config(tmp_path, tasks=(0,), trials=3, workers=1, max_attempts=2)
    summary = run_eval(config, env_factory=fake_env, policy_factory=server_down_policy)
    records = {r["init_state_id"]: r for r in _lines(config.out)}
    assert records[1]["outcome"] == "error" and records[1]["policy_failure"] is None
    assert "ServerTimeout" in records[1]["error"] and "gave up after 2 attempts" in records[1]["error"]
    assert (summary["overall"]["episodes"], summary["overall"]["errors"]) == (2, 1)
    assert summary["overall"]["success_rate"] == 1.0 and summary["partial"]


def test_resume_runs_episodes_that_ended_in_an_infrastructure_error_again(tmp_path):
    crashed = run_eval(
        _config(tmp_path, tasks=(0,), trials=4, max_attempts=2),
        env_factory=crashing_env,
        policy_factory=fake_policy,
    )
    assert crashed["overall"]["errors"] == 1 and crashed["partial"]
    resumed = run_eval(
        _config(tmp_path, tasks=(0,), trials=4, resume=True), env_factory=fake_env, policy_factory=fake_policy
    )
    assert resumed["overall"] | {"ci95": None} == {
        "episodes": 4,
        "successes": 2,
        "policy_failures": 0,
        "errors": 0,
        "success_rate": 0.5,
        "ci95": None,
        "failure_modes": {},
    }
    assert not resumed["partial"] and resumed["missing"] == 0
    assert [r["outcome"] for r in _lines(str(tmp_path / "run")) if r["init_state_id"] == 1] == [
        "error",
        "failure",
    ]


def test_a_run_recorded_before_a_protocol_field_existed_resumes_with_its_default(tmp_path):
    config = _config(tmp_path, tasks=(0,), trials=1, workers=1)
    run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    recorded = Path(config.out, "config.json")
    older = {k: v for k, v in json.loads(recorded.read_text()).items() if k != "execution"}
    recorded.write_text(json.dumps(older))
    resumed = _config(tmp_path, tasks=(0,), trials=2, workers=1, resume=True)
    assert run_eval(resumed, env_factory=fake_env, policy_factory=fake_policy)["overall"]["episodes"] == 2
    with pytest.raises(ResumeMismatchError, match="execution: the run .* used 'open-loop'"):
        run_eval(
            _config(tmp_path, tasks=(0,), trials=2, workers=1, resume=True, execution="ensemble"),
            env_factory=fake_env,
            policy_factory=fake_policy,
        )


def _record(task_id: int, init: int, outcome: str) -> tuple[str, dict]:
    key = f"s/{task_id}/{init}"
    return key, {
        "key": key,
        "suite": "s",
        "task_id": task_id,
        "task_name": f"t{task_id}",
        "outcome": outcome,
        "success": outcome == "success",
        "steps": 1,
        "wall_time_s": 0.1,
        "latency_ms": {"mean": None},
    }


def test_a_partial_run_says_so_and_gives_the_mean_of_per_task_rates():
    records = dict(
        [
            _record(0, 0, "success"),
            _record(0, 1, "success"),
            _record(0, 2, "success"),
            _record(1, 0, "failure"),
        ]
    )
    planned = [f"s/{t}/{i}" for t in (0, 1) for i in range(3)]
    summary = summarize(planned, records)
    assert summary["partial"] and summary["missing"] == 2
    assert summary["overall"]["success_rate"] == 0.75
    assert summary["mean_task_success_rate"] == 0.5
    complete = summarize(planned[:3], records)
    assert not complete["partial"] and complete["mean_task_success_rate"] == 1.0


def test_summary_figures_are_rounded_where_they_are_reported():
    records = dict(_record(0, i, "success" if i == 0 else "failure") for i in range(3))
    for i, record in enumerate(records.values()):
        record["wall_time_s"] = 0.12345 * (i + 1)
    summary = summarize(list(records), records)
    # Wilson bounds of 1/3 (0.06149..., 0.79234...) to 4 places; wall time to the millisecond.
    assert summary["overall"]["ci95"] == [0.0615, 0.7923]
    assert summary["episode_wall_time_s"] == 0.741
    assert summary["mean_task_success_rate"] == 0.3333


@pytest.mark.parametrize("field, value", [("tasks", (0, 0)), ("suites", (SUITE, SUITE))])
def test_repeated_indices_are_refused(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field}: expected each value once"):
        _config(tmp_path, **{field: value})


def _edited(first: bytes, **changes: object) -> bytes:
    """``first`` with each named field set, or removed where the value is None."""
    record = json.loads(first)
    for name, value in changes.items():
        if value is None:
            record.pop(name)
        else:
            record[name] = value
    return json.dumps(record).encode()


CORRUPT_LINES = {
    "empty-object": lambda first: b"{}",
    "null": lambda first: b"null",
    "not-utf8": lambda first: b"\xff\xfe\x00 not utf-8",
    "no-key": lambda first: _edited(first, key=None),
    "int-key": lambda first: _edited(first, key=5),
    "unknown-outcome": lambda first: _edited(first, outcome="maybe"),
}


@pytest.mark.parametrize("corrupt", sorted(CORRUPT_LINES))
def test_corrupt_log_lines_are_skipped_with_a_warning_and_run_again(tmp_path, caplog, corrupt):
    config = _config(tmp_path, tasks=(0,), trials=2, workers=1)
    run_eval(config, env_factory=fake_env, policy_factory=fake_policy)
    log_path = Path(config.out, "episodes.jsonl")
    first, second = log_path.read_bytes().splitlines()
    log_path.write_bytes(CORRUPT_LINES[corrupt](first) + b"\n" + second + b"\n")
    with caplog.at_level(logging.WARNING, logger="eval.libero.results"):
        summary = run_eval(
            _config(tmp_path, tasks=(0,), trials=2, workers=1, resume=True),
            env_factory=fake_env,
            policy_factory=fake_policy,
        )
    assert "episodes.jsonl:1: skipping a corrupt line" in caplog.text
    assert summary["overall"]["episodes"] == 2 and not summary["partial"]
    assert json.loads(log_path.read_bytes().splitlines()[-1])["key"] == json.loads(first)["key"]


class CountingEnv(FakeEnv):
    """Puts the policy-step index in ``state[1]`` and keeps every executed action."""

    def reset(self, *, seed=None, options=None):
        self.executed = []
        return super().reset(seed=seed, options=options)

    def _obs(self) -> dict:
        obs = super()._obs()
        obs["state"][1] = self.t
        return obs

    def step(self, action):
        self.executed.append(np.array(action))
        return super().step(action)


class PlanningPolicy(ZeroPolicy):
    """Chunks of 8 whose row i is meant for step t + i (column 0) and carries the query index
    (column 1); answers after ``delay`` seconds, as a slow model would."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.asked_at: list[int] = []

    def infer(self, obs):
        t = int(obs["state"][1])
        time.sleep(self.delay)
        chunk = np.zeros((8, 7), np.float32)
        chunk[:, 0] = t + np.arange(8)
        chunk[:, 1] = len(self.asked_at)
        self.asked_at.append(t)
        return chunk


def _execute(execution: str, policy: PlanningPolicy, **overrides) -> CountingEnv:
    chunking = EvalConfig(out="unused", policy="unused", execution=execution, **overrides).chunking()
    spec = EpisodeSpec(
        env=EnvSpec(SUITE, 0), init_state_id=1, seed=0, max_steps=20, num_wait_steps=0, chunking=chunking
    )
    env = CountingEnv(spec.env)
    result = run_episode(env, policy, spec)
    assert result.steps == 20 and result.num_queries == len(policy.asked_at)
    return env


def test_open_loop_executes_each_whole_chunk():
    policy = PlanningPolicy()
    env = _execute("open-loop", policy)
    assert policy.asked_at == [0, 8, 16]
    assert [a[0] for a in env.executed] == list(range(20))


def test_ensemble_averages_every_chunk_covering_the_step():
    policy = PlanningPolicy()
    env = _execute("ensemble", policy)
    assert policy.asked_at == list(range(20))
    assert [a[0] for a in env.executed] == pytest.approx(list(range(20)))
    # Step 10 is covered by the chunks asked at steps 3..10 (query indices 3..10), oldest weighted most.
    expected = np.average(np.arange(3, 11), weights=np.exp(-0.01 * np.arange(8)))
    assert env.executed[10][1] == pytest.approx(expected, rel=1e-6)


def test_async_execution_adopts_each_chunk_a_fixed_latency_after_its_observation():
    # The policy takes far longer than a fake env step: without lockstep adoption the old chunk
    # would keep running and the query steps would depend on thread timing.
    policy = PlanningPolicy(delay=0.05)
    env = _execute("async", policy, open_loop_steps=6, async_latency_steps=2)
    assert policy.asked_at == [0, 4, 10, 16]
    assert [a[0] for a in env.executed] == list(range(20))


class ClosingPolicy(PlanningPolicy):
    """``PlanningPolicy`` whose gripper column commands a close from step 5 on."""

    def infer(self, obs):
        chunk = super().infer(obs)
        chunk[:, 6] = np.where(chunk[:, 0] >= 5, 1.0, -1.0)
        return chunk


@pytest.mark.parametrize(
    "execution, overrides",
    [
        ("open-loop", {}),
        ("open-loop", {"open_loop_steps": 3}),
        ("ensemble", {}),
        ("async", {"open_loop_steps": 6}),
    ],
)
def test_every_execution_holds_the_gripper_open_for_the_close_delay(execution, overrides):
    env = _execute(execution, ClosingPolicy(), gripper_close_delay=3, **overrides)
    assert [float(a[6]) for a in env.executed] == [-1.0] * 8 + [1.0] * 12
    assert [a[0] for a in env.executed] == pytest.approx(list(range(20)))


def test_requery_before_grasp_asks_again_where_a_stale_row_would_close():
    policy = ClosingPolicy()
    env = _execute("open-loop", policy, requery_before_grasp=True)
    # The chunk of step 0 closes at its row 5; that close is asked for again at step 5, whose
    # fresh chunk closes on its first row and runs until step 8, when the next query was due.
    assert policy.asked_at == [0, 5, 8, 16]
    assert [float(a[6]) for a in env.executed] == [-1.0] * 5 + [1.0] * 15
    assert [a[0] for a in env.executed] == list(range(20))


@pytest.mark.parametrize("execution, overrides", [("ensemble", {}), ("async", {"open_loop_steps": 6})])
def test_requery_before_grasp_is_refused_outside_open_loop(execution, overrides):
    with pytest.raises(ValueError, match="requery_before_grasp: expected execution 'open-loop', got"):
        EvalConfig(out="x", policy="oracle", execution=execution, requery_before_grasp=True, **overrides)


def test_a_negative_close_delay_is_refused():
    with pytest.raises(ValueError, match="gripper_close_delay: expected >= 0, got -1"):
        EvalConfig(out="x", policy="oracle", gripper_close_delay=-1)


def test_async_execution_needs_the_rows_per_chunk():
    with pytest.raises(ValueError, match="open_loop_steps: execution 'async' needs"):
        EvalConfig(out="x", policy="oracle", execution="async")
