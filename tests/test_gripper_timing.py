"""Gripper switch timing of predicted chunks against demo chunks (``eval.gripper_timing``)."""

from __future__ import annotations

import numpy as np
import pytest

from eval.gripper_timing import switch_row_errors, switch_rows

OPEN, CLOSE = -1.0, 1.0


def _chunk(switch_at: int | None, rows: int = 8, first: float = OPEN) -> np.ndarray:
    """One gripper dim: ``first`` until row ``switch_at``, the other command from there."""
    chunk = np.full(rows, first)
    if switch_at is not None:
        chunk[switch_at:] = -first
    return chunk


def test_switch_rows_find_the_first_change_and_the_horizon_when_there_is_none():
    commands = np.stack([_chunk(3), _chunk(None), _chunk(0), _chunk(7)])
    np.testing.assert_array_equal(switch_rows(commands, np.full(4, OPEN)), [3, 8, 0, 7])


@pytest.mark.parametrize(
    ("predicted_switch", "error"),
    [(3, 0), (2, -1), (5, 2), (None, 5), (0, -3)],
)
def test_the_error_is_predicted_minus_demo_row_and_a_chunk_that_never_switches_is_late(
    predicted_switch, error
):
    demo = _chunk(3)[None, :, None]
    predicted = _chunk(predicted_switch)[None, :, None]
    np.testing.assert_array_equal(switch_row_errors(predicted, demo), [error])


def test_chunks_whose_demo_keeps_one_command_are_left_out_and_dims_are_scored_apart():
    # Sample 0: demo keeps the gripper open. Sample 1: dim 0 closes at row 4 (predicted 6),
    # dim 1 opens at row 1 (predicted 1).
    demo = np.stack(
        [
            np.stack([_chunk(None), _chunk(None)], axis=1),
            np.stack([_chunk(4), _chunk(1, first=CLOSE)], axis=1),
        ]
    )
    predicted = np.stack(
        [np.stack([_chunk(2), _chunk(None)], axis=1), np.stack([_chunk(6), _chunk(1, first=CLOSE)], axis=1)]
    )
    np.testing.assert_array_equal(switch_row_errors(predicted, demo), [2, 0])
    assert switch_row_errors(demo[:1], demo[:1]).size == 0


def test_shapes_that_disagree_are_refused_naming_both():
    with pytest.raises(ValueError, match=r"\(2, 8, 1\) and \(2, 7, 1\)"):
        switch_row_errors(np.ones((2, 8, 1)), np.ones((2, 7, 1)))
