"""Per-frame loss weights that favour the first steps of each phase of a demo.

At the start of an episode the arm is in the same pose whatever the scene, and right after
the gripper closes or opens it is where the last phase left it: the proprio says nothing about
where the next target is, so only the cameras can tell the first chunks of the phase apart.
Later in the phase the hand's path gives the target away, so a policy trained with every
frame alike can learn to follow its own proprio and never look. Weighting those first steps
makes the image-dependent part of the chunk count.
"""

from __future__ import annotations

import numpy as np

from cogvla.data.keypoints import gripper_switches

__all__ = ["phase_start_weights"]


def phase_start_weights(
    gripper: np.ndarray, starts: np.ndarray, lengths: np.ndarray, steps: int, weight: float
) -> np.ndarray:
    """``(N,)`` float32: ``weight`` for the first ``steps`` frames after each episode start and
    each gripper switch, 1 elsewhere.

    Args:
        gripper: ``(N,)`` gripper commands (> 0 closes), episodes back to back.
        starts: ``(E,)`` first frame of each episode.
        lengths: ``(E,)`` frames of each episode.
        steps: frames of each phase start that get the weight.
        weight: the weight of those frames.
    """
    closed = np.asarray(gripper) > 0
    if closed.ndim != 1:
        raise ValueError(f"gripper: expected shape (N,), got {tuple(closed.shape)}")
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    if not weight > 0:
        raise ValueError(f"weight: expected > 0, got {weight}")
    weights = np.ones(len(closed), dtype=np.float32)
    for start, length in zip(starts, lengths, strict=True):
        start, length = int(start), int(length)
        for phase in np.append(0, gripper_switches(closed[start : start + length])):
            weights[start + phase : start + min(phase + steps, length)] = weight
    return weights
