"""The auxiliary gripper-switch target: its offsets, its head, and training and resuming with it."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import small_model_config, small_train_config, write_demos

from cogvla.data.keypoints import switch_point_offsets
from cogvla.train.checkpoint import load_trainer_state
from cogvla.train.keypoint_loss import KeypointHead
from cogvla.train.run_log import read_log
from cogvla.train.trainer import train


def test_offsets_point_at_the_next_switch_of_each_episode():
    positions = np.zeros((9, 3), dtype=np.float32)
    positions[:, 0] = np.arange(9)
    # Episode 0 (frames 0-5): open, closes at 2, opens at 4. Episode 1 (6-8): never switches.
    gripper = np.array([-1, -1, 1, 1, -1, -1, 1, 1, 1])
    offsets = switch_point_offsets(positions, gripper, np.array([0, 6]), np.array([6, 3]))
    # Targets: frames 0,1 -> 2 (grasp); 2,3 -> 4 (release); 4,5 -> 5 (episode end); 6-8 -> 8.
    np.testing.assert_array_equal(offsets[:, 0], [2, 1, 2, 1, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(offsets[:, 1:], 0)
    assert offsets.dtype == np.float32


def test_offsets_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match=r"positions: expected shape \(N, 3\)"):
        switch_point_offsets(np.zeros((4, 2)), np.zeros(4), np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match=r"gripper: expected shape \(4,\)"):
        switch_point_offsets(np.zeros((4, 3)), np.zeros(5), np.array([0]), np.array([4]))


def test_head_maps_action_states_to_one_offset_and_checks_the_target():
    head = KeypointHead(16)
    hidden = torch.randn(2, 56, 16)
    assert head(hidden).shape == (2, 3)
    assert head.loss(hidden, head(hidden).detach()).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"keypoint: expected shape \(2, 3\)"):
        head.loss(hidden, torch.zeros(2, 2))


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("demos"))


def run(config, demos, run_dir, frames, **kwargs):
    return train(
        config,
        [demos],
        run_dir,
        model_config=small_model_config(),
        cache_root=frames,
        progress=False,
        **kwargs,
    )


def test_training_with_the_head_learns_it_exports_without_it_and_resumes_exactly(demos, tmp_path):
    frames = tmp_path / "frames"
    config = small_train_config(steps=24, save_every=12, keypoint_weight=1.0)
    full = tmp_path / "full"
    run(config, demos, full, frames)
    records = read_log(full / "log.jsonl")
    keypoint = [r["keypoint_l1"] for r in records]
    assert np.mean(keypoint[-4:]) < 0.7 * np.mean(keypoint[:4]), keypoint
    # The loss is the action L1 plus the weighted keypoint L1.
    assert all(r["loss"] > r["keypoint_l1"] for r in records)

    plain = tmp_path / "plain"
    run(dataclasses.replace(config, keypoint_weight=0.0, steps=1, warmup_steps=0), demos, plain, frames)
    exported = load_file(str(full / "checkpoints" / "step_000024" / "model.safetensors"))
    assert set(exported) == set(load_file(str(plain / "checkpoints" / "step_000001" / "model.safetensors")))
    assert "keypoint_l1" not in read_log(plain / "log.jsonl")[0]
    assert load_trainer_state(full / "checkpoints" / "step_000024")["keypoint_head"]["proj.weight"].shape == (
        3,
        small_model_config().llm.hidden_size,
    )

    interrupted = tmp_path / "interrupted"
    shutil.copytree(full, interrupted)
    shutil.rmtree(interrupted / "checkpoints" / "step_000024")
    run(config, demos, interrupted, frames, resume=True)
    resumed = [r["loss"] for r in read_log(interrupted / "log.jsonl")]
    np.testing.assert_allclose(resumed, [r["loss"] for r in records], rtol=1e-6)
    with pytest.raises(ValueError, match=r"keypoint_weight: 1.0 -> 0.5"):
        run(dataclasses.replace(config, keypoint_weight=0.5), demos, interrupted, frames, resume=True)


def test_a_checkpoint_from_before_the_head_resumes_as_weight_zero(demos, tmp_path):
    config = small_train_config(steps=4, warmup_steps=1, save_every=2)
    run(config, demos, tmp_path / "run", tmp_path / "frames")
    step = tmp_path / "run" / "checkpoints" / "step_000002"
    state = load_trainer_state(step)
    del state["config"]["keypoint_weight"]
    torch.save(state, step / "trainer_state.pt")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_000004")
    result = run(config, demos, tmp_path / "run", tmp_path / "frames", resume=True)
    assert result.start_step == 2 and result.checkpoint.endswith("step_000004")
