"""The end-to-end recipe's bookkeeping: stage commands, status.json, resume refusal, one instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval import recipe as recipe_module
from eval.recipe import Recipe, RecipeConfig, RecipeError, run_recipe


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Record the ``cogvla`` commands the stages would run; the demos stage 'writes' a file."""
    seen: list[tuple[str, ...]] = []

    def fake(self: Recipe, *args: str) -> Any:
        seen.append(args)
        if args[0] == "demos":
            out = Path(args[args.index("--out") + 1])
            (out / "libero_spatial").mkdir(parents=True, exist_ok=True)
            (out / "libero_spatial" / "task_demo.hdf5").write_bytes(b"")
            return {"tasks": []}
        return {"steps": int(args[args.index("--steps") + 1])}

    monkeypatch.setattr(Recipe, "_cogvla", fake)
    return seen


def _flag(command: tuple[str, ...], name: str) -> str:
    return command[command.index(name) + 1]


def test_stages_pass_their_settings_and_record_status(tmp_path: Path, commands: list) -> None:
    config = RecipeConfig(
        suite="libero_object",
        tasks=(0, 2),
        per_task=5,
        demo_seed=3,
        steps=40,
        init_from="/ckpt",
        train_threads=2,
    )
    status = run_recipe(config, ("demos", "train"), tmp_path, resume=False)
    demos, train = commands
    assert demos[0] == "demos" and _flag(demos, "--tasks") == "0,2" and _flag(demos, "--seed") == "3"
    assert _flag(demos, "--suite") == "libero_object"
    assert _flag(demos, "--per-task") == "5" and _flag(demos, "--out") == str(tmp_path / "demos")
    assert train[0] == "train" and "--resume" in train
    assert _flag(train, "--init-from") == "/ckpt" and _flag(train, "--threads") == "2"
    assert _flag(train, "--data") == str(tmp_path / "demos") and _flag(train, "--steps") == "40"
    assert status["train"]["result"] == {"steps": 40}
    assert json.loads((tmp_path / "status.json").read_text())["config"]["demo_seed"] == 3


def test_training_from_scratch_passes_no_init(tmp_path: Path, commands: list) -> None:
    (tmp_path / "demos").mkdir()
    (tmp_path / "demos" / "a.hdf5").write_bytes(b"")
    run_recipe(RecipeConfig(), ("train",), tmp_path, resume=False)
    assert "--init-from" not in commands[0]


def test_a_finished_folder_needs_resume(tmp_path: Path, commands: list) -> None:
    run_recipe(RecipeConfig(), ("demos",), tmp_path, resume=False)
    with pytest.raises(RecipeError, match="--resume"):
        run_recipe(RecipeConfig(), ("demos",), tmp_path, resume=False)
    status = run_recipe(RecipeConfig(per_task=7), ("demos",), tmp_path, resume=True)
    # Both runs of the stage stay on record, each with the settings it ran with.
    assert [run["config"]["per_task"] for run in status["history"]] == [100, 7]


def test_train_before_demos_is_refused(tmp_path: Path, commands: list) -> None:
    with pytest.raises(RecipeError, match="no demos yet"):
        run_recipe(RecipeConfig(), ("train",), tmp_path, resume=False)
    assert commands == []


def test_a_second_instance_is_refused(tmp_path: Path, commands: list) -> None:
    with recipe_module._only_instance(tmp_path), pytest.raises(RecipeError, match="another recipe"):
        run_recipe(RecipeConfig(), ("demos",), tmp_path, resume=True)


def test_config_requires_a_suite_task_zero_and_positive_counts() -> None:
    with pytest.raises(ValueError, match="suite: expected one of .* got 'libero_nope'"):
        RecipeConfig(suite="libero_nope")
    with pytest.raises(ValueError, match="task 0"):
        RecipeConfig(tasks=(1, 2))
    with pytest.raises(ValueError, match="per_task"):
        RecipeConfig(per_task=0)
