"""Fixed-rate control loop against a simulated robot, and its deadline accounting."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from cogvla.policy_api import Policy
from deploy.chunker import ActionChunker, ChunkerConfig
from deploy.robot_loop import ControlLoop, LoopConfig, SimulatedRobot


class CountingPolicy(Policy):
    """Chunk rows are 0.1 * (query * 10 + row) in every dimension: easy to check the order."""

    def __init__(self) -> None:
        self.queries = 0
        self.prompts: list[str] = []

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        self.prompts.append(obs["prompt"])
        rows = 0.01 * (self.queries * 10 + np.arange(4, dtype=np.float32))
        self.queries += 1
        return np.repeat(rows[:, None], 7, axis=1).astype(np.float32)


def test_loop_drives_simulated_robot_with_chunked_actions_in_order() -> None:
    robot = SimulatedRobot(prompt="open the drawer", image_size=32)
    policy = CountingPolicy()
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=2))
    stats = ControlLoop(robot, chunker, LoopConfig(hz=200.0, max_steps=6)).run()
    assert stats.ticks == 6 and len(robot.actions) == 6
    np.testing.assert_allclose([a[0] for a in robot.actions], [0.0, 0.01, 0.1, 0.11, 0.2, 0.21], atol=1e-6)
    assert policy.prompts == ["open the drawer"] * 3
    assert stats.period_ms == pytest.approx(5.0)
    assert 0 <= stats.missed <= stats.ticks
    assert np.isfinite([stats.jitter_p50_ms, stats.jitter_p99_ms, stats.work_p50_ms, stats.work_p99_ms]).all()
    assert robot.state[0] == pytest.approx(0.01 * sum(a[0] for a in robot.actions))


class FakeClock:
    """Virtual time: ``sleep`` advances it, and so does each tick's scripted work."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedSource:
    """Each ``step`` takes the next scripted duration of virtual time."""

    def __init__(self, clock: FakeClock, work_s: list[float]) -> None:
        self.clock = clock
        self.work_s = list(work_s)

    def step(self, obs: Mapping[str, Any]) -> np.ndarray:
        self.clock.now += self.work_s.pop(0)
        return np.zeros(7, np.float32)


def test_overrunning_ticks_are_counted_and_the_schedule_skips_ahead() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock, [0.010, 0.010, 0.120, 0.010, 0.060, 0.010])
    robot = SimulatedRobot(image_size=16)
    stats = ControlLoop(robot, source, LoopConfig(hz=20.0, max_steps=6), clock=clock, sleep=clock.sleep).run()
    # tick 2 runs 100 -> 220 ms (slots at 150 and 200 skipped), tick 4 runs 300 -> 360 ms (350 skipped)
    assert (stats.ticks, stats.missed, stats.skipped_slots) == (6, 2, 3)
    assert stats.jitter_p99_ms == pytest.approx(0.0, abs=1e-9)
    assert stats.work_p50_ms == pytest.approx(10.0)
    assert clock.now == pytest.approx(0.410)


def test_stop_event_ends_the_run_early() -> None:
    stop = threading.Event()
    stop.set()
    stats = ControlLoop(
        SimulatedRobot(image_size=16), ActionChunker(CountingPolicy()), LoopConfig(hz=50.0)
    ).run(stop)
    assert stats.ticks == 0 and stats.jitter_p50_ms == 0.0


def test_bad_rates_and_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="hz: expected a positive finite rate, got 0"):
        LoopConfig(hz=0)
    with pytest.raises(ValueError, match="max_steps: expected >= 1, got 0"):
        LoopConfig(max_steps=0)
    with pytest.raises(ValueError, match=r"action: expected shape \(7,\), got \(6,\)"):
        SimulatedRobot().apply_action(np.zeros(6))


def test_simulated_robot_observation_follows_the_schema() -> None:
    obs = SimulatedRobot(image_size=24).get_observation()
    assert set(obs) == {"image", "wrist_image", "state", "prompt"}
    assert obs["image"].shape == (24, 24, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
