"""Generate scripted-oracle demos in LIBERO's HDF5 schema (resumable) and print a JSON report.

Usage::

    cogvla demos --suite libero_spatial --tasks 0,1,2 --per-task 50 --out data/demos \\
        --workers 2 --noise 0.1

Writes ``OUT/<suite>/<task_name>_demo/demo_{i}.hdf5``, one file per demo. Re-running the same command
continues each task up to ``--per-task`` demos with new seeds. ``--rollin CHECKPOINT`` makes
recovery demos instead: the checkpoint acts first and the oracle finishes from where it left off.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploy.chunker import ChunkerConfig

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cogvla demos``."""
    from envs.mesh_lod import DEFAULT_MESH_FACES
    from envs.suites import NUM_WAIT_STEPS, SUITES
    from eval.cli import parse_int_list

    parser.add_argument("--suite", choices=SUITES, default="libero_spatial")
    parser.add_argument("--tasks", type=parse_int_list, help="task indices, e.g. 0,1,2 (default: all tasks)")
    parser.add_argument("--per-task", type=int, default=50, help="successful demos wanted per task")
    parser.add_argument("--out", required=True, help="output folder; files go to OUT/<suite>/")
    parser.add_argument("--workers", type=int, default=1, help="simulator worker processes")
    parser.add_argument(
        "--image-size", type=int, default=128, help="camera side in pixels (LIBERO's data: 128)"
    )
    parser.add_argument(
        "--fast-render",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="render without reflections/MSAA (default on; evaluate with the same setting)",
    )
    parser.add_argument(
        "--mesh-faces",
        type=int,
        default=DEFAULT_MESH_FACES,
        help=f"cap visual-only meshes at N faces (envs.mesh_lod; default {DEFAULT_MESH_FACES}; 0 = as "
        "modelled); checkpoints trained on the demos are evaluated with the same cap",
    )
    parser.add_argument(
        "--max-steps", type=int, help="policy steps per attempt (default: the suite's eval budget)"
    )
    parser.add_argument("--wait-steps", type=int, default=NUM_WAIT_STEPS, help="unrecorded settle steps")
    parser.add_argument("--post-success-steps", type=int, default=5, help="steps recorded after success")
    parser.add_argument(
        "--noise", type=float, default=0.0, help="DART: std of the noise on executed arm deltas"
    )
    parser.add_argument(
        "--init-joint-noise",
        type=float,
        default=0.0,
        help="std (rad) of Gaussian noise on the arm's 7 start joints at each reset (default 0: every "
        "demo starts from one pose; the fixed init states spread as 0.02 gives)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base of the per-(task, attempt) reset seeds")
    parser.add_argument(
        "--max-attempts-factor", type=int, default=4, help="give up after FACTOR x per-task attempts"
    )
    parser.add_argument(
        "--hang-timeout", type=float, default=600.0, help="seconds without a step = hung worker"
    )
    parser.add_argument(
        "--oracle",
        default="oracle",
        help="the demonstrator: 'oracle', or 'oracle:KEY=VALUE,...' where CATEGORY.FIELD keys change "
        "how it grasps a category (oracle:akita_black_bowl.height=0.025 pinches bowls deeper) and "
        "plain FIELD keys its own config (oracle:hover_height=0.12 descends from 12 cm)",
    )
    parser.add_argument(
        "--rollin",
        help="recovery demos: this policy (checkpoint folder or tcp://HOST:PORT) acts first, "
        "then the oracle takes over; only the oracle's steps are recorded",
    )
    parser.add_argument(
        "--handover-steps",
        type=parse_int_list,
        default=(8, 160),
        help="LOW,HIGH: the oracle takes over at a step drawn from this range (with --rollin)",
    )
    parser.add_argument(
        "--rollin-execution",
        choices=("protocol", "whole-chunks"),
        default="protocol",
        help="with --rollin: execute its chunks as its eval_protocol.json says (the re-query "
        "before the grasp, a gripper close delay), so the roll-in reaches the states its "
        "evaluation reaches; or each chunk whole, as sets made before this option were "
        "(default: protocol)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the demos and print the report."""
    from envs.suites import UnknownSuiteError
    from eval.libero.demos import DemoConfig, DemoRenderError, generate_demos
    from eval.libero.workers import WorkerStartupError
    from eval.policies import check_policy_spec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = DemoConfig(
            out=args.out,
            suite=args.suite,
            tasks=args.tasks,
            per_task=args.per_task,
            image_size=args.image_size,
            fast_render=args.fast_render,
            mesh_faces=args.mesh_faces,
            max_steps=args.max_steps,
            num_wait_steps=args.wait_steps,
            post_success_steps=args.post_success_steps,
            noise=args.noise,
            init_joint_noise=args.init_joint_noise,
            seed=args.seed,
            workers=args.workers,
            max_attempts_factor=args.max_attempts_factor,
            hang_timeout_s=args.hang_timeout,
            policy=_oracle_spec(args.oracle),
            rollin=check_policy_spec(args.rollin) if args.rollin else None,
            handover_steps=_pair(args.handover_steps),
            rollin_chunking=_rollin_chunking(args.rollin, args.rollin_execution),
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    try:
        report = generate_demos(config)
    except (UnknownSuiteError, DemoRenderError) as exc:
        logger.error("%s", exc)
        return 2
    except WorkerStartupError as exc:
        logger.error("%s", exc)
        return 1
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def _oracle_spec(spec: str) -> str:
    from eval.policies import PolicySpecError, check_policy_spec, is_oracle

    if not is_oracle(spec):
        raise PolicySpecError(f"oracle: expected 'oracle' or 'oracle:KEY=VALUE,...', got {spec!r}")
    return check_policy_spec(spec)


def _rollin_chunking(rollin: str | None, execution: str) -> ChunkerConfig | None:
    """The roll-in policy's chunk execution: its eval_protocol.json's, or None (whole chunks)."""
    from deploy.chunker import WHOLE_CHUNK, ChunkerConfig
    from eval.cli import checkpoint_eval_defaults

    if rollin is None or execution == "whole-chunks":
        return None
    protocol = checkpoint_eval_defaults(rollin)
    delay = int(protocol.get("gripper_close_delay", 0))
    requery = bool(protocol.get("requery_before_grasp", False))
    if not delay and not requery:
        return None
    return ChunkerConfig(execute_steps=WHOLE_CHUNK, gripper_close_delay=delay, requery_before_grasp=requery)


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    if len(values) != 2:
        raise ValueError(f"handover_steps: expected LOW,HIGH, got {','.join(map(str, values))}")
    return values[0], values[1]
