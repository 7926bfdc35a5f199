"""Training that cannot go silently wrong: LoRA from a float16 checkpoint trains in float32,
non-finite steps are skipped and counted, too many in a row stop the run, and a non-finite
checkpoint is never written (so rotation never loses the last finite one)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from test_train import (
    TASKS,
    frame_cache,
    one_thread,
    run,
    small_model_config,
    small_train_config,
    weights,
)

from cogvla.modeling import CogVLAModel
from cogvla.tokenizer import PromptTokenizer
from cogvla.train.checkpoint import (
    NonFiniteCheckpointError,
    list_checkpoints,
    load_trainer_state,
    save_checkpoint,
)
from cogvla.train.nonfinite import NonFiniteTrainingError
from cogvla.train.trainer import LossModule

__all__ = ["frame_cache", "one_thread"]  # fixtures shared with test_train


def _finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def test_lora_from_a_float16_checkpoint_trains_in_float32_and_stays_finite(demos, frame_cache, tmp_path):
    CogVLAModel(small_model_config()).to(torch.float16).save_pretrained(
        tmp_path / "fp16", tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512)
    )
    config = small_train_config(steps=4, warmup_steps=1, save_every=2, lora_rank=4, lora_alpha=8)
    result = run(
        config, demos, tmp_path / "lora", frame_cache, model_config=None, init_from=tmp_path / "fp16"
    )
    state = load_trainer_state(result.checkpoint)
    assert {t.dtype for t in state["model"].values()} == {torch.float32}, "trained weights are float32"
    optimizer_state = state["optimizer"]["state"].values()
    moments = [t for s in optimizer_state for k, t in s.items() if k.startswith("exp_avg")]
    assert moments and {t.dtype for t in moments} == {torch.float32}, "optimizer state is float32"
    losses = [json.loads(line)["loss"] for line in (tmp_path / "lora" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert result.skipped_steps == 0
    assert _finite(state["model"].values()) and _finite(weights(Path(result.checkpoint)).values())


def _poison_steps(monkeypatch, bad_steps: set[int]) -> None:
    """Make the loss NaN at the given (1-based, one micro-step each) training steps."""
    original = LossModule.forward
    calls = itertools.count(1)

    def forward(self, batch):
        loss, metrics = original(self, batch)
        return (loss * float("nan") if next(calls) in bad_steps else loss), metrics

    monkeypatch.setattr(LossModule, "forward", forward)


def test_non_finite_steps_are_skipped_and_counted(demos, frame_cache, tmp_path, monkeypatch):
    _poison_steps(monkeypatch, {2, 3})
    config = small_train_config(steps=5, warmup_steps=1, save_every=1, max_nonfinite_steps=3)
    result = run(config, demos, tmp_path / "run", frame_cache)
    assert result.skipped_steps == 2
    checkpoints = list_checkpoints(tmp_path / "run")
    assert len(checkpoints) == 5 and all(_finite(weights(c).values()) for c in checkpoints)
    # Skipped steps change nothing: the weights after step 3 are those after step 1.
    torch.testing.assert_close(weights(checkpoints[2]), weights(checkpoints[0]), rtol=0, atol=0)
    key = "action_head.model.fc2.weight"
    assert not torch.equal(weights(checkpoints[3])[key], weights(checkpoints[2])[key]), "step 4 trains again"
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert records[-1]["skipped_steps"] == 2


def test_too_many_non_finite_steps_in_a_row_stop_the_run_keeping_a_finite_checkpoint(
    demos, frame_cache, tmp_path, monkeypatch
):
    _poison_steps(monkeypatch, set(range(3, 100)))
    config = small_train_config(
        steps=8, warmup_steps=1, save_every=1, keep_checkpoints=1, max_nonfinite_steps=3
    )
    with pytest.raises(NonFiniteTrainingError, match="max_nonfinite_steps: 3 steps in a row"):
        run(config, demos, tmp_path / "run", frame_cache)
    (newest,) = list_checkpoints(tmp_path / "run")
    assert newest.name == "step_000004" and _finite(weights(newest).values())


def test_a_non_finite_checkpoint_is_refused_and_the_finite_ones_stay(tmp_path):
    def export(folder):
        (folder / "model.safetensors").write_bytes(b"")

    good = {"model": {"w": torch.ones(3)}}
    save_checkpoint(tmp_path, 1, export, good, keep=1)
    with pytest.raises(NonFiniteCheckpointError, match="step 2: 1 trained tensors hold NaN/inf"):
        broken = {"model": {"w": torch.tensor([1.0, float("nan"), 0.0])}}
        save_checkpoint(tmp_path, 2, export, broken, keep=1)
    assert [c.name for c in list_checkpoints(tmp_path)] == ["step_000001"]
    assert not any(p.name.startswith("step_000002") for p in (tmp_path / "checkpoints").iterdir())
