"""The auxiliary gripper-switch target: its offsets, its head, and training and resuming with it."""

from __future__ import annotations

import dataclasses
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import run, small_model_config, small_train_config

from cogvla.data.keypoints import KEYPOINT_SCALE, next_switch_points
from cogvla.train.checkpoint import load_trainer_state
from cogvla.train.keypoint_loss import KeypointHead, keypoint_targets
from cogvla.train.run_log import read_log


def switching_frames():
    """Two episodes along x: frames 0-5 open, close at 2, open at 4; frames 6-8 never switch."""
    positions = np.zeros((9, 3), dtype=np.float32)
    positions[:, 0] = np.arange(9)
    gripper = np.array([-1, -1, 1, 1, -1, -1, 1, 1, 1])
    return SimpleNamespace(
        proprio=np.concatenate([positions, np.zeros((9, 5), dtype=np.float32)], axis=1),
        actions=np.concatenate([np.zeros((9, 6)), gripper[:, None]], axis=1),
        episode_starts=np.array([0, 6]),
        episode_lengths=np.array([6, 3]),
    )


def test_points_are_where_each_episode_next_switches():
    frames = switching_frames()
    points = next_switch_points(
        frames.proprio[:, :3], frames.actions[:, 6], frames.episode_starts, frames.episode_lengths
    )
    # Frames 0,1 -> 2 (grasp); 2,3 -> 4 (release); 4,5 -> 5 (episode end); 6-8 -> 8.
    np.testing.assert_array_equal(points[:, 0], [2, 2, 4, 4, 5, 5, 8, 8, 8])
    np.testing.assert_array_equal(points[:, 1:], 0)
    assert points.dtype == np.float32


def test_targets_are_centred_points_or_offsets_from_the_hand_in_decimetres():
    frames = switching_frames()
    vision = keypoint_targets(frames, "vision")[:, 0]
    actions = keypoint_targets(frames, "actions")[:, 0]
    points = np.array([2, 2, 4, 4, 5, 5, 8, 8, 8], dtype=np.float32)
    np.testing.assert_allclose(vision, KEYPOINT_SCALE * (points - points.mean()), rtol=1e-6)
    np.testing.assert_allclose(actions, KEYPOINT_SCALE * (points - np.arange(9)), rtol=1e-6)


def test_points_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match=r"positions: expected shape \(N, 3\)"):
        next_switch_points(np.zeros((4, 2)), np.zeros(4), np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match=r"gripper: expected shape \(4,\)"):
        next_switch_points(np.zeros((4, 3)), np.zeros(5), np.array([0]), np.array([4]))


@pytest.mark.parametrize(("source", "read"), [("vision", "vision_tokens"), ("actions", "action_hidden")])
def test_head_reads_its_source_tokens_out_to_one_point_and_checks_the_target(source, read):
    config = small_model_config()
    head = KeypointHead(source, config)
    tokens = {
        "vision_tokens": torch.randn(2, config.num_vision_tokens, config.llm.hidden_size),
        "action_hidden": torch.randn(2, config.num_action_tokens, config.llm.hidden_size),
    }
    out = SimpleNamespace(**tokens)
    assert head(tokens[read]).shape == (2, 3)
    assert head.loss(out, head(tokens[read]).detach()).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"keypoint: expected shape \(2, 3\)"):
        head.loss(out, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="keypoint source: expected one of"):
        KeypointHead("wrist", config)


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
    model_config = small_model_config()
    head = load_trainer_state(full / "checkpoints" / "step_000024")["keypoint_head"]
    assert head["proj.weight"].shape == (3, model_config.num_vision_tokens * model_config.llm.hidden_size)

    interrupted = tmp_path / "interrupted"
    shutil.copytree(full, interrupted)
    shutil.rmtree(interrupted / "checkpoints" / "step_000024")
    run(config, demos, interrupted, frames, resume=True)
    resumed = [r["loss"] for r in read_log(interrupted / "log.jsonl")]
    np.testing.assert_allclose(resumed, [r["loss"] for r in records], rtol=1e-6)
    with pytest.raises(ValueError, match=r"keypoint_weight: 1.0 -> 0.5"):
        run(dataclasses.replace(config, keypoint_weight=0.5), demos, interrupted, frames, resume=True)


def test_the_action_source_reads_the_action_positions(demos, tmp_path):
    config = small_train_config(steps=12, save_every=12, keypoint_weight=1.0, keypoint_source="actions")
    run(config, demos, tmp_path / "run", tmp_path / "frames")
    keypoint = [r["keypoint_l1"] for r in read_log(tmp_path / "run" / "log.jsonl")]
    assert np.mean(keypoint[-3:]) < 0.7 * np.mean(keypoint[:3]), keypoint
    head = load_trainer_state(tmp_path / "run" / "checkpoints" / "step_000012")["keypoint_head"]
    model_config = small_model_config()
    assert head["proj.weight"].shape[1] == model_config.num_action_tokens * model_config.llm.hidden_size


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
