"""Where the gripper next switches: a per-frame training target that only the cameras can give.

For frame ``t`` the target is ``p[s]``, the end-effector position at the next frame ``s > t``
whose gripper command differs from frame ``t``'s (the grasp while the hand is open, the
release while it holds), or at the episode's last frame when no switch follows.

The arm's state says where the hand is but not where the object is, and the instruction
names the object but not its place in this scene: a policy that reads only those can
predict a task's mean grasp and nothing more. Regressing the point (or its offset from the
hand) from the model's tokens makes them carry the object's position
(``cogvla.train.keypoint_loss``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["KEYPOINT_SCALE", "KEYPOINT_SOURCES", "gripper_switches", "next_switch_points"]

# Metres -> model units: points and offsets on a LIBERO tabletop span about +-0.5 m around
# their mean, so decimetres keep the target near the unit scale of the normalized actions.
KEYPOINT_SCALE = 10.0

# What a model reads the target from: its vision tokens (the point) or its action positions
# (the point's offset from the hand); cogvla.train.keypoint_loss.
KEYPOINT_SOURCES = ("vision", "actions")


def gripper_switches(closed: np.ndarray) -> np.ndarray:
    """Frames of one episode whose gripper command differs from the frame before."""
    return np.flatnonzero(closed[1:] != closed[:-1]) + 1


def next_switch_points(
    positions: np.ndarray, gripper: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """``(N, 3)`` float32 end-effector position at each frame's next gripper switch, in metres.

    Args:
        positions: ``(N, 3)`` end-effector positions of every frame, episodes back to back.
        gripper: ``(N,)`` gripper commands (> 0 closes).
        starts: ``(E,)`` first frame of each episode.
        lengths: ``(E,)`` frames of each episode.
    """
    positions = np.asarray(positions, dtype=np.float32)
    closed = np.asarray(gripper) > 0
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions: expected shape (N, 3), got {tuple(positions.shape)}")
    if closed.shape != (len(positions),):
        raise ValueError(f"gripper: expected shape ({len(positions)},), got {tuple(closed.shape)}")
    points = np.zeros_like(positions)
    for start, length in zip(starts, lengths, strict=True):
        episode = slice(int(start), int(start) + int(length))
        steps = np.arange(int(length))
        switches = gripper_switches(closed[episode])
        # The first switch strictly after each frame; the last frame when none is left.
        nxt = np.searchsorted(switches, steps, side="right")
        target = np.append(switches, int(length) - 1)[nxt]
        points[episode] = positions[episode][target]
    return points
