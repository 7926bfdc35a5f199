"""One episode of a policy in an env: the loop shared by the eval workers, the Ray
backend and the demo generator.

The env is anything with gymnasium's ``reset(seed=, options=)`` / ``step(action)``
(``envs.libero_env.LiberoEnv`` or a test double); the policy is a
``cogvla.policy_api.Policy`` whose chunks ``deploy.chunker.ActionChunker`` executes. Policy
failures (an exception, or an output that is not a finite ``(chunk, 7)`` array) end the
episode with ``policy_failure`` set. Infrastructure faults propagate: env failures, because
the caller has to throw that env away, and policy-server faults (``deploy.client.ClientError``),
because the episode says nothing about the policy and must be run again.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cogvla.policy_api import PolicyOutputError
from deploy.chunker import WHOLE_CHUNK, ActionChunker, ChunkerConfig
from deploy.client import ClientError
from envs.perturb import Perturbation
from envs.suites import WAIT_ACTION

__all__ = [
    "WAIT_ACTION",
    "WHOLE_CHUNKS",
    "EnvSpec",
    "EpisodeResult",
    "EpisodeSpec",
    "Observer",
    "latency_summary",
    "run_episode",
]

# Re-query only when the current chunk runs out.
WHOLE_CHUNKS = ChunkerConfig(execute_steps=WHOLE_CHUNK)
# Dims that DART noise perturbs: the 6 arm deltas, never the binary gripper.
_NOISY_DIMS = slice(0, 6)

Observer = Callable[[Any, dict[str, Any], "np.ndarray | None"], None]
"""``observer(env, obs, action)``: called with each observation the policy acts on and the
(clean) action chosen for it, then once more with the final observation and ``None``."""


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to build (or reuse) an env; workers cache envs by this key."""

    suite: str
    task_id: int
    image_size: int = 256
    fast_render: bool = False
    privileged: bool = False
    # A LIBERO-PRO variant of the task (envs.perturb), or None for the nominal task.
    perturbation: Perturbation | None = None
    # Face cap of visual-only meshes (envs.mesh_lod); 0 = as modelled.
    mesh_faces: int = 0


@dataclass(frozen=True)
class EpisodeSpec:
    """What to run: one task, one start condition, one budget."""

    env: EnvSpec
    # Fixed init state index, or None for a randomized reset (BDDL placement regions).
    init_state_id: int | None
    seed: int
    # Policy steps after the settle steps; the episode ends earlier on success.
    max_steps: int
    num_wait_steps: int = 10
    # How chunks become per-step actions (deploy's chunker).
    chunking: ChunkerConfig = WHOLE_CHUNKS
    # DART: std of Gaussian noise on the executed arm deltas (the clean action is what observers see).
    action_noise: float = 0.0
    # Randomized resets only: std (rad) of Gaussian noise on the arm's start joints (env reset option).
    init_joint_noise: float = 0.0
    # Keep acting this many steps after the first success (demos end a little after success).
    steps_after_success: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps: expected >= 1, got {self.max_steps}")
        if self.num_wait_steps < 0:
            raise ValueError(f"num_wait_steps: expected >= 0, got {self.num_wait_steps}")
        if self.action_noise < 0:
            raise ValueError(f"action_noise: expected >= 0, got {self.action_noise}")
        if not self.init_joint_noise >= 0:  # NaN too
            raise ValueError(f"init_joint_noise: expected >= 0, got {self.init_joint_noise}")
        if self.init_joint_noise and self.init_state_id is not None:
            raise ValueError(
                "init_joint_noise: applies to randomized resets only; expected init_state_id=None, "
                f"got {self.init_state_id}"
            )


@dataclass
class EpisodeResult:
    """Outcome of one episode; ``policy_failure`` says why the policy failed, None if it did not."""

    success: bool
    # Policy steps executed (settle steps excluded).
    steps: int
    wall_time_s: float
    num_queries: int
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    policy_failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """Mean / median / max of policy query latencies in ms (None when there were none)."""
    if not latencies_ms:
        return {"mean": None, "p50": None, "max": None}
    values = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "mean": round(float(values.mean()), 3),
        "p50": round(float(np.median(values)), 3),
        "max": round(float(values.max()), 3),
    }


def _seed_policy_rngs(seed: int) -> None:
    """Seed torch too when a policy has loaded it, so sampling policies are reproducible."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _lazy_images(env: Any) -> dict[str, bool]:
    """``lazy_images=True`` for envs that support it: cameras are then rendered only when a
    policy or an observer reads the observation, not at every settle or open-loop step."""
    return {"lazy_images": True} if "lazy_images" in inspect.signature(env.step).parameters else {}


def _perturb(action: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """DART: the executed action is the clean one plus Gaussian noise on the arm dims, clipped."""
    if sigma == 0:
        return action
    noisy = action.copy()
    noisy[_NOISY_DIMS] += rng.normal(0.0, sigma, size=noisy[_NOISY_DIMS].shape)
    return np.clip(noisy, -1.0, 1.0)


def run_episode(
    env: Any,
    policy: Any,
    spec: EpisodeSpec,
    *,
    observers: Sequence[Observer] = (),
    heartbeat: Callable[[], None] | None = None,
) -> EpisodeResult:
    """Reset ``env``, settle, then let ``policy`` act until success or ``spec.max_steps``.

    Args:
        env: a gymnasium-style env built for ``spec.env``.
        policy: has ``infer(obs) -> (chunk, 7)`` and ``reset()``.
        spec: start condition and budget.
        observers: see ``Observer``; settle steps are not observed.
        heartbeat: called after every env step (workers use it to prove they are alive).
    """
    start = time.perf_counter()
    beat = heartbeat or (lambda: None)
    noise_rng = np.random.default_rng(spec.seed)
    _seed_policy_rngs(spec.seed)
    lazy = _lazy_images(env)
    options = {"randomize": True} if spec.init_state_id is None else {"init_state_id": spec.init_state_id}
    if spec.init_joint_noise:
        options["joint_noise"] = spec.init_joint_noise
    obs, _ = env.reset(seed=spec.seed, options={**options, **lazy})
    chunker = ActionChunker(policy, spec.chunking)
    chunker.reset()
    beat()
    for _ in range(spec.num_wait_steps):
        obs, _, _, _, _ = env.step(WAIT_ACTION, **lazy)
        beat()

    latencies: list[float] = []
    steps = 0
    success = False
    first_success_step: int | None = None
    failure: str | None = None

    def finished() -> bool:
        if first_success_step is not None and steps - first_success_step >= spec.steps_after_success:
            return True
        return steps >= spec.max_steps

    while not finished():
        queries = chunker.stats.queries
        try:
            action = chunker.step(obs)
        except PolicyOutputError as exc:
            failure = f"malformed policy output at step {steps}: {exc}"
            break
        except ClientError:  # the policy server, not the policy: the worker retries the episode
            raise
        except Exception as exc:  # the policy's own crash is this episode's failure, not the run's
            failure = f"policy raised {type(exc).__name__} at step {steps}: {exc}"
            break
        if chunker.stats.queries > queries:
            latencies.append(chunker.stats.last_query_ms)
        for observer in observers:
            observer(env, obs, action)
        obs, _, success, _, _ = env.step(_perturb(action, spec.action_noise, noise_rng), **lazy)
        steps += 1
        beat()
        if success and first_success_step is None:
            first_success_step = steps
    chunker.close()
    for observer in observers:
        observer(env, obs, None)
    return EpisodeResult(
        success=bool(success) and failure is None,
        steps=steps,
        wall_time_s=round(time.perf_counter() - start, 3),
        num_queries=chunker.stats.queries,
        latency_ms=latency_summary(latencies),
        policy_failure=failure,
    )
