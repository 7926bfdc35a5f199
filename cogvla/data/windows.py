"""Which transitions train the policy, and which actions form each one's chunk.

Two rules from the OpenVLA-OFT LIBERO pipeline:

- no-op transitions are dropped: the arm command is (almost) zero and the gripper command
  did not change (``regenerate_libero_dataset.py``), because they teach the policy to stall;
- every kept frame starts an action chunk of the next ``chunk`` actions, with indices past
  the end of the episode clamped to its last action (``future_action_window_size``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NOOP_THRESHOLD", "chunk_indices", "noop_mask"]

NOOP_THRESHOLD = 1e-4


def noop_mask(actions: np.ndarray, threshold: float = NOOP_THRESHOLD) -> np.ndarray:
    """``(T,)`` bool, True where ``actions (T, 7)`` is a no-op.

    A transition is a no-op when ``||a[:6]|| < threshold`` and its gripper command equals
    the previous action's; the first action has no predecessor, so only its motion counts.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[1] < 7:
        raise ValueError(f"actions: expected shape (T, 7), got {tuple(actions.shape)}")
    still = np.linalg.norm(actions[:, :6], axis=1) < threshold
    same_gripper = np.ones(len(actions), dtype=bool)
    same_gripper[1:] = actions[1:, 6] == actions[:-1, 6]
    return still & same_gripper


def chunk_indices(length: int, chunk: int) -> np.ndarray:
    """``(length, chunk)`` int64: row ``t`` holds ``t, t+1, ..., t+chunk-1`` clamped to ``length-1``."""
    if length < 1 or chunk < 1:
        raise ValueError(f"chunk_indices: expected length >= 1 and chunk >= 1, got {length} and {chunk}")
    return np.minimum(np.arange(length)[:, None] + np.arange(chunk)[None, :], length - 1)
