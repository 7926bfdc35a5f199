"""The end-to-end recipe's bookkeeping: stage commands, status.json, resume refusal, one instance."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from eval import recipe as recipe_module
from eval.recipe import Recipe, RecipeConfig, RecipeError, recipe_root, run_recipe

BOTH = ("libero_spatial", "libero_object")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $COGVLA_CACHE (multi-suite recipes put their demos in the suites' cache folders)
    and no real ``cogvla``: a test that slips past the fakes fails at once instead of simulating."""
    monkeypatch.setenv("COGVLA_CACHE", str(tmp_path / "cache"))
    refuse = [sys.executable, "-c", "raise SystemExit('the recipe tests run no real cogvla')"]
    monkeypatch.setattr(recipe_module, "_cogvla_command", lambda: refuse)
    return tmp_path / "cache"


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Record the ``cogvla`` commands the stages would run; the demos stage 'writes' a file."""
    seen: list[tuple[str, ...]] = []

    def fake(self: Recipe, *args: str) -> Any:
        seen.append(args)
        if args[0] == "demos":
            # As `cogvla demos` does: into OUT/<suite>/.
            folder = Path(_flag(args, "--out")) / _flag(args, "--suite")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "task_demo.hdf5").write_bytes(b"")
            return {"tasks": []}
        if args[0] == "eval":
            return {"overall": {}}
        return {"steps": int(args[args.index("--steps") + 1])}

    monkeypatch.setattr(Recipe, "_cogvla", fake)
    return seen


def _flag(command: tuple[str, ...], name: str) -> str:
    return command[command.index(name) + 1]


def _values(command: tuple[str, ...], name: str) -> list[str]:
    """The values of a flag that takes several (argparse nargs="+")."""
    values = []
    for arg in command[command.index(name) + 1 :]:
        if arg.startswith("--"):
            break
        values.append(arg)
    return values


def test_stages_pass_their_settings_and_record_status(tmp_path: Path, commands: list) -> None:
    config = RecipeConfig(
        suites=("libero_object",),
        tasks=(0, 2),
        per_task=5,
        demo_seed=3,
        steps=40,
        init_from="/ckpt",
        new_stats=True,
        train_threads=2,
        mesh_faces=0,
    )
    status = run_recipe(config, ("demos", "train"), tmp_path, resume=False)
    demos, train = commands
    assert _flag(demos, "--mesh-faces") == "0"
    assert demos[0] == "demos" and _flag(demos, "--tasks") == "0,2" and _flag(demos, "--seed") == "3"
    assert _flag(demos, "--suite") == "libero_object"
    assert _flag(demos, "--per-task") == "5" and _flag(demos, "--out") == str(tmp_path / "demos")
    assert train[0] == "train" and "--resume" in train
    assert _flag(train, "--init-from") == "/ckpt" and _flag(train, "--threads") == "2"
    assert "--new-stats" in train
    assert _values(train, "--data") == [str(tmp_path / "demos" / "libero_object")]
    assert _flag(train, "--steps") == "40"
    assert status["train"]["result"] == {"steps": 40}
    assert json.loads((tmp_path / "status.json").read_text())["config"]["demo_seed"] == 3


def test_training_from_scratch_passes_no_init(tmp_path: Path, commands: list) -> None:
    (tmp_path / "demos" / "libero_spatial").mkdir(parents=True)
    (tmp_path / "demos" / "libero_spatial" / "a.hdf5").write_bytes(b"")
    run_recipe(RecipeConfig(), ("train",), tmp_path, resume=False)
    assert "--init-from" not in commands[0] and "--new-stats" not in commands[0]


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
    with pytest.raises(ValueError, match="suites: expected names from .* got 'libero_nope'"):
        RecipeConfig(suites=("libero_nope",))
    with pytest.raises(ValueError, match="task 0"):
        RecipeConfig(tasks=(1, 2))
    with pytest.raises(ValueError, match="per_task"):
        RecipeConfig(per_task=0)


def test_multi_suite_demos_go_to_each_suites_own_folder(cache: Path, commands: list) -> None:
    root = recipe_root(BOTH)
    run_recipe(RecipeConfig(suites=BOTH, tasks=(0, 1)), ("demos",), root, resume=False)
    assert [command[0] for command in commands] == ["demos", "demos"]
    for command, suite in zip(commands, BOTH, strict=True):
        assert _flag(command, "--suite") == suite and _flag(command, "--tasks") == "0,1"
        # The single-suite recipe's demos folder, shared with it.
        assert _flag(command, "--out") == str(cache / "recipe" / suite / "demos")
    assert not (root / "demos").exists()


def test_multi_suite_training_gets_every_suites_demos(cache: Path, commands: list) -> None:
    root = recipe_root(BOTH)
    config = RecipeConfig(suites=BOTH, steps=40)
    run_recipe(config, ("demos", "train"), root, resume=False)
    train = commands[-1]
    assert train[0] == "train"
    assert _values(train, "--data") == [str(cache / "recipe" / suite / "demos" / suite) for suite in BOTH]
    assert _flag(train, "--out") == str(root / "run") and _flag(train, "--cache") == str(root / "frames")


def test_multi_suite_training_needs_the_demos_of_every_suite(cache: Path, commands: list) -> None:
    (cache / "recipe" / "libero_spatial" / "demos" / "libero_spatial").mkdir(parents=True)
    (cache / "recipe" / "libero_spatial" / "demos" / "libero_spatial" / "a.hdf5").write_bytes(b"")
    with pytest.raises(RecipeError, match=r"libero_object/demos/libero_object: no demos yet"):
        run_recipe(RecipeConfig(suites=BOTH), ("train",), recipe_root(BOTH), resume=False)
    assert commands == []


def test_multi_suite_evaluation_names_every_suite(
    cache: Path, commands: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = SimpleNamespace(send_signal=lambda signal: None, wait=lambda timeout: 0)
    monkeypatch.setattr(recipe_module.subprocess, "Popen", lambda *args, **kwargs: server)
    monkeypatch.setattr(recipe_module, "_wait_for_server", lambda endpoint, server: None)
    # Spares the test torch's import: only latest_checkpoint is needed.
    fake_checkpoints = SimpleNamespace(latest_checkpoint=lambda run_dir: Path(run_dir) / "step_40")
    monkeypatch.setitem(sys.modules, "cogvla.train.checkpoint", fake_checkpoints)
    run_recipe(RecipeConfig(suites=BOTH, tasks=None), ("eval",), recipe_root(BOTH), resume=False)
    (evaluation,) = commands
    assert evaluation[:2] == ("eval", "libero") and _flag(evaluation, "--suite") == ",".join(BOTH)
    # No --tasks: every task of each suite.
    assert "--tasks" not in evaluation
    # A tcp:// policy brings no protocol, so the recipe renders as its demos were rendered.
    assert _flag(evaluation, "--mesh-faces") == str(RecipeConfig().mesh_faces)


def test_main_names_the_folder_after_the_suites(
    cache: Path, commands: list, capsys: pytest.CaptureFixture[str]
) -> None:
    assert recipe_module.main(["--suite", ",".join(BOTH), "--tasks", "0", "--stage", "demos"]) == 0
    assert (cache / "recipe" / "libero_spatial+libero_object" / "status.json").is_file()
    # One suite keeps its own folder, demos inside it, as before.
    assert recipe_module.main(["--suite", "libero_object", "--tasks", "0", "--stage", "demos"]) == 0
    assert (cache / "recipe" / "libero_object" / "status.json").is_file()
    assert _flag(commands[-1], "--out") == str(cache / "recipe" / "libero_object" / "demos")


@pytest.mark.parametrize(
    ("suites", "message"),
    [
        (("libero_spatial", "libero_nope"), "suites: expected names from .* got 'libero_nope'"),
        (("libero_spatial", "libero_spatial"), "suites: expected each suite once, got libero_spatial"),
        ((), "suites: expected at least one suite"),
    ],
)
def test_bad_suite_lists_are_refused(suites: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecipeConfig(suites=suites)


def test_tasks_must_exist_in_every_suite() -> None:
    # libero_90 has tasks 0-89, libero_spatial 0-9.
    assert RecipeConfig(suites=("libero_90",), tasks=(0, 20)).tasks == (0, 20)
    with pytest.raises(ValueError, match="tasks: expected indices from 0 to 9 .* 20, which libero_spatial"):
        RecipeConfig(suites=("libero_90", "libero_spatial"), tasks=(0, 20))
    with pytest.raises(ValueError, match="tasks: expected each task once"):
        RecipeConfig(tasks=(0, 1, 1))


def test_the_command_line_refuses_a_bad_suite_list(
    cache: Path, commands: list, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        recipe_module.main(["--suite", "libero_spatial,libero_spatial", "--stage", "demos"])
    assert exit_info.value.code == 2
    assert "suites: expected each suite once" in capsys.readouterr().err
    assert commands == [] and not (cache / "recipe").exists()


def test_multi_suite_demos_wait_for_a_recipe_writing_the_same_demos(cache: Path, commands: list) -> None:
    busy = recipe_root(("libero_object",))
    with (
        recipe_module._only_instance(busy),
        pytest.raises(RecipeError, match="another recipe is running in .*libero_object"),
    ):
        run_recipe(RecipeConfig(suites=BOTH), ("demos",), recipe_root(BOTH), resume=False)
    assert commands == []


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The recipe's clock, advanced by hand."""
    now = SimpleNamespace(seconds=0.0)
    fake_time = SimpleNamespace(perf_counter=lambda: now.seconds, strftime=time.strftime)
    monkeypatch.setattr(recipe_module, "time", fake_time)
    return now


def _stage_taking(durations: list[float], clock: SimpleNamespace) -> Iterator[dict[str, Any]]:
    for seconds in durations:
        clock.seconds += seconds
        yield {}


def test_wall_s_total_adds_up_every_run_of_a_stage(
    tmp_path: Path, clock: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _stage_taking([30.0, 12.5], clock)
    monkeypatch.setattr(Recipe, "stage_demos", lambda self: next(runs))
    first = run_recipe(RecipeConfig(), ("demos",), tmp_path, resume=False)["demos"]
    second = run_recipe(RecipeConfig(), ("demos",), tmp_path, resume=True)["demos"]
    assert (first["wall_s"], first["wall_s_total"]) == (30.0, 30.0)
    assert (second["wall_s"], second["wall_s_total"]) == (12.5, 42.5)


def test_wall_s_total_counts_an_entry_from_before_it(
    tmp_path: Path, clock: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "status.json").write_text(json.dumps({"demos": {"wall_s": 7.0}}))
    runs = _stage_taking([30.0], clock)
    monkeypatch.setattr(Recipe, "stage_demos", lambda self: next(runs))
    status = run_recipe(RecipeConfig(), ("demos",), tmp_path, resume=True)
    assert status["demos"]["wall_s_total"] == 37.0
