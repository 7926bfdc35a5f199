"""Throughput of the LIBERO evaluation harness against a bare LIBERO loop; prints JSON.

Usage::

    python -m eval.bench_harness --episodes 4 --steps 40 --image-size 128 --out bench_harness.json

For each (workers, fast_render) setting it runs the same episodes twice, with a no-op
policy so that only the simulator and the harness cost time:

* **raw**: ``workers`` spawned processes, each creating LIBERO's ``OffScreenRenderEnv``
  and timing ``reset`` + ``set_init_state`` + ``num_wait + steps`` bare ``env.step`` calls;
* **harness**: ``run_eval`` with the same episodes (``LiberoEnv``, ``run_episode``,
  supervised workers, JSONL records).

``overhead_pct`` compares the steady-state env-steps/s (each worker's first episode is
left out on both sides, so env creation and first renders are excluded), as the median
of ``--repeats`` alternating rounds; ``harness_end_to_end_steps_per_s`` is the harness's
whole run, worker start-up and env creation included. On a shared machine that A/B
comparison is as noisy as the load, so ``overhead_pct_from_parts`` also adds up the
harness's own costs, each timed with the simulator stubbed out (``harness_own_costs``),
and divides by the raw step time.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "raw_episode_times"]

logger = logging.getLogger(__name__)

SUITE = "libero_spatial"
TASK = 0
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


class _NoOpPolicy:
    """Holds still: one 8-step chunk per query, like an action-chunking model."""

    def reset(self) -> None:
        """Nothing to forget."""

    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        return np.tile(WAIT_ACTION.astype(np.float32), (8, 1))


def _no_op_policy(spec: str) -> _NoOpPolicy:
    return _NoOpPolicy()


class _StubEnv:
    """Answers instantly with a fixed observation: what is left is the harness's own cost."""

    def __init__(self, obs: dict[str, Any]) -> None:
        self.obs = obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        return self.obs, {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        return self.obs, 0.0, False, False, {"is_success": False}

    def close(self) -> None:
        """Nothing to free."""


def _stub_obs(image_size: int) -> dict[str, Any]:
    image = np.zeros((image_size, image_size, 3), np.uint8)
    return {"image": image, "wrist_image": image, "state": np.zeros(8, np.float32), "prompt": "stub"}


def _stub_env(spec: Any) -> _StubEnv:
    return _StubEnv(_stub_obs(spec.image_size))


def _per_call_us(fn: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def raw_episode_times(image_size: int, fast: bool, init_ids: list[int], steps: int, wait: int) -> list[float]:
    """Seconds per episode of a bare LIBERO loop (env creation not timed)."""
    from libero.libero.envs import OffScreenRenderEnv

    from envs.fast_render import fast_render
    from envs.suites import get_task, init_states

    task = get_task(SUITE, TASK)
    with fast_render(fast):
        env = OffScreenRenderEnv(
            bddl_file_name=task.bddl_file,
            camera_heights=image_size,
            camera_widths=image_size,
            hard_reset=False,
            ignore_done=True,
        )
    states = init_states(SUITE, TASK)
    times = []
    for init_id in init_ids:
        start = time.perf_counter()
        env.seed(7 + init_id)
        env.reset()
        env.set_init_state(states[init_id])
        for _ in range(wait + steps):
            env.step(WAIT_ACTION)
        times.append(time.perf_counter() - start)
    env.close()
    return times


def _raw(workers: int, image_size: int, fast: bool, episodes: int, steps: int, wait: int) -> dict[str, float]:
    shards = [list(range(w, episodes, workers)) for w in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        times = pool.starmap(raw_episode_times, [(image_size, fast, shard, steps, wait) for shard in shards])
    # Steady state, as for the harness: each worker's first episode (first renders) is
    # left out, and the pool's rate is the sum of its workers' rates.
    rate = sum((len(t) - 1) * (wait + steps) / sum(t[1:]) for t in times)
    return {"steps_per_s": round(rate, 3), "episode_s_mean": round(float(np.mean(np.concatenate(times))), 3)}


def _harness(
    workers: int, image_size: int, fast: bool, episodes: int, steps: int, wait: int
) -> dict[str, float]:
    from eval.libero.config import EvalConfig
    from eval.libero.harness import run_eval

    with tempfile.TemporaryDirectory() as folder:
        config = EvalConfig(
            out=folder,
            policy="no-op",
            suites=(SUITE,),
            tasks=(TASK,),
            trials=episodes,
            max_steps=steps,
            num_wait_steps=wait,
            image_size=image_size,
            fast_render=fast,
            workers=workers,
        )
        start = time.perf_counter()
        summary = run_eval(config, policy_factory=_no_op_policy)
        total = time.perf_counter() - start
        records = [json.loads(line) for line in Path(folder, "episodes.jsonl").read_text().splitlines()]
    if summary["overall"]["errors"]:
        raise RuntimeError(f"benchmark episodes failed: {[r['error'] for r in records if r['error']]}")
    finished = sorted(r["finished_at"] for r in records)
    # Steady state between the first completion and the last: the episodes finishing in
    # that window ran entirely on warm workers (for W workers, W-1 of them overlap its start).
    window = finished[-1] - finished[0]
    per_episode = wait + steps
    return {
        "steps_per_s": round((len(finished) - workers) * per_episode / window, 3),
        "end_to_end_steps_per_s": round(len(records) * per_episode / total, 3),
        "episode_s_mean": round(float(np.mean([r["wall_time_s"] for r in records])), 3),
        "run_wall_s": round(total, 3),
    }


def _decomposition(image_size: int, fast: bool, steps: int, wait: int) -> dict[str, float]:
    """The harness's own costs, each timed without the simulator, so machine load barely matters.

    * ``wrapper_us_per_step``: ``LiberoEnv.step`` around a stubbed ``raw_env.step``
      (action checks, image flips, state vector, info);
    * ``loop_us_per_step``: ``run_episode`` on an env that answers instantly (policy call,
      chunk validation, heartbeat);
    * ``dispatch_ms_per_episode``: a 1-worker pool running 1-step episodes on that env
      (pipe round trip, JSON record, reset).
    """
    from envs.libero_env import LiberoEnv
    from eval.libero.config import EvalConfig
    from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode
    from eval.libero.harness import run_eval

    env = LiberoEnv(SUITE, TASK, image_size=image_size, fast_render=fast)
    env.reset(seed=7, options={"init_state_id": 0})
    cached = env.raw_env.step(WAIT_ACTION)
    env.raw_env.step = lambda action: cached
    wrapper_us = _per_call_us(lambda: env.step(WAIT_ACTION), 2000)
    del env.raw_env.step
    env.close()

    stub = _StubEnv(_stub_obs(image_size))
    spec = EpisodeSpec(
        EnvSpec(SUITE, TASK, image_size), init_state_id=0, seed=7, max_steps=5000, num_wait_steps=0
    )
    start = time.perf_counter()
    result = run_episode(stub, _NoOpPolicy(), spec)
    loop_us = (time.perf_counter() - start) / result.steps * 1e6

    episodes = 40
    with tempfile.TemporaryDirectory() as folder:
        config = EvalConfig(
            out=folder,
            policy="no-op",
            suites=(SUITE,),
            tasks=(TASK,),
            trials=episodes,
            max_steps=1,
            num_wait_steps=0,
            image_size=image_size,
        )
        run_eval(config, env_factory=_stub_env, policy_factory=_no_op_policy)
        finished = sorted(json.loads(line)["finished_at"] for line in Path(folder, "episodes.jsonl").open())
    dispatch_ms = (finished[-1] - finished[0]) / (episodes - 1) * 1e3
    return {
        "wrapper_us_per_step": round(wrapper_us, 2),
        "loop_us_per_step": round(loop_us, 2),
        "dispatch_ms_per_episode": round(dispatch_ms, 3),
        "steps_per_episode": wait + steps,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the grid and print (and optionally save) the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4, help="episodes per setting (>= 2 x max workers)")
    parser.add_argument("--steps", type=int, default=40, help="policy steps per episode")
    parser.add_argument("--wait", type=int, default=10, help="settle steps per episode")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    parser.add_argument("--fast-render", default="1,0", help="fast_render settings to measure (1/0)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating raw/harness rounds (median)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    fast_settings = [bool(int(v)) for v in args.fast_render.split(",")]
    decompositions = {
        fast: _decomposition(args.image_size, fast, args.steps, args.wait) for fast in fast_settings
    }
    results = []
    for fast in fast_settings:
        for workers in (int(v) for v in args.workers.split(",")):
            if args.episodes < 2 * workers:
                raise ValueError(f"episodes: expected >= 2 x workers = {2 * workers}, got {args.episodes}")
            # Raw and harness runs alternate, so that drifting machine load hits both alike.
            raws, harnesses = [], []
            for _ in range(args.repeats):
                raws.append(_raw(workers, args.image_size, fast, args.episodes, args.steps, args.wait))
                harnesses.append(
                    _harness(workers, args.image_size, fast, args.episodes, args.steps, args.wait)
                )
            raw_rate = float(np.median([r["steps_per_s"] for r in raws]))
            harness_rate = float(np.median([h["steps_per_s"] for h in harnesses]))
            # Harness cost per env step (own costs, simulator excluded) over a raw step's time.
            parts = decompositions[fast]
            own_us = (
                parts["wrapper_us_per_step"]
                + parts["loop_us_per_step"]
                + 1e3 * parts["dispatch_ms_per_episode"] / parts["steps_per_episode"]
            )
            raw_step_us = 1e6 * workers / raw_rate
            results.append(
                {
                    "workers": workers,
                    "fast_render": fast,
                    "raw_steps_per_s": round(raw_rate, 3),
                    "harness_steps_per_s": round(harness_rate, 3),
                    "overhead_pct": round(100 * (raw_rate / harness_rate - 1), 2),
                    "overhead_pct_from_parts": round(100 * own_us / raw_step_us, 3),
                    "harness_end_to_end_steps_per_s": float(
                        np.median([h["end_to_end_steps_per_s"] for h in harnesses])
                    ),
                    "raw_runs": raws,
                    "harness_runs": harnesses,
                }
            )
            logger.warning("measured %s", results[-1])
    report = {
        "suite": SUITE,
        "task_id": TASK,
        "image_size": args.image_size,
        "episodes": args.episodes,
        "steps_per_episode": args.wait + args.steps,
        "cpu_count": mp.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
        "harness_own_costs": {
            ("fast" if fast else "standard"): parts for fast, parts in decompositions.items()
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
