"""The trainer end to end on a small model and synthetic demos: loss, logs, checkpoints, resume, accumulation, LoRA.

The helpers here (``small_model_config``, ``small_norm_stats``, ``write_demos``,
``small_train_config``) are shared with ``test_ddp.py``, ``test_ship_default.py`` and
``test_average.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cogvla.config import SIGLIP_MEAN, SIGLIP_STD, LLMConfig, ViTConfig, get_preset
from cogvla.data.libero_hdf5 import Episode, append_episode
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel
from cogvla.normalize import NormStats
from cogvla.tokenizer import PromptTokenizer
from cogvla.train.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state
from cogvla.train.config import TrainConfig, get_train_preset
from cogvla.train.lora import apply_lora
from cogvla.train.optim import WarmupCosine, build_optimizer
from cogvla.train.run_log import read_log
from cogvla.train.trainer import LossModule, RunExistsError, train

TASKS = (
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "pick up the black bowl next to the ramekin and place it on the plate",
)


def small_model_config():
    """``tiny`` shrunk to ~0.3 M parameters (32 px, 2 ViT and 2 LLM layers; LFP routes layer 1)."""
    vit = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 128, "patch_size": 8}
    return get_preset("tiny").replace(
        dino=ViTConfig(kind="dinov2", num_register_tokens=4, **vit),
        siglip=ViTConfig(kind="siglip", mean=SIGLIP_MEAN, std=SIGLIP_STD, **vit),
        llm=LLMConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=512),
        image_size=32,
        num_aggregation_tokens=4,
        action_head_hidden=64,
    )


def small_norm_stats(action_high: float = 1.0) -> NormStats:
    """Stats of a 7-dof action (gripper not normalized) and an 8-dim proprio state."""
    return NormStats(
        action_q01=(-1.0,) * 7,
        action_q99=(action_high,) * 7,
        action_mask=(True,) * 6 + (False,),
        proprio_q01=(-2.0,) * 8,
        proprio_q99=(2.0,) * 8,
    )


def write_demos(folder, episodes_per_task=3, length=24, size=40):
    """Demos whose arm actions are +-0.5 by task (the image's colour channel and the prompt tell
    which), gripper open, over images of a bar sweeping left to right."""
    rng = np.random.default_rng(0)
    for task, language in enumerate(TASKS):
        for _ in range(episodes_per_task):
            phase = np.linspace(0.0, 1.0, length)
            actions = np.zeros((length, 7), dtype=np.float32)
            actions[:, :6] = (0.5 if task == 0 else -0.5) + 0.01 * rng.normal(size=(length, 6))
            actions[:, 6] = -1.0
            images = np.zeros((length, size, size, 3), dtype=np.uint8)
            for t, x in enumerate((phase * (size - 4)).astype(int)):
                images[t, :, x : x + 4, task] = 255
            append_episode(
                folder / f"task{task}.hdf5",
                Episode(
                    actions=actions,
                    agentview_rgb=images,
                    eye_in_hand_rgb=images[:, ::-1].copy(),
                    ee_pos=np.stack([phase] * 3, axis=1),
                    ee_ori=np.zeros((length, 3)),
                    gripper_states=np.stack([phase, -phase], axis=1),
                    joint_states=np.zeros((length, 7)),
                    language=language,
                ),
            )
    return folder


def small_train_config(**changes):
    base = TrainConfig(
        steps=12,
        global_batch=4,
        lr=1e-3,
        warmup_steps=2,
        save_every=6,
        log_every=1,
        num_workers=0,
        keep_checkpoints=0,
        seed=3,
        # float32, so that runs meant to match (accumulation, DDP, resume) match to rounding.
        cpu_autocast="off",
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(autouse=True)
def one_thread():
    # The machine's two cores are shared; one intra-op thread avoids oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frame_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("frames")


def run(config, demos, run_dir, frame_cache, **kwargs):
    kwargs.setdefault("model_config", small_model_config())
    return train(config, [demos], run_dir, cache_root=frame_cache, progress=False, **kwargs)


def weights(checkpoint):
    return load_file(str(checkpoint / "model.safetensors"))


def test_thirty_steps_lower_the_loss_and_write_the_run_folder(demos, frame_cache, tmp_path):
    result = run(small_train_config(steps=30, save_every=15), demos, tmp_path / "run", frame_cache)
    records = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, 31))
    losses = [r["loss"] for r in records]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert all(r["samples_per_s"] > 0 for r in records)
    lrs = [r["lr"] for r in records]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert lrs[-1] < 1e-5 and all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 0
    assert result.steps == 30 and result.final_loss == pytest.approx(losses[-1])
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_000015", "step_000030"]
    exported = CogVLAModel.from_pretrained(result.checkpoint)
    assert exported.tokenizer is not None and exported.norm_stats is not None
    assert exported.norm_stats.action_mask == (True,) * 6 + (False,)
    assert result.num_episodes == 6 and result.num_samples == 6 * 24


def test_resume_reproduces_the_uninterrupted_run(demos, frame_cache, tmp_path):
    config = small_train_config(steps=8, save_every=4)
    full = tmp_path / "full"
    run(dataclasses.replace(config, num_workers=1), demos, full, frame_cache)
    # The same run "interrupted" after its step-4 checkpoint: only that checkpoint survives.
    interrupted = tmp_path / "interrupted"
    shutil.copytree(full, interrupted)
    shutil.rmtree(interrupted / "checkpoints" / "step_000008")
    assert latest_checkpoint(interrupted).name == "step_000004"
    result = run(config, demos, interrupted, frame_cache, resume=True)
    assert result.start_step == 4
    losses_full = [r["loss"] for r in read_log(full / "log.jsonl")]
    losses_resumed = [r["loss"] for r in read_log(interrupted / "log.jsonl")]
    assert len(losses_resumed) == 8
    np.testing.assert_allclose(losses_resumed, losses_full, rtol=1e-6)
    state = load_trainer_state(interrupted / "checkpoints" / "step_000008")
    assert state["step"] == 8 and state["scheduler"]["last_epoch"] == 8
    assert all(s["step"] == 8 for s in state["optimizer"]["state"].values())
    expected = weights(full / "checkpoints" / "step_000008")
    for key, value in weights(interrupted / "checkpoints" / "step_000008").items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7, msg=key)


def test_resume_refuses_a_changed_config(demos, frame_cache, tmp_path):
    config = small_train_config(steps=2, warmup_steps=1, save_every=2)
    run(config, demos, tmp_path / "run", frame_cache)
    with pytest.raises(ValueError, match=r"lr: 0.001 -> 0.002"):
        run(dataclasses.replace(config, lr=2e-3), demos, tmp_path / "run", frame_cache, resume=True)
    with pytest.raises(RunExistsError, match="pass --resume"):
        run(config, demos, tmp_path / "run", frame_cache)
    # Resuming a finished run is a no-op that reports the last checkpoint.
    again = run(config, demos, tmp_path / "run", frame_cache, resume=True)
    assert again.start_step == 2 and again.checkpoint.endswith("step_000002")


def assert_same_training(run_a, run_b, lr):
    """Two runs of the same global batches took the same steps.

    Per step, the losses and the pre-clip gradient norms agree (the norm exposes any
    mis-scaled gradient, which Adam's update would hide). After the first step the weights
    agree to float precision except at a handful of entries: Adam moves a weight by
    ``lr * g / (|g| + eps)``, so where the exact gradient is 0 (key-projection biases, to which
    attention is invariant; L1 signs that cancel in a balanced batch) rounding noise of
    ~1e-9 becomes a visible fraction of a step. A real difference in the batches would move
    most weights by ~lr.
    """
    logs = [read_log(run / "log.jsonl") for run in (run_a, run_b)]
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose(
            [r[key] for r in logs[1]], [r[key] for r in logs[0]], rtol=1e-4, err_msg=key
        )
    first_a, first_b = (weights(run / "checkpoints" / "step_000001") for run in (run_a, run_b))
    assert set(first_a) == set(first_b)
    diffs = torch.cat([(first_a[key] - first_b[key]).abs().flatten() for key in sorted(first_a)])
    assert float(diffs.max()) <= lr
    differing = int((diffs > 0.01 * lr).sum())
    assert differing <= 1e-4 * diffs.numel(), (
        f"{differing} of {diffs.numel()} weights differ by more than 1% of a step"
    )


def test_gradient_accumulation_matches_one_big_batch(demos, frame_cache, tmp_path):
    config = small_train_config(steps=2, warmup_steps=0, save_every=1, global_batch=4)
    run(config, demos, tmp_path / "one", frame_cache)
    run(dataclasses.replace(config, grad_accum=2), demos, tmp_path / "two", frame_cache)
    assert_same_training(tmp_path / "one", tmp_path / "two", config.lr)


def test_lora_fine_tunes_a_saved_model_and_merges_on_save(demos, frame_cache, tmp_path):
    config = small_model_config()
    pretrained = CogVLAModel(config)
    pretrained.save_pretrained(
        tmp_path / "pretrained", tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512)
    )
    train_config = small_train_config(steps=2, warmup_steps=1, save_every=2, lora_rank=4, lora_alpha=8)
    result = run(
        train_config,
        demos,
        tmp_path / "lora",
        frame_cache,
        model_config=None,
        init_from=tmp_path / "pretrained",
    )
    before, after = (
        weights(tmp_path / "pretrained"),
        weights(tmp_path / "lora" / "checkpoints" / "step_000002"),
    )
    assert set(after) == set(before), "the export is a plain (merged) CogVLA state dict"
    unchanged = ["llm.embed_tokens.weight", "llm.norm.weight", "dino.vit.embeddings.cls_token"]
    adapted = ["llm.layers.0.self_attn.q_proj.weight", "siglip.vit.encoder.layers.0.mlp.fc1.weight"]
    trained = [
        "action_head.model.fc2.weight",
        "llm.layers.1.router.router.weight",
        "dino.aggregation_tokens",
        "dino.film.0.scale.weight",
        "vision_projector.gate.2.weight",
        "proprio_projector.fc1.weight",
    ]
    for key in unchanged:
        assert torch.equal(after[key], before[key]), f"{key} should stay frozen"
    for key in adapted + trained:
        assert not torch.equal(after[key], before[key]), f"{key} should have changed"
    # The merged export computes what the adapter-wrapped training model computes.
    state = load_trainer_state(tmp_path / "lora" / "checkpoints" / "step_000002")
    # The resume state keeps only what trains; the frozen base comes back from --init-from.
    assert any("lora_A" in key for key in state["model"])
    assert not any(key.endswith(("embed_tokens.weight", "base_layer.weight")) for key in state["model"])
    wrapped = apply_lora(CogVLAModel.from_pretrained(tmp_path / "pretrained"), rank=4, alpha=8)
    assert not wrapped.load_state_dict(state["model"], strict=False).unexpected_keys
    merged = CogVLAModel.from_pretrained(result.checkpoint)
    batch = fake_batch(config, batch_size=2, seed=1)
    with torch.no_grad():
        expected = wrapped.eval()(
            batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["proprio"]
        )
        actual = merged(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["proprio"])
    torch.testing.assert_close(actual.actions, expected.actions, rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "lora" / "log.jsonl").read_text().splitlines()[0])["step"] == 1


def test_full_init_continues_a_bf16_model_with_its_stats(demos, frame_cache, tmp_path):
    config = small_model_config()
    stats = NormStats(
        action_q01=(-2.0,) * 7,
        action_q99=(2.0,) * 7,
        action_mask=(True,) * 6 + (False,),
        proprio_q01=(-3.0,) * 8,
        proprio_q99=(3.0,) * 8,
    )
    CogVLAModel(config).to(torch.bfloat16).save_pretrained(
        tmp_path / "shipped",
        tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512),
        norm_stats=stats,
    )
    train_config = small_train_config(steps=4, warmup_steps=1, save_every=2, init_mode="full")
    result = run(
        train_config, demos, tmp_path / "full", frame_cache, model_config=None, init_from=tmp_path / "shipped"
    )
    before, after = weights(tmp_path / "shipped"), weights(tmp_path / "full" / "checkpoints" / "step_000002")
    assert set(after) == set(before)
    assert all(tensor.dtype == torch.float32 for tensor in after.values()), "fp32 master weights"
    # Full mode trains the backbone too, where LoRA would leave these frozen.
    for key in (
        "llm.embed_tokens.weight",
        "llm.layers.0.self_attn.q_proj.weight",
        "action_head.model.fc2.weight",
    ):
        assert not torch.equal(after[key].to(torch.bfloat16), before[key]), f"{key} should have changed"
    state = load_trainer_state(tmp_path / "full" / "checkpoints" / "step_000002")
    assert not any("lora_" in key for key in state["model"])
    # The checkpoint keeps the stats its weights were trained for, not the new data's.
    assert CogVLAModel.from_pretrained(result.checkpoint).norm_stats == stats
    # A resumed run (init_from comes back from the trainer state) keeps them too.
    final = weights(tmp_path / "full" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "full" / "checkpoints" / "step_000004")
    resumed = train(
        train_config, [demos], tmp_path / "full", resume=True, cache_root=frame_cache, progress=False
    )
    assert CogVLAModel.from_pretrained(resumed.checkpoint).norm_stats == stats
    torch.testing.assert_close(weights(tmp_path / "full" / "checkpoints" / "step_000004"), final)


def test_full_init_with_new_stats_takes_the_data_quantiles_and_keeps_them_on_resume(
    demos, frame_cache, tmp_path
):
    # A checkpoint from other scenes: its proprio range would clip every state of this data.
    stale = NormStats(
        action_q01=(-2.0,) * 7,
        action_q99=(2.0,) * 7,
        action_mask=(True,) * 6 + (False,),
        proprio_q01=(50.0,) * 8,
        proprio_q99=(60.0,) * 8,
    )
    CogVLAModel(small_model_config()).save_pretrained(
        tmp_path / "shipped", tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512), norm_stats=stale
    )
    train_config = small_train_config(
        steps=4, warmup_steps=1, save_every=2, init_mode="full", keep_stats=False
    )
    result = run(
        train_config, demos, tmp_path / "full", frame_cache, model_config=None, init_from=tmp_path / "shipped"
    )
    scratch = run(small_train_config(steps=2, warmup_steps=1), demos, tmp_path / "scratch", frame_cache)
    data_stats = CogVLAModel.from_pretrained(scratch.checkpoint).norm_stats
    new_stats = CogVLAModel.from_pretrained(result.checkpoint).norm_stats
    assert new_stats == data_stats and new_stats != stale
    shutil.rmtree(tmp_path / "full" / "checkpoints" / "step_000004")
    resumed = train(
        train_config, [demos], tmp_path / "full", resume=True, cache_root=frame_cache, progress=False
    )
    assert CogVLAModel.from_pretrained(resumed.checkpoint).norm_stats == data_stats


def test_lora_trains_only_adapters_and_new_modules():
    wrapped = apply_lora(CogVLAModel(small_model_config()), rank=2, alpha=4)
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_A" in name for name in trainable)
    assert not any(name.endswith("base_layer.weight") for name in trainable)
    assert not any(name.endswith(("embed_tokens.weight", "llm.norm.weight")) for name in trainable)
    assert any(".router." in name for name in trainable)
    assert any("action_head" in name for name in trainable)


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(warmup_steps=4, total_steps=14, min_ratio=0.01)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(9) == pytest.approx(0.505)
    assert schedule(14) == pytest.approx(0.01) and schedule(20) == pytest.approx(0.01)


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible by grad_accum"):
        TrainConfig(global_batch=6, grad_accum=4)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="does not split"):
        TrainConfig(global_batch=6, grad_accum=2).micro_batch(world_size=2)
    with pytest.raises(ValueError, match=r"proprio_noise: expected >= 0 \(metres\), got -0.01"):
        TrainConfig(proprio_noise=-0.01)
    for bad in (-0.1, 1.0):
        with pytest.raises(
            ValueError, match=rf"proprio_dropout: expected a probability in \[0, 1\), got {bad}"
        ):
            TrainConfig(proprio_dropout=bad)
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        get_train_preset("tin")


def test_cpu_bf16_autocast_keeps_the_loss_curve(demos, tmp_path, frame_cache):
    curves = {}
    for setting in ("off", "bf16"):
        run(
            small_train_config(cpu_autocast=setting, steps=8, save_every=8),
            demos,
            tmp_path / setting,
            frame_cache,
        )
        curves[setting] = np.array([record["loss"] for record in read_log(tmp_path / setting / "log.jsonl")])
    assert len(curves["bf16"]) == 8 and not np.array_equal(curves["off"], curves["bf16"]), "bf16 was not used"
    # The first step differs by rounding alone; over the next optimizer steps the differences
    # compound, more on CPUs that convert to bf16 without native instructions (2.4% by step 3
    # on an AMD EPYC without avx512_bf16, 2% or less with it), and the curves agree on average.
    np.testing.assert_allclose(curves["bf16"][0], curves["off"][0], rtol=0.005)
    np.testing.assert_allclose(curves["bf16"][1:3], curves["off"][1:3], rtol=0.035)
    assert abs(curves["bf16"].mean() / curves["off"].mean() - 1) < 0.03
    with pytest.raises(
        ValueError, match="TrainConfig.cpu_autocast: expected 'auto', 'bf16' or 'off', got 'fp8'"
    ):
        small_train_config(cpu_autocast="fp8")


def test_the_step_runs_with_the_configured_threads_and_restores_the_callers(
    demos, frame_cache, tmp_path, monkeypatch
):
    seen = []
    forward = LossModule.forward

    def recording(self, batch):
        seen.append(torch.get_num_threads())
        return forward(self, batch)

    monkeypatch.setattr(LossModule, "forward", recording)
    run(
        small_train_config(steps=2, warmup_steps=1, save_every=2, intra_op_threads=2),
        demos,
        tmp_path / "run",
        frame_cache,
    )
    assert seen == [2, 2]
    # The autouse fixture's setting, which the run must not leave changed.
    assert torch.get_num_threads() == 1
    assert get_train_preset("tiny").intra_op_threads == 1
    with pytest.raises(ValueError, match="TrainConfig.intra_op_threads: expected None or >= 1, got 0"):
        small_train_config(intra_op_threads=0)


def test_adamw_is_fused_where_torch_has_the_kernel():
    on_cpu = build_optimizer([torch.nn.Parameter(torch.zeros(3))], 1e-3, 0.01, (0.9, 0.999))
    assert on_cpu.param_groups[0]["fused"] is True
    on_meta = build_optimizer([torch.nn.Parameter(torch.zeros(3, device="meta"))], 1e-3, 0.01, (0.9, 0.999))
    assert not on_meta.param_groups[0]["fused"]
