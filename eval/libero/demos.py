"""Scripted-oracle demonstrations in LIBERO's HDF5 schema.

Each attempt resets a task with fresh object placements sampled from the BDDL regions
(never the benchmark's fixed init states, which stay held out for evaluation), settles,
rolls out the oracle and, if the task succeeds, keeps the episode up to a few steps
after success. With ``noise > 0`` the executed action is perturbed (DART) while the
recorded action is the oracle's clean one.

Files, per task, in ``out/<suite>/``: ``<task_name>_demo/demo_{i}.hdf5``, one LIBERO-schema
file per demo (``cogvla.data.libero_hdf5.write_episode``: a kill never damages earlier
demos), and ``<task_name>_attempts.jsonl`` (every attempt: seed, outcome, steps, time).
Demos of a ``<task_name>_demo.hdf5`` file (LIBERO's name; earlier runs appended to it)
count towards the task and stay as they are. The attempt ledger is what makes a run
resumable: attempt ``a`` of a task always uses the same seed, a re-run starts after the
last recorded attempt, and an attempt is recorded before its demo is written, so a kill
can lose a demo but never duplicate one.

With ``rollin`` set (a learned policy), each attempt is a recovery demo
(``eval.libero.handover``): the learner acts for the first ``n`` steps, ``n`` drawn per
attempt from ``handover_steps`` and fixed by its seed, then the oracle finishes the task.
Only the oracle's steps are recorded, so a demo starts in a state the learner reached; an
attempt the learner solved before the handover is recorded as such and writes no demo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.chunker import ChunkerConfig
from envs.mesh_lod import DEFAULT_MESH_FACES
from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode
from eval.libero.handover import HandoverFactory, handover_step
from eval.libero.results import EpisodeLog
from eval.libero.seeds import attempt_seed
from eval.libero.workers import WorkerPool, WorkerSetup, default_torch_threads
from eval.policies import ORACLE, load_policy

__all__ = [
    "DemoConfig",
    "DemoJob",
    "DemoRenderError",
    "attempt_seed",
    "demo_job",
    "generate_demos",
    "make_demo_env",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """One demo-generation run."""

    out: str
    suite: str = "libero_spatial"
    # Task indices; None = every task of the suite.
    tasks: tuple[int, ...] | None = None
    per_task: int = 50
    # LIBERO's own datasets are 128 x 128.
    image_size: int = 128
    fast_render: bool = True
    # Face cap of visual-only meshes (envs.mesh_lod): about 2x faster rendering; 0 = as modelled.
    mesh_faces: int = DEFAULT_MESH_FACES
    # Policy steps per attempt; None = the suite's eval budget (envs.suites.MAX_STEPS).
    max_steps: int | None = None
    num_wait_steps: int = 10
    # Steps recorded after the first success (LIBERO's demos end at success).
    post_success_steps: int = 5
    # DART noise std on the executed arm deltas.
    noise: float = 0.0
    # Std (rad) of Gaussian noise on the arm's start joints at each reset; the fixed init states'
    # start poses spread as 0.02 gives, while 0 starts every demo from one pose.
    init_joint_noise: float = 0.0
    seed: int = 0
    workers: int = 1
    # Give up on a task after this many attempts per requested demo.
    max_attempts_factor: int = 4
    policy: str = ORACLE
    hang_timeout_s: float = 600.0
    # A learned policy (checkpoint folder or tcp://HOST:PORT) that acts before the oracle takes over.
    rollin: str | None = None
    # Inclusive range of the step at which the oracle takes over from ``rollin``.
    handover_steps: tuple[int, int] = (8, 160)
    # How the roll-in policy's chunks are executed (the execution its evaluation uses, e.g.
    # the re-query before the grasp); None = each chunk whole, cut at the handover.
    rollin_chunking: ChunkerConfig | None = None

    def __post_init__(self) -> None:
        for name in ("per_task", "image_size", "workers", "max_attempts_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("num_wait_steps", "post_success_steps", "noise", "init_joint_noise", "mesh_faces"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: expected None or >= 1, got {self.max_steps}")
        low, high = self.handover_steps
        if not 0 <= low <= high:
            raise ValueError(f"handover_steps: expected 0 <= low <= high, got {self.handover_steps}")
        if self.rollin_chunking is not None:
            if self.rollin is None:
                raise ValueError("rollin_chunking: applies to a roll-in policy; expected rollin to be set")
            if self.rollin_chunking.prefetch:
                raise ValueError(
                    "rollin_chunking: the simulator waits for each roll-in query; expected prefetch=False"
                )


@dataclass(frozen=True)
class DemoJob:
    """One attempt at one task, as a worker job."""

    key: str
    env_spec: EnvSpec
    episode: EpisodeSpec
    attempt: int
    # Steps the roll-in policy acts before the oracle; None = no roll-in policy.
    handover_step: int | None = None


def make_demo_env(spec: EnvSpec) -> Any:
    """The default env factory for demos: a privileged ``LiberoEnv``."""
    from envs.libero_env import LiberoEnv

    return LiberoEnv(
        spec.suite,
        spec.task_id,
        image_size=spec.image_size,
        fast_render=spec.fast_render,
        privileged=True,
        mesh_faces=spec.mesh_faces,
    )


class _StepRecorder:
    """Observer that keeps what LIBERO's HDF5 schema stores for each acted-on step from
    step ``first_step`` on."""

    def __init__(self, first_step: int = 0) -> None:
        self.columns: dict[str, list[np.ndarray]] = {}
        self.first_step = first_step
        self.seen = 0

    def __call__(self, env: Any, obs: dict[str, Any], action: np.ndarray | None) -> None:
        if action is None:
            return
        self.seen += 1
        if self.seen <= self.first_step:
            return
        fields = {"actions": action, "agentview_rgb": obs["image"], "eye_in_hand_rgb": obs["wrist_image"]}
        fields.update(env.raw_fields())
        for name, value in fields.items():
            self.columns.setdefault(name, []).append(np.asarray(value))

    @property
    def recorded(self) -> int:
        """Steps recorded so far."""
        return max(0, self.seen - self.first_step)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.stack(values) for name, values in self.columns.items()}


def demo_job(env: Any, policy: Any, job: DemoJob, heartbeat: Callable[[], None]) -> dict[str, Any]:
    """Worker job: one attempt; returns its outcome and, on success, the recorded arrays."""
    recorder = _StepRecorder(job.handover_step or 0)
    if job.handover_step is not None:
        # Also when it is 0: the worker's policy keeps the previous attempt's handover otherwise.
        policy.hand_over_at(job.handover_step)
    result = run_episode(env, policy, job.episode, observers=[recorder], heartbeat=heartbeat)
    record = {"attempt": job.attempt, "seed": job.episode.seed, **result.to_dict()}
    solved_before = False
    if job.handover_step is not None:
        # Success within the roll-in's post-success tail: the oracle did nothing worth learning.
        solved_before = result.success and recorder.recorded <= job.episode.steps_after_success
        record.update(
            handover_step=job.handover_step,
            recorded_steps=recorder.recorded,
            solved_before_handover=solved_before,
        )
    record["arrays"] = recorder.arrays() if result.success and not solved_before else None
    record["problem_name"] = getattr(getattr(env, "raw_env", None), "problem_name", "")
    return record


@dataclass
class _TaskState:
    """Progress of one task: demos on disk, attempts made, attempts running."""

    suite: str
    task_id: int
    name: str
    language: str
    bddl_file: str
    # Where new demos go, one file each.
    folder: Path
    # A single file of demos appended by earlier runs (counted, never written).
    appended: Path
    ledger: EpisodeLog
    have: int
    next_attempt: int
    attempts_made: int
    in_flight: int = 0
    successes: int = 0
    success_seconds: list[float] = field(default_factory=list)


class DemoRenderError(ValueError):
    """Topping up demos that were rendered differently (a policy trained on both would see two
    kinds of image, and its checkpoints would get no evaluation protocol)."""


def _check_same_render(config: DemoConfig, files: list[Path]) -> None:
    from cogvla.eval_protocol import render_of_demos

    existing = next((path for path in files if path.is_file()), None)
    found = None if existing is None else render_of_demos(existing)
    wanted = {
        "image_size": config.image_size,
        "fast_render": config.fast_render,
        "mesh_faces": config.mesh_faces,
    }
    if found is not None and found != wanted:
        differ = ", ".join(
            f"{key}={found[key]} (this run: {wanted[key]})" for key in wanted if found[key] != wanted[key]
        )
        raise DemoRenderError(
            f"out: {existing.parent} holds demos rendered with {differ}; pass the same "
            "--image-size/--fast-render/--mesh-faces to top them up, or a new --out"
        )


def _task_state(config: DemoConfig, task_id: int) -> _TaskState:
    from cogvla.data.libero_hdf5 import count_episodes
    from envs.suites import get_task

    task = get_task(config.suite, task_id)
    folder = Path(config.out) / config.suite
    folder.mkdir(parents=True, exist_ok=True)
    appended = folder / f"{task.name}_demo.hdf5"
    ledger = EpisodeLog(folder / f"{task.name}_attempts.jsonl")
    attempts = ledger.load()
    try:
        have = count_episodes(appended)
    except OSError as exc:
        raise OSError(
            f"{appended} is unreadable (killed during a write?); move it away to regenerate it: {exc}"
        ) from exc
    demo_folder = folder / f"{task.name}_demo"
    have += count_episodes(demo_folder)
    if have:
        _check_same_render(config, [appended, *sorted(demo_folder.glob("demo_*.hdf5"))])
    last = max((int(r["attempt"]) for r in attempts.values()), default=-1)
    return _TaskState(
        suite=config.suite,
        task_id=task_id,
        name=task.name,
        language=task.language,
        # As LIBERO's datasets store it: relative to site-packages, not this machine's path.
        bddl_file=f"libero/libero/bddl_files/{config.suite}/{Path(task.bddl_file).name}",
        folder=demo_folder,
        appended=appended,
        ledger=ledger,
        have=have,
        next_attempt=last + 1,
        attempts_made=len(attempts),
    )


def _env_args(config: DemoConfig, state: _TaskState, result: dict[str, Any]) -> dict[str, Any]:
    """LIBERO's ``env_args`` attribute: enough to rebuild the env that recorded the demos."""
    problem_name = result["problem_name"]
    return {
        "type": 1,
        "env_name": problem_name,
        "problem_name": problem_name,
        "bddl_file": state.bddl_file,
        "env_kwargs": {
            "bddl_file_name": state.bddl_file,
            "camera_names": ["agentview", "robot0_eye_in_hand"],
            "camera_heights": config.image_size,
            "camera_widths": config.image_size,
            "controller": "OSC_POSE",
            "control_freq": 20,
        },
        # Outside env_kwargs, which readers pass to the env constructor as they are.
        "generation": {
            "policy": config.policy,
            "fast_render": config.fast_render,
            "mesh_faces": config.mesh_faces,
            "dart_noise": config.noise,
            "init_joint_noise": config.init_joint_noise,
            "num_wait_steps": config.num_wait_steps,
            "post_success_steps": config.post_success_steps,
            "randomized_reset": True,
            "rollin_policy": config.rollin,
            "rollin_execution": _rollin_execution(config),
            "handover_step": result.get("handover_step", 0),
        },
    }


def _rollin_execution(config: DemoConfig) -> dict[str, Any] | None:
    """The roll-in's chunk execution as recorded: None without a roll-in policy."""
    if config.rollin is None:
        return None
    chunking = config.rollin_chunking
    return {
        "requery_before_grasp": bool(chunking and chunking.requery_before_grasp),
        "gripper_close_delay": chunking.gripper_close_delay if chunking else 0,
    }


def _write_demo(config: DemoConfig, state: _TaskState, result: dict[str, Any]) -> None:
    from cogvla.data.libero_hdf5 import Episode, write_episode

    arrays = result["arrays"]
    episode = Episode(
        actions=arrays["actions"],
        agentview_rgb=arrays["agentview_rgb"],
        eye_in_hand_rgb=arrays["eye_in_hand_rgb"],
        ee_pos=arrays["ee_pos"],
        ee_ori=arrays["ee_ori"],
        gripper_states=arrays["gripper_states"],
        joint_states=arrays["joint_states"],
        language=state.language,
        states=arrays["sim_state"],
        problem_name=result["problem_name"],
        bddl_file=state.bddl_file,
    )
    write_episode(state.folder, episode, env_args=_env_args(config, state, result))


def generate_demos(
    config: DemoConfig,
    *,
    env_factory: Callable[[EnvSpec], Any] = make_demo_env,
    policy_factory: Callable[[str], Any] = load_policy,
) -> dict[str, Any]:
    """Generate (or top up) ``config.per_task`` demos per task; returns a JSON-ready report."""
    from tqdm import tqdm

    from envs.suites import MAX_STEPS, num_tasks

    task_ids = config.tasks if config.tasks is not None else tuple(range(num_tasks(config.suite)))
    states = {task_id: _task_state(config, task_id) for task_id in task_ids}
    env_specs = {
        task_id: EnvSpec(
            config.suite,
            task_id,
            config.image_size,
            config.fast_render,
            privileged=True,
            mesh_faces=config.mesh_faces,
        )
        for task_id in task_ids
    }
    max_steps = config.max_steps or MAX_STEPS[config.suite]
    cap = config.max_attempts_factor * config.per_task
    started = time.perf_counter()
    bar = tqdm(
        total=config.per_task * len(states),
        initial=sum(min(s.have, config.per_task) for s in states.values()),
        desc="demos",
        unit="demo",
        dynamic_ncols=True,
    )

    def more_jobs() -> list[DemoJob]:
        running = sum(s.in_flight for s in states.values())
        jobs: list[DemoJob] = []
        for task_id, state in states.items():
            while (
                running + len(jobs) < config.workers
                and state.have + state.in_flight < config.per_task
                and state.attempts_made + state.in_flight < cap
            ):
                attempt = state.next_attempt
                state.next_attempt += 1
                state.in_flight += 1
                seed = attempt_seed(config.seed, config.suite, state.name, attempt)
                jobs.append(
                    DemoJob(
                        key=f"{state.name}/{attempt}",
                        env_spec=env_specs[task_id],
                        attempt=attempt,
                        handover_step=handover_step(seed, *config.handover_steps) if config.rollin else None,
                        episode=EpisodeSpec(
                            env=env_specs[task_id],
                            init_state_id=None,
                            seed=seed,
                            max_steps=max_steps,
                            num_wait_steps=config.num_wait_steps,
                            action_noise=config.noise,
                            init_joint_noise=config.init_joint_noise,
                            steps_after_success=config.post_success_steps,
                        ),
                    )
                )
        return jobs

    def finish(job: DemoJob, result: dict[str, Any]) -> None:
        state = states[job.env_spec.task_id]
        state.in_flight -= 1
        state.attempts_made += 1
        line = {k: v for k, v in result.items() if k not in ("arrays", "problem_name")}
        outcome = "success" if result["success"] else "error" if result.get("error") else "failure"
        state.ledger.append({"key": job.key, "outcome": outcome, **line})
        if result["success"] and result.get("arrays") is not None and state.have < config.per_task:
            _write_demo(config, state, result)
            state.have += 1
            state.successes += 1
            state.success_seconds.append(float(result["wall_time_s"]))
            bar.update(1)
        made = sum(s.attempts_made for s in states.values())
        bar.set_postfix_str(f"attempts {made}")

    def fail(job: DemoJob, message: str) -> None:
        finish(
            job,
            {
                "attempt": job.attempt,
                "seed": job.episode.seed,
                "success": False,
                "error": message,
                "steps": 0,
                "wall_time_s": 0.0,
            },
        )

    setup = WorkerSetup(
        policy_spec=config.policy,
        policy_factory=HandoverFactory(config.rollin, policy_factory, config.rollin_chunking)
        if config.rollin
        else policy_factory,
        env_factory=env_factory,
        job=demo_job,
        torch_threads=default_torch_threads(config.workers),
    )
    remaining = sum(max(0, config.per_task - s.have) for s in states.values())
    try:
        if remaining:
            pool = WorkerPool(setup, config.workers, hang_timeout_s=config.hang_timeout_s)
            pool.run([], finish, fail, more_jobs=more_jobs)
    finally:
        bar.close()
    return _report(config, states, time.perf_counter() - started)


def _bytes(state: _TaskState) -> int:
    files = [state.appended, *state.folder.glob("demo_*.hdf5")]
    return sum(path.stat().st_size for path in files if path.is_file())


def _report(config: DemoConfig, states: dict[int, _TaskState], seconds: float) -> dict[str, Any]:
    tasks = []
    for state in states.values():
        records = list(state.ledger.load().values())
        solved_before = sum(bool(r.get("solved_before_handover")) for r in records)
        handed_over = len(records) - solved_before
        if state.have < config.per_task:
            logger.warning(
                "%s: %d of %d demos after %d attempts", state.name, state.have, config.per_task, len(records)
            )
        tasks.append(
            {
                "task_id": state.task_id,
                "task_name": state.name,
                "file": str(state.folder),
                "demos": state.have,
                "attempts": len(records),
                # Of the attempts the oracle acted in (all of them without a roll-in policy).
                "oracle_success_rate": round(
                    (sum(bool(r["success"]) for r in records) - solved_before) / handed_over, 4
                )
                if handed_over
                else None,
                "solved_before_handover": solved_before,
                "bytes": _bytes(state),
                "new_demos": state.successes,
                "mean_seconds_per_new_demo": round(float(np.mean(state.success_seconds)), 3)
                if state.success_seconds
                else None,
            }
        )
    new = sum(t["new_demos"] for t in tasks)
    return {
        "suite": config.suite,
        "per_task": config.per_task,
        "rollin_policy": config.rollin,
        "rollin_execution": _rollin_execution(config),
        "handover_steps": list(config.handover_steps) if config.rollin else None,
        "init_joint_noise": config.init_joint_noise,
        "tasks": tasks,
        "wall_time_s": round(seconds, 3),
        "new_demos": new,
        "wall_seconds_per_new_demo": round(seconds / new, 3) if new else None,
        "total_bytes": sum(t["bytes"] for t in tasks),
    }
