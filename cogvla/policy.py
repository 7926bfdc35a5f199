"""``CogVLAPolicy``: the model behind the ``cogvla.policy_api.Policy`` interface.

Per observation: images -> the config's ``image_preprocessing`` (resize to the model size,
+ 90%-area center crop when the config asks for it) -> [0, 1] floats; state -> ``NormStats.normalize_proprio``; prompt ->
``PromptTokenizer``; one forward pass; actions -> ``NormStats.unnormalize_actions``
(robot units, binarized gripper). ``infer_batch`` runs a whole list in one forward pass
and leaves the wall time of its three stages in ``last_timing`` (ms, keys ``STAGE_KEYS``),
which the serving core reads after every call.

A policy may hold several datasets' stats (an import of a release keeps every LIBERO
suite's): ``use_norm_key`` picks one for every request, ``use_suite`` picks a suite's own
(as the reference eval does), and an observation may name its key under ``unnorm_key``.
A policy with several keys and none picked refuses to guess.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cogvla.checkpoint import NORM_STATS_FILE, CheckpointError, push_to_hub, read_config, resolve_pretrained
from cogvla.convert.load import is_released_checkpoint
from cogvla.convert.stats import all_norm_stats, read_dataset_statistics
from cogvla.config import get_preset
from cogvla.modeling import CogVLAModel
from cogvla.normalize import (
    NORM_TABLE_FILE,
    NormKeyError,
    NormStats,
    check_suite_norm_key,
    load_norm_table,
    resolve_norm_key,
    save_norm_table,
    suite_norm_key,
)
from cogvla.policy_api import OBS_IMAGE, OBS_PROMPT, OBS_STATE, OBS_WRIST_IMAGE, Policy
from cogvla.preprocess import ObservationError, check_observation, model_images
from cogvla.tokenizer import PromptTokenizer, libero_instructions

__all__ = [
    "OBS_NORM_KEY",
    "STAGE_KEYS",
    "CogVLAPolicy",
    "ObservationError",
    "check_checkpoint_suites",
    "checkpoint_norm_keys",
    "identity_norm_stats",
]

logger = logging.getLogger(__name__)

# camera order of the model's pixel_values
IMAGE_KEYS = (OBS_IMAGE, OBS_WRIST_IMAGE)
# stages of one infer_batch call, in order, as recorded in CogVLAPolicy.last_timing
STAGE_KEYS = ("preprocess_ms", "model_ms", "postprocess_ms")
# optional observation key naming the dataset stats of this one request
OBS_NORM_KEY = "unnorm_key"


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
        norm_stats: NormStats | None,
        *,
        device: str | torch.device = "cpu",
        name: str | None = None,
        norm_key: str | None = None,
        norm_table: Mapping[str, NormStats] | None = None,
        random_weights: bool = False,
    ) -> None:
        """``norm_stats`` (under ``norm_key``) is the default; ``norm_table`` adds other datasets'.

        ``norm_stats`` may be None only when ``norm_table`` has stats to choose from.
        """
        config = model.config
        if config.num_images != len(IMAGE_KEYS):
            raise ValueError(
                f"model.config.num_images: the observation schema has {len(IMAGE_KEYS)} cameras "
                f"{IMAGE_KEYS}, "
                f"got a model for {config.num_images}"
            )
        table = dict(norm_table or {})
        if norm_stats is not None:
            table[norm_key or "default"] = norm_stats
        if not table:
            raise ValueError("norm_stats: expected stats, or a norm_table to choose them from, got neither")
        for key, stats in table.items():
            if len(stats.action_q01) != config.action_dim or len(stats.proprio_q01) != config.proprio_dim:
                raise ValueError(
                    f"norm_stats[{key!r}]: expected {config.action_dim} action and {config.proprio_dim} "
                    f"proprio dims, got {len(stats.action_q01)} and {len(stats.proprio_q01)}"
                )
        self.norm_table = table
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.norm_stats = norm_stats
        self.name = name or f"cogvla-{config.name}-{config.variant}"
        self.norm_key = norm_key
        if norm_stats is None and len(table) == 1:
            self.use_norm_key(next(iter(table)))
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
        """Load a ``CogVLAModel.save_pretrained`` folder or a released OpenVLA-OFT / CogVLA folder,
        or either by Hugging Face Hub repo id (``owner/name``, see ``cogvla.checkpoint``).

        Every dataset's stats the folder holds are kept; ``unnorm_key`` picks the default
        one. ``dtype`` casts the weights (None: float32 on CPU, else the stored dtype); see
        ``cogvla.checkpoint.load_checkpoint``.
        """
        if dtype is None and torch.device(device).type == "cpu":
            # CPU half-precision matmuls are slow and lossy; weights shipped in bf16 run in fp32 here.
            dtype = torch.float32
        directory = resolve_pretrained(directory)
        released = is_released_checkpoint(directory)
        # a release's loader needs one key to start from; the table below keeps them all
        load_key = (unnorm_key or sorted(read_dataset_statistics(directory))[0]) if released else None
        model = CogVLAModel.from_pretrained(directory, device=device, unnorm_key=load_key, dtype=dtype)
        table = _stored_norm_table(directory, model.config, released=released)
        if model.tokenizer is None or (model.norm_stats is None and not table):
            missing = [
                name
                for name, value in (("tokenizer/", model.tokenizer), ("norm_stats.json", model.norm_stats))
                if value is None
            ]
            raise CheckpointError(
                f"{directory}: a policy needs the tokenizer and normalization stats, missing {missing}"
            )
        policy = cls(
            model,
            model.tokenizer,
            None if released else model.norm_stats,
            device=device,
            name=f"cogvla-{model.config.name}-{model.config.variant} ({directory.name})",
            norm_key=None if released else model.norm_key,
            norm_table=table,
        )
        if unnorm_key is not None:
            policy.use_norm_key(unnorm_key)
        return policy

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model, tokenizer and normalization stats as a folder ``from_pretrained`` loads."""
        path = self.model.save_pretrained(
            directory, tokenizer=self.tokenizer, norm_stats=self.norm_stats, norm_key=self.norm_key
        )
        default = (self.norm_key or "default") if self.norm_stats is not None else None
        others = {key: stats for key, stats in self.norm_table.items() if key != default}
        if others:
            save_norm_table(path / NORM_TABLE_FILE, others)
        return path

    def push_to_hub(self, repo_id: str, *, private: bool = True) -> str:
        """Upload this policy to the Hub repo ``repo_id`` (created if needed); returns the commit URL."""
        with tempfile.TemporaryDirectory() as staging:
            return push_to_hub(self.save_pretrained(staging), repo_id, private=private)

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

    def use_norm_key(self, key: str) -> None:
        """Normalize every later request with dataset ``key``'s stats (``libero_goal`` finds
        ``libero_goal_no_noops``); ``NormKeyError`` lists the keys when it is unknown."""
        resolved = resolve_norm_key(self.norm_table, key)
        self.norm_key, self.norm_stats = resolved, self.norm_table[resolved]

    def use_suite(self, suite: str, *, force: bool = False) -> None:
        """Use ``suite``'s own stats when the policy has them; else refuse stats of another
        suite (``NormKeyError``) unless ``force``."""
        key = suite_norm_key(suite, self.norm_table)
        if key is not None:
            self.use_norm_key(key)
            return
        check_suite_norm_key(suite, self.norm_key, force=force)
        if self.norm_stats is None:
            raise NormKeyError(
                f"unnorm_key: no stats for suite {suite!r} and no default; "
                f"available keys: {', '.join(sorted(self.norm_table))}"
            )

    def _stats_for(self, obs: Mapping[str, Any]) -> NormStats:
        """The stats one observation asks for (``unnorm_key``), else the policy's current ones."""
        key = obs.get(OBS_NORM_KEY)
        if key is not None:
            if not isinstance(key, str):
                raise ObservationError(f"{OBS_NORM_KEY}: expected a str, got {type(key).__name__}")
            try:
                return self.norm_table[resolve_norm_key(self.norm_table, key)]
            except NormKeyError as exc:
                raise ObservationError(str(exc)) from None
        if self.norm_stats is None:
            raise ObservationError(
                f"{OBS_NORM_KEY}: this policy holds stats for {len(self.norm_table)} datasets and none "
                f"is chosen; name one per request or when serving (available: "
                f"{', '.join(sorted(self.norm_table))})"
            )
        return self.norm_stats

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
            "norm_keys": sorted(self.norm_table),
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
        stats = [self._stats_for(obs) for obs in observations]
        inputs, padded = self._model_inputs(observations, stats)
        if self.device.type == "cuda":
            # the host-to-device copies are asynchronous: count them as preprocessing
            torch.cuda.synchronize(self.device)
        prepared = time.perf_counter()
        actions = self._predict(*inputs, padded=padded)
        predicted = time.perf_counter()
        chunks = [norm.unnormalize_actions(chunk) for norm, chunk in zip(stats, actions, strict=True)]
        done = time.perf_counter()
        self.last_timing = {
            "preprocess_ms": (prepared - start) * 1000.0,
            "model_ms": (predicted - prepared) * 1000.0,
            "postprocess_ms": (done - predicted) * 1000.0,
        }
        return chunks

    def _model_inputs(
        self, observations: Sequence[Mapping[str, Any]], stats: Sequence[NormStats]
    ) -> tuple[tuple[torch.Tensor, ...], bool]:
        """Checked observations -> ``(pixel_values, input_ids, attention_mask, proprio)`` on the
        device, and whether the prompts are padded (read on the host, so the model need not)."""
        config = self.model.config
        for obs in observations:
            check_observation(obs, image_keys=IMAGE_KEYS, state_dim=config.proprio_dim)
        pixel_values = torch.stack(
            [model_images([obs[key] for key in IMAGE_KEYS], config) for obs in observations]
        )
        proprio = torch.from_numpy(
            np.stack(
                [
                    norm.normalize_proprio(np.asarray(obs[OBS_STATE], dtype=np.float64))
                    for norm, obs in zip(stats, observations, strict=True)
                ]
            )
        )
        input_ids, attention_mask = self.tokenizer.encode_batch([obs[OBS_PROMPT] for obs in observations])
        inputs = (
            pixel_values.to(self.device),
            input_ids.to(self.device),
            attention_mask.to(self.device),
            proprio.to(self.device, torch.float32),
        )
        return inputs, not bool(attention_mask.bool().all())

    def _predict(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor,
        *,
        padded: bool,
    ) -> np.ndarray:
        """One forward pass: ``(B, chunk, action_dim)`` float32 actions in model units, on the host."""
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = self.model(pixel_values, input_ids, attention_mask, proprio, padded=padded)
        return out.actions.float().cpu().numpy()


def checkpoint_norm_keys(directory: str | Path) -> tuple[str | None, list[str]]:
    """``(default key, every key)`` of a checkpoint folder's stats, read without its weights."""
    directory = Path(directory)
    if is_released_checkpoint(directory):
        keys = sorted(read_dataset_statistics(directory))
        return (keys[0] if len(keys) == 1 else None), keys
    default = read_config(directory)[1]
    table = directory / NORM_TABLE_FILE
    keys = set(json.loads(table.read_text())) if table.is_file() else set()
    if default is not None and (directory / NORM_STATS_FILE).is_file():
        keys.add(default)
    return default, sorted(keys)


def check_checkpoint_suites(directory: str | Path, suites: Sequence[str], *, force: bool = False) -> None:
    """Refuse to evaluate ``suites`` with a checkpoint that has no stats of its own for one of
    them but a default that belongs to another suite (``NormKeyError``), unless ``force``."""
    default, keys = checkpoint_norm_keys(directory)
    for suite in suites:
        if suite_norm_key(suite, keys) is None:
            check_suite_norm_key(suite, default, force=force)


def _stored_norm_table(directory: Path, config: Any, *, released: bool) -> dict[str, NormStats]:
    """Every dataset's stats a checkpoint folder stores besides its default ``norm_stats.json``."""
    if released:
        dims = {"action_dim": config.action_dim, "proprio_dim": config.proprio_dim}
        return all_norm_stats(read_dataset_statistics(directory), **dims)
    path = directory / NORM_TABLE_FILE
    if not path.is_file():
        return {}
    try:
        return load_norm_table(path)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid normalization stats: {exc}") from exc
