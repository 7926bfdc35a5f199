"""Random, correctly shaped model batches and policy observations for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cogvla.config import CogVLAConfig
from cogvla.policy_api import OBS_IMAGE, OBS_PROMPT, OBS_STATE, OBS_WRIST_IMAGE, STATE_DIM

__all__ = ["fake_batch", "fake_observation"]

# ids below this are special tokens in trained tokenizers (pad, BOS, stop, unk)
_FIRST_TEXT_ID = 4


def fake_batch(
    config: CogVLAConfig,
    batch_size: int = 2,
    prompt_tokens: int = 12,
    *,
    seed: int = 0,
    left_pad: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """A ``compute_loss`` batch: the ``forward`` inputs plus ``actions (B, chunk, action_dim)``.

    ``left_pad[i]`` pads sample ``i``'s prompt by that many tokens on the left.
    Targets are in model units: [-1, 1], gripper (last dim) in {0, 1}.
    """
    generator = torch.Generator().manual_seed(seed)
    side = config.image_size
    input_ids = torch.randint(
        _FIRST_TEXT_ID, config.llm.vocab_size, (batch_size, prompt_tokens), generator=generator
    )
    attention_mask = torch.ones(batch_size, prompt_tokens, dtype=torch.long)
    for row, pads in enumerate(left_pad or ()):
        attention_mask[row, :pads] = 0
        input_ids[row, :pads] = config.llm.pad_token_id
    actions = torch.rand(batch_size, config.chunk_size, config.action_dim, generator=generator) * 2 - 1
    actions[..., -1] = (actions[..., -1] > 0).float()
    return {
        "pixel_values": torch.rand(batch_size, config.num_images, 3, side, side, generator=generator),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "proprio": torch.rand(batch_size, config.proprio_dim, generator=generator) * 2 - 1,
        "actions": actions,
    }


def fake_observation(
    height: int = 256, width: int = 256, *, seed: int = 0, prompt: str = "put the bowl on the plate"
) -> dict:
    """One observation in the ``cogvla.policy_api`` schema with random images and state."""
    rng = np.random.default_rng(seed)
    return {
        OBS_IMAGE: rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        OBS_WRIST_IMAGE: rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        OBS_STATE: rng.uniform(-0.5, 0.5, STATE_DIM).astype(np.float32),
        OBS_PROMPT: prompt,
    }
