"""Training configuration: one frozen dataclass and a registry of named presets."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal

from cogvla.data.augment import AugmentConfig
from cogvla.data.keypoints import KEYPOINT_SOURCES
from cogvla.data.windows import NOOP_THRESHOLD
from cogvla.train.precision import CpuAutocast

__all__ = ["TRAIN_PRESETS", "TrainConfig", "get_train_preset"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run, apart from its data and output folders."""

    # Model preset and variant (cogvla.config.get_preset); ignored when starting from --init-from.
    model_preset: str = "tiny"
    variant: str = "cogvla"
    # Optimizer steps of the whole run (the cosine schedule ends here).
    steps: int = 20_000
    # Samples per optimizer step, summed over ranks and accumulation micro-steps.
    global_batch: int = 32
    # Micro-steps per optimizer step; the per-rank micro-batch is global_batch / (grad_accum * world size).
    grad_accum: int = 1
    # Peak learning rate (CogVLA: 5e-4 at global batch 64).
    lr: float = 5e-4
    # Linear warm-up from ~0 to lr (CogVLA: 2,000 of 80,000 steps).
    warmup_steps: int = 500
    # Cosine decay floor (CogVLA: 1e-8).
    min_lr: float = 1e-8
    # torch.optim.AdamW defaults, as in the reference.
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    # Global gradient-norm clip; None = off (the reference does not clip).
    max_grad_norm: float | None = 1.0
    # A step whose loss or gradient is NaN/inf is skipped (and counted); this many in a row stop the run.
    max_nonfinite_steps: int = 5
    # bfloat16 autocast of the training step on CPU (CUDA always uses it): "auto" = where the
    # CPU computes bf16 natively (cogvla.train.precision), about 1.5x faster steps there.
    cpu_autocast: CpuAutocast = "auto"
    # torch intra-op threads of the training process; None = torch's default (one per core).
    # OpenMP's threads spin at every op's barrier, so on a CPU shared with other busy processes
    # a step with one thread per core stalls whenever one of its threads is descheduled (tiny,
    # 2 cores under load: steps 5-10x slower with 2 threads than with 1).
    intra_op_threads: int | None = None
    # ||a[:6]|| below this with an unchanged gripper marks a no-op transition (dropped).
    noop_threshold: float = NOOP_THRESHOLD
    # Training-time image augmentation; None = off (a centre crop of the same area is used instead).
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    # Weight of the auxiliary L1 loss on the next gripper-switch point (cogvla.data.keypoints,
    # cogvla.train.keypoint_loss); 0 = off. The head is dropped at export.
    keypoint_weight: float = 0.0
    # What the auxiliary head reads: "vision" tokens (the point) or the "actions" positions'
    # hidden states (its offset from the hand).
    keypoint_source: Literal["vision", "actions"] = "vision"
    # Standard deviation (metres) of Gaussian noise on the end-effector position of each training
    # sample's proprio; 0 = off. Along a demo the hand's path gives away where the target is, so
    # a policy can follow its own proprio instead of looking; noise of a few cm takes that away.
    proprio_noise: float = 0.0
    # Probability that a training sample's whole proprio is replaced by zeros; 0 = off. Where
    # noise blurs the shortcut, dropout removes it from those samples: the model must read the
    # arm's state and the target from its cameras, with weights shared with the samples that
    # keep their proprio.
    proprio_dropout: float = 0.0
    # Loss weight of the first phase_start_steps frames after each episode start and gripper
    # switch (cogvla.data.phase_weights), where only the cameras tell where to go; 1 = off.
    phase_start_weight: float = 1.0
    phase_start_steps: int = 16
    # Pin the EFA gate to one encoder stream ("dino" or "siglip") before the first step of a
    # fresh run (cogvla.efa.AggregationRouter.pin_stream); None = leave the gate as it is.
    pin_gate: Literal["dino", "siglip"] | None = None
    # Modules (dotted paths, e.g. "dino", "vision_projector.dino_proj") given a fresh
    # initialization before the first step of a fresh run: a new encoder under trained weights.
    reinit_modules: tuple[str, ...] = ()
    # Only these modules' parameters train (dotted paths; empty = every parameter); the rest
    # keep their values, e.g. to train a new encoder against a fixed policy. Full training only.
    trainable_modules: tuple[str, ...] = ()
    # Seeds the model init, the data order and the augmentation.
    seed: int = 7
    # Data-loader worker processes per rank (decode + augment off the training step).
    num_workers: int = 1
    # Write a checkpoint every this many steps (and at the end).
    save_every: int = 1_000
    # Checkpoints kept on disk (the newest ones); <= 0 keeps all.
    keep_checkpoints: int = 3
    # Log a JSONL record every this many steps.
    log_every: int = 10
    # How --init-from weights are trained: "lora" adapters on the backbone linears (a pretrained
    # VLA; the data's own normalization stats are computed), or "full": every weight, with the
    # checkpoint's stats unless keep_stats is off (continuing a small model trained earlier, e.g.
    # the embedded default).
    init_mode: Literal["lora", "full"] = "lora"
    # "full" mode: keep the checkpoint's normalization stats (same scenes, more data), or recompute
    # them from the data (new scenes whose states fall outside the checkpoint's quantiles, which
    # would otherwise be clipped to the range's edge).
    keep_stats: bool = True
    # "full" mode with kept stats: take the proprio quantiles from the data instead and rescale
    # the proprio projector's first layer so the model computes the same (cogvla.train.proprio_refit);
    # the action stats stay. For a suite that uses a small part of the checkpoint's proprio range.
    refit_proprio_stats: bool = False
    # With refit_proprio_stats: widen the fitted q01-q99 range by this fraction of itself on each
    # side, so the data's extremes (a hover above its 99th percentile) are not clipped.
    refit_proprio_margin: float = 0.0
    # LoRA on the backbone linears when fine-tuning from --init-from (CogVLA: r=32, alpha=16, dropout 0).
    lora_rank: int = 32
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "global_batch",
            "grad_accum",
            "save_every",
            "log_every",
            "lora_rank",
            "max_nonfinite_steps",
            "phase_start_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.global_batch % self.grad_accum:
            raise ValueError(
                f"TrainConfig: global_batch ({self.global_batch}) must be divisible by grad_accum ({self.grad_accum})"
            )
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(
                f"TrainConfig: expected 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}"
            )
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(
                f"TrainConfig.warmup_steps: expected 0 <= warmup_steps < steps ({self.steps}), got {self.warmup_steps}"
            )
        if self.cpu_autocast not in ("auto", "bf16", "off"):
            raise ValueError(
                f"TrainConfig.cpu_autocast: expected 'auto', 'bf16' or 'off', got {self.cpu_autocast!r}"
            )
        if self.init_mode not in ("lora", "full"):
            raise ValueError(f"TrainConfig.init_mode: expected 'lora' or 'full', got {self.init_mode!r}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ValueError(
                f"TrainConfig.intra_op_threads: expected None or >= 1, got {self.intra_op_threads}"
            )
        if not self.keypoint_weight >= 0:
            raise ValueError(f"TrainConfig.keypoint_weight: expected >= 0, got {self.keypoint_weight}")
        if self.keypoint_source not in KEYPOINT_SOURCES:
            raise ValueError(
                f"TrainConfig.keypoint_source: expected one of {KEYPOINT_SOURCES}, got {self.keypoint_source!r}"
            )
        if not self.proprio_noise >= 0:
            raise ValueError(f"TrainConfig.proprio_noise: expected >= 0 (metres), got {self.proprio_noise}")
        if not 0 <= self.proprio_dropout < 1:
            raise ValueError(
                f"TrainConfig.proprio_dropout: expected a probability in [0, 1), got {self.proprio_dropout}"
            )
        if not self.refit_proprio_margin >= 0:
            raise ValueError(
                f"TrainConfig.refit_proprio_margin: expected >= 0, got {self.refit_proprio_margin}"
            )
        if self.refit_proprio_margin > 0 and not self.refit_proprio_stats:
            raise ValueError("TrainConfig.refit_proprio_margin: needs refit_proprio_stats")
        if not self.phase_start_weight > 0:
            raise ValueError(f"TrainConfig.phase_start_weight: expected > 0, got {self.phase_start_weight}")
        if self.pin_gate not in (None, "dino", "siglip"):
            raise ValueError(
                f"TrainConfig.pin_gate: expected None, 'dino' or 'siglip', got {self.pin_gate!r}"
            )
        if self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers: expected >= 0, got {self.num_workers}")

    def micro_batch(self, world_size: int) -> int:
        """Per-rank samples per micro-step; raises if the global batch does not split evenly."""
        parts = self.grad_accum * world_size
        if self.global_batch % parts:
            raise ValueError(
                f"TrainConfig.global_batch: {self.global_batch} does not split into grad_accum ({self.grad_accum})"
                f" x world size ({world_size}) equal micro-batches"
            )
        return self.global_batch // parts


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # From scratch on scripted-oracle demos, sized for a shared 2-core CPU (the embedded default
    # trained at ~19 samples/s with 2 threads on an otherwise idle machine). One intra-op
    # thread: the other core runs the data-loader worker and the machine's other jobs.
    "tiny": TrainConfig(
        steps=4_000,
        global_batch=16,
        warmup_steps=200,
        save_every=250,
        init_mode="full",
        intra_op_threads=1,
    ),
    # The paper's LIBERO recipe (scripts-sh/finetune.sh), for LoRA fine-tuning on GPUs.
    "cogvla-libero": TrainConfig(
        model_preset="cogvla-7b",
        steps=80_000,
        global_batch=64,
        warmup_steps=2_000,
        max_grad_norm=None,
        num_workers=4,
        save_every=10_000,
        keep_checkpoints=0,
    ),
}


def get_train_preset(name: str) -> TrainConfig:
    """The preset called ``name``; an unknown name raises with the closest match."""
    if name not in TRAIN_PRESETS:
        close = difflib.get_close_matches(name, TRAIN_PRESETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"train preset: expected one of {sorted(TRAIN_PRESETS)}, got {name!r}{hint}")
    return TRAIN_PRESETS[name]
