"""``CogVLAPolicy``: the model behind the ``cogvla.policy_api.Policy`` interface.

Per observation: images -> resize to the model size (+ 90%-area center crop when the
config asks for it) -> [0, 1] floats; state -> ``NormStats.normalize_proprio``; prompt ->
``PromptTokenizer``; one forward pass; actions -> ``NormStats.unnormalize_actions``
(robot units, binarized gripper). ``infer_batch`` runs a whole list in one forward pass
and leaves the wall time of its three stages in ``last_timing`` (ms, keys ``STAGE_KEYS``),
which the serving core reads after every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cogvla.checkpoint import CheckpointError
from cogvla.config import get_preset
from cogvla.modeling import CogVLAModel
from cogvla.normalize import NormStats
from cogvla.policy_api import OBS_IMAGE, OBS_PROMPT, OBS_STATE, OBS_WRIST_IMAGE, Policy
from cogvla.preprocess import ObservationError, center_crop, check_observation, images_to_tensor
from cogvla.tokenizer import PromptTokenizer, libero_instructions

__all__ = ["STAGE_KEYS", "CogVLAPolicy", "ObservationError", "identity_norm_stats"]

logger = logging.getLogger(__name__)

# camera order of the model's pixel_values
IMAGE_KEYS = (OBS_IMAGE, OBS_WRIST_IMAGE)
# stages of one infer_batch call, in order, as recorded in CogVLAPolicy.last_timing
STAGE_KEYS = ("preprocess_ms", "model_ms", "postprocess_ms")


def identity_norm_stats(action_dim: int = 7, proprio_dim: int = 8) -> NormStats:
    """Stats mapping [-1, 1] onto itself (gripper dim last, binarized): for untrained models."""
    return NormStats(
        action_q01=(-1.0,) * action_dim,
        action_q99=(1.0,) * action_dim,
        action_mask=(True,) * (action_dim - 1) + (False,),
        proprio_q01=(-1.0,) * proprio_dim,
        proprio_q99=(1.0,) * proprio_dim,
    )


class CogVLAPolicy(Policy):
    """A ``CogVLAModel`` with its tokenizer and normalization stats, serving action chunks."""

    def __init__(
        self,
        model: CogVLAModel,
        tokenizer: PromptTokenizer,
        norm_stats: NormStats,
        *,
        device: str | torch.device = "cpu",
        name: str | None = None,
        norm_key: str | None = None,
        random_weights: bool = False,
    ) -> None:
        config = model.config
        if config.num_images != len(IMAGE_KEYS):
            raise ValueError(
                f"model.config.num_images: the observation schema has {len(IMAGE_KEYS)} cameras "
                f"{IMAGE_KEYS}, "
                f"got a model for {config.num_images}"
            )
        if (
            len(norm_stats.action_q01) != config.action_dim
            or len(norm_stats.proprio_q01) != config.proprio_dim
        ):
            raise ValueError(
                f"norm_stats: expected {config.action_dim} action and {config.proprio_dim} proprio dims, "
                f"got {len(norm_stats.action_q01)} and {len(norm_stats.proprio_q01)}"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.norm_stats = norm_stats
        self.name = name or f"cogvla-{config.name}-{config.variant}"
        self.norm_key = norm_key
        self.random_weights = random_weights
        self.last_timing: dict[str, float] | None = None

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        *,
        unnorm_key: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> CogVLAPolicy:
        """Load a ``CogVLAModel.save_pretrained`` folder or a released OpenVLA-OFT / CogVLA folder.

        ``unnorm_key`` picks a release's dataset statistics; ``dtype`` casts the weights
        (None: float32 on CPU, else the stored dtype); see ``cogvla.checkpoint.load_checkpoint``.
        """
        if dtype is None and torch.device(device).type == "cpu":
            # CPU half-precision matmuls are slow and lossy; weights shipped in bf16 run in fp32 here.
            dtype = torch.float32
        model = CogVLAModel.from_pretrained(directory, device=device, unnorm_key=unnorm_key, dtype=dtype)
        if model.tokenizer is None or model.norm_stats is None:
            missing = [
                name
                for name, value in (("tokenizer/", model.tokenizer), ("norm_stats.json", model.norm_stats))
                if value is None
            ]
            raise CheckpointError(
                f"{directory}: a policy needs the tokenizer and normalization stats, missing {missing}"
            )
        return cls(
            model,
            model.tokenizer,
            model.norm_stats,
            device=device,
            name=f"cogvla-{model.config.name}-{model.config.variant} ({Path(directory).name})",
            norm_key=model.norm_key,
        )

    @classmethod
    def random(
        cls, preset: str = "tiny", *, variant: str = "cogvla", seed: int = 0, device: str = "cpu"
    ) -> CogVLAPolicy:
        """A randomly initialized, untrained model with identity stats, clearly labelled as such."""
        config = get_preset(preset, variant)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CogVLAModel(config)
        try:
            instructions = libero_instructions()
        except ImportError:
            logger.warning(
                "libero is not installed; the random policy's tokenizer is trained on the template only"
            )
            instructions = ["pick up the object and place it"]
        tokenizer = PromptTokenizer.train(instructions, vocab_size=config.llm.vocab_size)
        return cls(
            model,
            tokenizer,
            identity_norm_stats(config.action_dim, config.proprio_dim),
            device=device,
            name=f"cogvla-{preset}-{variant} (random weights, untrained)",
            norm_key="identity",
            random_weights=True,
        )

    def metadata(self) -> dict[str, Any]:
        config = self.model.config
        side = config.image_size
        return {
            "name": self.name,
            "chunk_size": config.chunk_size,
            "action_dim": config.action_dim,
            "image_keys": {key: [side, side, 3] for key in IMAGE_KEYS},
            "state_dim": config.proprio_dim,
            "norm_key": self.norm_key,
            "random_weights": self.random_weights,
            "preset": config.name,
            "variant": config.variant,
        }

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One ``(chunk, action_dim)`` float32 chunk in robot units."""
        return self.infer_batch([obs])[0]

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Chunks for several observations from one batched forward pass; times it in ``last_timing``."""
        if len(observations) == 0:
            self.last_timing = dict.fromkeys(STAGE_KEYS, 0.0)
            return []
        self.last_timing = None  # stays None when the call fails
        start = time.perf_counter()
        inputs = self._model_inputs(observations)
        if self.device.type == "cuda":
            # the host-to-device copies are asynchronous: count them as preprocessing
            torch.cuda.synchronize(self.device)
        prepared = time.perf_counter()
        actions = self._predict(*inputs)
        predicted = time.perf_counter()
        chunks = [self.norm_stats.unnormalize_actions(chunk) for chunk in actions]
        done = time.perf_counter()
        self.last_timing = {
            "preprocess_ms": (prepared - start) * 1000.0,
            "model_ms": (predicted - prepared) * 1000.0,
            "postprocess_ms": (done - predicted) * 1000.0,
        }
        return chunks

    def _model_inputs(self, observations: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, ...]:
        """Checked observations -> ``pixel_values, input_ids, attention_mask, proprio`` on the device."""
        config = self.model.config
        for obs in observations:
            check_observation(obs, image_keys=IMAGE_KEYS, state_dim=config.proprio_dim)
        pixel_values = torch.stack(
            [images_to_tensor([obs[key] for key in IMAGE_KEYS], config.image_size) for obs in observations]
        )
        if config.center_crop:
            pixel_values = center_crop(pixel_values)
        proprio = torch.from_numpy(
            np.stack(
                [
                    self.norm_stats.normalize_proprio(np.asarray(obs[OBS_STATE], dtype=np.float64))
                    for obs in observations
                ]
            )
        )
        input_ids, attention_mask = self.tokenizer.encode_batch([obs[OBS_PROMPT] for obs in observations])
        return (
            pixel_values.to(self.device),
            input_ids.to(self.device),
            attention_mask.to(self.device),
            proprio.to(self.device, torch.float32),
        )

    def _predict(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor,
    ) -> np.ndarray:
        """One forward pass: ``(B, chunk, action_dim)`` float32 actions in model units, on the host."""
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = self.model(pixel_values, input_ids, attention_mask, proprio)
        return out.actions.float().cpu().numpy()
