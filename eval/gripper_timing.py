"""When a predicted action chunk switches the gripper, against when the demo's chunk does.

An open-loop chunk carries its gripper command out unchecked, so a policy that closes a row
early closes above its object. Rows are counted from the chunk's first; a chunk that never
switches counts as switching one row past its end, so a policy that switches too late within
the horizon, or not at all, reads as late.
"""

from __future__ import annotations

import numpy as np

__all__ = ["switch_row_errors", "switch_rows"]


def switch_rows(commands: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """First row of ``commands (N, T)`` that differs from ``reference (N,)``; ``T`` where none does."""
    differs = np.asarray(commands) != np.asarray(reference)[:, None]
    return np.where(differs.any(axis=1), differs.argmax(axis=1), differs.shape[1])


def switch_row_errors(predicted: np.ndarray, demonstrated: np.ndarray) -> np.ndarray:
    """Predicted minus demonstrated switch row (negative: early) of each chunk whose demo switches.

    ``predicted`` and ``demonstrated`` are binary robot commands ``(B, T, G)`` (G gripper dims);
    a switch is a change from the demo's first-row command, so a prediction whose first row
    already differs switches at row 0. Chunks whose demo keeps one command are left out.
    """
    if predicted.shape != demonstrated.shape or predicted.ndim != 3:
        raise ValueError(
            f"gripper commands: expected two (B, T, G) arrays of one shape, got {predicted.shape} "
            f"and {demonstrated.shape}"
        )
    flat_predicted = np.moveaxis(predicted, 2, 1).reshape(-1, predicted.shape[1])
    flat_demonstrated = np.moveaxis(demonstrated, 2, 1).reshape(-1, demonstrated.shape[1])
    reference = flat_demonstrated[:, 0]
    demo_rows = switch_rows(flat_demonstrated, reference)
    switching = demo_rows < flat_demonstrated.shape[1]
    return (switch_rows(flat_predicted, reference) - demo_rows)[switching]
