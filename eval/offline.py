"""Open-loop action error of a checkpoint on demos, per task: ``cogvla eval offline``.

For every task instruction in the demos it runs the model on evenly spaced training
samples (no augmentation, the serving centre crop) and compares the predicted chunk with
the demo's chunk in the model's normalized units, which is the training loss without
augmentation. Cheap next to a simulator run, it tells under-fitting of one task apart
from closed-loop failure, and scores a checkpoint on demos it never saw. It also measures
what the model reads: how far the predicted chunks move when the camera images, or the
proprio, of each sample are swapped with another sample's; and when its chunks switch the
gripper against when the demo's do (``eval.gripper_timing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cogvla.data.dataset import DemoDataset, sample_crop_area, select_training_frames
from cogvla.data.loading import load_demo_frames
from cogvla.data.windows import NOOP_THRESHOLD
from cogvla.modeling import CogVLAModel
from cogvla.normalize import gripper_to_robot
from eval.gripper_timing import switch_row_errors

__all__ = ["offline_errors"]

# Inputs swapped between the samples of a batch (each takes its neighbour's), and the row field
# that reports how far the predicted chunks move: a policy that ignores an input barely moves.
_SWAPPED = {"pixel_values": "change_if_images_swapped", "proprio": "change_if_proprio_swapped"}


def _predict(model: CogVLAModel, items: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(
            items["pixel_values"], items["input_ids"], items["attention_mask"], items["proprio"]
        ).actions


def offline_errors(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    *,
    per_task: int = 256,
    batch: int = 32,
    cache_root: str | Path | None = None,
) -> dict[str, Any]:
    """Per-task L1 of ``checkpoint``'s chunks against the demos under ``data``.

    Returns ``{"checkpoint", "tasks": [...], "overall"}``; each task row has its sample and
    episode counts, the mean L1 over the chunk, of its first step and per action dimension,
    and how often the first step's binarized gripper command (open/close) is the wrong one,
    and how far the predicted chunks move (mean L1) when every sample of a batch takes the
    images, or the proprio, of its neighbour (another frame of the same task): a policy that
    steers by its cameras moves about as much as its error or more, a blind one barely at all.
    Over the samples whose demo chunk opens or closes the gripper, it also reports how many
    rows later (negative: earlier) the predicted chunk does.
    """
    if per_task < 1 or batch < 1:
        raise ValueError(f"per_task and batch: expected >= 1, got {per_task} and {batch}")
    model = CogVLAModel.from_pretrained(checkpoint).float().eval()
    if model.norm_stats is None or model.tokenizer is None:
        raise ValueError(f"{checkpoint}: needs norm_stats.json and tokenizer/ to be scored on demos")
    config = model.config
    frames = load_demo_frames(data, config.image_size, cache_root)
    selection = select_training_frames(frames, config.chunk_size, NOOP_THRESHOLD)
    dataset = DemoDataset(
        frames,
        selection,
        model.norm_stats,
        model.tokenizer.encode_batch,
        augment=None,
        crop_area=sample_crop_area(config),
    )
    languages = np.asarray(frames.languages, dtype=object)[selection.episodes]
    gripper = np.flatnonzero(model.norm_stats.gripper_dims)
    rows, pooled = [], []
    for task in sorted(set(languages)):
        members = np.flatnonzero(languages == task)
        picked = members[np.linspace(0, len(members) - 1, min(per_task, len(members))).round().astype(int)]
        errors, wrong_commands, switch_errors = [], 0, []
        changes: dict[str, list[torch.Tensor]] = {name: [] for name in _SWAPPED.values()}
        for start in range(0, len(picked), batch):
            items = dataset[[(int(index), 0) for index in picked[start : start + batch]]]
            predicted = _predict(model, items)
            errors.append((predicted - items["actions"]).abs())
            if len(predicted) > 1:
                for key, name in _SWAPPED.items():
                    swapped = _predict(model, {**items, key: items[key].roll(1, dims=0)})
                    changes[name].append((swapped - predicted).abs().mean(dim=(1, 2)))
            # Compared as the robot would act on them: the binarized open/close commands.
            commanded = gripper_to_robot(predicted[:, :, gripper].numpy())
            demonstrated = gripper_to_robot(items["actions"][:, :, gripper].numpy())
            wrong_commands += int((commanded[:, 0] != demonstrated[:, 0]).sum())
            switch_errors.append(switch_row_errors(commanded, demonstrated))
        error = torch.cat(errors)
        pooled.append(error)
        rows.append(
            {
                "task": task,
                "samples": len(picked),
                "episodes": len(np.unique(selection.episodes[picked])),
                "l1": float(error.mean()),
                "l1_first_step": float(error[:, 0].mean()),
                "l1_per_dim": [round(float(v), 5) for v in error.mean(dim=(0, 1))],
                "gripper_command_error_rate": wrong_commands / (len(picked) * len(gripper)),
                **_switch_summary(np.concatenate(switch_errors)),
                **{
                    name: float(torch.cat(values).mean()) if values else None
                    for name, values in changes.items()
                },
            }
        )
    everything = torch.cat(pooled)
    return {
        "checkpoint": str(checkpoint),
        "tasks": rows,
        "overall": {
            "samples": len(everything),
            "l1": float(everything.mean()),
            "l1_first_step": float(everything[:, 0].mean()),
        },
    }


def _switch_summary(errors: np.ndarray) -> dict[str, Any]:
    """Chunks whose demo switches the gripper, and the mean and mean absolute row error there."""
    return {
        "gripper_switches": len(errors),
        "gripper_switch_row_error": float(errors.mean()) if len(errors) else None,
        "gripper_switch_row_abs_error": float(np.abs(errors).mean()) if len(errors) else None,
    }
