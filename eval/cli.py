"""Evaluate a policy in simulation and print the summary JSON.

Usage::

    cogvla eval libero --policy oracle --suite libero_spatial --tasks 0,3 --trials 5 \\
        --workers 2 --image-size 128 --fast-render --out runs/oracle-spatial --videos 1
    cogvla eval libero --policy tcp://127.0.0.1:5555 --suite libero_object --trials 50 --out runs/obj
    cogvla eval libero --suite libero_object --trials 50 --out runs/defaults --resume
    cogvla eval libero          # every embedded default on its suites, with the protocol it ships
    cogvla eval libero --policy oracle --tasks 0,1,2 --trials 20 --perturb language,position
    cogvla eval grasp --suite libero_spatial --task 9 --randomized   # see eval.grasp_probe_cli

``libero`` is the only simulator so far; each simulator is a sub-target of ``eval``.
Without ``--policy`` the embedded defaults are evaluated: each suite asked for (default: every
suite they cover) by its own default, with the protocol in that default's
``eval_protocol.json``; each default's run lands in ``OUT/<its folder>`` (for example
``OUT/libero_object``), and the summaries are printed as one JSON object keyed by folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from cogvla.eval_protocol import EVAL_PROTOCOL_FILE, read_eval_protocol

__all__ = [
    "EVAL_PROTOCOL_FILE",
    "add_arguments",
    "add_render_arguments",
    "checkpoint_eval_defaults",
    "default_out_dir",
    "evaluate",
    "first_given",
    "parse_int_list",
    "run",
]

logger = logging.getLogger(__name__)

# A checkpoint may carry the protocol it was trained for (cogvla.eval_protocol), used when no
# flag overrides it.
_CHECKPOINT_DEFAULT_KEYS = {
    "suites",
    "tasks",
    "image_size",
    "fast_render",
    "mesh_faces",
    "gripper_close_delay",
    "requery_before_grasp",
}


def parse_int_list(text: str) -> tuple[int, ...]:
    """Parse "0,3" into (0, 3) for argparse."""
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,3, got {text!r}") from exc


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _add_libero_arguments(parser: argparse.ArgumentParser) -> None:
    from envs.suites import NUM_WAIT_STEPS, SUITES
    from eval.libero.config import EXECUTIONS, RESETS

    parser.add_argument(
        "--policy",
        help="oracle | CHECKPOINT_DIR | tcp://HOST:PORT (default: each suite's embedded default, "
        "each writing OUT/<its folder>)",
    )
    parser.add_argument(
        "--suite",
        type=_name_list,
        help=f"one or more of {','.join(SUITES)} (default: the checkpoint's, else libero_spatial; "
        "without --policy: every suite the embedded defaults cover)",
    )
    parser.add_argument(
        "--tasks", type=parse_int_list, help="task indices, e.g. 0,3 (default: the checkpoint's, else all)"
    )
    parser.add_argument("--trials", type=int, default=50, help="episodes per task (default: 50)")
    parser.add_argument(
        "--force-norm-key",
        action="store_true",
        help="evaluate even when the checkpoint's normalization stats belong to another suite",
    )
    parser.add_argument(
        "--start",
        type=int,
        default=0,
        help="trial k uses init state (or validation scene) START + k (default: 0)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="simulator worker processes / Ray actors (default: 2)"
    )
    parser.add_argument(
        "--out",
        help="output folder for config.json, episodes.jsonl, summary.json (default: a new folder "
        "under the cache, ~/.cache/cogvla/eval/)",
    )
    parser.add_argument(
        "--videos", type=int, default=0, help="record MP4s of the first K trials of every task"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue a run in --out, skipping finished episodes"
    )
    parser.add_argument(
        "--perturb",
        default="",
        help="also evaluate LIBERO-PRO variants of each task: one or more of "
        "language,object,position,environment,task (default: none)",
    )
    protocol = parser.add_argument_group("protocol (recorded in config.json)")
    protocol.add_argument(
        "--seed",
        type=int,
        default=7,
        help="episode seed = SEED + init state; with --resets randomized, the base of the "
        "validation scenes' seeds (default: 7)",
    )
    protocol.add_argument(
        "--resets",
        choices=RESETS,
        default="fixed",
        help="fixed: the benchmark's init states; randomized: held-out scenes sampled from the "
        "task's regions with seeds no demo attempt uses, for choosing checkpoints without the "
        "benchmark's states (default: fixed)",
    )
    protocol.add_argument(
        "--init-joint-noise",
        type=float,
        metavar="RADIANS",
        help="with --resets randomized: std of the start pose's joint noise (default: 0.02, "
        "LIBERO's scene default, which the fixed init states follow)",
    )
    protocol.add_argument(
        "--max-steps", type=int, help="policy steps per episode (default: 220/280/300/520/400 by suite)"
    )
    protocol.add_argument(
        "--wait-steps", type=int, default=NUM_WAIT_STEPS, help="no-op settle steps (default: 10)"
    )
    add_render_arguments(protocol)
    protocol.add_argument(
        "--execution",
        choices=EXECUTIONS,
        default="open-loop",
        help="how chunks are executed: open-loop, ensemble (ACT temporal ensembling) or async "
        "(the next chunk is asked for --async-latency steps before the switch; default: open-loop)",
    )
    protocol.add_argument(
        "--open-loop-steps",
        type=int,
        help="chunk rows executed per policy query (default: the whole chunk; 1 with ensemble; "
        "required with async, e.g. 6 for chunks of 8)",
    )
    protocol.add_argument(
        "--async-latency",
        type=int,
        default=2,
        help="async: env steps between a query's observation and its chunk's use (default: 2)",
    )
    protocol.add_argument(
        "--gripper-close-delay",
        type=int,
        help="steps the gripper stays open after the policy switches it to close, the arm moving "
        "as commanded (default: the checkpoint's eval_protocol.json, else 0)",
    )
    protocol.add_argument(
        "--requery-before-grasp",
        action=argparse.BooleanOptionalAction,
        help="open-loop: query afresh instead of executing a stale chunk row that closes the gripper "
        "for the first time in the episode (default: the checkpoint's eval_protocol.json, else off)",
    )
    backend = parser.add_argument_group("execution")
    backend.add_argument("--backend", choices=("process", "ray"), default="process")
    backend.add_argument("--ray-address", help="Ray cluster address (default: start a local one)")
    backend.add_argument(
        "--hang-timeout",
        type=float,
        default=600.0,
        help="process backend: seconds without a step = hung worker",
    )
    backend.add_argument(
        "--episode-timeout", type=float, default=3600.0, help="ray backend: seconds per episode = hung actor"
    )
    backend.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="tries per episode before an infrastructure fault is recorded as its error (default: 3)",
    )
    backend.add_argument("--video-fps", type=int, default=20)


def add_render_arguments(parser: Any) -> None:
    """``--image-size``, ``--fast-render`` and ``--mesh-faces``, each defaulting to the checkpoint's."""
    parser.add_argument(
        "--image-size", type=int, help="camera side in pixels (default: the checkpoint's, else 256)"
    )
    parser.add_argument(
        "--fast-render",
        action=argparse.BooleanOptionalAction,
        help="render without reflections/MSAA (~2.3x faster on CPU; not benchmark-identical; "
        "default: the checkpoint's, else off)",
    )
    parser.add_argument(
        "--mesh-faces",
        type=int,
        help="cap visual-only meshes at N faces (envs.mesh_lod; about 2x faster rendering on CPU; "
        "0 = as modelled; default: the checkpoint's, else 0)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the simulator sub-targets and their options."""
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    _add_libero_arguments(targets.add_parser("libero", help="LIBERO suites (robosuite / MuJoCo)"))
    _add_offline_arguments(
        targets.add_parser("offline", help="open-loop action error of a checkpoint on demos, per task")
    )
    from eval import grasp_probe_cli

    grasp_probe_cli.add_arguments(
        targets.add_parser("grasp", help="where a policy closes its gripper against where the object is")
    )


def _add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", help="a save_pretrained folder (default: the embedded default of the demos' suite)"
    )
    parser.add_argument("--data", nargs="+", required=True, help="demo files or folders of *.hdf5")
    parser.add_argument("--per-task", type=int, default=256, help="samples scored per task (default: 256)")
    parser.add_argument("--batch", type=int, default=32, help="samples per forward pass")
    parser.add_argument("--cache", help="frame-cache folder (default: the cogvla cache)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")


def first_given(*values: Any) -> Any:
    """The first of ``values`` that is not None (a flag, then a checkpoint's default, then ours)."""
    return next(value for value in values if value is not None)


def _optional_tuple(values: list[int] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(values)


def checkpoint_eval_defaults(policy: str) -> dict[str, Any]:
    """Protocol defaults a checkpoint ships in ``eval_protocol.json`` (suites, tasks, image size...).

    A policy trained on fast-rendered 128 px demos of some tasks is evaluated on those tasks,
    rendered that way, unless the user says otherwise; flags on the command line always win.
    """
    defaults = read_eval_protocol(policy)
    if defaults is None:
        return {}
    unknown = sorted(set(defaults) - _CHECKPOINT_DEFAULT_KEYS)
    if unknown:
        raise ValueError(
            f"{Path(policy) / EVAL_PROTOCOL_FILE}: unknown keys {unknown}; "
            f"expected some of {sorted(_CHECKPOINT_DEFAULT_KEYS)}"
        )
    return defaults


def default_out_dir(policy: str, suites: tuple[str, ...]) -> Path:
    """A fresh output folder under the cache, named after the policy, suites and time."""
    from cogvla.paths import cache_dir

    name = "remote" if policy.startswith("tcp://") else Path(policy).name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache_dir("eval") / "-".join(part for part in (name, "+".join(suites), stamp) if part)


def _warn_untrained_suites(policy: str, suites: tuple[str, ...], trained: list[str] | None) -> None:
    # Allowed (a checkpoint may generalize), but a near-zero success rate should not surprise.
    outside = [suite for suite in suites if suite not in (trained or suites)]
    if outside:
        logger.warning(
            "%s was trained on %s only; %s %s outside its demos",
            policy,
            ", ".join(trained),
            ", ".join(outside),
            "is" if len(outside) == 1 else "are",
        )


def _eval_config(
    args: argparse.Namespace, policy: str, suites: tuple[str, ...] | None, out: str | None
) -> Any:
    """The harness config of ``policy`` on ``suites`` (None: the checkpoint's), flags first."""
    from envs.perturb import parse_perturbations
    from eval.libero.config import EvalConfig

    defaults = checkpoint_eval_defaults(policy)
    suites = suites or tuple(defaults.get("suites", ("libero_spatial",)))
    _warn_untrained_suites(policy, suites, defaults.get("suites"))
    if Path(policy).is_dir():
        from cogvla.policy import check_checkpoint_suites

        check_checkpoint_suites(policy, suites, force=args.force_norm_key)
    return EvalConfig(
        out=out or str(default_out_dir(policy, suites)),
        policy=policy,
        suites=suites,
        tasks=args.tasks if args.tasks is not None else _optional_tuple(defaults.get("tasks")),
        trials=args.trials,
        start=args.start,
        resets=args.resets,
        init_joint_noise=_init_joint_noise(args),
        seed=args.seed,
        max_steps=args.max_steps,
        num_wait_steps=args.wait_steps,
        image_size=first_given(args.image_size, defaults.get("image_size"), 256),
        fast_render=first_given(args.fast_render, defaults.get("fast_render"), False),
        mesh_faces=first_given(args.mesh_faces, defaults.get("mesh_faces"), 0),
        open_loop_steps=args.open_loop_steps,
        execution=args.execution,
        async_latency_steps=args.async_latency,
        gripper_close_delay=first_given(args.gripper_close_delay, defaults.get("gripper_close_delay"), 0),
        requery_before_grasp=first_given(
            args.requery_before_grasp, defaults.get("requery_before_grasp"), False
        ),
        workers=args.workers,
        backend=args.backend,
        videos=args.videos,
        video_fps=args.video_fps,
        hang_timeout_s=args.hang_timeout,
        max_attempts=args.max_attempts,
        episode_timeout_s=args.episode_timeout,
        ray_address=args.ray_address,
        resume=args.resume,
        perturb=parse_perturbations(args.perturb),
    )


def _init_joint_noise(args: argparse.Namespace) -> float:
    from eval.libero.config import EvalConfig

    if args.init_joint_noise is None:
        return EvalConfig.init_joint_noise
    if args.resets != "randomized":
        raise ValueError(
            "init_joint_noise: the fixed init states carry their own start poses; expected "
            f"--resets randomized with --init-joint-noise, got --resets {args.resets}"
        )
    return args.init_joint_noise


def _run_libero(args: argparse.Namespace) -> int:
    from eval.policies import check_policy_spec

    try:
        if args.policy is not None:
            config = _eval_config(args, check_policy_spec(args.policy), args.suite, args.out)
            return evaluate(config)
        # Each embedded default runs its own suites with its own protocol, in OUT/<its folder>.
        from cogvla.paths import defaults_for

        root = Path(args.out) if args.out else default_out_dir("defaults", ())
        configs = [
            _eval_config(args, str(folder), suites, str(root / folder.name))
            for folder, suites in defaults_for(args.suite).items()
        ]
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    summaries = {}
    for config in configs:
        code, summary = _evaluate_quietly(config)
        if code != 0:
            return code
        summaries[Path(config.out).name] = summary
    print(json.dumps(summaries, indent=2, sort_keys=True))
    return 0


def evaluate(config: Any, **factories: Any) -> int:
    """Run ``run_eval(config, **factories)``, print its summary JSON and return the exit code.

    A SIGTERM or SIGINT stops the workers, keeps ``summary.json`` and prints one line instead,
    returning 143 or 130.
    """
    code, summary = _evaluate_quietly(config, **factories)
    if summary is not None:
        print(json.dumps(summary, indent=2, sort_keys=True))
    return code


def _evaluate_quietly(config: Any, **factories: Any) -> tuple[int, dict[str, Any] | None]:
    """``evaluate`` without printing the summary: (exit code, summary or None)."""
    from envs.suites import UnknownSuiteError
    from eval.libero.harness import EvalStopped, OutputExistsError, PlanError, ResumeMismatchError, run_eval
    from eval.libero.workers import WorkerStartupError

    try:
        summary = run_eval(config, **factories)
    except (OutputExistsError, PlanError, ResumeMismatchError, UnknownSuiteError) as exc:
        logger.error("%s", exc)
        return 2, None
    except WorkerStartupError as exc:
        logger.error("%s", exc)
        return 1, None
    except EvalStopped as exc:
        overall = exc.summary["overall"]
        print(
            f"stopped by {exc.name}: {overall['episodes']} of {exc.summary['planned']} episodes finished "
            f"({overall['successes']} successes, {overall['errors']} errors); partial summary in "
            f"{Path(config.out) / 'summary.json'}; --resume continues",
            flush=True,
        )
        return exc.exit_code, None
    return 0, summary


def run(args: argparse.Namespace) -> int:
    """Run the chosen simulator's evaluation."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.target == "libero":
        return _run_libero(args)
    if args.target == "offline":
        return _run_offline(args)
    if args.target == "grasp":
        from eval import grasp_probe_cli

        return grasp_probe_cli.run(args)
    raise ValueError(f"target: expected 'libero', 'offline' or 'grasp', got {args.target!r}")


def _default_for_demos(data: list[str]) -> str:
    """The embedded default of the suite the demos under ``data`` come from."""
    from cogvla.data.frame_cache import find_demo_files
    from cogvla.eval_protocol import protocol_of_demos

    protocol = protocol_of_demos(find_demo_files(data))
    from cogvla.paths import defaults_for

    runs = list(defaults_for(protocol["suites"])) if protocol else []
    if len(runs) != 1:
        raise ValueError(
            "--checkpoint: the demos are not of suites one embedded default covers; name the checkpoint"
        )
    return str(runs[0])


def _run_offline(args: argparse.Namespace) -> int:
    from eval.offline import offline_errors
    from eval.policies import check_policy_spec

    try:
        checkpoint = check_policy_spec(args.checkpoint) if args.checkpoint else _default_for_demos(args.data)
        if not Path(checkpoint).is_dir():
            raise ValueError(f"--checkpoint: expected a checkpoint folder, got {checkpoint!r}")
        report = offline_errors(
            checkpoint, args.data, per_task=args.per_task, batch=args.batch, cache_root=args.cache
        )
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0
