"""Training data: no-op filtering, chunk windows, normalization, augmentation, sampler and cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cogvla.data.augment import AugmentConfig, augment_images, sample_params
from cogvla.data.dataset import DemoDataset, compute_norm_stats, select_training_frames
from cogvla.data.frame_cache import find_demo_files, load_frame_cache
from cogvla.data.libero_hdf5 import Episode, append_episode
from cogvla.data.sampler import StepSampler
from cogvla.data.windows import chunk_indices, noop_mask
from cogvla.normalize import gripper_to_model

CHUNK = 8


def encode_prompts(prompts):
    """Stand-in prompt encoder: one token per word, left-padded with 0."""
    lengths = [len(p.split()) for p in prompts]
    ids = torch.zeros(len(prompts), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, -length:] = torch.arange(1, length + 1)
        mask[row, -length:] = 1
    return ids, mask


def scripted_episode(length, offset, language="put the bowl on the plate", size=16):
    """Actions whose first component encodes the frame number, so windows can be read back."""
    actions = np.zeros((length, 7), dtype=np.float32)
    actions[:, 0] = offset + np.arange(length) / 100.0
    actions[:, 1] = np.linspace(-0.5, 0.5, length)
    actions[:, 6] = np.where(np.arange(length) < length // 2, -1.0, 1.0)
    images = np.zeros((length, size, size, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(length)  # frame id in the top-left pixel
    return Episode(
        actions=actions,
        agentview_rgb=images,
        eye_in_hand_rgb=images.copy(),
        ee_pos=np.tile(np.arange(length, dtype=np.float32)[:, None], (1, 3)),
        ee_ori=np.zeros((length, 3)),
        gripper_states=np.zeros((length, 2)),
        joint_states=np.zeros((length, 7)),
        language=language,
    )


@pytest.fixture
def demo_cache(tmp_path):
    first = scripted_episode(12, offset=1.0)
    # Frames 3 and 4 are no-ops (no motion, gripper unchanged); frame 6 does not move
    # but flips the gripper, so it is kept.
    first.actions[3:5, :6] = 0.0
    first.actions[6, :6] = 0.0
    append_episode(tmp_path / "demos" / "task_a.hdf5", first)
    append_episode(tmp_path / "demos" / "task_a.hdf5", scripted_episode(5, offset=2.0))
    append_episode(
        tmp_path / "demos" / "task_b.hdf5", scripted_episode(7, offset=3.0, language="open the drawer")
    )
    files = find_demo_files([tmp_path / "demos"])
    return load_frame_cache(files, tmp_path / "cache")


def test_noop_mask_needs_stillness_and_unchanged_gripper():
    actions = np.zeros((5, 7))
    actions[:, 6] = [-1, -1, 1, 1, 1]
    actions[3, 0] = 0.5
    actions[4, 2] = 5e-5  # below 1e-4
    np.testing.assert_array_equal(noop_mask(actions), [True, True, False, False, True])


def test_chunk_indices_clamp_to_the_last_step():
    idx = chunk_indices(10, CHUNK)
    assert idx.shape == (10, CHUNK)
    np.testing.assert_array_equal(idx[0], np.arange(8))
    np.testing.assert_array_equal(idx[5], [5, 6, 7, 8, 9, 9, 9, 9])
    np.testing.assert_array_equal(idx[9], [9] * CHUNK)
    with pytest.raises(ValueError, match="length >= 1"):
        chunk_indices(0, CHUNK)


def test_windows_skip_noops_and_stay_inside_episodes(demo_cache):
    selection = select_training_frames(demo_cache, CHUNK, noop_threshold=1e-4)
    assert len(selection.frames) == 12 - 2 + 5 + 7
    assert 3 not in selection.frames and 4 not in selection.frames and 6 in selection.frames
    first = demo_cache.actions[selection.chunks[0], 0]
    # The chunk of frame 2 jumps over the dropped frames 3 and 4.
    np.testing.assert_array_equal(selection.chunks[2], [2, 5, 6, 7, 8, 9, 10, 11])
    np.testing.assert_allclose(first, [1.0, 1.01, 1.02, 1.05, 0.0, 1.07, 1.08, 1.09], rtol=1e-6)
    # The second episode (frames 12..16) clamps at its own last frame, never reading the third.
    second = selection.chunks[selection.episodes == 1]
    assert second.min() == 12 and second.max() == 16
    np.testing.assert_array_equal(second[-1], [16] * CHUNK)
    np.testing.assert_array_equal(second[2], [14, 15, 16, 16, 16, 16, 16, 16])


def test_dataset_batch_shapes_and_normalization_round_trip(demo_cache):
    selection = select_training_frames(demo_cache, CHUNK, noop_threshold=1e-4)
    stats = compute_norm_stats(demo_cache, selection)
    dataset = DemoDataset(demo_cache, selection, stats, encode_prompts, augment=None)
    items = [(i, i) for i in range(len(dataset))]
    batch = dataset[items]
    n = len(dataset)
    assert batch["pixel_values"].shape == (n, 2, 3, 16, 16) and batch["pixel_values"].dtype == torch.float32
    assert batch["actions"].shape == (n, CHUNK, 7)
    assert batch["proprio"].shape == (n, 8)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][:, -1].all(), "prompts are left-padded"
    assert float(batch["proprio"].abs().max()) <= 1.0
    raw = demo_cache.actions[selection.chunks]
    back = stats.unnormalize_actions(batch["actions"].numpy())
    # Arm dims invert within q01/q99 (clipped outside it); the gripper is binarized back exactly.
    inside = (raw[..., :6] >= np.asarray(stats.action_q01[:6])) & (
        raw[..., :6] <= np.asarray(stats.action_q99[:6])
    )
    np.testing.assert_allclose(back[..., :6][inside], raw[..., :6][inside], atol=1e-5)
    np.testing.assert_array_equal(back[..., 6], raw[..., 6])


def test_gripper_is_one_when_open_and_zero_when_closed(demo_cache):
    selection = select_training_frames(demo_cache, CHUNK, noop_threshold=1e-4)
    stats = compute_norm_stats(demo_cache, selection)
    assert stats.action_mask == (True,) * 6 + (False,)
    dataset = DemoDataset(demo_cache, selection, stats, encode_prompts, augment=None)
    gripper = dataset[[(0, 0)]]["actions"][0, :, 6].numpy()
    robot = demo_cache.actions[selection.chunks[0], 6]
    np.testing.assert_array_equal(gripper, np.where(robot < 0, 1.0, 0.0))
    np.testing.assert_array_equal(gripper_to_model(np.array([-1.0, 1.0])), [1.0, 0.0])


def test_proprio_noise_jitters_only_the_hand_position_per_sample_seed(demo_cache):
    selection = select_training_frames(demo_cache, CHUNK, noop_threshold=1e-4)
    stats = compute_norm_stats(demo_cache, selection)
    clean = DemoDataset(demo_cache, selection, stats, encode_prompts, augment=None)
    sigma = 0.5
    noisy = DemoDataset(demo_cache, selection, stats, encode_prompts, augment=None, proprio_noise=sigma)
    # One mid-episode frame (hand at 5 of 0..11, well inside q01/q99) under 400 seeds.
    index = int(np.flatnonzero(selection.frames == 5)[0])
    items = [(index, seed) for seed in range(400)]
    base, jittered = clean[items]["proprio"].numpy(), noisy[items]["proprio"].numpy()
    np.testing.assert_array_equal(jittered[:, 3:], base[:, 3:])
    scale = (np.asarray(stats.proprio_q99[:3]) - np.asarray(stats.proprio_q01[:3])) / 2
    metres = (jittered[:, :3] - base[:, :3]) * scale
    assert abs(metres.mean()) < 0.1 and abs(metres.std() - sigma) < 0.05
    assert not np.allclose(metres[:, 0], metres[:, 1]), "each axis draws its own noise"
    np.testing.assert_array_equal(noisy[items[:3]]["proprio"], jittered[:3])
    np.testing.assert_array_equal(noisy[[(index, 0)]]["proprio"][0], jittered[0])


def test_proprio_dropout_zeroes_whole_rows_at_its_rate_per_sample_seed(demo_cache):
    selection = select_training_frames(demo_cache, CHUNK, noop_threshold=1e-4)
    stats = compute_norm_stats(demo_cache, selection)
    clean = DemoDataset(demo_cache, selection, stats, encode_prompts, augment=None)
    dropped = DemoDataset(demo_cache, selection, stats, encode_prompts, augment=None, proprio_dropout=0.3)
    index = int(np.flatnonzero(selection.frames == 5)[0])
    items = [(index, seed) for seed in range(400)]
    base, out = clean[items]["proprio"].numpy(), dropped[items]["proprio"].numpy()
    assert not (base == 0).all(axis=1).any(), "a real state must not look dropped"
    zero = (out == 0).all(axis=1)
    assert 0.23 < zero.mean() < 0.37
    np.testing.assert_array_equal(out[~zero], base[~zero])
    np.testing.assert_array_equal(dropped[items[:5]]["proprio"], out[:5])
    both = DemoDataset(
        demo_cache, selection, stats, encode_prompts, augment=None, proprio_noise=0.5, proprio_dropout=0.3
    )
    noisy = both[items]["proprio"].numpy()
    np.testing.assert_array_equal((noisy == 0).all(axis=1), zero)
    assert not np.allclose(noisy[~zero], base[~zero]), "the kept rows still carry the noise"


def test_frame_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, demo_cache):
    files = find_demo_files([tmp_path / "demos"])
    again = load_frame_cache(files, tmp_path / "cache")
    assert again.images.filename == demo_cache.images.filename
    assert demo_cache.images.shape == (24, 2, 16, 16, 3)
    assert demo_cache.languages == ("put the bowl on the plate",) * 2 + ("open the drawer",)
    append_episode(
        tmp_path / "demos" / "task_b.hdf5", scripted_episode(3, offset=4.0, language="open the drawer")
    )
    changed = load_frame_cache(files, tmp_path / "cache")
    assert changed.images.shape[0] == 27
    assert changed.images.filename != demo_cache.images.filename


def test_frame_cache_copies_files_an_earlier_cache_decoded(tmp_path, demo_cache, monkeypatch):
    from cogvla.data import frame_cache

    append_episode(
        tmp_path / "more" / "task_c.hdf5", scripted_episode(6, offset=5.0, language="close the drawer")
    )
    files = find_demo_files([tmp_path / "demos", tmp_path / "more"])
    fresh = load_frame_cache(files, tmp_path / "fresh")
    decoded = []
    real_read = frame_cache.read_episodes

    def read_and_note(path):
        decoded.append(path)
        return real_read(path)

    monkeypatch.setattr(frame_cache, "read_episodes", read_and_note)
    grown = load_frame_cache(files, tmp_path / "cache")
    assert decoded == [tmp_path.resolve() / "more" / "task_c.hdf5"]
    assert grown.images.filename != demo_cache.images.filename
    np.testing.assert_array_equal(grown.images, fresh.images)
    np.testing.assert_array_equal(grown.actions, fresh.actions)
    np.testing.assert_array_equal(grown.proprio, fresh.proprio)
    np.testing.assert_array_equal(grown.episode_starts, fresh.episode_starts)
    assert grown.languages == fresh.languages
    assert grown.sources == fresh.sources


def test_find_demo_files_rejects_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a demo file nor a folder"):
        find_demo_files([tmp_path / "absent"])
    with pytest.raises(FileNotFoundError, match="no .hdf5"):
        find_demo_files([tmp_path])


def test_augmentation_is_seeded_and_shared_by_both_cameras():
    config = AugmentConfig()
    frame = torch.rand(1, 1, 3, 32, 32)
    images = frame.repeat(3, 2, 1, 1, 1)  # 3 samples, both cameras identical
    out = augment_images(images, sample_params([11, 11, 12], config), config)
    assert out.shape == images.shape
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    assert (out[0] - out[2]).abs().max() > 1e-3
    assert (out[0] - images[0]).abs().max() > 1e-3


def test_augmentation_params_stay_in_range():
    config = AugmentConfig()
    params = sample_params(range(500), config)
    assert params[:, :2].min() >= 0 and params[:, :2].max() <= 1
    assert params[:, 2].abs().max() <= 0.2
    assert params[:, 3].min() >= 0.8 and params[:, 3].max() <= 1.2
    assert params[:, 4].min() >= 0.8 and params[:, 4].max() <= 1.2
    assert params[:, 5].abs().max() <= 0.05


def test_identity_augmentation_returns_the_input():
    images = torch.rand(2, 2, 3, 16, 16)
    identity = torch.tensor([[0.5, 0.5, 0.0, 1.0, 1.0, 0.0]]).repeat(2, 1)
    out = augment_images(images, identity, AugmentConfig(), crop_area=1.0)
    torch.testing.assert_close(out, images, rtol=0, atol=1e-5)


def test_centre_crop_zooms_in():
    # A centred 90%-area crop moves a bright border row half a pixel out of the frame.
    images = torch.zeros(1, 1, 3, 20, 20)
    images[..., 0, :] = 1.0
    identity = torch.tensor([[0.5, 0.5, 0.0, 1.0, 1.0, 0.0]])
    out = augment_images(images, identity, AugmentConfig(), crop_area=0.9)
    assert float(out[..., 0, :].max()) < 0.9
    assert float(out[..., 1:, :].max()) == 0.0


def test_sampler_is_a_function_of_seed_and_step():
    full = list(StepSampler(num_samples=10, micro_batch=4, seed=3, end_step=6))
    resumed = list(StepSampler(num_samples=10, micro_batch=4, seed=3, start_step=2, end_step=6))
    assert resumed == full[2:]
    other = list(StepSampler(num_samples=10, micro_batch=4, seed=4, end_step=6))
    assert other != full
    # Every epoch is a permutation: the first 10 positions cover each sample once.
    flat = [index for batch in full for index, _ in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    seeds = [seed for batch in full for _, seed in batch]
    assert len(set(seeds)) == len(seeds)


def test_sampler_splits_one_global_batch_over_ranks_and_micro_steps():
    single = list(StepSampler(num_samples=13, micro_batch=8, seed=1, end_step=3))
    split = [
        list(
            StepSampler(num_samples=13, micro_batch=2, grad_accum=2, world_size=2, rank=r, seed=1, end_step=3)
        )
        for r in range(2)
    ]
    for step in range(3):
        parts = [item for r in range(2) for item in split[r][2 * step] + split[r][2 * step + 1]]
        assert sorted(parts) == sorted(single[step])


def test_sampler_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        StepSampler(num_samples=4, micro_batch=1, world_size=2, rank=2)


def test_frame_cache_build_shows_its_progress_bar_only_when_asked(tmp_path, capsys):
    append_episode(tmp_path / "demos" / "task_a.hdf5", scripted_episode(4, offset=1.0))
    files = find_demo_files([tmp_path / "demos"])
    load_frame_cache(files, tmp_path / "quiet", progress=False)
    assert "decode demos" not in capsys.readouterr().err
    load_frame_cache(files, tmp_path / "shown")
    assert "decode demos" in capsys.readouterr().err
