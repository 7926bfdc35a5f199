"""What the LIBERO simulator costs per evaluation step (``cogvla profile env``).

For each render mode (standard; ``fast_render``: no reflections, MSAA or skybox;
``capped_meshes``: fast rendering with visual meshes capped at the demos' default face count,
``envs.mesh_lod``) one ``envs.libero_env.LiberoEnv`` is created and timed:

- ``create_s``: env construction (MuJoCo model compile, GL context);
- ``reset_ms``: robosuite's reset with ``hard_reset=False`` (the env's setting);
- ``set_init_state_ms``: restoring a benchmark init state, observation rendering included;
- ``env_reset_ms``: the env's whole ``reset`` as a harness calls it (both of the above);
- ``step_render_ms``: ``LiberoEnv.step``: controller, physics and both cameras rendered;
- ``step_no_render_ms``: the same step with the camera observables disabled (physics,
  controller and proprio observables only);
- ``render_ms[camera]``: one offscreen render of one camera at the configured size.

Steps use seeded random actions of magnitude ``action_scale`` so the arm moves and makes
contacts as under a policy. ``episode`` estimates one episode's simulator time from
these figures (reset, settle steps and the suite's step budget) and, given the policy's
latency per query, the simulator's share of the episode's wall time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from envs.mesh_lod import DEFAULT_MESH_FACES
from eval.profile.latency import summarize
from eval.profile.model_profile import load_average

__all__ = ["EnvProfileConfig", "format_env_table", "profile_env"]

logger = logging.getLogger(__name__)

# Mode -> LiberoEnv rendering arguments.
MODES: dict[str, dict[str, Any]] = {
    "standard": {"fast_render": False},
    "fast_render": {"fast_render": True},
    "capped_meshes": {"fast_render": True, "mesh_faces": DEFAULT_MESH_FACES},
}
CAMERAS = ("agentview", "robot0_eye_in_hand")


@dataclass(frozen=True)
class EnvProfileConfig:
    """What ``profile_env`` measures."""

    suite: str = "libero_spatial"
    task_id: int = 0
    # LIBERO's evaluation resolution (OpenVLA-OFT / CogVLA: env_img_res=256)
    image_size: int = 256
    steps: int = 20
    renders: int = 10
    resets: int = 3
    modes: tuple[str, ...] = ("standard", "fast_render")
    action_scale: float = 0.5
    seed: int = 0
    # policy latency per query (ms) and actions executed per query, for the wall-time share
    policy_ms: float | None = None
    chunk: int = 8

    def __post_init__(self) -> None:
        for name in ("steps", "renders", "resets", "chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size: expected an int >= 8, got {self.image_size!r}")
        unknown = [mode for mode in self.modes if mode not in MODES]
        if not self.modes or unknown:
            raise ValueError(f"modes: expected a non-empty subset of {list(MODES)}, got {list(self.modes)}")
        if not 0.0 <= self.action_scale <= 1.0:
            raise ValueError(f"action_scale: expected in [0, 1], got {self.action_scale}")
        if self.policy_ms is not None and self.policy_ms < 0:
            raise ValueError(f"policy_ms: expected >= 0, got {self.policy_ms}")


def _timed_ms(call: Callable[[], Any], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _profile_mode(config: EnvProfileConfig, rendering: dict[str, Any], bar: tqdm) -> dict[str, Any]:
    from envs.libero_env import LiberoEnv
    from envs.suites import init_states

    start = time.perf_counter()
    env = LiberoEnv(config.suite, config.task_id, image_size=config.image_size, **rendering)
    create_s = time.perf_counter() - start
    rss = _rss_mb()
    rng = np.random.default_rng(config.seed)
    try:
        env.reset(seed=config.seed, options={"init_state_id": 0})
        raw = env.raw_env
        init_state = init_states(config.suite, config.task_id)[0]
        out: dict[str, Any] = {"create_s": create_s, "rss_mb_after_create": rss}
        out["reset_ms"] = summarize(_timed_ms(raw.reset, config.resets), "reset_ms")
        out["set_init_state_ms"] = summarize(
            _timed_ms(lambda: raw.set_init_state(init_state), config.resets), "set_init_state_ms"
        )
        out["env_reset_ms"] = summarize(
            _timed_ms(lambda: env.reset(options={"init_state_id": 0}), config.resets), "env_reset_ms"
        )
        bar.update(1)

        def action() -> np.ndarray:
            return rng.uniform(-config.action_scale, config.action_scale, 7)

        out["step_render_ms"] = summarize(
            _timed_ms(lambda: env.step(action()), config.steps), "step_render_ms"
        )
        bar.update(1)
        robosuite_env = raw.env
        names = [f"{camera}_image" for camera in CAMERAS]
        for name in names:
            robosuite_env.modify_observable(name, "enabled", False)
        try:
            out["step_no_render_ms"] = summarize(
                _timed_ms(lambda: raw.step(action()), config.steps), "step_no_render_ms"
            )
        finally:
            for name in names:
                robosuite_env.modify_observable(name, "enabled", True)
        bar.update(1)
        side = config.image_size
        out["render_ms"] = {
            camera: summarize(
                _timed_ms(
                    lambda camera=camera: raw.sim.render(camera_name=camera, width=side, height=side),
                    config.renders,
                ),
                f"render_ms.{camera}",
            )
            for camera in CAMERAS
        }
        bar.update(1)
    finally:
        env.close()
    return out


def _episode_estimate(mode: dict[str, Any], config: EnvProfileConfig) -> dict[str, Any]:
    from envs.suites import MAX_STEPS, NUM_WAIT_STEPS

    steps = MAX_STEPS.get(config.suite, 0) + NUM_WAIT_STEPS
    sim_s = (mode["env_reset_ms"]["mean_ms"] + steps * mode["step_render_ms"]["mean_ms"]) / 1000.0
    estimate: dict[str, Any] = {"steps": steps, "simulator_s": sim_s}
    if config.policy_ms is not None:
        queries = -(-MAX_STEPS.get(config.suite, 0) // config.chunk)
        policy_s = queries * config.policy_ms / 1000.0
        estimate.update(
            {"policy_queries": queries, "policy_s": policy_s, "simulator_share": sim_s / (sim_s + policy_s)}
        )
    return estimate


def profile_env(config: EnvProfileConfig) -> dict[str, Any]:
    """Measure every mode of ``config`` and return the JSON-able result."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    loadavg_before = load_average()
    start = time.perf_counter()
    import libero.libero.envs  # noqa: F401  (the import cost is part of what a worker pays)

    import_s = time.perf_counter() - start
    modes: dict[str, Any] = {}
    with tqdm(total=4 * len(config.modes), desc="profile env", unit="phase", leave=False) as bar:
        for mode in config.modes:
            modes[mode] = _profile_mode(config, MODES[mode], bar)
            modes[mode]["episode"] = _episode_estimate(modes[mode], config)
    return {
        "suite": config.suite,
        "task_id": config.task_id,
        "image_size": config.image_size,
        "steps": config.steps,
        "renders": config.renders,
        "resets": config.resets,
        "action_scale": config.action_scale,
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "import_libero_s": import_s,
        "loadavg": {"before": loadavg_before, "after": load_average()},
        "modes": modes,
    }


def _cell(summary: dict[str, float]) -> str:
    return f"{summary['p50_ms']:.1f} (p99 {summary['p99_ms']:.1f})"


def format_env_table(result: dict[str, Any]) -> str:
    """A Markdown table: one row per measurement, one column per render mode (ms, p50 and p99)."""
    modes = result["modes"]
    names = list(modes)
    rows = [
        ("env creation (s)", lambda m: f"{m['create_s']:.2f}"),
        ("reset, hard_reset=False (ms)", lambda m: _cell(m["reset_ms"])),
        ("set_init_state (ms)", lambda m: _cell(m["set_init_state_ms"])),
        ("LiberoEnv.reset (ms)", lambda m: _cell(m["env_reset_ms"])),
        ("step, 2 cameras rendered (ms)", lambda m: _cell(m["step_render_ms"])),
        ("step, no rendering (ms)", lambda m: _cell(m["step_no_render_ms"])),
        *[
            (f"render {camera} (ms)", lambda m, camera=camera: _cell(m["render_ms"][camera]))
            for camera in CAMERAS
        ],
        ("RSS after creation (MB)", lambda m: f"{m['rss_mb_after_create']:.0f}"),
        (
            "episode simulator time (s)",
            lambda m: f"{m['episode']['simulator_s']:.1f} ({m['episode']['steps']} steps)",
        ),
    ]
    if all("simulator_share" in modes[name]["episode"] for name in names):
        rows.append(("simulator share of episode", lambda m: f"{m['episode']['simulator_share']:.0%}"))
    lines = ["| measurement | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [
        f"| {label} | " + " | ".join(cell(modes[name]) for name in names) + " |" for label, cell in rows
    ]
    lines.append(
        f"\n{result['suite']} task {result['task_id']}, {result['image_size']} px, MUJOCO_GL={result['mujoco_gl']}, "
        f"import libero {result['import_libero_s']:.2f} s, load average before/after "
        f"{result['loadavg']['before']} / {result['loadavg']['after']}"
    )
    return "\n".join(lines)
