"""Re-fitting a checkpoint's proprio stats to new data keeps what the model computes."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from test_train import TASKS, run, small_model_config, small_norm_stats, small_train_config, weights

from cogvla.action_head import ProprioProjector
from cogvla.modeling import CogVLAModel
from cogvla.tokenizer import PromptTokenizer
from cogvla.train.proprio_refit import refit_proprio_stats
from cogvla.train.trainer import train


def stats_with(proprio_q01, proprio_q99):
    """``test_train``'s small stats with this proprio range."""
    return dataclasses.replace(
        small_norm_stats(), proprio_q01=tuple(proprio_q01), proprio_q99=tuple(proprio_q99)
    )


def projected(projector, stats, proprio):
    with torch.no_grad():
        return projector(torch.from_numpy(stats.normalize_proprio(proprio)))


def test_the_projector_gives_the_same_token_under_the_refitted_stats():
    torch.manual_seed(0)
    projector = ProprioProjector(8, 16)
    wide = stats_with([-3.0] * 8, [3.0] * 8)
    narrow = stats_with(np.linspace(-1.0, 0.0, 8), np.linspace(0.5, 2.0, 8))
    proprio = np.random.default_rng(0).uniform(0.0, 0.5, size=(5, 8))  # inside both ranges
    before = projected(projector, wide, proprio)
    refitted = refit_proprio_stats(projector.fc1, wide, narrow)
    torch.testing.assert_close(projected(projector, refitted, proprio), before, rtol=0, atol=1e-5)
    assert refitted.proprio_q01 == narrow.proprio_q01 and refitted.proprio_q99 == narrow.proprio_q99
    assert refitted.action_q01 == wide.action_q01 and refitted.action_q99 == wide.action_q99
    # The narrow range spreads the same states over more of [-1, 1].
    spread = np.ptp(narrow.normalize_proprio(proprio), axis=0) / np.ptp(
        wide.normalize_proprio(proprio), axis=0
    )
    assert (spread > 1.5).all()
    with pytest.raises(ValueError, match="proprio stats: 8 dims, but the projector takes 4"):
        refit_proprio_stats(ProprioProjector(4, 16).fc1, wide, narrow)


def test_a_margin_widens_each_proprio_range_about_its_centre_and_leaves_actions_alone():
    stats = stats_with(np.linspace(-1.0, 0.0, 8), np.linspace(0.5, 2.0, 8))
    wider = stats.with_proprio_margin(0.1)
    lo, hi = np.asarray(stats.proprio_q01), np.asarray(stats.proprio_q99)
    np.testing.assert_allclose(np.asarray(wider.proprio_q99) - np.asarray(wider.proprio_q01), 1.2 * (hi - lo))
    np.testing.assert_allclose(
        (np.asarray(wider.proprio_q01) + np.asarray(wider.proprio_q99)) / 2, (lo + hi) / 2
    )
    assert (wider.action_q01, wider.action_q99) == (stats.action_q01, stats.action_q99)
    assert stats.with_proprio_margin(0.0) == stats
    # A state 5% of the range above q99 is clipped by the fitted stats, not by the widened ones.
    above = hi + 0.05 * (hi - lo)
    assert np.allclose(stats.normalize_proprio(above), 1.0)
    assert (wider.normalize_proprio(above) < 0.99).all()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"refit_proprio_margin": 0.1}, "refit_proprio_margin: needs refit_proprio_stats"),
        ({"refit_proprio_stats": True, "refit_proprio_margin": -0.1}, "refit_proprio_margin: expected >= 0"),
    ],
)
def test_a_margin_needs_a_refit_and_must_not_be_negative(changes, match):
    with pytest.raises(ValueError, match=match):
        small_train_config(**changes)


def test_the_cli_refuses_a_margin_without_a_refit_before_making_the_run(demos, tmp_path, capsys):
    from cogvla.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(demos), "--out", str(out), "--refit-proprio-margin", "0.1"]) != 0
    assert "refit_proprio_margin: needs refit_proprio_stats" in capsys.readouterr().err
    assert not out.exists()


def test_a_refitted_fine_tune_starts_from_the_same_function_and_resumes(demos, tmp_path):
    frame_cache = tmp_path / "frames"
    shipped_stats = stats_with([-3.0] * 8, [3.0] * 8)
    shipped = CogVLAModel(small_model_config())
    shipped.save_pretrained(
        tmp_path / "shipped",
        tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512),
        norm_stats=shipped_stats,
    )
    # A learning rate of 1e-8 leaves the weights where the refit put them.
    config = small_train_config(
        steps=4,
        warmup_steps=1,
        save_every=2,
        init_mode="full",
        refit_proprio_stats=True,
        refit_proprio_margin=0.05,
        lr=1e-8,
        min_lr=1e-8,
    )
    result = run(
        config, demos, tmp_path / "refit", frame_cache, model_config=None, init_from=tmp_path / "shipped"
    )
    scratch = run(small_train_config(steps=1, warmup_steps=0), demos, tmp_path / "scratch", frame_cache)
    data_stats = CogVLAModel.from_pretrained(scratch.checkpoint).norm_stats
    refitted = CogVLAModel.from_pretrained(result.checkpoint)
    stats = refitted.norm_stats
    wanted = data_stats.with_proprio_margin(0.05)
    assert (stats.proprio_q01, stats.proprio_q99) == (wanted.proprio_q01, wanted.proprio_q99)
    assert (stats.action_q01, stats.action_q99) == (shipped_stats.action_q01, shipped_stats.action_q99)
    proprio = np.random.default_rng(1).uniform(
        np.asarray(stats.proprio_q01), np.asarray(stats.proprio_q99), size=(6, 8)
    )
    torch.testing.assert_close(
        projected(refitted.proprio_projector.float(), stats, proprio),
        projected(shipped.proprio_projector, shipped_stats, proprio),
        rtol=0,
        atol=1e-4,
    )
    final = weights(tmp_path / "refit" / "checkpoints" / "step_000004")
    shutil.rmtree(tmp_path / "refit" / "checkpoints" / "step_000004")
    resumed = train(config, [demos], tmp_path / "refit", resume=True, cache_root=frame_cache, progress=False)
    assert CogVLAModel.from_pretrained(resumed.checkpoint).norm_stats == stats
    torch.testing.assert_close(weights(tmp_path / "refit" / "checkpoints" / "step_000004"), final)


def test_refit_needs_a_full_fine_tune_that_keeps_the_stats(demos, tmp_path):
    frame_cache = tmp_path / "frames"
    match = "refit_proprio_stats: needs init_from with init_mode 'full'"
    with pytest.raises(ValueError, match=match):
        run(small_train_config(refit_proprio_stats=True), demos, tmp_path / "scratch", frame_cache)
    CogVLAModel(small_model_config()).save_pretrained(
        tmp_path / "shipped",
        tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512),
        norm_stats=stats_with([-3.0] * 8, [3.0] * 8),
    )
    for changes in ({"init_mode": "lora"}, {"init_mode": "full", "keep_stats": False}):
        with pytest.raises(ValueError, match=match):
            run(
                small_train_config(refit_proprio_stats=True, **changes),
                demos,
                tmp_path / "run",
                frame_cache,
                model_config=None,
                init_from=tmp_path / "shipped",
            )
