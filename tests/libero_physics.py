"""A LIBERO task without cameras, for oracle tests that only need physics and privileged state."""

from __future__ import annotations

import os
from typing import Any


def physics_only_env(suite_name: str, task_id: int, init_state: int = 0) -> Any:
    """LIBERO's env for one task, reset to a fixed init state and settled for 10 no-op steps."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suite = benchmark.get_benchmark_dict()[suite_name]()
    task = suite.get_task(task_id)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(
        bddl_file_name=bddl, has_offscreen_renderer=False, use_camera_obs=False, hard_reset=False
    )
    env.seed(0)
    env.reset()
    env.set_init_state(suite.get_task_init_states(task_id)[init_state])
    for _ in range(10):
        env.step([0.0] * 6 + [-1.0])
    return env
