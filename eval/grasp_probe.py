"""Where a policy first closes its gripper, against where the scripted oracle would grasp.

A policy that localizes the object closes near it wherever the scene put it; a policy that
replays one memorised trajectory per task closes at the same spot whatever the scene. For
every episode the probe records the oracle's target at the first policy step (from the
privileged state: for a pick, the grasp point's horizontal position) and the grip site's
position when the policy first commands "close". Per horizontal axis it then reports the
miss (mean and spread, cm) and how the close position follows the target across episodes:
the correlation and the least-squares slope (1 follows the object, 0 ignores it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from deploy.chunker import ChunkerConfig
from eval.libero.episode import WHOLE_CHUNKS, EnvSpec, EpisodeSpec, run_episode

__all__ = ["GraspRecorder", "oracle_target", "probe_grasps", "summarize_grasps"]

# Fewer closed episodes than this leave the slope and correlation undefined.
_MIN_EPISODES = 3
# Positions are rounded to 0.1 mm, so a smaller spread is a constant.
_NO_SPREAD_M = 1e-6
_AXES = ("x", "y")


def oracle_target(priv: Mapping[str, Any]) -> np.ndarray:
    """The scripted oracle's target position ``(3,)`` for a privileged state (hover or grasp point)."""
    from envs.oracle import ScriptedOracle

    return np.asarray(ScriptedOracle().decide(priv).target, dtype=np.float64)


@dataclass
class GraspRecorder:
    """Episode observer: the planner's target at the first step, the hand where it first closes.

    ``planner`` maps a privileged state to a target position (default: ``oracle_target``).
    """

    planner: Callable[[Mapping[str, Any]], np.ndarray] = oracle_target
    # What the episode showed so far (not constructor arguments).
    target: np.ndarray | None = field(default=None, init=False)
    close: np.ndarray | None = field(default=None, init=False)
    close_step: int | None = field(default=None, init=False)
    _steps: int = field(default=0, init=False, repr=False)

    def __call__(self, env: Any, obs: Mapping[str, Any], action: np.ndarray | None) -> None:
        if action is None:
            return
        priv = obs["privileged"]
        if self.target is None:
            self.target = np.asarray(self.planner(priv), dtype=np.float64)
        if self.close is None and float(action[6]) > 0:
            self.close = np.asarray(priv["eef_pos"], dtype=np.float64).copy()
            self.close_step = self._steps
        self._steps += 1

    def row(self) -> dict[str, Any]:
        """JSON-ready target, close position and miss (metres), None where nothing closed."""
        miss = None if self.close is None else (self.close[:2] - self.target[:2])
        return {
            "target": _rounded(self.target),
            "close": _rounded(self.close),
            "close_step": self.close_step,
            "miss_xy": _rounded(miss),
        }


def _rounded(value: np.ndarray | None) -> list[float] | None:
    return None if value is None else [round(float(v), 4) for v in value]


def summarize_grasps(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-axis miss (cm) and how the close position follows the target over ``rows``.

    Rows are ``GraspRecorder.row()`` dicts plus ``success``; episodes that never closed
    count in ``episodes`` but not in the per-axis figures.
    """
    closed = [row for row in rows if row["close"] is not None]
    summary: dict[str, Any] = {
        "episodes": len(rows),
        "closed": len(closed),
        "successes": sum(bool(row["success"]) for row in rows),
    }
    for axis, name in enumerate(_AXES):
        target = np.array([row["target"][axis] for row in closed], dtype=np.float64)
        close = np.array([row["close"][axis] for row in closed], dtype=np.float64)
        miss = (close - target) * 100.0
        figures: dict[str, float | None] = {
            "mean_miss_cm": round(float(miss.mean()), 2) if len(closed) else None,
            "std_miss_cm": round(float(miss.std()), 2) if len(closed) else None,
            "target_std_cm": round(float(target.std() * 100.0), 2) if len(closed) else None,
            "correlation": None,
            "slope": None,
        }
        if len(closed) >= _MIN_EPISODES and target.std() > _NO_SPREAD_M:
            figures["slope"] = round(float(np.polyfit(target, close, 1)[0]), 3)
            if close.std() > _NO_SPREAD_M:
                figures["correlation"] = round(float(np.corrcoef(target, close)[0, 1]), 3)
        summary[name] = figures
    return summary


def probe_grasps(
    policy: Any,
    env_spec: EnvSpec,
    starts: Sequence[tuple[int | None, int]],
    *,
    max_steps: int,
    chunking: ChunkerConfig = WHOLE_CHUNKS,
    env_factory: Callable[[EnvSpec], Any] | None = None,
    planner: Callable[[Mapping[str, Any]], np.ndarray] = oracle_target,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``policy`` from each ``(init_state_id or None for a randomized reset, seed)`` and
    report the env it ran in (``env_spec`` made privileged), every episode's grasp and
    ``summarize_grasps`` of them all; ``chunking`` executes the chunks."""
    if env_factory is None:
        from eval.libero.harness import make_libero_env

        env_factory = make_libero_env
    env_spec = replace(env_spec, privileged=True)
    env = env_factory(env_spec)
    rows = []
    try:
        for init_state_id, seed in starts:
            recorder = GraspRecorder(planner=planner)
            spec = EpisodeSpec(
                env=env_spec, init_state_id=init_state_id, seed=seed, max_steps=max_steps, chunking=chunking
            )
            result = run_episode(env, policy, spec, observers=[recorder])
            row = {"init_state_id": init_state_id, "seed": seed, "success": result.success, **recorder.row()}
            rows.append(row)
            if progress is not None:
                progress(row)
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()
    return {"env": asdict(env_spec), "episodes": rows, "summary": summarize_grasps(rows)}
