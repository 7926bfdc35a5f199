"""A fixed-rate robot control loop with deadline statistics.

``ControlLoop`` ticks at ``hz``: read an observation, get one action (usually from an
``ActionChunker`` over a ``PolicyClient``), apply it. Tick ``k`` is scheduled at
``t0 + k / hz``; a tick whose work ends after the next slot has *missed* its deadline, and
the schedule then skips to the next free slot instead of bursting to catch up (a robot
must not receive a volley of stale commands). Jitter is how late each tick started.

``Robot`` is the whole hardware interface; ``SimulatedRobot`` stands in for it in tests
and in ``deploy/example_robot.py``.
"""

from __future__ import annotations

import abc
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from cogvla_client.policy_api import ACTION_DIM, OBS_IMAGE, OBS_PROMPT, OBS_STATE, OBS_WRIST_IMAGE, STATE_DIM

__all__ = ["ActionSource", "ControlLoop", "LoopConfig", "LoopStats", "Robot", "SimulatedRobot"]

logger = logging.getLogger(__name__)


class Robot(abc.ABC):
    """What the loop needs from a robot."""

    @abc.abstractmethod
    def get_observation(self) -> dict[str, Any]:
        """The current observation in the schema of ``cogvla.policy_api``."""

    @abc.abstractmethod
    def apply_action(self, action: np.ndarray) -> None:
        """Send one ``(7,)`` action (robot units) to the controller."""


class ActionSource(Protocol):
    """Anything with ``step(obs) -> action``, e.g. ``ActionChunker``."""

    def step(self, obs: Mapping[str, Any]) -> np.ndarray: ...


@dataclass(frozen=True)
class LoopConfig:
    """Rate and length of a control run."""

    # control rate; LIBERO/OFT-style arms run at 10-25 Hz, 20 is a common middle.
    hz: float = 20.0
    # ticks to run (the loop also stops on its stop event).
    max_steps: int = 200

    def __post_init__(self) -> None:
        if not (self.hz > 0 and math.isfinite(self.hz)):
            raise ValueError(f"hz: expected a positive finite rate, got {self.hz}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps: expected >= 1, got {self.max_steps}")


@dataclass
class LoopStats:
    """Deadline statistics of one run (times in ms)."""

    ticks: int
    missed: int
    skipped_slots: int
    jitter_p50_ms: float
    jitter_p99_ms: float
    work_p50_ms: float
    work_p99_ms: float
    period_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class ControlLoop:
    """Runs ``robot`` at a fixed rate with actions from ``source``."""

    def __init__(
        self,
        robot: Robot,
        source: ActionSource,
        config: LoopConfig | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.robot = robot
        self.source = source
        self.config = config or LoopConfig()
        self._clock = clock
        self._sleep = sleep

    def run(self, stop: threading.Event | None = None) -> LoopStats:
        """Run up to ``max_steps`` ticks (or until ``stop`` is set); return the statistics."""
        period = 1.0 / self.config.hz
        jitter: list[float] = []
        work: list[float] = []
        missed = skipped = 0
        slot = self._clock()
        for _ in range(self.config.max_steps):
            if stop is not None and stop.is_set():
                break
            now = self._clock()
            if now < slot:
                self._sleep(slot - now)
                now = self._clock()
            jitter.append((now - slot) * 1000.0)
            self.robot.apply_action(self.source.step(self.robot.get_observation()))
            done = self._clock()
            work.append((done - now) * 1000.0)
            slot += period
            if done > slot:
                missed += 1
                behind = math.ceil((done - slot) / period)
                skipped += behind
                slot += behind * period
        stats = LoopStats(
            ticks=len(work),
            missed=missed,
            skipped_slots=skipped,
            jitter_p50_ms=_percentile(jitter, 50),
            jitter_p99_ms=_percentile(jitter, 99),
            work_p50_ms=_percentile(work, 50),
            work_p99_ms=_percentile(work, 99),
            period_ms=period * 1000.0,
        )
        if stats.missed:
            logger.warning(
                "%d of %d ticks missed their %.1f ms deadline", stats.missed, stats.ticks, stats.period_ms
            )
        return stats


class SimulatedRobot(Robot):
    """A point end-effector that integrates delta actions; renders flat images.

    State follows LIBERO's layout (eef position 3, axis-angle 3, gripper qpos 2); position
    and rotation move by ``action * step_size`` per tick, the gripper opens (-1) or closes
    (+1). Every applied action is kept in ``actions`` for inspection.
    """

    def __init__(
        self, prompt: str = "put the bowl on the plate", image_size: int = 224, step_size: float = 0.01
    ):
        self.prompt = prompt
        self.image_size = image_size
        self.step_size = step_size
        self.state = np.zeros(STATE_DIM, np.float32)
        self.actions: list[np.ndarray] = []

    def get_observation(self) -> dict[str, Any]:
        shade = np.uint8(int(128 + 100 * np.tanh(self.state[0])) % 256)
        image = np.full((self.image_size, self.image_size, 3), shade, np.uint8)
        return {
            OBS_IMAGE: image,
            OBS_WRIST_IMAGE: image.copy(),
            OBS_STATE: self.state.copy(),
            OBS_PROMPT: self.prompt,
        }

    def apply_action(self, action: np.ndarray) -> None:
        action = np.asarray(action, np.float32)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action: expected shape ({ACTION_DIM},), got {action.shape}")
        self.actions.append(action.copy())
        self.state[:6] += self.step_size * action[:6]
        opening = 0.04 if action[6] < 0 else 0.0
        self.state[6:8] = (opening, -opening)
