"""The training loop: data, model, optimizer, checkpoints, logs; single process or DDP.

A run folder holds::

    RUN/log.jsonl                      one JSON record per logged step (loss, lr, samples/s, ...)
    RUN/loss_curve.png                 redrawn at every checkpoint and at the end
    RUN/checkpoints/step_XXXXXX/       save_pretrained files + trainer_state.pt

``train`` is deterministic given its config: the data order and augmentation are functions
of (seed, step) (``StepSampler``), the model init of the seed, and a resumed run restores
the optimizer, scheduler and RNG states, so it continues the uninterrupted loss curve.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from cogvla.config import CogVLAConfig, get_preset
from cogvla.data.dataset import DemoDataset, compute_norm_stats, sample_crop_area, select_training_frames
from cogvla.data.frame_cache import FrameCache, find_demo_files
from cogvla.data.loading import load_demo_frames
from cogvla.data.phase_weights import phase_start_weights
from cogvla.data.sampler import StepSampler
from cogvla.eval_protocol import protocol_of_demos, write_eval_protocol
from cogvla.modeling import CogVLAModel
from cogvla.normalize import NormStats
from cogvla.tokenizer import PromptTokenizer, libero_instructions
from cogvla.train import checkpoint as ckpt
from cogvla.train.config import TrainConfig
from cogvla.train.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    init_distributed,
    mean_across_ranks,
    shutdown,
)
from cogvla.train.keypoint_loss import KeypointHead, keypoint_targets
from cogvla.train.lora import apply_lora, merged_model
from cogvla.train.module_selection import reinitialize, train_only
from cogvla.train.nonfinite import NonFiniteStepGuard
from cogvla.train.optim import build_optimizer, build_scheduler
from cogvla.train.precision import step_autocast
from cogvla.train.proprio_refit import refit_proprio_stats
from cogvla.train.run_log import RunLog, plot_loss_curve
from cogvla.train.threads import intra_op_threads

__all__ = ["RunExistsError", "TrainResult", "train"]

logger = logging.getLogger(__name__)

# trainer_state fields that may change between a run and its resumption without changing the math.
_RESUMABLE_CHANGES = frozenset(
    {
        "num_workers",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "max_nonfinite_steps",
        "cpu_autocast",
        "intra_op_threads",
    }
)


class RunExistsError(FileExistsError):
    """The run folder already has checkpoints and ``resume`` was not requested."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Summary of a finished ``train`` call."""

    steps: int
    start_step: int
    final_loss: float | None
    samples_per_s: float | None
    checkpoint: str
    num_samples: int
    num_episodes: int
    # Steps whose update was skipped for a non-finite loss or gradient.
    skipped_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LossModule(nn.Module):
    """Routes ``forward`` to the loss computation, so DDP's gradient hooks see all of it.

    Shapes: the ``DemoDataset`` batch (``pixel_values (B, 2, 3, H, W)``, ``input_ids (B, T)``,
    ``attention_mask (B, T)``, ``proprio (B, 8)``, ``actions (B, chunk, 7)``, and with a
    ``keypoint_head`` also ``keypoint (B, 3)``) -> scalar loss ``()`` and a dict of float metrics.
    """

    def __init__(
        self, model: nn.Module, keypoint_head: KeypointHead | None = None, keypoint_weight: float = 0.0
    ) -> None:
        super().__init__()
        self.model = model
        self.keypoint_head = keypoint_head
        self.keypoint_weight = keypoint_weight

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.keypoint_head is None:
            return self.model.compute_loss(batch)
        out = self.model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["proprio"])
        loss, metrics = CogVLAModel.action_loss(out, batch["actions"], batch.get("weight"))
        keypoint = self.keypoint_head.loss(out, batch["keypoint"])
        metrics["keypoint_l1"] = keypoint.item()
        return loss + self.keypoint_weight * keypoint, metrics


def train(
    config: TrainConfig,
    data: Sequence[str | Path],
    run_dir: str | Path,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    model_config: CogVLAConfig | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a policy on LIBERO-schema demos and checkpoint it under ``run_dir``.

    Args:
        config: the run's hyperparameters.
        data: demo files or folders (searched recursively for ``*.hdf5``).
        run_dir: output folder (log, plot, checkpoints).
        resume: continue from the newest checkpoint in ``run_dir`` (a fresh start when there is none).
        init_from: a ``save_pretrained`` folder to fine-tune with LoRA instead of training from scratch.
        model_config: overrides ``config.model_preset`` (from-scratch runs only).
        cache_root: where decoded frames are cached (default ``cogvla.paths.cache_dir("frames")``).
        progress: show a progress bar on rank 0.
    """
    info = init_distributed()
    try:
        with intra_op_threads(config.intra_op_threads):
            return _run(
                config, data, Path(run_dir), resume, init_from, model_config, cache_root, progress, info
            )
    finally:
        shutdown()


@dataclasses.dataclass
class _Run:
    """A set-up training run: what the step loop and checkpointing work on."""

    config: TrainConfig
    info: DistInfo
    run_dir: Path
    init_from: str | Path | None
    trainable: nn.Module
    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dataset: DemoDataset
    tokenizer: PromptTokenizer
    stats: NormStats
    num_episodes: int
    start_step: int
    resumed_from: Path | None
    skipped_steps: int = 0
    # The auxiliary gripper-switch head (config.keypoint_weight > 0); trained, never exported.
    keypoint_head: KeypointHead | None = None
    # Suites, tasks, camera size and rendering of the demos; None when they do not agree on one.
    eval_protocol: dict[str, Any] | None = None

    @property
    def lora(self) -> bool:
        return _uses_lora(self.config, self.init_from)

    def export(self, folder: Path) -> None:
        """Write the serving checkpoint (LoRA merged) into ``folder``."""
        plain = merged_model(self.trainable) if self.lora else self.trainable
        plain.save_pretrained(
            folder, tokenizer=self.tokenizer, norm_stats=self.stats, norm_key=self.run_dir.name
        )
        if self.eval_protocol is not None:
            write_eval_protocol(folder, self.eval_protocol)

    def save(self, step: int) -> Path:
        """Checkpoint ``step`` (a collective: every rank calls it) and redraw the loss curve."""
        rng = all_gather_objects(_rng_state(), self.info)
        path = ckpt.checkpoint_dir(self.run_dir, step)
        if self.info.is_main:
            trainer_state = {
                "step": step,
                "model": _training_weights(self.trainable, lora=self.lora),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng,
                "sampler": {"seed": self.config.seed, "num_samples": len(self.dataset)},
                "config": dataclasses.asdict(self.config),
                "init_from": str(self.init_from) if self.init_from else None,
                "world_size": self.info.world_size,
                "skipped_steps": self.skipped_steps,
                "keypoint_head": None if self.keypoint_head is None else self.keypoint_head.state_dict(),
            }
            path = ckpt.save_checkpoint(
                self.run_dir, step, self.export, trainer_state, self.config.keep_checkpoints
            )
            plot_loss_curve(self.run_dir / "log.jsonl", self.run_dir / "loss_curve.png")
        barrier(self.info)
        return path


def _run(
    config: TrainConfig,
    data: Sequence[str | Path],
    run_dir: Path,
    resume: bool,
    init_from: str | Path | None,
    model_config: CogVLAConfig | None,
    cache_root: str | Path | None,
    progress: bool,
    info: DistInfo,
) -> TrainResult:
    run = _set_up(config, data, run_dir, resume, init_from, model_config, cache_root, progress, info)
    micro_batch = config.micro_batch(info.world_size)
    if info.is_main:
        logger.info(
            "training %s: %d samples from %d episodes, steps %d -> %d, global batch %d "
            "(%d ranks x %d micro-steps x %d), %d trainable params",
            run_dir,
            len(run.dataset),
            run.num_episodes,
            run.start_step,
            config.steps,
            config.global_batch,
            info.world_size,
            config.grad_accum,
            micro_batch,
            sum(p.numel() for p in run.parameters),
        )
    sampler = StepSampler(
        num_samples=len(run.dataset),
        micro_batch=micro_batch,
        grad_accum=config.grad_accum,
        world_size=info.world_size,
        rank=info.rank,
        seed=config.seed,
        start_step=run.start_step,
        end_step=config.steps,
    )
    batches = _batches(run.dataset, sampler, config.num_workers, config.seed, info.device)
    last_loss, last_rate, last_checkpoint = _train_steps(run, batches, progress)
    if info.is_main and run.start_step < config.steps:
        plot_loss_curve(run_dir / "log.jsonl", run_dir / "loss_curve.png")
    final = last_checkpoint or run.resumed_from
    return TrainResult(
        steps=config.steps,
        start_step=run.start_step,
        final_loss=last_loss,
        samples_per_s=last_rate,
        checkpoint=str(final) if final else "",
        num_samples=len(run.dataset),
        num_episodes=run.num_episodes,
        skipped_steps=run.skipped_steps,
    )


def _set_up(
    config: TrainConfig,
    data: Sequence[str | Path],
    run_dir: Path,
    resume: bool,
    init_from: str | Path | None,
    model_config: CogVLAConfig | None,
    cache_root: str | Path | None,
    progress: bool,
    info: DistInfo,
) -> _Run:
    """Model, data, optimizer and schedule, fresh or restored from the newest checkpoint."""
    checkpoint = _checkpoint_to_resume(run_dir, resume)
    state = ckpt.load_trainer_state(checkpoint) if checkpoint else None
    if state is not None:
        _check_same_run(state, config, init_from, info)
        init_from = state["init_from"]

    if config.refit_proprio_stats and (
        init_from is None or _uses_lora(config, init_from) or not config.keep_stats
    ):
        raise ValueError(
            "refit_proprio_stats: needs init_from with init_mode 'full' and the checkpoint's stats kept"
        )
    torch.manual_seed(config.seed)
    model, tokenizer, stats = _build_model(config, init_from, model_config, checkpoint)
    if state is None:
        # A resumed run has these in its weights already.
        reinitialize(model, config.reinit_modules, config.seed)
        if config.pin_gate is not None:
            if not model.config.efa:
                raise ValueError("pin_gate: the model has no EFA gate to pin (its config has efa off)")
            model.vision_projector.pin_stream(config.pin_gate)
    frames = load_demo_frames(data, model.config.image_size, cache_root, progress and info.is_main)
    selection = select_training_frames(frames, model.config.chunk_size, config.noop_threshold)
    if stats is None:
        stats = compute_norm_stats(frames, selection)
    elif state is None and config.refit_proprio_stats:
        fitted = compute_norm_stats(frames, selection).with_proprio_margin(config.refit_proprio_margin)
        stats = refit_proprio_stats(model.proprio_projector.fc1, stats, fitted)
    if tokenizer is None:
        tokenizer = _shared_tokenizer(run_dir, frames.languages, model.config.llm.vocab_size, info)
    keypoint_head = KeypointHead(config.keypoint_source, model.config) if config.keypoint_weight > 0 else None
    dataset = DemoDataset(
        frames,
        selection,
        stats,
        tokenizer.encode_batch,
        config.augment,
        crop_area=sample_crop_area(model.config),
        keypoints=None if keypoint_head is None else keypoint_targets(frames, keypoint_head.source),
        proprio_noise=config.proprio_noise,
        proprio_dropout=config.proprio_dropout,
        weights=_phase_weights(frames, config),
    )
    if state is not None and state["sampler"]["num_samples"] != len(dataset):
        raise ValueError(
            f"resume: the checkpoint was trained on {state['sampler']['num_samples']} samples, the data now "
            f"gives {len(dataset)}; resume with the same --data"
        )

    lora = _uses_lora(config, init_from)
    if config.trainable_modules:
        if lora:
            raise ValueError("trainable_modules: LoRA decides what trains; use init_mode 'full'")
        train_only(model, config.trainable_modules)
    trainable: nn.Module = apply_lora(model, config.lora_rank, config.lora_alpha) if lora else model
    trainable.to(info.device).train()
    if info.device.type != "cuda":
        # Without CUDA's autocast a half-precision frozen base cannot feed float32 trainables.
        trainable.float()
    if state is not None:
        _load_training_weights(trainable, state["model"], lora=lora)
    parameters = [p for p in trainable.parameters() if p.requires_grad]
    if keypoint_head is not None:
        keypoint_head.to(info.device).train()
        if state is not None:
            keypoint_head.load_state_dict(state["keypoint_head"])
        parameters += list(keypoint_head.parameters())
    optimizer = build_optimizer(parameters, config.lr, config.weight_decay, config.betas)
    scheduler = build_scheduler(optimizer, config.warmup_steps, config.steps, config.lr, config.min_lr)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"], info)
    else:
        # Every rank seeded alike for the (identical) init above; training randomness may differ per rank.
        torch.manual_seed(config.seed + info.rank)
    return _Run(
        config=config,
        info=info,
        run_dir=run_dir,
        init_from=init_from,
        trainable=trainable,
        parameters=parameters,
        optimizer=optimizer,
        scheduler=scheduler,
        dataset=dataset,
        tokenizer=tokenizer,
        stats=stats,
        num_episodes=len(frames.episode_starts),
        start_step=state["step"] if state else 0,
        resumed_from=checkpoint,
        skipped_steps=state.get("skipped_steps", 0) if state else 0,
        keypoint_head=keypoint_head,
        eval_protocol=protocol_of_demos(find_demo_files(data)),
    )


def _train_steps(
    run: _Run, batches: Iterator[dict[str, torch.Tensor]], progress: bool
) -> tuple[float | None, float | None, Path | None]:
    """Steps ``start_step..steps-1``; returns the last logged loss and samples/s and the last checkpoint."""
    config, info = run.config, run.info
    module = LossModule(run.trainable, run.keypoint_head, config.keypoint_weight)
    # find_unused_parameters: some weights get no gradient by construction (e.g. DINOv2's mask token).
    wrapped: nn.Module = (
        DistributedDataParallel(module, find_unused_parameters=True) if info.distributed else module
    )
    autocast = partial(step_autocast, config.cpu_autocast, info.device)
    log = RunLog(run.run_dir / "log.jsonl", run.start_step) if info.is_main else None
    bar = tqdm(
        total=config.steps,
        initial=run.start_step,
        desc="train",
        unit="step",
        disable=not (progress and info.is_main),
    )
    window_loss, window_steps, window_start = torch.zeros((), device=info.device), 0, time.perf_counter()
    last_loss = last_rate = last_checkpoint = None
    guard = NonFiniteStepGuard(config.max_nonfinite_steps)
    for step in range(run.start_step, config.steps):
        run.optimizer.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {}
        step_loss = torch.zeros((), device=info.device)
        for micro in range(config.grad_accum):
            last_micro = micro == config.grad_accum - 1
            # Gradients are all-reduced once per step, on the last micro-step.
            sync = nullcontext() if last_micro or not info.distributed else wrapped.no_sync()
            with sync:
                with autocast():
                    loss, micro_metrics = wrapped(next(batches))
                (loss / config.grad_accum).backward()
            step_loss += loss.detach() / config.grad_accum
            for key, value in micro_metrics.items():
                metrics[key] = metrics.get(key, 0.0) + value / config.grad_accum
        # An infinite clip only measures the norm, which the finiteness check needs.
        grad_norm = torch.nn.utils.clip_grad_norm_(run.parameters, config.max_grad_norm or math.inf)
        step_lr = run.optimizer.param_groups[0]["lr"]
        done = step + 1
        if guard.allows(done, step_loss, grad_norm, info):
            run.optimizer.step()
            window_loss += step_loss
            window_steps += 1
        else:
            run.skipped_steps += 1
        # A skipped step still uses its place in the schedule, so the LR follows the step count.
        run.scheduler.step()
        if window_steps and (done % config.log_every == 0 or done == config.steps):
            last_loss = float(mean_across_ranks(window_loss / window_steps, info))
            last_rate = window_steps * config.global_batch / (time.perf_counter() - window_start)
            if log is not None:
                record = {
                    "step": done,
                    "loss": last_loss,
                    "lr": step_lr,
                    "samples_per_s": last_rate,
                    "grad_norm": float(grad_norm),
                    "skipped_steps": run.skipped_steps,
                }
                record.update(metrics)
                log.write(record)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{step_lr:.2e}", sps=f"{last_rate:.1f}")
            window_loss.zero_()
            window_steps, window_start = 0, time.perf_counter()
        bar.update()
        if done % config.save_every == 0 or done == config.steps:
            last_checkpoint = run.save(done)
            if info.is_main:
                logger.info(
                    "step %d/%d: loss %s, %s samples/s, saved %s",
                    done,
                    config.steps,
                    "?" if last_loss is None else f"{last_loss:.4f}",
                    "?" if last_rate is None else f"{last_rate:.1f}",
                    last_checkpoint,
                )
            if window_steps == 0:
                # Checkpoint time is not training throughput.
                window_start = time.perf_counter()
    bar.close()
    return last_loss, last_rate, last_checkpoint


def _phase_weights(frames: FrameCache, config: TrainConfig) -> np.ndarray | None:
    """Per-frame loss weights of the config's phase starts; None when they are off."""
    if config.phase_start_weight == 1:
        return None
    return phase_start_weights(
        frames.actions[:, 6],
        frames.episode_starts,
        frames.episode_lengths,
        config.phase_start_steps,
        config.phase_start_weight,
    )


def _uses_lora(config: TrainConfig, init_from: str | Path | None) -> bool:
    return init_from is not None and config.init_mode == "lora"


def _training_weights(module: nn.Module, lora: bool) -> dict[str, torch.Tensor]:
    """What resuming needs of the weights: all of them, or for LoRA only the trained ones
    (the frozen base is rebuilt from --init-from, which keeps a 7B run's state small)."""
    state = module.state_dict()
    if not lora:
        return state
    trained = {name for name, parameter in module.named_parameters() if parameter.requires_grad}
    return {key: value for key, value in state.items() if key in trained}


def _load_training_weights(module: nn.Module, weights: dict[str, torch.Tensor], lora: bool) -> None:
    result = module.load_state_dict(weights, strict=not lora)
    trained = {name for name, parameter in module.named_parameters() if parameter.requires_grad}
    missing = sorted(trained & set(result.missing_keys))
    if result.unexpected_keys or missing:
        raise ValueError(
            f"resume: the checkpoint's weights do not fit this run (missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )


def _checkpoint_to_resume(run_dir: Path, resume: bool) -> Path | None:
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is not None and not resume:
        raise RunExistsError(
            f"{run_dir}: already has checkpoints (newest {latest.name}); pass --resume or a new --out"
        )
    if resume and latest is None:
        logger.info("%s: no checkpoint to resume from; starting from step 0", run_dir)
    return latest if resume else None


def _check_same_run(
    state: dict[str, Any], config: TrainConfig, init_from: str | Path | None, info: DistInfo
) -> None:
    # A field missing from an older checkpoint had its default value there.
    saved = {**dataclasses.asdict(TrainConfig()), **state["config"]}
    current = dataclasses.asdict(config)
    changed = sorted(key for key in current if key not in _RESUMABLE_CHANGES and saved[key] != current[key])
    if changed:
        details = ", ".join(f"{key}: {saved[key]!r} -> {current[key]!r}" for key in changed)
        raise ValueError(f"resume: the config differs from the checkpoint's ({details}); use a new --out")
    if init_from is not None and str(init_from) != str(state["init_from"]):
        raise ValueError(
            f"resume: --init-from {init_from} differs from the checkpoint's {state['init_from']}"
        )
    if state["world_size"] != info.world_size:
        logger.warning(
            "resume: world size %d differs from the checkpoint's %d; the data order is the same, RNG streams are not",
            info.world_size,
            state["world_size"],
        )


def _build_model(
    config: TrainConfig,
    init_from: str | Path | None,
    model_config: CogVLAConfig | None,
    checkpoint: Path | None,
) -> tuple[CogVLAModel, PromptTokenizer | None, NormStats | None]:
    """The model to train, plus the tokenizer and stats it must keep (None = derive from the data)."""
    if init_from is not None:
        if model_config is not None:
            raise ValueError(
                "model_config: cannot be combined with init_from (the checkpoint has its own config)"
            )
        model = CogVLAModel.from_pretrained(init_from)
        if model.tokenizer is None:
            raise FileNotFoundError(
                f"{init_from}: has no tokenizer/ folder; cannot fine-tune without its tokenizer"
            )
        tokenizer = model.tokenizer
        if config.init_mode == "full":
            # Every weight gets optimizer updates: keep fp32 master weights (a shipped file may be bf16).
            model = model.float()
            if checkpoint is None and config.keep_stats:
                # The weights were trained to predict actions in these units.
                return model, tokenizer, model.norm_stats
    else:
        model = CogVLAModel(model_config or get_preset(config.model_preset, variant=config.variant))
        tokenizer = None
    if checkpoint is None:
        return model, tokenizer, None
    # A resumed run keeps the tokenizer and stats it started with.
    exported = CogVLAModel.from_pretrained(checkpoint)
    if exported.config != model.config:
        raise ValueError(f"resume: {checkpoint} holds a different model config than this run builds")
    return model, exported.tokenizer, exported.norm_stats


def _shared_tokenizer(
    run_dir: Path, languages: Sequence[str], vocab_size: int, info: DistInfo
) -> PromptTokenizer:
    """A BPE on every LIBERO instruction plus the data's, trained once by rank 0 and loaded by all."""
    folder = run_dir / "tokenizer"
    if info.is_main:
        try:
            known = set(libero_instructions())
        except ImportError:
            logger.warning("libero is not installed: the tokenizer learns the data's instructions only")
            known = set()
        PromptTokenizer.train(sorted(known | set(languages)), vocab_size=vocab_size).save(folder)
    barrier(info)
    return PromptTokenizer.load(folder)


def _batches(
    dataset: DemoDataset, sampler: StepSampler, num_workers: int, seed: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    loader = DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        pin_memory=device.type == "cuda",
        # A private generator: creating the loader must not consume the global RNG the model uses.
        generator=torch.Generator().manual_seed(seed),
    )
    for batch in loader:
        yield {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _worker_init(_: int) -> None:
    # Workers only gather and augment; one thread each leaves the cores to the training step.
    torch.set_num_threads(1)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _restore_rng(states: list[dict[str, Any]], info: DistInfo) -> None:
    state = states[info.rank] if info.rank < len(states) else states[0]
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
