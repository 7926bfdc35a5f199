"""``cogvla eval grasp``: where a policy closes its gripper against where the object is.

Usage::

    cogvla eval grasp --suite libero_spatial --task 9 --trials 16
    cogvla eval grasp --policy RUN/checkpoints/step_X --suite libero_spatial --task 9 \\
        --trials 12 --randomized --out grasp.json

Fixed init state k runs with seed SEED + k, as in ``cogvla eval libero``; ``--randomized``
samples fresh placements from the task's BDDL regions instead (reset seeds SEED + k), which
spreads the object over the whole range the demos were drawn from.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cogvla eval grasp``."""
    from envs.suites import SUITES
    from eval.cli import add_render_arguments

    parser.add_argument(
        "--policy", help="oracle | CHECKPOINT_DIR | tcp://HOST:PORT (default: the suite's embedded default)"
    )
    parser.add_argument("--suite", required=True, choices=SUITES)
    parser.add_argument("--task", type=int, required=True, help="task index within the suite")
    parser.add_argument("--trials", type=int, default=16, help="episodes (default: 16)")
    parser.add_argument("--start", type=int, default=0, help="trial k uses init state START + k (default: 0)")
    parser.add_argument(
        "--randomized",
        action="store_true",
        help="randomized resets from the BDDL regions instead of the benchmark's fixed init states",
    )
    parser.add_argument("--seed", type=int, default=7, help="episode seed = SEED + k (default: 7)")
    parser.add_argument(
        "--max-steps", type=int, help="policy steps per episode (default: the suite's budget)"
    )
    add_render_arguments(parser)
    parser.add_argument(
        "--gripper-close-delay",
        type=int,
        help="steps the gripper stays open after the policy switches it to close "
        "(default: the checkpoint's eval_protocol.json, else 0)",
    )
    parser.add_argument(
        "--requery-before-grasp",
        action=argparse.BooleanOptionalAction,
        help="query afresh instead of executing a stale chunk row that closes the gripper for the first "
        "time (default: the checkpoint's eval_protocol.json, else off)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")


def run(args: argparse.Namespace) -> int:
    """Probe the grasps and print the JSON report; 2 on a bad option."""
    from tqdm import tqdm

    from deploy.chunker import WHOLE_CHUNK, ChunkerConfig
    from deploy.serve_cli import embedded_default
    from envs.suites import MAX_STEPS, num_tasks
    from eval.cli import checkpoint_eval_defaults, first_given
    from eval.grasp_probe import probe_grasps
    from eval.libero.episode import EnvSpec
    from eval.policies import check_policy_spec, load_policy

    try:
        policy_spec = check_policy_spec(args.policy) if args.policy else str(embedded_default(args.suite))
        if not 0 <= args.task < num_tasks(args.suite):
            raise ValueError(f"--task: expected 0 <= task < {num_tasks(args.suite)}, got {args.task}")
        for name, low in (
            ("trials", 1),
            ("max_steps", 1),
            ("image_size", 1),
            ("start", 0),
            ("mesh_faces", 0),
            ("gripper_close_delay", 0),
        ):
            value = getattr(args, name)
            if value is not None and value < low:
                raise ValueError(f"--{name.replace('_', '-')}: expected >= {low}, got {value}")
        defaults = checkpoint_eval_defaults(policy_spec) if Path(policy_spec).is_dir() else {}
        env_spec = EnvSpec(
            args.suite,
            args.task,
            image_size=first_given(args.image_size, defaults.get("image_size"), 256),
            fast_render=first_given(args.fast_render, defaults.get("fast_render"), False),
            mesh_faces=first_given(args.mesh_faces, defaults.get("mesh_faces"), 0),
        )
        delay = first_given(args.gripper_close_delay, defaults.get("gripper_close_delay"), 0)
        requery = first_given(args.requery_before_grasp, defaults.get("requery_before_grasp"), False)
        chunking = ChunkerConfig(
            execute_steps=WHOLE_CHUNK, gripper_close_delay=delay, requery_before_grasp=requery
        )
        policy = load_policy(policy_spec)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    trials = range(args.start, args.start + args.trials)
    starts = [(None if args.randomized else k, args.seed + k) for k in trials]
    with tqdm(total=len(starts), desc="grasp", unit="ep", dynamic_ncols=True) as bar:
        report = probe_grasps(
            policy,
            env_spec,
            starts,
            max_steps=args.max_steps or MAX_STEPS[args.suite],
            chunking=chunking,
            progress=lambda row: bar.update(1),
        )
    report = {
        "policy": policy_spec,
        "randomized": args.randomized,
        "gripper_close_delay": delay,
        "requery_before_grasp": requery,
        **report,
    }
    text = json.dumps(report, indent=2, default=str)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0
