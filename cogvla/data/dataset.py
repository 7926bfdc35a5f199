"""Training samples from a frame cache: one per kept frame, assembled a micro-batch at a time.

``DemoDataset[items]`` takes the ``[(index, seed), ...]`` lists that ``StepSampler`` yields
and returns the model's batch::

    pixel_values   (B, 2, 3, H, W) float32 in [0, 1], [agentview, wrist], augmented
    input_ids      (B, T) int64, left-padded prompt
    attention_mask (B, T) int64
    proprio        (B, 8) float32 in [-1, 1]
    actions        (B, chunk, 7) float32, model units (NormStats)
    keypoint       (B, 3) float32, the next gripper-switch target (only with ``keypoints``)
    weight         (B,) float32, each sample's share of the action loss (only with ``weights``)

It runs inside data-loader workers, so the batched augmentation and the uint8 -> float
conversion happen off the training step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cogvla.config import CogVLAConfig
from cogvla.data.augment import AugmentConfig, augment_images, sample_params
from cogvla.data.frame_cache import FrameCache
from cogvla.data.windows import chunk_indices, noop_mask
from cogvla.normalize import NormStats
from cogvla.preprocess import CROP_AREA, center_crop

__all__ = [
    "DemoDataset",
    "TrainingFrames",
    "compute_norm_stats",
    "sample_crop_area",
    "select_training_frames",
]

# Second words of the seed sequences of a sample's proprio noise and proprio dropout.
_PROPRIO_NOISE_STREAM = 1
_PROPRIO_DROPOUT_STREAM = 2

PromptEncoder = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainingFrames:
    """The frames that start a training sample and the frames of their action chunks."""

    # (M,) int64 frame indices into the cache.
    frames: np.ndarray
    # (M, chunk) int64 frame indices of each sample's actions; clamped to the episode's last kept frame.
    chunks: np.ndarray
    # (M,) int64 episode of each sample.
    episodes: np.ndarray


def select_training_frames(cache: FrameCache, chunk: int, noop_threshold: float) -> TrainingFrames:
    """Drop no-op transitions and build the chunk indices over the remaining frames of each episode."""
    frames, chunks, episodes = [], [], []
    for episode, (start, length) in enumerate(zip(cache.episode_starts, cache.episode_lengths, strict=True)):
        kept = start + np.flatnonzero(~noop_mask(cache.actions[start : start + length], noop_threshold))
        if len(kept) == 0:
            continue
        frames.append(kept)
        chunks.append(kept[chunk_indices(len(kept), chunk)])
        episodes.append(np.full(len(kept), episode))
    if not frames:
        raise ValueError(f"data: every frame of the {len(cache.episode_starts)} episodes is a no-op")
    return TrainingFrames(np.concatenate(frames), np.concatenate(chunks), np.concatenate(episodes))


def sample_crop_area(config: CogVLAConfig) -> float:
    """Crop-box area of a model's samples: the serving centre crop's, or 1.0 (none)."""
    return CROP_AREA if config.center_crop else 1.0


def compute_norm_stats(cache: FrameCache, selection: TrainingFrames) -> NormStats:
    """q01/q99 statistics of the training frames' actions and proprio (gripper dim masked)."""
    return NormStats.from_data(cache.actions[selection.frames], cache.proprio[selection.frames])


class DemoDataset:
    """Map-style dataset whose keys are whole micro-batches of ``(index, augmentation seed)``."""

    def __init__(
        self,
        cache: FrameCache,
        selection: TrainingFrames,
        stats: NormStats,
        encode_prompts: PromptEncoder,
        augment: AugmentConfig | None,
        crop_area: float = CROP_AREA,
        keypoints: np.ndarray | None = None,
        proprio_noise: float = 0.0,
        proprio_dropout: float = 0.0,
        weights: np.ndarray | None = None,
    ) -> None:
        """
        Args:
            cache: decoded frames.
            selection: which frames are samples (``select_training_frames``).
            stats: normalization of actions and proprio.
            encode_prompts: instructions -> left-padded ``(input_ids, attention_mask)``.
            augment: colour-jitter ranges; None = no augmentation.
            crop_area: area of the crop box (1.0 = none): random with augmentation, else
                centred, which is what serving does.
            keypoints: ``(N, 3)`` per-frame auxiliary targets in model units
                (``cogvla.data.keypoints``); None = batches without ``keypoint``.
            proprio_noise: standard deviation, in metres, of Gaussian noise added to each
                sample's end-effector position before normalization (0 = none); drawn from
                the sample's seed, so a resumed run sees the same noise.
            proprio_dropout: probability that a sample's whole normalized proprio is replaced
                by zeros, so the model must tell the arm's state from its cameras; drawn
                from the sample's seed like the noise.
            weights: ``(N,)`` per-frame loss weights (``cogvla.data.phase_weights``); None =
                batches without ``weight`` (every sample alike).
        """
        self.cache = cache
        self.selection = selection
        self.encode_prompts = encode_prompts
        self.augment = augment
        self.crop_area = crop_area
        # Normalized once here: workers then only gather rows.
        self.actions = stats.normalize_actions(cache.actions)
        self.proprio = stats.normalize_proprio(cache.proprio)
        if keypoints is not None and keypoints.shape != (cache.num_frames, 3):
            raise ValueError(
                f"keypoints: expected shape ({cache.num_frames}, 3), got {tuple(keypoints.shape)}"
            )
        self.keypoints = keypoints
        if weights is not None and weights.shape != (cache.num_frames,):
            raise ValueError(f"weights: expected shape ({cache.num_frames},), got {tuple(weights.shape)}")
        self.weights = weights
        self.stats = stats
        self.proprio_noise = proprio_noise
        self.proprio_dropout = proprio_dropout

    def __len__(self) -> int:
        return len(self.selection.frames)

    def __getitem__(self, items: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        indices = np.asarray([index for index, _ in items], dtype=np.int64)
        if len(indices) == 0 or indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"DemoDataset: indices must lie in [0, {len(self)}), got {indices.tolist()}")
        frames = self.selection.frames[indices]
        # Sorted reads from the memory map are faster; np.unique also gives the inverse map back.
        unique, inverse = np.unique(frames, return_inverse=True)
        images = torch.from_numpy(np.ascontiguousarray(self.cache.images[unique][inverse]))
        images = images.permute(0, 1, 4, 2, 3).float().div_(255.0)  # (B, 2, 3, H, W)
        if self.augment is not None:
            params = sample_params([seed for _, seed in items], self.augment)
            images = augment_images(images, params, self.augment, self.crop_area)
        elif self.crop_area < 1.0:
            images = center_crop(images, self.crop_area)
        prompts = [self.cache.languages[e] for e in self.selection.episodes[indices]]
        input_ids, attention_mask = self.encode_prompts(prompts)
        batch = {
            "pixel_values": images,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "proprio": torch.from_numpy(self._proprio(frames, [seed for _, seed in items])),
            "actions": torch.from_numpy(self.actions[self.selection.chunks[indices]]),
        }
        if self.keypoints is not None:
            batch["keypoint"] = torch.from_numpy(self.keypoints[frames])
        if self.weights is not None:
            batch["weight"] = torch.from_numpy(self.weights[frames])
        return batch

    def _proprio(self, frames: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """``(B, 8)`` normalized proprio: hand positions jittered, whole rows dropped to zero."""
        if self.proprio_noise == 0:
            proprio = self.proprio[frames]
        else:
            raw = self.cache.proprio[frames].astype(np.float64)
            # A stream of its own per sample: the image augmentation draws from the bare seed.
            noise = [np.random.default_rng([seed, _PROPRIO_NOISE_STREAM]).normal(size=3) for seed in seeds]
            raw[:, :3] += self.proprio_noise * np.asarray(noise)
            proprio = self.stats.normalize_proprio(raw)
        if self.proprio_dropout == 0:
            return proprio
        draws = np.asarray(
            [np.random.default_rng([seed, _PROPRIO_DROPOUT_STREAM]).random() for seed in seeds]
        )
        return np.where((draws < self.proprio_dropout)[:, None], 0, proprio).astype(proprio.dtype)
