"""Demo generation throughput (demos per second), this tree against a baseline checkout; JSON.

Usage::

    git worktree add ../baseline 2c1709b
    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_demos.py --baseline ../baseline \\
        --suite libero_object --task 0 --attempts 4 --rounds 2 --out bench_demos.json

Both sides must make the same demos, so they do not run their own oracles (the oracle
is not what is measured, and it changes between trees). Instead the candidate tree's
oracle runs once, untimed, and its clean actions are replayed by both sides through the
demo pipeline each tree has: its ``make_demo_env`` (privileged, 128 px, fast render),
``demo_job`` (settle, DART noise seeded per attempt, record) and ``_write_demo``. The env
is reused across attempts as a worker reuses it. A side reports demos per second over
episode and write time, and digests of every stored demo's actions and of its frames (both
cameras, read back from disk), so ``same_actions`` and ``same_frames`` say which demos both
sides stored identically. Where the frames differ (the candidate caps visual meshes,
``envs.mesh_lod``), ``frame_difference`` measures by how much on the last round's demos: per
camera, the mean absolute difference in uint8 steps and the fraction of pixels off by more
than 24 in some channel.

``--profile`` adds cProfile totals per stage (rendering, physics, controller, oracle,
HDF5 write) of the candidate's first oracle attempt, from the untimed recording run.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import add_arguments, compare_rounds, emit, parse_or_run_side, run_side

__all__ = ["main"]

# cProfile functions (file or name fragments) -> stage; the first match wins.
_STAGES = (
    ("render", ("mjr_render", "mjr_readPixels", "mjv_updateScene")),
    ("physics", ("mj_step", "mj_forward", "mj_fullM", "mj_jac")),
    ("controller", ("robosuite/controllers", "robosuite/robots", "control_utils", "transform_utils")),
    ("oracle", ("envs/oracle", "envs/privileged")),
    ("hdf5_write", ("libero_hdf5", "h5py")),
)


class ReplayPolicy:
    """Answers each query with the next recorded action (a one-row chunk)."""

    def __init__(self) -> None:
        self.actions: list[list[float]] = []
        self._next = 0

    def reset(self) -> None:
        """Start from the first action again."""
        self._next = 0

    def infer(self, obs: Any) -> np.ndarray:
        action = self.actions[min(self._next, len(self.actions) - 1)]
        self._next += 1
        return np.asarray([action], dtype=np.float32)


def _job(config: Any, state: Any, attempt: int) -> Any:
    from envs.suites import MAX_STEPS
    from eval.libero.demos import DemoJob, attempt_seed
    from eval.libero.episode import EnvSpec, EpisodeSpec

    # A baseline tree may predate capped meshes; its configs and env specs have no such field.
    capped = {"mesh_faces": config.mesh_faces} if hasattr(config, "mesh_faces") else {}
    spec = EnvSpec(
        config.suite, state.task_id, config.image_size, config.fast_render, privileged=True, **capped
    )
    episode = EpisodeSpec(
        env=spec,
        init_state_id=None,
        seed=attempt_seed(config.seed, config.suite, state.name, attempt),
        max_steps=MAX_STEPS[config.suite],
        num_wait_steps=config.num_wait_steps,
        action_noise=config.noise,
        steps_after_success=config.post_success_steps,
    )
    return DemoJob(key=f"{state.name}/{attempt}", env_spec=spec, episode=episode, attempt=attempt)


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _stored_episodes(folder: Path) -> list[Any]:
    """Every demo stored under ``folder``, in file order (either tree's layout)."""
    from cogvla.data.frame_cache import find_demo_files
    from cogvla.data.libero_hdf5 import read_episodes

    return [episode for path in find_demo_files([folder]) for episode in read_episodes(path)]


def _frame_difference(baseline: Path, candidate: Path) -> dict[str, Any]:
    """How far the candidate's stored frames are from the baseline's, demo by demo in order."""
    stored = zip(_stored_episodes(baseline), _stored_episodes(candidate), strict=False)
    pairs = [(a, b) for a, b in stored if len(a) == len(b)]
    result: dict[str, Any] = {"demos_compared": len(pairs)}
    for camera in ("agentview_rgb", "eye_in_hand_rgb"):
        steps = [np.abs(getattr(a, camera).astype(np.int16) - getattr(b, camera)) for a, b in pairs]
        if steps:
            result[camera] = {
                "mean_abs": round(float(np.mean([s.mean() for s in steps])), 4),
                "fraction_over_24": round(float(np.mean([(s.max(axis=-1) > 24).mean() for s in steps])), 5),
            }
    return result


def _stage_seconds(profile: cProfile.Profile) -> dict[str, float]:
    totals = dict.fromkeys([name for name, _ in _STAGES] + ["other"], 0.0)
    for (filename, _, function), (_, _, tottime, _, _) in pstats.Stats(profile).stats.items():
        where = f"{filename}:{function}"
        stage = next((name for name, parts in _STAGES if any(part in where for part in parts)), "other")
        totals[stage] += tottime
    return {name: round(value, 3) for name, value in totals.items()}


def side(args: argparse.Namespace) -> dict[str, Any]:
    """This process's side: record (``--record``) or replay the attempts, timed."""
    if args.store is not None:
        shutil.rmtree(args.store, ignore_errors=True)
        return _side(args, args.store)
    with tempfile.TemporaryDirectory(prefix="bench_demos_") as scratch:
        return _side(args, Path(scratch))


def _side(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from eval.libero.demos import DemoConfig, _task_state, _write_demo, demo_job, make_demo_env
    from eval.policies import ORACLE, load_policy

    config = DemoConfig(out=str(out), suite=args.suite, tasks=(args.task,), per_task=args.attempts, noise=0.1)
    state = _task_state(config, args.task)
    env = make_demo_env(_job(config, state, 0).env_spec)
    recording = args.record is not None
    policy = load_policy(ORACLE) if recording else ReplayPolicy()
    plan = {} if recording else json.loads(args.replay.read_text())
    profile = cProfile.Profile() if args.profile else None
    results, seconds = [], 0.0
    try:
        for attempt in range(args.attempts) if recording else map(int, plan):
            if not recording:
                policy.actions = plan[str(attempt)]
            start = time.perf_counter()
            if profile is not None and attempt == 0:
                profile.enable()
            result = demo_job(env, policy, _job(config, state, attempt), lambda: None)
            if result["success"]:
                _write_demo(config, state, result)
            if profile is not None:
                profile.disable()
            seconds += time.perf_counter() - start
            results.append((attempt, result))
    finally:
        env.close()
    profiled = {"profile_first_attempt_s": _stage_seconds(profile)} if profile is not None else {}
    if recording:
        actions = {str(a): r["arrays"]["actions"].tolist() for a, r in results if r["success"]}
        args.record.write_text(json.dumps(actions))
        return {"recorded": len(actions), "attempts": len(results), **profiled}
    # Each tree's own layout: one appended file, or a file per demo.
    stored = _stored_episodes(out)
    return {
        "demos": len(stored),
        "steps": [r["steps"] for _, r in results],
        "action_digests": [_digest(episode.actions) for episode in stored],
        "frame_digests": [_digest(episode.agentview_rgb, episode.eye_in_hand_rgb) for episode in stored],
        "seconds": round(seconds, 3),
        "demos_per_s": len(stored) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--attempts", type=int, default=4, help="oracle attempts recorded, then replayed")
    parser.add_argument("--profile", action="store_true", help="profile stages of the first oracle attempt")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parse_or_run_side(parser, side)
    if args is None:
        return
    script = str(Path(__file__).resolve())
    common = ["--suite", args.suite, "--task", str(args.task), "--attempts", str(args.attempts)]
    with tempfile.TemporaryDirectory() as scratch:
        plan = Path(scratch) / "actions.json"
        profile = ["--profile"] if args.profile else []
        recorded = run_side(script, args.candidate.resolve(), [*common, "--record", str(plan), *profile])
        stored = {side: Path(scratch) / side for side in ("baseline", "candidate")}
        result = compare_rounds(
            script,
            args.baseline.resolve(),
            args.candidate.resolve(),
            [*common, "--replay", str(plan), "--store", str(stored["candidate"])],
            args.rounds,
            rate=lambda side_result: side_result["demos_per_s"],
            baseline_args=["--store", str(stored["baseline"])],
        )
        difference = _frame_difference(stored["baseline"], stored["candidate"])
    for run in result["rounds"]:
        for kind in ("action", "frame"):
            pairs = zip(run["baseline"][f"{kind}_digests"], run["candidate"][f"{kind}_digests"], strict=False)
            run[f"same_{kind}s"] = [a == b for a, b in pairs]
    emit({"benchmark": "demos", "recorded": recorded, **result, "frame_difference": difference}, args.out)


if __name__ == "__main__":
    main()
