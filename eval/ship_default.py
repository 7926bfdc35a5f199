"""Make a trained checkpoint the package's embedded default, with a model card.

Usage::

    .venv/bin/python -m eval.ship_default --checkpoint RUN/checkpoints/step_004000 \\
        --train-log RUN/log.jsonl --recipe RECIPE_A/status.json RECIPE_B/status.json --suite libero_object
    MUJOCO_GL=egl cogvla eval libero --suite libero_object --out EVAL_DIR    # the shipped files
    .venv/bin/python -m eval.ship_default ... (same flags) --eval EVAL_DIR/libero_object

A default already in the package is changed in place with ``--default`` instead of
``--checkpoint`` (its training run need not be on the machine): ``--gripper-close-delay`` and
``--requery-before-grasp`` rewrite its ``eval_protocol.json``, which changes its fingerprint, so its card's measured
section reads "Not evaluated yet" until ``--default FOLDER --eval EVAL_DIR`` fills it from an
evaluation of the changed files::

    .venv/bin/python -m eval.ship_default --default cogvla/assets/defaults/libero_spatial --gripper-close-delay 3
    MUJOCO_GL=egl cogvla eval libero --suite libero_spatial --out EVAL_DIR
    .venv/bin/python -m eval.ship_default --default cogvla/assets/defaults/libero_spatial --eval EVAL_DIR/libero_spatial

A checkpoint trained on several suites may be shipped as the default of some of them
(``--suite``): each suite has one default, and suites may have different ones.

A run that also trained on demo sets made outside the recipes (``cogvla demos --seed 1 ...``)
names the report each printed with ``--demos-report``, so the card counts those demos too. A
fine-tune of an earlier default on new demo sets alone names no recipe; its ``--history``
tells what the starting weights were trained on.

Writes ``cogvla/assets/defaults/<suites>/``: the weights in float16 (to stay small; CPU
inference upcasts them), the tokenizer, the normalization stats, ``eval_protocol.json`` (the
checkpoint's own, or only the suites ``--suite`` names: the protocol ``cogvla eval libero``
uses for this default when run without flags, and the suites it is the default of) and
``README.md``, a model card whose figures are read from the recipes' ``status.json`` (demos,
stage wall times) and the extra demo sets' reports, the run's log and trainer state, and, with ``--eval``, the evaluation's
``summary.json``. Everything but the card is a function of the checkpoint alone, so the
second ship writes the very files the evaluation measured, which ``--eval`` checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from cogvla.eval_protocol import EVAL_PROTOCOL_FILE, read_eval_protocol, write_eval_protocol
from cogvla.modeling import CogVLAModel
from cogvla.paths import DEFAULTS_DIR, default_checkpoints, default_folder_name
from eval.libero.fingerprint import policy_fingerprint
from eval.model_card import (
    ShipError,
    load_demos_report,
    load_recipe,
    read_json,
    render_card,
    with_measured_section,
)

__all__ = ["main", "ship", "update_default"]

logger = logging.getLogger(__name__)

_MAX_BYTES = 20 * 1024 * 1024


def ship(
    checkpoint: Path,
    train_log: Path,
    recipes: dict[Path, dict[str, Any]],
    eval_dir: Path | None = None,
    out: Path | None = None,
    history: str = "",
    demo_sets: dict[Path, dict[str, Any]] | None = None,
    suites: tuple[str, ...] | None = None,
    gripper_close_delay: int = 0,
    requery_before_grasp: bool = False,
) -> Path:
    """Copy ``checkpoint`` to ``out`` in fp16 with its eval protocol and a model card.

    Args:
        checkpoint: a ``save_pretrained`` folder of a run (``trainer_state.pt`` optional).
        train_log: the run's ``log.jsonl``.
        recipes: each recipe's ``status.json`` path and content (see :func:`load_recipe`).
        eval_dir: a ``cogvla eval libero`` folder that evaluated the shipped files; None: not yet.
        out: the folder to (re)write; None: the embedded default's folder of its suites.
        history: markdown telling where the weights the run started from came from.
        demo_sets: each extra demo set's report file and report (see :func:`load_demos_report`).
        suites: ship as the default of these suites only (None: every suite it was trained on).
        gripper_close_delay: steps the default's evaluation holds the gripper open after the
            policy switches it to close (``deploy.chunker.ChunkerConfig``); 0: as commanded.
        requery_before_grasp: whether the default's evaluation queries afresh where a stale
            chunk row would close the gripper for the first time (``deploy.chunker.ChunkerConfig``).
    """
    protocol = _with_execution(
        _restricted(_protocol(checkpoint, eval_dir), suites),
        gripper_close_delay=gripper_close_delay,
        requery_before_grasp=requery_before_grasp,
    )
    if out is None:
        out = DEFAULTS_DIR / default_folder_name(protocol["suites"])
    _check_one_default_per_suite(out, protocol["suites"])
    # float16 over bfloat16: its 10 mantissa bits keep the served actions ~6x closer to the
    # float32 checkpoint's (mean 6e-5 against 4e-4 in model units, measured), at the same size.
    model = CogVLAModel.from_pretrained(checkpoint, dtype=torch.float16)
    # Built aside and swapped in at the end, so a refused ship leaves the current default intact.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    write_eval_protocol(partial, protocol)
    size = sum(path.stat().st_size for path in partial.rglob("*") if path.is_file())
    if size > _MAX_BYTES:
        shutil.rmtree(partial)
        raise ShipError(f"checkpoint: expected at most {_MAX_BYTES} bytes to embed, got {size}")
    try:
        card = render_card(
            model,
            size,
            protocol,
            checkpoint,
            train_log,
            recipes,
            eval_dir,
            policy_fingerprint(str(partial)),
            history,
            demo_sets,
        )
    except ShipError:
        shutil.rmtree(partial)
        raise
    (partial / "README.md").write_text(card)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return out


def update_default(
    folder: Path,
    eval_dir: Path | None = None,
    gripper_close_delay: int | None = None,
    requery_before_grasp: bool | None = None,
) -> Path:
    """Change a shipped default in place: set its gripper close delay and its re-query before
    the grasp (None: keep each), then rewrite its card's measured section from ``eval_dir``
    (None: not evaluated yet)."""
    protocol = read_eval_protocol(folder)
    card_path = folder / "README.md"
    if protocol is None or not card_path.is_file():
        raise ShipError(
            f"default {folder}: expected a shipped default with {EVAL_PROTOCOL_FILE} and README.md"
        )
    updated = _with_execution(
        protocol, gripper_close_delay=gripper_close_delay, requery_before_grasp=requery_before_grasp
    )
    if updated == protocol and eval_dir is None:
        raise ShipError(
            f"default {folder}: nothing to change; pass --gripper-close-delay, "
            "--[no-]requery-before-grasp or --eval"
        )
    protocol = updated
    # The fingerprint covers eval_protocol.json, so the new one is written before the card is checked.
    before = (folder / EVAL_PROTOCOL_FILE).read_text()
    write_eval_protocol(folder, protocol)
    try:
        card = with_measured_section(
            card_path.read_text(), eval_dir, protocol, policy_fingerprint(str(folder))
        )
    except ShipError:
        (folder / EVAL_PROTOCOL_FILE).write_text(before)
        raise
    card_path.write_text(card)
    return folder


# Chunk-execution settings a default's protocol may carry, each left out at this value.
_EXECUTION_DEFAULTS: dict[str, Any] = {"gripper_close_delay": 0, "requery_before_grasp": False}


def _with_execution(protocol: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """``protocol`` with each given execution setting (None keeps the current one; the
    setting's default drops its key, so a protocol without departures stays as trained)."""
    delay = settings.get("gripper_close_delay")
    if delay is not None and delay < 0:
        raise ShipError(f"gripper_close_delay: expected >= 0, got {delay}")
    updated = dict(protocol)
    for key, value in settings.items():
        if value is None:
            continue
        updated.pop(key, None)
        if value != _EXECUTION_DEFAULTS[key]:
            updated[key] = value
    return updated


def _protocol(checkpoint: Path, eval_dir: Path | None) -> dict[str, Any]:
    """The checkpoint's own protocol (written by training), else (older checkpoints) the eval's."""
    protocol = read_eval_protocol(checkpoint)
    if protocol is not None:
        return protocol
    if eval_dir is None:
        raise ShipError(
            f"checkpoint {checkpoint}: no {EVAL_PROTOCOL_FILE}; pass --eval to take it from an eval"
        )
    config = read_json(eval_dir / "config.json", "eval")
    return {
        **{key: config[key] for key in ("suites", "tasks", "image_size", "fast_render")},
        "mesh_faces": config.get("mesh_faces", 0),
    }


def _check_one_default_per_suite(out: Path, suites: list[str]) -> None:
    """Refuse to ship into the package a second default of a suite that already has one."""
    if out.resolve().parent != DEFAULTS_DIR.resolve():
        return
    for suite, folder in default_checkpoints(DEFAULTS_DIR).items():
        if suite in suites and folder.resolve() != out.resolve():
            raise ShipError(
                f"suite: {suite} already has the embedded default {folder.name}; "
                "remove that folder first, or ship for the other suites only with --suite"
            )


def _restricted(protocol: dict[str, Any], suites: tuple[str, ...] | None) -> dict[str, Any]:
    """``protocol`` for ``suites`` only, which must be among those it was trained on."""
    if suites is None:
        return protocol
    outside = sorted(set(suites) - set(protocol["suites"]))
    if not suites or outside:
        raise ShipError(
            f"suite: expected some of the checkpoint's suites {protocol['suites']}, got {list(suites)}"
        )
    return {**protocol, "suites": sorted(suites)}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m eval.ship_default``."""
    parser = argparse.ArgumentParser(prog="python -m eval.ship_default", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a save_pretrained folder of a run")
    source.add_argument(
        "--default",
        type=Path,
        help="a shipped default to change in place (--gripper-close-delay, --requery-before-grasp, "
        "--eval) without its run",
    )
    parser.add_argument(
        "--train-log", type=Path, help="the run's log.jsonl (up to this checkpoint); with --checkpoint"
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        nargs="+",
        default=[],
        help="status.json of every recipe behind the run (none for a run on --demos-report sets alone)",
    )
    parser.add_argument(
        "--demos-report",
        type=Path,
        nargs="+",
        default=[],
        help="JSON report printed by `cogvla demos` for each demo set the run used beyond the recipes'",
    )
    parser.add_argument("--eval", type=Path, help="a `cogvla eval libero` folder of the shipped files")
    parser.add_argument(
        "--suite",
        type=lambda text: tuple(item.strip() for item in text.split(",") if item.strip()),
        help="ship as the default of these suites only, e.g. libero_object (default: all it was trained on)",
    )
    parser.add_argument(
        "--out", type=Path, help="where to write the default (default: cogvla/assets/defaults/<its suites>)"
    )
    parser.add_argument(
        "--history", type=Path, help="markdown file: where the run's starting weights came from (model card)"
    )
    parser.add_argument(
        "--gripper-close-delay",
        type=int,
        help="record in eval_protocol.json that this default is evaluated holding the gripper open "
        "this many steps after the policy switches it to close (default: 0; with --default: unchanged)",
    )
    parser.add_argument(
        "--requery-before-grasp",
        action=argparse.BooleanOptionalAction,
        help="record in eval_protocol.json that this default is evaluated querying afresh where a stale "
        "chunk row would close the gripper for the first time (default: off; with --default: "
        "unchanged)",
    )
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.train_log is None:
        parser.error("--train-log: expected the run's log.jsonl with --checkpoint")
    try:
        if args.default is not None:
            updated = update_default(
                args.default, args.eval, args.gripper_close_delay, args.requery_before_grasp
            )
            print(json.dumps({"updated": str(updated)}))
            return 0
        recipes = {path: load_recipe(path) for path in args.recipe}
        demo_sets = {path: load_demos_report(path) for path in args.demos_report}
        history = args.history.read_text() if args.history else ""
        out = ship(
            args.checkpoint,
            args.train_log,
            recipes,
            args.eval,
            args.out,
            history,
            demo_sets,
            args.suite,
            args.gripper_close_delay or 0,
            bool(args.requery_before_grasp),
        )
    except ShipError as exc:
        logger.error("%s", exc)
        return 2
    print(json.dumps({"shipped": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
