"""Offline (open-loop) scoring of a checkpoint on demos, per task."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import TASKS, small_model_config, small_train_config, write_demos

from cogvla.cli import main as cogvla_main
from cogvla.modeling import CogVLAModel
from cogvla.tokenizer import PromptTokenizer
from cogvla.train.trainer import train
from eval.offline import offline_errors


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Demos, an untrained checkpoint of the small model, and the same model after 30 steps."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("offline")
    demos = write_demos(root / "demos")
    untrained = root / "untrained"
    CogVLAModel(small_model_config()).save_pretrained(
        untrained, tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512)
    )
    config = small_train_config(steps=30, save_every=30, log_every=10, lr=3e-3)
    result = train(
        config, [demos], root / "run", init_from=untrained, cache_root=root / "frames", progress=False
    )
    return demos, root, untrained, result.checkpoint


def test_reports_every_task_and_training_lowers_the_error(scored, tmp_path) -> None:
    demos, root, untrained, trained_checkpoint = scored
    with pytest.raises(ValueError, match="norm_stats"):
        offline_errors(untrained, [demos], cache_root=root / "frames")
    trained = CogVLAModel.from_pretrained(trained_checkpoint)
    # The untrained weights, scored in the same action units as the trained ones.
    CogVLAModel.from_pretrained(untrained).save_pretrained(
        tmp_path / "untrained", tokenizer=trained.tokenizer, norm_stats=trained.norm_stats
    )
    before = offline_errors(tmp_path / "untrained", [demos], per_task=20, batch=8, cache_root=root / "frames")
    after = offline_errors(trained_checkpoint, [demos], per_task=20, batch=8, cache_root=root / "frames")
    assert [row["task"] for row in after["tasks"]] == sorted(TASKS)
    for row in after["tasks"]:
        assert row["samples"] == 20 and row["episodes"] == 3
        assert len(row["l1_per_dim"]) == 7 and 0.0 <= row["gripper_command_error_rate"] <= 1.0
        # The demos never switch the gripper, so there is no switch to time.
        assert row["gripper_switches"] == 0 and row["gripper_switch_row_error"] is None
    assert after["overall"]["samples"] == 40
    assert after["overall"]["l1"] < 0.7 * before["overall"]["l1"]
    # The demos keep the gripper open throughout; the untrained head commands "close".
    rates = [[row["gripper_command_error_rate"] for row in report["tasks"]] for report in (before, after)]
    assert rates[0] == [1.0, 1.0] and sum(rates[1]) < sum(rates[0])


def test_cli_writes_json_and_refuses_a_non_checkpoint(scored, tmp_path, capsys) -> None:
    demos, root, _, trained_checkpoint = scored
    out = tmp_path / "offline.json"
    argv = ["eval", "offline", "--checkpoint", str(trained_checkpoint), "--data", str(demos)]
    assert cogvla_main([*argv, "--per-task", "4", "--cache", str(root / "frames"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["overall"]["samples"] == 8
    assert cogvla_main(["eval", "offline", "--checkpoint", "oracle", "--data", str(demos)]) == 2


@pytest.mark.parametrize(
    ("cut", "deaf", "hearing"),
    [
        ("vision", "change_if_images_swapped", "change_if_proprio_swapped"),
        ("proprio", "change_if_proprio_swapped", "change_if_images_swapped"),
    ],
)
def test_swapping_an_input_the_model_cannot_see_moves_nothing(scored, tmp_path, cut, deaf, hearing) -> None:
    _, root, _, trained_checkpoint = scored
    model = CogVLAModel.from_pretrained(trained_checkpoint)
    # Zero the last layer that carries the input into the LLM: the model no longer sees it.
    if cut == "vision":
        last = [model.vision_projector.dino_proj.fc2, model.vision_projector.siglip_proj.fc2]
    else:
        last = [model.proprio_projector.fc2]
    with torch.no_grad():
        for layer in last:
            layer.weight.zero_()
            layer.bias.zero_()
    model.save_pretrained(tmp_path / cut, tokenizer=model.tokenizer, norm_stats=model.norm_stats)
    demos = root / "demos"
    report = offline_errors(tmp_path / cut, [demos], per_task=8, batch=4, cache_root=root / "frames")
    for row in report["tasks"]:
        assert row[deaf] == 0.0
        assert row[hearing] > 1e-4


def test_a_batch_of_one_has_no_neighbour_to_swap_with(scored) -> None:
    demos, root, _, trained_checkpoint = scored
    report = offline_errors(trained_checkpoint, [demos], per_task=3, batch=1, cache_root=root / "frames")
    assert all(row["change_if_images_swapped"] is None for row in report["tasks"])
