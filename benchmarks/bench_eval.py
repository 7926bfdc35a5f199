"""LIBERO evaluation throughput (episodes per hour), this tree against a baseline checkout; JSON.

Usage::

    git worktree add ../baseline 2c1709b
    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_eval.py --baseline ../baseline \\
        --tasks 0 1 --init-states 0 1 --rounds 2 --out bench_eval.json

Each side, in its own process, builds one ``LiberoEnv`` per task (128 px, fast render,
as the embedded defaults were trained) and runs one policy (``--policy``, default this
tree's embedded default of ``--suite``) through its own ``run_episode`` on the same (task,
init state, seed) episodes, one torch thread, the env reused across episodes as eval workers
reuse it. The rate is episodes per hour of
episode time (env creation excluded, it is paid once per worker). ``same_outcomes`` checks
that both sides scored every episode alike (success and step count).

``--baseline-eager`` runs the baseline side with every camera rendered at every step (the
env's ``lazy_images`` hidden from ``run_episode``): with the same checkout on both sides
that isolates lazy rendering from every other difference between two checkouts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from side_by_side import add_arguments, compare_rounds, emit, parse_or_run_side

__all__ = ["main"]


class EagerEnv:
    """An env seen without its ``lazy_images`` option: every observation renders every camera."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.env.step(action)


def run_side(args: argparse.Namespace) -> dict[str, Any]:
    """This process's side: the episodes, timed, in the tree first on the import path."""
    import torch

    from cogvla.policy import CogVLAPolicy
    from envs.libero_env import LiberoEnv
    from envs.suites import MAX_STEPS
    from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode

    torch.set_num_threads(1)
    policy = CogVLAPolicy.from_pretrained(args.policy)
    episodes = []
    for task_id in args.tasks:
        spec = EnvSpec(args.suite, task_id, args.image_size, fast_render=True)
        env = LiberoEnv(args.suite, task_id, image_size=args.image_size, fast_render=True)
        try:
            for init_state_id in args.init_states:
                episode = EpisodeSpec(
                    env=spec, init_state_id=init_state_id, seed=init_state_id, max_steps=MAX_STEPS[args.suite]
                )
                start = time.perf_counter()
                result = run_episode(EagerEnv(env) if args.eager else env, policy, episode)
                episodes.append(
                    {
                        "task_id": task_id,
                        "init_state_id": init_state_id,
                        "success": result.success,
                        "steps": result.steps,
                        "queries": result.num_queries,
                        "seconds": round(time.perf_counter() - start, 3),
                    }
                )
        finally:
            env.close()
    seconds = sum(e["seconds"] for e in episodes)
    return {
        "episodes": episodes,
        "episode_seconds": round(seconds, 3),
        "episodes_per_hour": 3600 * len(episodes) / seconds,
    }


def _outcomes(result: dict[str, Any]) -> list[tuple]:
    return [(e["task_id"], e["init_state_id"], e["success"], e["steps"]) for e in result["episodes"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument(
        "--baseline-eager", action="store_true", help="render every step on the baseline side"
    )
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--tasks", type=int, nargs="+", default=[0])
    parser.add_argument("--init-states", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument(
        "--policy",
        type=Path,
        help="checkpoint both sides run (default: this tree's embedded default of --suite)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = parse_or_run_side(parser, run_side)
    if args is None:
        return
    from cogvla.paths import defaults_for

    policy = args.policy or next(iter(defaults_for((args.suite,))))
    side_args = [
        "--policy", str(policy.resolve()),
        "--suite", args.suite,
        "--tasks", *map(str, args.tasks),
        "--init-states", *map(str, args.init_states),
        "--image-size", str(args.image_size),
    ]  # fmt: skip
    result = compare_rounds(
        str(Path(__file__).resolve()),
        args.baseline.resolve(),
        args.candidate.resolve(),
        side_args,
        args.rounds,
        rate=lambda side: side["episodes_per_hour"],
        baseline_args=["--eager"] if args.baseline_eager else [],
    )
    result["same_outcomes"] = all(
        _outcomes(run["baseline"]) == _outcomes(run["candidate"]) for run in result["rounds"]
    )
    emit(
        {"benchmark": "eval", "suite": args.suite, "baseline_eager": args.baseline_eager, **result}, args.out
    )


if __name__ == "__main__":
    main()
