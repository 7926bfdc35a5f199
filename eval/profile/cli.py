"""Latency profiling of the model, the policy server and the simulator.

Usage::

    cogvla profile model --preset medium --variants cogvla,dense,no-efa,no-lfp --batch 1 --json runs/prof/model.json
    cogvla profile table --json runs/prof/model.json
    cogvla profile server --clients 1,8 --requests 30 --json runs/prof/server.json
    cogvla profile server --checkpoint runs/ckpt --clients 8 --json runs/prof/server-ckpt.json
    cogvla profile env --suite libero_spatial --image-size 256 --json runs/prof/env.json

``model`` times every variant side by side (per-stage p50/p90/p99/mean, FLOPs analytic
and measured, tokens, peak memory) and draws a PNG next to the JSON; ``table`` prints
the paper-style efficiency table of such a JSON; ``server`` splits a ZeroMQ round trip
into serialization / transport / queueing / preprocessing / model / postprocessing;
``env`` measures LIBERO creation, reset, step and render costs. Without ``--json``
results go under the cache folder (``$COGVLA_CACHE/profile``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in _names(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8, got {text!r}") from exc


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from cogvla.config import PRESETS, VARIANTS
    from cogvla.flops import DEFAULT_PROMPT_TOKENS

    parser.add_argument("--preset", default="medium", choices=sorted(PRESETS))
    parser.add_argument(
        "--variants", type=_names, default=tuple(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}"
    )
    parser.add_argument("--batch", type=int, default=1, help="queries per forward pass (default: 1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per variant (default: 3)")
    parser.add_argument("--iters", type=int, default=20, help="timed forwards per variant (default: 20)")
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=DEFAULT_PROMPT_TOKENS,
        help="prompt length of the synthetic query",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="output JSON (a PNG is written beside it)")
    parser.add_argument(
        "--png", type=Path, default=None, help="output PNG (default: the JSON path with .png)"
    )


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="checkpoint folder (default: the server's)"
    )
    parser.add_argument(
        "--clients", type=_counts, default=(1, 8), help="client counts, one run each (default: 1,8)"
    )
    parser.add_argument("--requests", type=int, default=30, help="timed requests per client and run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per client and run")
    parser.add_argument("--device", default="cpu", help="torch device of the served model")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--image-size", type=int, default=None, help="camera side sent (default: the policy's)"
    )
    parser.add_argument("--timeout-ms", type=int, default=60_000, help="client timeout per request")
    parser.add_argument(
        "--json", type=Path, default=None, help="output JSON (a histogram PNG is written beside it)"
    )
    parser.add_argument(
        "--png", type=Path, default=None, help="output PNG (default: the JSON path with .png)"
    )


def _add_env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task", type=int, default=0, help="task index in the suite")
    parser.add_argument("--image-size", type=int, default=256, help="camera side in pixels (default: 256)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--renders", type=int, default=10, help="timed renders per camera")
    parser.add_argument("--resets", type=int, default=3, help="timed resets")
    parser.add_argument(
        "--modes",
        type=_names,
        default=("standard", "fast_render"),
        help="any of standard,fast_render,capped_meshes (default: standard,fast_render)",
    )
    parser.add_argument(
        "--policy-ms", type=float, default=None, help="policy latency per query, for the share"
    )
    parser.add_argument("--chunk", type=int, default=8, help="actions executed per policy query")
    parser.add_argument("--json", type=Path, default=None, help="output JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``model``, ``table``, ``server`` and ``env`` sub-targets."""
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    _add_model_arguments(
        targets.add_parser("model", help="per-stage latency, FLOPs and memory of model variants")
    )
    table = targets.add_parser("table", help="paper-style efficiency table of a `profile model` JSON")
    table.add_argument("--json", type=Path, required=True, help="output of `cogvla profile model`")
    _add_server_arguments(targets.add_parser("server", help="ZeroMQ round-trip breakdown, 1..N clients"))
    _add_env_arguments(targets.add_parser("env", help="LIBERO creation / reset / step / render costs"))


def _output(path: Path | None, default_name: str) -> Path:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    from cogvla.paths import cache_dir

    return cache_dir("profile") / default_name


def _write(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", path)


def _run_model(args: argparse.Namespace) -> int:
    from eval.profile.efficiency_table import format_table
    from eval.profile.model_profile import ModelProfileConfig, profile_models

    config = ModelProfileConfig(
        preset=args.preset,
        variants=args.variants,
        batch=args.batch,
        warmup=args.warmup,
        iters=args.iters,
        prompt_tokens=args.prompt_tokens,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
    )
    return _profile_and_plot(profile_models, config, args, f"model-{args.preset}.json", format_table)


def _profile_and_plot(
    profile: Callable[[Any, Path], dict[str, Any]],
    config: Any,
    args: argparse.Namespace,
    default_name: str,
    format_result: Callable[[dict[str, Any]], str],
) -> int:
    """Run a profiler that also draws a PNG, write its JSON and print its table."""
    out = _output(args.json, default_name)
    png = args.png or out.with_suffix(".png")
    result = profile(config, png)
    _write(result, out)
    logger.info("wrote %s", png)
    print(format_result(result))
    return 0


def _run_server(args: argparse.Namespace) -> int:
    from eval.profile.server_profile import ServerProfileConfig, format_server_table, profile_server

    config = ServerProfileConfig(
        checkpoint=args.checkpoint,
        clients=args.clients,
        requests=args.requests,
        warmup=args.warmup,
        device=args.device,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        image_size=args.image_size,
        timeout_ms=args.timeout_ms,
    )
    return _profile_and_plot(profile_server, config, args, "server.json", format_server_table)


def _run_env(args: argparse.Namespace) -> int:
    from eval.profile.env_profile import EnvProfileConfig, format_env_table, profile_env

    config = EnvProfileConfig(
        suite=args.suite,
        task_id=args.task,
        image_size=args.image_size,
        steps=args.steps,
        renders=args.renders,
        resets=args.resets,
        modes=args.modes,
        policy_ms=args.policy_ms,
        chunk=args.chunk,
    )
    out = _output(args.json, f"env-{args.suite}-{args.task}.json")
    result = profile_env(config)
    _write(result, out)
    print(format_env_table(result))
    return 0


def _run_table(args: argparse.Namespace) -> int:
    from eval.profile.efficiency_table import format_table, load_result

    print(format_table(load_result(args.json)))
    return 0


_TARGETS = {"model": _run_model, "server": _run_server, "env": _run_env, "table": _run_table}


def run(args: argparse.Namespace) -> int:
    """Run the chosen profiling target; bad options exit 2 with the message."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _TARGETS[args.target](args)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
