"""Loss weights on the first steps of each demo phase, and training with them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_train import run, small_train_config

from cogvla.data.phase_weights import phase_start_weights
from cogvla.train.run_log import read_log


def test_weights_cover_each_episode_start_and_gripper_switch_within_the_episode():
    # Episode 0: frames 0-7, closes at 3, opens at 6; episode 1: frames 8-10, never switches.
    gripper = np.array([-1, -1, -1, 1, 1, 1, -1, -1, 1, 1, 1])
    weights = phase_start_weights(gripper, np.array([0, 8]), np.array([8, 3]), steps=2, weight=5.0)
    np.testing.assert_array_equal(weights, [5, 5, 1, 5, 5, 1, 5, 5, 5, 5, 1])
    assert weights.dtype == np.float32
    # A window longer than what is left of the episode stops at its end.
    long = phase_start_weights(gripper, np.array([0, 8]), np.array([8, 3]), steps=4, weight=2.0)
    np.testing.assert_array_equal(long, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps: expected >= 1, got 0"),
        ({"weight": 0.0}, "weight: expected > 0, got 0.0"),
        ({"gripper": np.zeros((4, 1))}, r"gripper: expected shape \(N,\)"),
    ],
)
def test_weights_refuse_bad_arguments(kwargs, match):
    arguments = {
        "gripper": np.zeros(4),
        "starts": np.array([0]),
        "lengths": np.array([4]),
        "steps": 2,
        "weight": 3.0,
    }
    with pytest.raises(ValueError, match=match):
        phase_start_weights(**dict(arguments, **kwargs))


def test_a_weighted_run_optimizes_the_weighted_loss_and_logs_the_plain_l1(demos, tmp_path):
    frames = tmp_path / "frames"
    config = small_train_config(steps=4, warmup_steps=1, save_every=4)
    run(config, demos, tmp_path / "plain", frames)
    run(
        dataclasses.replace(config, phase_start_weight=20.0, phase_start_steps=12),
        demos,
        tmp_path / "weighted",
        frames,
    )
    plain, weighted = (
        read_log(tmp_path / "plain" / "log.jsonl"),
        read_log(tmp_path / "weighted" / "log.jsonl"),
    )
    for record in plain:
        assert record["loss"] == pytest.approx(record["l1"], rel=1e-5)
    # The same first batch and weights give the same plain L1; the loss is weighted.
    assert weighted[0]["l1"] == pytest.approx(plain[0]["l1"], rel=1e-5)
    assert any(r["loss"] != pytest.approx(r["l1"], rel=1e-3) for r in weighted), weighted
    with pytest.raises(ValueError, match=r"phase_start_weight: 20.0 -> 5.0"):
        run(
            dataclasses.replace(config, phase_start_weight=5.0, phase_start_steps=12, steps=8),
            demos,
            tmp_path / "weighted",
            frames,
            resume=True,
        )
    with pytest.raises(ValueError, match="phase_start_weight: expected > 0"):
        dataclasses.replace(config, phase_start_weight=0.0)
