"""ActionChunker: open-loop order, temporal-ensembling weights, async prefetch without stalls."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from cogvla.policy_api import Policy
from deploy.chunker import ActionChunker, ChunkerConfig


class StepPolicy(Policy):
    """Row ``i`` of a chunk computed at step ``s`` (read from ``state[0]``) is ``s + i``.

    A correctly aligned chunker therefore returns action ``t`` at step ``t`` whichever chunk
    it draws from; ``query_offset`` adds ``1000 * query_index`` to tell queries apart.
    """

    def __init__(self, horizon: int = 8, delay_s: float = 0.0, *, query_offset: bool = False) -> None:
        self.horizon = horizon
        self.delay_s = delay_s
        self.query_offset = query_offset
        self.queried_at: list[int] = []
        self.resets = 0
        self._lock = threading.Lock()

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        start = int(obs["state"][0])
        with self._lock:
            query = len(self.queried_at)
            self.queried_at.append(start)
        rows = (
            start + np.arange(self.horizon, dtype=np.float32) + (1000.0 * query if self.query_offset else 0.0)
        )
        return np.repeat(rows[:, None], 7, axis=1).astype(np.float32)

    def reset(self) -> None:
        self.resets += 1


def obs_at(step: int) -> dict[str, Any]:
    state = np.zeros(8, np.float32)
    state[0] = step
    return {"state": state}


def test_open_loop_executes_n_actions_in_order_then_requeries() -> None:
    policy = StepPolicy(horizon=8, query_offset=True)
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=3))
    actions = [chunker.step(obs_at(t))[0] for t in range(9)]
    assert actions == [0, 1, 2, 1003, 1004, 1005, 2006, 2007, 2008]
    assert policy.queried_at == [0, 3, 6]
    assert chunker.stats.queries == 3 and chunker.stats.stalls == 0


def test_open_loop_requeries_when_chunk_is_shorter_than_n() -> None:
    policy = StepPolicy(horizon=2)
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=5))
    assert [chunker.step(obs_at(t))[0] for t in range(5)] == [0, 1, 2, 3, 4]
    assert policy.queried_at == [0, 2, 4]


class ConstantPolicy(Policy):
    """Every row of the ``q``-th chunk is ``q``."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.queries = 0

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        chunk = np.full((self.horizon, 7), float(self.queries), np.float32)
        self.queries += 1
        return chunk


def test_temporal_ensembling_weights_oldest_prediction_most() -> None:
    coeff = 0.5
    chunker = ActionChunker(ConstantPolicy(horizon=3), ChunkerConfig(execute_steps=1, ensemble_coeff=coeff))
    got = [float(chunker.step({})[0]) for _ in range(5)]
    w = [math.exp(-coeff * i) for i in range(3)]
    expected = [
        0.0,
        (w[0] * 0 + w[1] * 1) / (w[0] + w[1]),
        (w[0] * 0 + w[1] * 1 + w[2] * 2) / sum(w),
        (w[0] * 1 + w[1] * 2 + w[2] * 3) / sum(w),
        (w[0] * 2 + w[1] * 3 + w[2] * 4) / sum(w),
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_ensembling_with_zero_coefficient_is_a_plain_mean() -> None:
    chunker = ActionChunker(ConstantPolicy(horizon=4), ChunkerConfig(execute_steps=1, ensemble_coeff=0.0))
    got = [float(chunker.step({})[0]) for _ in range(4)]
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 1.5])


def test_async_prefetch_never_stalls_with_a_slow_policy() -> None:
    policy = StepPolicy(horizon=20, delay_s=0.03)
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=5, prefetch=True, prefetch_margin=2))
    actions = []
    for t in range(40):
        actions.append(float(chunker.step(obs_at(t))[0]))
        time.sleep(0.01)
    chunker.close()
    assert actions == list(range(40))  # every switch kept the chunk aligned with the step
    assert chunker.stats.stalls == 0
    assert chunker.stats.queries >= 3 and len(policy.queried_at) >= 3
    assert policy.queried_at[0] == 0 and all(s > 0 for s in policy.queried_at[1:])


def test_async_counts_stalls_when_the_chunk_runs_out() -> None:
    policy = StepPolicy(horizon=2, delay_s=0.05)
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=2, prefetch=True, prefetch_margin=1))
    actions = [float(chunker.step(obs_at(t))[0]) for t in range(8)]
    chunker.close()
    assert actions == list(range(8))
    assert chunker.stats.stalls > 0 and chunker.stats.stall_ms > 0


@pytest.mark.parametrize(
    ("margin", "queried_at", "actions"),
    [
        (2, [0, 2, 6, 10], [0, 1, 2, 3, 1004, 1005, 1006, 1007, 2008, 2009, 2010, 2011]),
        (0, [0, 4, 8], [0, 1, 2, 3, 1004, 1005, 1006, 1007, 2008, 2009, 2010, 2011]),
    ],
    ids=["margin-2", "margin-0"],
)
def test_prefetch_lockstep_adopts_each_chunk_exactly_at_the_switch(
    margin: int, queried_at: list[int], actions: list[int]
) -> None:
    policy = StepPolicy(horizon=8, query_offset=True)
    chunker = ActionChunker(
        policy, ChunkerConfig(execute_steps=4, prefetch=True, prefetch_margin=margin, prefetch_lockstep=True)
    )
    executed = [float(chunker.step(obs_at(t))[0]) for t in range(12)]
    chunker.close()
    # Each next chunk is asked `margin` steps before the switch (at the switch for 0) and lands
    # at the switch, never sooner, so its rows keep their alignment with the steps (query k
    # adds 1000 * k).
    assert policy.queried_at == queried_at and executed == actions
    assert chunker.stats.queries == 3 and chunker.stats.stalls == 0


def test_close_stops_the_prefetch_thread_and_is_harmless_without_one() -> None:
    ActionChunker(StepPolicy()).close()
    chunker = ActionChunker(StepPolicy(), ChunkerConfig(prefetch=True))
    chunker.step(obs_at(0))
    chunker.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        for t in range(1, 5):
            chunker.step(obs_at(t))


def test_last_query_latency_is_measured() -> None:
    chunker = ActionChunker(StepPolicy(delay_s=0.03), ChunkerConfig(execute_steps=4))
    assert chunker.stats.last_query_ms == 0.0
    chunker.step(obs_at(0))
    assert chunker.stats.last_query_ms >= 30.0


def test_reset_drops_chunks_and_resets_the_policy() -> None:
    policy = StepPolicy(horizon=8, delay_s=0.02)
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=4, prefetch=True, prefetch_margin=4))
    chunker.step(obs_at(0))
    chunker.reset()
    assert policy.resets == 1 and chunker.stats.steps == 0 and chunker.stats.queries == 0
    assert float(chunker.step(obs_at(50))[0]) == 50.0
    chunker.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"execute_steps": 0}, "execute_steps: expected >= 1, got 0"),
        ({"ensemble_coeff": -1.0}, "ensemble_coeff: expected >= 0 or None, got -1.0"),
        ({"prefetch_margin": -1}, "prefetch_margin: expected >= 0, got -1"),
        ({"gripper_close_delay": -1}, "gripper_close_delay: expected >= 0, got -1"),
        (
            {"requery_before_grasp": True, "prefetch": True},
            "requery_before_grasp: expected open-loop execution",
        ),
        (
            {"requery_before_grasp": True, "ensemble_coeff": 0.01},
            "requery_before_grasp: expected open-loop execution",
        ),
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ChunkerConfig(**kwargs)


class GripperPolicy(Policy):
    """Chunks of 4 rows whose arm dims count the executed steps and whose gripper follows ``plan``."""

    def __init__(self, plan: list[float]) -> None:
        self.plan = plan

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        start = int(obs["state"][0])
        chunk = np.repeat((start + np.arange(4, dtype=np.float32))[:, None], 7, axis=1)
        chunk[:, -1] = self.plan[start : start + 4]
        return chunk

    def reset(self) -> None:
        pass


def _run(plan: list[float], **config: Any) -> np.ndarray:
    chunker = ActionChunker(GripperPolicy(plan), ChunkerConfig(execute_steps=4, **config))
    return np.stack([chunker.step(obs_at(t)) for t in range(len(plan) - 4)])


def test_gripper_close_delay_holds_each_close_open_across_chunks_and_never_delays_opening() -> None:
    plan = [-1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, -1, -1, -1, 1, 1, 1, 1, 1, 1]
    executed = _run([float(g) for g in plan], gripper_close_delay=2)
    # The first close comes at step 3 and is held open through step 4, across the chunk
    # boundary; the one at step 10 again for two steps; the opening at 8 and 13 is immediate.
    assert executed[:, -1].tolist() == [-1, -1, -1, -1, -1, 1, 1, 1, -1, -1, -1, -1, 1, -1, -1, -1, -1, -1]
    assert executed[:, :6].tolist() == [[t] * 6 for t in range(len(plan) - 4)]


def test_a_zero_gripper_command_counts_as_open_and_ends_a_close() -> None:
    plan = [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    executed = _run(plan, gripper_close_delay=2)
    assert executed[:, -1].tolist() == [-1, 0, -1, -1, 1]


def test_zero_gripper_close_delay_executes_the_chunks_as_given() -> None:
    plan = [float(g) for g in (-1, 1, -1, 1, 1, -1, -1, 1, 1, 1, -1, -1)]
    assert _run(plan)[:, -1].tolist() == plan[:-4]


def test_reset_forgets_a_close_in_progress() -> None:
    chunker = ActionChunker(GripperPolicy([1.0] * 12), ChunkerConfig(execute_steps=4, gripper_close_delay=3))
    assert [chunker.step(obs_at(t))[-1] for t in range(4)] == [-1, -1, -1, 1]
    chunker.reset()
    assert [chunker.step(obs_at(t))[-1] for t in range(4)] == [-1, -1, -1, 1]


class LateClosePolicy(Policy):
    """Chunks of 8 that close 3 steps after the query until step ``ready``, then at once; the
    gripper opens again from step ``release``, whenever asked. Rows' arm dims hold the query step."""

    def __init__(self, ready: int = 5, release: int = 12) -> None:
        self.ready = ready
        self.release = release
        self.queried_at: list[int] = []

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        start = int(obs["state"][0])
        self.queried_at.append(start)
        close_at = start if start >= self.ready else start + 3
        steps = start + np.arange(8)
        chunk = np.full((8, 7), float(start), np.float32)
        chunk[:, -1] = np.where((steps >= close_at) & (steps < self.release), 1.0, -1.0)
        return chunk

    def reset(self) -> None:
        self.queried_at = []


def _gripper_trace(policy: Policy, steps: int, **config: Any) -> tuple[list[float], ActionChunker]:
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=8, **config))
    return [float(chunker.step(obs_at(t))[-1]) for t in range(steps)], chunker


def test_open_loop_closes_where_a_stale_chunk_said() -> None:
    policy = LateClosePolicy()
    trace, chunker = _gripper_trace(policy, 16)
    assert trace == [-1] * 3 + [1] * 9 + [-1] * 4
    assert policy.queried_at == [0, 8] and chunker.stats.grasp_requeries == 0


def test_requery_before_grasp_asks_once_on_a_fresh_observation() -> None:
    policy = LateClosePolicy()
    trace, chunker = _gripper_trace(policy, 16, requery_before_grasp=True)
    # The chunk of step 0 would close at 3: asked again at 3, the policy defers the close to
    # 6, where it runs without a further query. The fresh chunk runs only to step 8, where the
    # next query was due anyway, so the queries after the grasp keep their steps.
    assert policy.queried_at == [0, 3, 8]
    assert trace == [-1] * 6 + [1] * 6 + [-1] * 4
    assert chunker.stats.grasp_requeries == 1 and chunker.stats.queries == 3
    chunker.reset()
    # A new episode has had no grasp yet: it asks again before its own first close.
    assert [float(chunker.step(obs_at(t))[-1]) for t in range(16)] == trace
    assert policy.queried_at == [0, 3, 8] and chunker.stats.grasp_requeries == 1


def test_requery_before_grasp_keeps_the_query_schedule_of_partial_chunks() -> None:
    policy = LateClosePolicy()
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=4, requery_before_grasp=True))
    trace = [float(chunker.step(obs_at(t))[-1]) for t in range(16)]
    # Queries stay due every 4 steps (0, 4, 8, 12); the grasp adds one, at 3. The chunk of
    # step 4 closes at 7, and since the grasp was asked for once already, it closes there.
    assert policy.queried_at == [0, 3, 4, 8, 12]
    assert trace == [-1] * 7 + [1] * 5 + [-1] * 4


class RegraspPolicy(Policy):
    """Closes from step 0 and opens at step 8; every chunk asked from step 8 on plans a
    two-row close four rows ahead, whenever it is asked (a policy unsure after a release)."""

    def __init__(self) -> None:
        self.queried_at: list[int] = []

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        start = int(obs["state"][0])
        self.queried_at.append(start)
        steps = start + np.arange(8)
        chunk = np.zeros((8, 7), np.float32)
        chunk[:, -1] = np.where(steps < 8, 1.0, -1.0)
        if start >= 8:
            chunk[4:6, -1] = 1.0
        return chunk

    def reset(self) -> None:
        self.queried_at = []


def test_requery_before_grasp_leaves_later_closes_as_planned() -> None:
    policy = RegraspPolicy()
    trace, chunker = _gripper_trace(policy, 20, requery_before_grasp=True)
    # Asking again at step 12 would get the same close four rows ahead, at 16, and so on:
    # after the first close the chunks run as planned.
    assert policy.queried_at == [0, 8, 16] and chunker.stats.grasp_requeries == 0
    assert trace == [1] * 8 + [-1] * 4 + [1, 1] + [-1] * 6


def test_requery_before_grasp_leaves_a_close_on_a_fresh_chunks_first_row_alone() -> None:
    policy = LateClosePolicy(ready=0, release=100)
    trace, _ = _gripper_trace(policy, 20, requery_before_grasp=True)
    assert policy.queried_at == [0, 8, 16] and trace == [1.0] * 20


def test_policy_output_is_validated() -> None:
    class Broken(Policy):
        def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
            return np.zeros((4, 6), np.float32)

    with pytest.raises(ValueError, match=r"expected shape \(chunk>=1, 7\)"):
        ActionChunker(Broken()).step({})
