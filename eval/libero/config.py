"""The evaluation protocol as one typed config; every value ends up in ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from deploy.chunker import WHOLE_CHUNK, ChunkerConfig
from envs.perturb import PERTURBATIONS
from envs.suites import MAX_STEPS, NUM_WAIT_STEPS, SUITES

__all__ = [
    "EXECUTIONS",
    "PROTOCOL_DEFAULTS",
    "PROTOCOL_FIELDS",
    "RESETS",
    "Backend",
    "EvalConfig",
    "Execution",
    "Resets",
]

Backend = Literal["process", "ray"]
Resets = Literal["fixed", "randomized"]
RESETS: tuple[Resets, ...] = ("fixed", "randomized")
Execution = Literal["open-loop", "ensemble", "async"]
EXECUTIONS: tuple[Execution, ...] = ("open-loop", "ensemble", "async")
# ACT's temporal-ensembling coefficient.
_ACT_ENSEMBLE_COEFF = 0.01

# Fields that change what an episode is; a resumed run must agree on all of them.
# (tasks/trials/start only change which episodes are planned, so they may differ; the
# policy is compared by its content fingerprint, not by its path.)
PROTOCOL_FIELDS = (
    "seed",
    "max_steps",
    "num_wait_steps",
    "image_size",
    "fast_render",
    "mesh_faces",
    "open_loop_steps",
    "execution",
    "async_latency_steps",
    "gripper_close_delay",
    "requery_before_grasp",
    "resets",
    "init_joint_noise",
)


@dataclass(frozen=True)
class EvalConfig:
    """One LIBERO evaluation run. Defaults follow the OpenVLA-OFT protocol."""

    # Output folder: config.json, episodes.jsonl, summary.json, videos/.
    out: str
    # "oracle", a checkpoint folder or tcp://HOST:PORT (see eval.policies).
    policy: str
    suites: tuple[str, ...] = ("libero_spatial",)
    # Task indices within each suite; None = every task.
    tasks: tuple[int, ...] | None = None
    # Trial k of a task starts from fixed init state (or validation scene) start + k.
    trials: int = 50
    start: int = 0
    # "fixed": the benchmark's init states. "randomized": held-out scenes sampled from the
    # task's BDDL regions with seeds no demo attempt uses (eval.libero.seeds.validation_seed),
    # for choosing between checkpoints without touching the benchmark's states.
    resets: Resets = "fixed"
    # Randomized resets: std (radians) of the start pose's joint noise. 0.02 is LIBERO's
    # scene default, which the fixed init states' start poses follow; demos start at one pose.
    init_joint_noise: float = 0.02
    # Episode seed = seed + init state index (LIBERO's RNG and the policy's torch RNG); with
    # randomized resets, the base of the validation scenes' seeds.
    seed: int = 7
    # Policy steps per episode; None = the suite's budget (envs.suites.MAX_STEPS).
    max_steps: int | None = None
    num_wait_steps: int = NUM_WAIT_STEPS
    # Camera side in pixels (the OFT harness renders 256 and the policy resizes).
    image_size: int = 256
    # Benchmark-identical renders by default; fast renders only match fast-render training data.
    fast_render: bool = False
    # Face cap of visual-only meshes (envs.mesh_lod); 0 = as modelled. Like fast_render, a
    # policy is evaluated with what its demos were rendered with.
    mesh_faces: int = 0
    # How chunks are executed (deploy.chunker.ActionChunker): open-loop, ACT temporal
    # ensembling (re-plan every step by default) or asynchronous prefetch.
    execution: Execution = "open-loop"
    # Chunk rows executed per policy query; None = the whole chunk (open-loop) or 1 (ensemble).
    # async needs it below chunk size - async_latency_steps, or it stalls at every other chunk.
    open_loop_steps: int | None = None
    # async: env steps between the observation a chunk is asked for and its adoption, i.e.
    # the policy latency in control ticks (the simulator waits for it, so runs are repeatable).
    async_latency_steps: int = 2
    # Steps the gripper stays open after the policy's actions switch to close
    # (deploy.chunker.ChunkerConfig.gripper_close_delay); 0 = as commanded.
    gripper_close_delay: int = 0
    # Open-loop: re-query where a chunk's stale row would close the gripper for the first time
    # (deploy.chunker.ChunkerConfig.requery_before_grasp).
    requery_before_grasp: bool = False
    workers: int = 1
    backend: Backend = "process"
    # Record MP4s of the first `videos` trials of every task.
    videos: int = 0
    video_fps: int = 20
    # Tries per episode before an infrastructure fault (dead or hung worker, env crash,
    # unreachable policy server) is recorded as its error; --resume tries again.
    max_attempts: int = 3
    # Process backend: seconds without a step before a worker counts as hung.
    hang_timeout_s: float = 600.0
    # Ray backend: seconds one episode may run before its actor counts as hung.
    episode_timeout_s: float = 3600.0
    ray_address: str | None = None
    resume: bool = False
    # LIBERO-PRO perturbations (envs.perturb.PERTURBATIONS) evaluated beside the nominal
    # task; each variant is drawn once per task with `seed`.
    perturb: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("suites", "tasks", "perturb"):
            values = getattr(self, name) or ()
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:
                raise ValueError(
                    f"{name}: expected each value once (a repeat would run and count its episodes twice), "
                    f"got {', '.join(map(str, repeated))} more than once"
                )
        for suite in self.suites:
            if suite not in SUITES:
                raise ValueError(f"suites: expected names from {', '.join(SUITES)}, got {suite!r}")
        for kind in self.perturb:
            if kind not in PERTURBATIONS:
                raise ValueError(f"perturb: expected names from {', '.join(PERTURBATIONS)}, got {kind!r}")
        if not self.suites:
            raise ValueError("suites: expected at least one suite, got none")
        for name in ("trials", "workers", "image_size", "video_fps", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("start", "videos", "num_wait_steps", "mesh_faces", "gripper_close_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: expected None or >= 1, got {self.max_steps}")
        if self.open_loop_steps is not None and self.open_loop_steps < 1:
            raise ValueError(f"open_loop_steps: expected None or >= 1, got {self.open_loop_steps}")
        if self.resets not in RESETS:
            raise ValueError(f"resets: expected one of {', '.join(RESETS)}, got {self.resets!r}")
        if not 0 <= self.init_joint_noise < float("inf"):  # NaN too
            raise ValueError(f"init_joint_noise: expected a finite value >= 0, got {self.init_joint_noise}")
        if self.resets == "randomized" and self.perturb:
            raise ValueError(
                "perturb: LIBERO-PRO variants are drawn around the fixed init states; expected no "
                f"perturbations with resets 'randomized', got {', '.join(self.perturb)}"
            )
        if self.execution not in EXECUTIONS:
            raise ValueError(f"execution: expected one of {', '.join(EXECUTIONS)}, got {self.execution!r}")
        if self.requery_before_grasp and self.execution != "open-loop":
            raise ValueError(f"requery_before_grasp: expected execution 'open-loop', got {self.execution!r}")
        if self.execution == "async" and self.open_loop_steps is None:
            raise ValueError(
                "open_loop_steps: execution 'async' needs the rows executed per chunk "
                f"(at most chunk size - {self.async_latency_steps}), got None"
            )
        if self.async_latency_steps < 0:
            raise ValueError(f"async_latency_steps: expected >= 0, got {self.async_latency_steps}")
        if self.backend not in ("process", "ray"):
            raise ValueError(f"backend: expected 'process' or 'ray', got {self.backend!r}")

    def steps_for(self, suite: str) -> int:
        """The policy-step budget of an episode of ``suite``."""
        return self.max_steps if self.max_steps is not None else MAX_STEPS[suite]

    def chunking(self) -> ChunkerConfig:
        """The chunker settings of ``execution``, ``gripper_close_delay`` and ``requery_before_grasp``."""
        delay = self.gripper_close_delay
        if self.execution == "ensemble":
            return ChunkerConfig(
                execute_steps=self.open_loop_steps or 1,
                ensemble_coeff=_ACT_ENSEMBLE_COEFF,
                gripper_close_delay=delay,
            )
        if self.execution == "async":
            return ChunkerConfig(
                execute_steps=self.open_loop_steps,
                prefetch=True,
                prefetch_margin=self.async_latency_steps,
                prefetch_lockstep=True,
                gripper_close_delay=delay,
            )
        return ChunkerConfig(
            execute_steps=self.open_loop_steps or WHOLE_CHUNK,
            gripper_close_delay=delay,
            requery_before_grasp=self.requery_before_grasp,
        )

    def to_json(self) -> dict[str, Any]:
        """Every field plus the resolved per-suite step budgets."""
        data = asdict(self)
        data["suites"] = list(self.suites)
        data["tasks"] = None if self.tasks is None else list(self.tasks)
        data["perturb"] = list(self.perturb)
        data["max_steps_per_suite"] = {suite: self.steps_for(suite) for suite in self.suites}
        return data

    def protocol(self) -> dict[str, Any]:
        """The fields a resumed run must share with the original one."""
        data = self.to_json()
        return {name: data[name] for name in PROTOCOL_FIELDS}


# What a protocol field was before it was recorded: its default.
PROTOCOL_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(EvalConfig) if f.name in PROTOCOL_FIELDS
}
