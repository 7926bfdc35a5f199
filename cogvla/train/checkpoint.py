"""Run checkpoints: ``RUN/checkpoints/step_XXXXXX/`` = an exported model plus ``trainer_state.pt``.

The exported model (``save_pretrained`` format) is what serving loads. ``trainer_state.pt``
is what ``--resume`` needs to continue bit-for-bit: the trained module's own state dict
(LoRA adapters unmerged), optimizer, scheduler, every rank's RNG states and the data
position. A checkpoint is written to a ``.partial`` folder and renamed when complete, so
a crash never leaves a half-written ``step_*`` behind, and a checkpoint whose trained
weights hold NaN/inf is refused before anything is written, so rotation, which deletes only
after a successful write, never trades the last finite checkpoint for a broken one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TRAINER_STATE",
    "NonFiniteCheckpointError",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_trainer_state",
    "save_checkpoint",
]

TRAINER_STATE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class NonFiniteCheckpointError(ValueError):
    """The weights to save hold NaN or inf; nothing was written."""


def _non_finite_tensors(weights: dict[str, Any]) -> list[str]:
    return [
        name
        for name, tensor in weights.items()
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    export: Callable[[Path], None],
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` and delete all but the newest ``keep`` (``keep <= 0`` keeps all).

    Args:
        run_dir: the run folder.
        step: optimizer steps done.
        export: writes the serving model into the folder it is given.
        trainer_state: everything ``--resume`` needs, its weights under ``"model"``; saved with
            ``torch.save``. Non-finite weights raise ``NonFiniteCheckpointError``.
        keep: how many checkpoints to keep.
    """
    broken = _non_finite_tensors(trainer_state["model"])
    if broken:
        raise NonFiniteCheckpointError(
            f"step {step}: {len(broken)} trained tensors hold NaN/inf (e.g. {broken[0]}); not saving it, "
            f"the newest finite checkpoint stays {latest_checkpoint(run_dir)}"
        )
    final = checkpoint_dir(run_dir, step)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    export(partial)
    torch.save(trainer_state, partial / TRAINER_STATE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    return final


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``trainer_state.pt`` of a checkpoint folder (it holds numpy RNG state, hence weights_only=False)."""
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint}: no {TRAINER_STATE}; not a training checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)
