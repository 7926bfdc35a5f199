"""LIBERO evaluation: plan the episodes, run them on supervised workers, record and summarize.

Usage::

    from eval.libero.config import EvalConfig
    from eval.libero.harness import run_eval

    summary = run_eval(EvalConfig(out="runs/oracle", policy="oracle", tasks=(0, 1), trials=2))
    summary["overall"]["success_rate"]

Outputs in ``config.out``: ``config.json`` (every protocol value and the policy's content
fingerprint), ``episodes.jsonl`` (one line per episode, written as it ends: a success, a
policy failure, or an infrastructure error that ``resume`` runs again; see
``eval.libero.results``), ``summary.json`` (per-task, per-suite and overall success over
finished episodes with 95% Wilson intervals, the mean of per-task rates, errors apart, the
failures by mode (``eval.libero.failure_modes``), and ``partial`` while episodes are
missing; with ``perturb``, a ``robustness`` table of each task's nominal rate against each
LIBERO-PRO variant's, drawn to ``robustness.png``) and ``videos/``. SIGTERM/SIGINT stop the
workers and still write ``summary.json`` (``EvalStopped``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogvla.normalize import use_suite_stats
from eval.libero.config import PROTOCOL_DEFAULTS, EvalConfig
from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode
from eval.libero.failure_modes import FailureRecorder, diagnosis_fields
from eval.libero.fingerprint import policy_fingerprint
from eval.libero.results import EpisodeLog, episode_key, is_finished, reset_key, summarize
from eval.libero.robustness import NOMINAL, plot_robustness, robustness_summary
from eval.libero.seeds import validation_seed
from eval.libero.signals import Stopped, stop_on_signals
from eval.libero.videos import VideoRecorder, remove_partial_videos, video_stem
from eval.libero.workers import WorkerPool, WorkerSetup, default_torch_threads
from eval.policies import is_oracle, load_policy

__all__ = [
    "EvalStopped",
    "OutputExistsError",
    "PlanError",
    "PlannedEpisode",
    "ResumeMismatchError",
    "evaluate_job",
    "make_libero_env",
    "plan_episodes",
    "run_eval",
]

logger = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    """The output folder already holds results and ``resume`` was not asked for."""


class ResumeMismatchError(ValueError):
    """``resume`` was asked for, but the protocol differs from the original run's."""


class EvalStopped(Stopped):
    """SIGTERM or SIGINT stopped the run; ``summary`` (also in ``summary.json``) covers what finished."""

    def __init__(self, signum: int, summary: dict[str, Any]) -> None:
        super().__init__(signum)
        self.summary = summary


class PlanError(ValueError):
    """The requested trials do not exist (more than the task's fixed init states)."""


@dataclass(frozen=True)
class PlannedEpisode:
    """One evaluation episode as a worker job."""

    key: str
    env_spec: EnvSpec
    episode: EpisodeSpec
    task_name: str
    trial: int
    # Folder to write this episode's video to, or None.
    video_dir: str | None = None
    video_fps: int = 20


def make_libero_env(spec: EnvSpec) -> Any:
    """The default env factory: a ``LiberoEnv`` for ``spec``."""
    from envs.libero_env import LiberoEnv

    return LiberoEnv(
        spec.suite,
        spec.task_id,
        image_size=spec.image_size,
        fast_render=spec.fast_render,
        privileged=spec.privileged,
        perturbation=spec.perturbation,
        mesh_faces=spec.mesh_faces,
    )


def plan_episodes(config: EvalConfig) -> list[PlannedEpisode]:
    """Every episode of the run, task by task; trial k uses init state ``start + k``.

    With ``resets="randomized"``, trial k instead samples validation scene ``start + k``
    (``eval.libero.seeds.validation_seed``) with the start pose's joint noise. With
    ``config.perturb``, each task's nominal trials are followed by the same trials of each
    LIBERO-PRO variant (keys end in ``/KIND``); a variant that changes the scene samples its
    placements with the trial's seed instead of restoring a fixed init state.
    """
    from envs.perturb import Perturbation
    from envs.suites import get_task, num_tasks

    plan = []
    for suite in config.suites:
        task_ids = config.tasks if config.tasks is not None else tuple(range(num_tasks(suite)))
        for task_id in task_ids:
            task = get_task(suite, task_id)
            if config.resets == "fixed" and config.start + config.trials > task.num_init_states:
                raise PlanError(
                    f"trials: start + trials must be <= {task.num_init_states} init states of "
                    f"{suite} task {task_id}, got {config.start} + {config.trials}"
                )
            for perturbation in (None, *(Perturbation(kind, config.seed) for kind in config.perturb)):
                env_spec = EnvSpec(
                    suite=suite,
                    task_id=task_id,
                    image_size=config.image_size,
                    fast_render=config.fast_render,
                    privileged=is_oracle(config.policy),
                    perturbation=perturbation,
                    mesh_faces=config.mesh_faces,
                )
                videos = Path(config.out) / "videos" / (perturbation.kind if perturbation else "")
                for trial in range(config.trials):
                    key, episode = _plan_trial(config, task.name, env_spec, config.start + trial)
                    plan.append(
                        PlannedEpisode(
                            key=key if perturbation is None else f"{key}/{perturbation.kind}",
                            env_spec=env_spec,
                            episode=episode,
                            task_name=task.name,
                            trial=trial,
                            video_dir=str(videos) if trial < config.videos else None,
                            video_fps=config.video_fps,
                        )
                    )
    return plan


def _plan_trial(config: EvalConfig, task_name: str, env_spec: EnvSpec, index: int) -> tuple[str, EpisodeSpec]:
    """The key and episode of fixed init state ``index``, or of validation scene ``index``."""
    suite, task_id = env_spec.suite, env_spec.task_id
    common = {
        "env": env_spec,
        "max_steps": config.steps_for(suite),
        "num_wait_steps": config.num_wait_steps,
        "chunking": config.chunking(),
    }
    if config.resets == "randomized":
        seed = validation_seed(config.seed, suite, task_name, index)
        episode = EpisodeSpec(
            init_state_id=None, seed=seed, init_joint_noise=config.init_joint_noise, **common
        )
        return reset_key(suite, task_id, index), episode
    sampled = env_spec.perturbation is not None and env_spec.perturbation.changes_scene
    episode = EpisodeSpec(init_state_id=None if sampled else index, seed=config.seed + index, **common)
    return episode_key(suite, task_id, index), episode


def evaluate_job(env: Any, policy: Any, job: PlannedEpisode, heartbeat: Callable[[], None]) -> dict[str, Any]:
    """Worker job: run one planned episode (recording its video if asked) and return its result."""
    recorder = None
    if job.video_dir is not None:
        stem = video_stem(
            job.env_spec.suite, job.env_spec.task_id, job.task_name, job.trial, job.episode.init_state_id
        )
        recorder = VideoRecorder(job.video_dir, stem, fps=job.video_fps)
    # Envs that expose the simulator's ground truth (LiberoEnv) say why a failed episode failed.
    failures = FailureRecorder() if FailureRecorder.explains(env) else None
    observers = [observer for observer in (recorder, failures) if observer is not None]
    use_suite_stats(policy, job.env_spec.suite)
    try:
        result = run_episode(env, policy, job.episode, observers=observers, heartbeat=heartbeat)
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    record = result.to_dict()
    record["outcome"] = "success" if result.success else "failure"
    diagnosis = None
    if failures is not None and not result.success and not result.policy_failure:
        try:
            diagnosis = failures.diagnose()
        except Exception:  # a diagnosis that fails must not cost the episode its result
            logger.warning("%s: could not tell the failure's mode", job.key, exc_info=True)
    record.update(diagnosis_fields(diagnosis))
    record["error"] = None
    record["video"] = recorder.finish(record["outcome"]) if recorder is not None else None
    perturbed = getattr(env, "perturbed", None)
    if perturbed is not None:
        record["perturbation"] = perturbed.record()
    return record


def _record(job: PlannedEpisode, result: dict[str, Any]) -> dict[str, Any]:
    perturbation = job.env_spec.perturbation
    return {
        "perturbation": None
        if perturbation is None
        else {"kind": perturbation.kind, "seed": perturbation.seed},
        "key": job.key,
        "suite": job.env_spec.suite,
        "task_id": job.env_spec.task_id,
        "task_name": job.task_name,
        "trial": job.trial,
        "init_state_id": job.episode.init_state_id,
        "seed": job.episode.seed,
        "max_steps": job.episode.max_steps,
        **result,
    }


def _error_result(message: str) -> dict[str, Any]:
    return {
        "outcome": "error",
        "success": False,
        "policy_failure": None,
        "steps": 0,
        "wall_time_s": 0.0,
        "num_queries": 0,
        "latency_ms": {"mean": None, "p50": None, "max": None},
        "error": message,
        **diagnosis_fields(None),
        "video": None,
    }


def _prepare_output(config: EvalConfig, out: Path, fingerprint: str) -> None:
    """Refuse to mix runs: an existing run is continued only with ``resume``, the same protocol
    and the same policy (by content: a folder whose weights changed is another policy)."""
    log_path, config_path = out / "episodes.jsonl", out / "config.json"
    has_results = log_path.exists() and log_path.stat().st_size > 0
    if has_results and not config.resume:
        raise OutputExistsError(
            f"out: {out} already holds episode results; pass --resume or choose another --out"
        )
    if config.resume and config_path.exists():
        # A run recorded before a protocol field existed ran with that field's default.
        previous = {**PROTOCOL_DEFAULTS, **json.loads(config_path.read_text())}
        for name, value in config.protocol().items():
            if previous[name] != value:
                raise ResumeMismatchError(
                    f"{name}: the run in {out} used {previous[name]!r}, this one asks for {value!r}; "
                    "a resumed run must keep the protocol (or use another --out)"
                )
        if previous.get("policy_fingerprint") != fingerprint:
            raise ResumeMismatchError(
                f"policy: the run in {out} evaluated a policy with fingerprint "
                f"{previous.get('policy_fingerprint')!r} ({previous.get('policy')}), this one is {fingerprint!r} "
                f"({config.policy}); its weights or config changed, so a resumed run would mix two "
                "models (use another --out)"
            )
    out.mkdir(parents=True, exist_ok=True)
    removed = remove_partial_videos(out / "videos") if (out / "videos").exists() else 0
    if removed:
        logger.info("removed %d partial videos of unfinished episodes", removed)


def run_eval(
    config: EvalConfig,
    *,
    env_factory: Callable[[EnvSpec], Any] = make_libero_env,
    policy_factory: Callable[[str], Any] = load_policy,
) -> dict[str, Any]:
    """Run (or resume) an evaluation and return its summary (also written to ``summary.json``).

    Args:
        config: the protocol and run settings.
        env_factory: builds an env for an ``EnvSpec`` in a worker; must be picklable.
        policy_factory: builds the policy from ``config.policy`` in a worker; must be picklable.
    """
    from tqdm import tqdm

    out = Path(config.out)
    plan = plan_episodes(config)
    fingerprint = policy_fingerprint(config.policy)
    _prepare_output(config, out, fingerprint)
    record = {**config.to_json(), "planned_episodes": len(plan), "policy_fingerprint": fingerprint}
    (out / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log = EpisodeLog(out / "episodes.jsonl")
    finished = log.load()
    todo = [job for job in plan if not (job.key in finished and is_finished(finished[job.key]))]
    counts = {"n": 0, "success": 0, "error": 0}
    for job in plan:
        if job.key in finished and is_finished(finished[job.key]):
            counts["n"] += 1
            counts["success"] += int(finished[job.key]["outcome"] == "success")
    rerun = sum(1 for job in todo if job.key in finished)
    logger.info(
        "%d episodes planned, %d already finished, %d to run (%d of them after an infrastructure error)",
        len(plan),
        len(plan) - len(todo),
        len(todo),
        rerun,
    )

    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="eval", unit="ep", dynamic_ncols=True)

    def show() -> None:
        rate = counts["success"] / counts["n"] if counts["n"] else 0.0
        bar.set_postfix_str(
            f"success {rate:.1%} ({counts['success']}/{counts['n']}) errors {counts['error']}", refresh=False
        )

    def write(job: PlannedEpisode, result: dict[str, Any]) -> None:
        record = {**_record(job, result), "finished_at": round(time.time(), 3)}
        log.append(record)
        if is_finished(record):
            counts["n"] += 1
            counts["success"] += int(record["outcome"] == "success")
        else:
            counts["error"] += 1
        show()
        bar.update(1)

    show()
    bar.refresh()
    setup = WorkerSetup(
        policy_spec=config.policy,
        policy_factory=policy_factory,
        env_factory=env_factory,
        job=evaluate_job,
        torch_threads=default_torch_threads(config.workers),
    )
    started = time.perf_counter()
    stopped: Stopped | None = None
    with stop_on_signals():
        try:
            if todo:
                _make_pool(config, setup).run(
                    todo, write, lambda job, message: write(job, _error_result(message))
                )
        except Stopped as exc:
            stopped = exc
        finally:
            bar.close()
            summary = summarize([job.key for job in plan], log.load())
            summary["run_wall_time_s"] = round(time.perf_counter() - started, 3)
            summary["policy"] = config.policy
            summary["policy_fingerprint"] = fingerprint
            summary["stopped_by"] = None if stopped is None else stopped.name
            if config.perturb:
                summary["robustness"] = _robustness(config, out, plan, log.load())
            (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if stopped is not None:
        raise EvalStopped(stopped.signum, summary)
    logger.info(
        "success %.1f%% over %d episodes (%d errors)",
        100 * summary["overall"]["success_rate"],
        summary["overall"]["episodes"],
        summary["overall"]["errors"],
    )
    return summary


def _robustness(
    config: EvalConfig, out: Path, plan: list[PlannedEpisode], records: dict[str, Any]
) -> dict[str, Any]:
    """The nominal-against-perturbed table, also drawn to ``robustness.png``."""
    table = robustness_summary([job.key for job in plan], records, (NOMINAL, *config.perturb))
    plot_robustness(table, out / "robustness.png", title=f"{config.policy}: LIBERO-PRO perturbations")
    return {**table, "plot": "robustness.png"}


def _make_pool(config: EvalConfig, setup: WorkerSetup) -> Any:
    if config.backend == "ray":
        from eval.libero.ray_backend import RayPool

        return RayPool(
            setup,
            config.workers,
            episode_timeout_s=config.episode_timeout_s,
            max_attempts=config.max_attempts,
            address=config.ray_address,
        )
    return WorkerPool(
        setup, config.workers, hang_timeout_s=config.hang_timeout_s, max_attempts=config.max_attempts
    )
