"""LIBERO suites: names, per-suite episode budgets, and task lookup.

LIBERO is imported lazily so that importing this module (for the step budgets, say)
costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

__all__ = [
    "MAX_STEPS",
    "SUITES",
    "NUM_WAIT_STEPS",
    "TaskInfo",
    "UnknownSuiteError",
    "WAIT_ACTION",
    "get_task",
    "init_states",
    "num_tasks",
]

logger = logging.getLogger(__name__)

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")

# Policy steps per episode, after the settle steps: the budgets of the OpenVLA-OFT
# and openpi harnesses, i.e. the suite's longest training demo plus slack (for
# libero_spatial the longest demo has 193 steps). LeRobot uses 280 for spatial.
MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}

# No-op steps at the start of every episode (0.5 s at 20 Hz), so that objects settle after
# the reset before the policy acts.
NUM_WAIT_STEPS = 10
# The no-op: arm still, gripper open.
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)


class UnknownSuiteError(ValueError):
    """A suite name or task index that LIBERO does not have."""


@dataclass(frozen=True)
class TaskInfo:
    """One LIBERO task, as the benchmark registers it."""

    suite: str
    task_id: int
    # Benchmark task name (the BDDL file stem), e.g. "pick_up_the_black_bowl_..._on_the_plate".
    name: str
    # Instruction every published harness prompts with (from the task name, lower case).
    language: str
    bddl_file: str
    num_init_states: int


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise UnknownSuiteError(f"suite: expected one of {', '.join(SUITES)}, got {suite!r}")


@cache
def _benchmark(suite: str) -> Any:
    _check_suite(suite)
    from libero.libero import benchmark

    # The benchmark prints its task order to stdout, where CLIs write their JSON results.
    with contextlib.redirect_stdout(io.StringIO()) as chatter:
        bench = benchmark.get_benchmark_dict()[suite]()
    logger.debug("%s", chatter.getvalue().strip())
    return bench


def num_tasks(suite: str) -> int:
    """Number of tasks in ``suite``."""
    return int(_benchmark(suite).get_num_tasks())


@cache
def init_states(suite: str, task_id: int) -> np.ndarray:
    """The benchmark's fixed init states of a task, ``(N, S)`` float64 flattened MuJoCo states."""
    _check_task(suite, task_id)
    states = np.asarray(_benchmark(suite).get_task_init_states(task_id))
    states.setflags(write=False)
    return states


def _check_task(suite: str, task_id: int) -> None:
    count = num_tasks(suite)
    if not 0 <= task_id < count:
        raise UnknownSuiteError(f"task_id: expected 0 <= task_id < {count} for {suite}, got {task_id}")


def get_task(suite: str, task_id: int) -> TaskInfo:
    """Name, instruction, BDDL path and init-state count of one task."""
    _check_task(suite, task_id)
    bench = _benchmark(suite)
    task = bench.get_task(task_id)
    return TaskInfo(
        suite=suite,
        task_id=task_id,
        name=task.name,
        language=task.language,
        bddl_file=bench.get_task_bddl_file_path(task_id),
        num_init_states=len(init_states(suite, task_id)),
    )
