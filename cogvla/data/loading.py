"""Demo frames at a model's input size: what training and offline evaluation read."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cogvla.data.frame_cache import FrameCache, find_demo_files, load_frame_cache
from cogvla.paths import cache_dir
from cogvla.preprocess import images_to_tensor

__all__ = ["load_demo_frames"]


def load_demo_frames(
    data: Sequence[str | Path], image_size: int, cache_root: str | Path | None = None, progress: bool = True
) -> FrameCache:
    """Every frame of the demo files under ``data``, resized as serving resizes, decoded once
    into a frame cache (default: the cogvla cache's ``frames/``), with a progress bar while
    decoding unless ``progress`` is False."""
    files = find_demo_files(data)
    root = Path(cache_root) if cache_root is not None else cache_dir("frames")
    transform = partial(_resize_frames, size=image_size)
    # The first process to take the cache's lock decodes; the others wait, then all map the same file.
    return load_frame_cache(
        files, root, transform=transform, transform_tag=f"images_to_tensor-{image_size}", progress=progress
    )


def _resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> ``(T, size, size, 3)`` uint8 with the serving resize."""
    if frames.shape[1:3] == (size, size):
        return frames
    resized = images_to_tensor(list(frames), size)
    return resized.mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
