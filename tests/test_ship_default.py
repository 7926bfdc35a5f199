"""Shipping a checkpoint as the embedded default: fp16 files, protocol, model card, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import TASKS, small_model_config, small_norm_stats

from cogvla.modeling import CogVLAModel
from cogvla.tokenizer import PromptTokenizer
from eval import ship_default
from eval.libero.fingerprint import policy_fingerprint
from eval.model_card import ShipError, load_demos_report, load_recipe
from eval.ship_default import main, ship

PROTOCOL = {
    "suites": ["libero_object", "libero_spatial"],
    "tasks": None,
    "image_size": 32,
    "fast_render": True,
}


def _task(task_id: int, name: str, seconds: float | None) -> dict:
    return {
        "task_id": task_id,
        "task_name": name,
        "demos": 50,
        "attempts": 52 + task_id,
        "oracle_success_rate": 50 / (52 + task_id),
        "mean_seconds_per_new_demo": seconds,
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small run checkpoint with the files training writes: weights, eval_protocol.json, trainer state."""
    folder = tmp_path_factory.mktemp("run") / "checkpoints" / "step_000040"
    torch.manual_seed(0)
    CogVLAModel(small_model_config()).save_pretrained(
        folder, tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512), norm_stats=small_norm_stats()
    )
    (folder / "eval_protocol.json").write_text(json.dumps(PROTOCOL))
    state = {
        "step": 40,
        "config": {"global_batch": 16, "init_mode": "full", "keep_stats": False},
        "init_from": "/prev/default",
    }
    torch.save(state, folder / "trainer_state.pt")
    log = folder.parents[1] / "log.jsonl"
    log.write_text(
        "\n".join(
            json.dumps({"step": step, "loss": 0.5 / step, "samples_per_s": 18.4}) for step in (10, 20, 40)
        )
        + "\n"
    )
    return folder


@pytest.fixture
def recipes(tmp_path) -> dict[Path, dict]:
    """An older single-suite status.json (one ``report``) and a two-suite one (``reports``)."""
    spatial = {
        "config": {"suite": "libero_spatial", "tasks": [0, 1]},
        "demos": {
            "finished_at": "2026-12-05T05:40:29",
            "wall_s": 4500.0,
            "report": {
                "suite": "libero_spatial",
                "tasks": [_task(0, "bowl_a", None), _task(1, "bowl_b", 9.6)],
            },
        },
        "history": [{"stage": "demos", "wall_s": 4500.0}],
    }
    both = {
        "config": {"suites": ["libero_spatial", "libero_object"], "tasks": None},
        "demos": {
            "finished_at": "2026-12-06T10:00:00",
            "wall_s": 30.0,
            "wall_s_total": 2430.0,
            "reports": {
                "libero_object": {"suite": "libero_object", "tasks": [_task(0, "soup", 12.0)]},
                "libero_spatial": {
                    "suite": "libero_spatial",
                    "tasks": [_task(0, "bowl_a", None), _task(1, "bowl_b", None), _task(2, "bowl_c", 20.0)],
                },
            },
        },
        "train": {"finished_at": "2026-12-06T14:00:00", "wall_s": 14_000.0},
    }
    paths = {}
    for name, status in (("libero_spatial", spatial), ("libero_spatial+libero_object", both)):
        path = tmp_path / "recipe" / name / "status.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(status))
        paths[path] = load_recipe(path)
    return paths


def _eval_dir(folder: Path, shipped: Path, results: dict[str, list[int]], **config_changes) -> Path:
    """A two-suite `cogvla eval libero` output of ``shipped``: task k of a suite succeeds 50 - 10k times."""
    per_task = [
        {
            "suite": suite,
            "task_id": task,
            "successes": 50 - 10 * task,
            "episodes": 50,
            "success_rate": (50 - 10 * task) / 50,
            "ci95": [0.5, 0.9],
            "errors": 0,
        }
        for suite, ids in results.items()
        for task in ids
    ]
    successes = sum(task["successes"] for task in per_task)
    episodes = 50 * len(per_task)
    summary = {
        "overall": {
            "successes": successes,
            "episodes": episodes,
            "success_rate": successes / episodes,
            "ci95": [0.6, 0.8],
            "errors": 0,
        },
        "per_task": per_task,
        "partial": False,
        "missing": 0,
        "policy": str(shipped),
        "policy_fingerprint": policy_fingerprint(str(shipped)),
        "run_wall_time_s": 3725.0,
    }
    config = {**PROTOCOL, "trials": 50, "workers": 2, "resume": False, **config_changes}
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.name != "README.md"
    }


def test_without_eval_the_card_says_not_evaluated_with_the_checkpoints_protocol(
    checkpoint, recipes, tmp_path
):
    out = ship(checkpoint, checkpoint.parents[1] / "log.jsonl", recipes, out=tmp_path / "default")
    assert json.loads((out / "eval_protocol.json").read_text()) == PROTOCOL
    assert CogVLAModel.from_pretrained(out).llm.embed_tokens.weight.dtype == torch.float16
    card = (out / "README.md").read_text()
    assert "Not evaluated yet" in card
    assert "suites libero_object, libero_spatial, every task of each suite, 32 px, fast_render=True" in card
    assert "Wilson" not in card
    # Data: every suite from the reports, libero_spatial from the newer (two-suite) recipe's report.
    assert "### libero_object\n" in card and "### libero_spatial\n" in card
    assert "| 2 | bowl_c | 50 | 0 | 54 | 0.93 | 20.0 |" in card
    assert "| 0 | bowl_a | 50 | 0 | 52 | 0.96 | - |" in card
    assert "200 demos of 4 tasks" in card
    # Training: the log's last line plus the trainer state's batch and starting checkpoint.
    assert "40 optimizer steps of batch 16 at about 18 samples/s; last logged L1 loss 0.0125" in card
    assert (
        "Started from the checkpoint `default` (init_mode=full, its normalization stats recomputed from these demos)"
        in card
    )
    assert "/prev" not in card


def test_card_gives_every_recipe_stage_wall_time(checkpoint, recipes, tmp_path):
    card = (
        ship(checkpoint, checkpoint.parents[1] / "log.jsonl", recipes, out=tmp_path / "d") / "README.md"
    ).read_text()
    assert "| demos | `libero_spatial` (libero_spatial) | 1 h 15 min |" in card
    # wall_s_total (every resumed run) rather than the last run's wall_s.
    assert "| demos | `libero_spatial+libero_object` (libero_spatial, libero_object) | 40 min |" in card
    assert "| train | `libero_spatial+libero_object` (libero_spatial, libero_object) | 3 h 53 min |" in card
    assert "| eval |" not in card


def _demo_set(folder: Path, file_name: str = "report.json", **report_fields) -> Path:
    """The report ``cogvla demos --seed 1`` printed for 50 more demos of libero_spatial task 1."""
    task = {
        **_task(1, "bowl_b", 10.0),
        "attempts": 60,
        "oracle_success_rate": 50 / 60,
        "new_demos": 50,
        "file": str(folder / "libero_spatial" / "bowl_b_demo"),
    }
    folder.mkdir(parents=True)
    path = folder / file_name
    report = {"suite": "libero_spatial", "tasks": [task], "wall_time_s": 600.0, **report_fields}
    path.write_text(json.dumps(report))
    return path


def _cli_argv(checkpoint: Path, out: Path) -> list[str]:
    """``python -m eval.ship_default`` arguments for the fixture checkpoint and its log."""
    return [
        "--checkpoint",
        str(checkpoint),
        "--train-log",
        str(checkpoint.parents[1] / "log.jsonl"),
        "--out",
        str(out),
    ]


def _card_with(checkpoint: Path, recipes, out: Path, path: Path, report: dict) -> str:
    """The model card shipped from the fixtures plus one demo set."""
    log = checkpoint.parents[1] / "log.jsonl"
    return (ship(checkpoint, log, recipes, out=out, demo_sets={path: report}) / "README.md").read_text()


def test_extra_demo_sets_add_to_their_tasks_and_get_a_wall_time_row(checkpoint, recipes, tmp_path):
    path = _demo_set(tmp_path / "more" / "spatial_seed1")
    card = _card_with(checkpoint, recipes, tmp_path / "default", path, load_demos_report(path))
    # Task 1: 50 + 50 demos, 53 + 60 attempts, 100/113 successful; the time is the new set's.
    assert "| 1 | bowl_b | 100 | 0 | 113 | 0.88 | 10.0 |" in card
    assert "| 0 | bowl_a | 50 | 0 | 52 | 0.96 | - |" in card
    assert "250 demos of 4 tasks" in card
    assert "| demos | `spatial_seed1` (libero_spatial) | 10 min |" in card
    argv = [*_cli_argv(checkpoint, tmp_path / "cli"), "--recipe", *map(str, recipes)]
    assert main([*argv, "--demos-report", str(path)]) == 0
    assert (tmp_path / "cli" / "README.md").read_text() == card


def test_recovery_demos_are_counted_and_weigh_oracle_success_by_the_attempts_it_acted_in(
    checkpoint, recipes, tmp_path
):
    path = _demo_set(
        tmp_path / "more" / "recover", "spatial_report.json", rollin_policy="run4", handover_steps=[8, 128]
    )
    report = load_demos_report(path)
    # 70 attempts: the learned policy solved 20 before the handover, the oracle 50 of the other 50.
    report["tasks"][0].update(attempts=70, solved_before_handover=20, oracle_success_rate=1.0)
    card = _card_with(checkpoint, recipes, tmp_path / "d", path, report)
    # With the recipe's 50 demos of 53 attempts: 100 demos, 123 attempts, 100/103 for the oracle.
    assert "| 1 | bowl_b | 100 | 50 | 123 | 0.97 | 10.0 |" in card
    assert "| 0 | bowl_a | 50 | 0 | 52 | 0.96 | - |" in card
    # A folder may hold several reports (one per suite or top-up): each row names its file.
    assert "| demos | `recover/spatial_report` (libero_spatial, recovery) | 10 min |" in card


def test_a_recovery_set_the_learner_solved_entirely_adds_attempts_but_no_oracle_rate(
    checkpoint, recipes, tmp_path
):
    path = _demo_set(tmp_path / "more" / "solved", rollin_policy="run4", handover_steps=[8, 128])
    report = load_demos_report(path)
    report["tasks"][0].update(demos=0, attempts=5, solved_before_handover=5, oracle_success_rate=None)
    card = _card_with(checkpoint, recipes, tmp_path / "d", path, report)
    # The recipe's 50 of 53 stand alone for the oracle's rate.
    assert "| 1 | bowl_b | 50 | 0 | 58 | 0.94 | 10.0 |" in card


def test_a_demo_set_replaces_a_recipes_report_of_the_same_folder(checkpoint, recipes, tmp_path):
    path = _demo_set(tmp_path / "more" / "rerun")
    report = load_demos_report(path)
    # No folder named, like the recipe fixtures' rows: the same folder as theirs.
    del report["tasks"][0]["file"]
    card = _card_with(checkpoint, recipes, tmp_path / "d", path, report)
    assert "| 1 | bowl_b | 50 | 0 | 60 | 0.83 | 10.0 |" in card
    assert "200 demos of 4 tasks" in card


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[]", "expected a JSON object with the suite's name in suite"),
        ('{"suite": "libero_spatial", "tasks": []}', "expected a number in wall_time_s"),
        ('{"suite": "libero_spatial", "wall_time_s": 5, "tasks": []}', "expected a non-empty list in tasks"),
    ],
)
def test_bad_demos_report_is_named_with_what_was_expected(tmp_path, content, expected):
    path = tmp_path / "report.json"
    path.write_text(content)
    with pytest.raises(ShipError, match=f"demos report {path}: {expected}"):
        load_demos_report(path)


def test_ship_evaluate_ship_gives_identical_files_and_a_per_suite_card(checkpoint, recipes, tmp_path):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    first = _files(ship(checkpoint, log, recipes, out=out))
    evaluated = _eval_dir(tmp_path / "eval", out, {"libero_object": [0, 1], "libero_spatial": [0, 1, 2]})
    second = _files(ship(checkpoint, log, recipes, evaluated, out=out))
    assert first == second
    assert "model.safetensors" in second
    card = (out / "README.md").read_text().split("## Measured success\n")[1]
    assert (
        "`MUJOCO_GL=egl cogvla eval libero --suite libero_object,libero_spatial --trials 50` on the fixed init states"
        in card
    )
    assert "250 episodes in 1 h 02 min with 2 simulator workers." in card
    assert "not checked against these files" not in card
    object_table = card.split("### libero_object\n")[1].split("###")[0]
    assert "| 0 | 50/50 | 1.00 | [0.50, 0.90] |" in object_table
    assert "| 1 | 40/50 | 0.80 | [0.50, 0.90] |" in object_table
    assert "Mean of the per-task rates 0.90; lowest: task 1 (0.80)." in object_table
    spatial_table = card.split("### libero_spatial\n")[-1]
    assert "| 2 | 30/50 | 0.60 | [0.50, 0.90] |" in spatial_table
    assert "Mean of the per-task rates 0.80; lowest: task 2 (0.60)." in spatial_table
    assert "Overall: 210/250 = 0.84 (95% Wilson [0.60, 0.80]); mean of the per-task rates 0.84." in card


def test_a_run_with_failure_modes_gives_the_card_a_column_of_them(checkpoint, recipes, tmp_path):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out)
    evaluated = _eval_dir(tmp_path / "eval", out, {"libero_spatial": [0, 1, 2]})
    summary = json.loads((evaluated / "summary.json").read_text())
    modes = [{}, {"dropped": 2, "missed_grasp": 8}, {"never_closed": 20}]
    for task, counts in zip(summary["per_task"], modes, strict=True):
        task["failure_modes"] = counts
    (evaluated / "summary.json").write_text(json.dumps(summary))
    card = (ship(checkpoint, log, recipes, evaluated, out=out) / "README.md").read_text()
    table = card.split("## Measured success\n")[1]
    assert "| task | successes/episodes | rate | 95% Wilson | failures by mode |" in table
    assert "| 0 | 50/50 | 1.00 | [0.50, 0.90] | - |" in table
    assert "| 1 | 40/50 | 0.80 | [0.50, 0.90] | missed_grasp 8, dropped 2 |" in table
    assert "| 2 | 30/50 | 0.60 | [0.50, 0.90] | never_closed 20 |" in table


def test_eval_command_names_only_departures_from_the_shipped_protocol(checkpoint, recipes, tmp_path):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out)
    evaluated = _eval_dir(
        tmp_path / "eval", out, {"libero_spatial": [0, 1]}, suites=["libero_spatial"], tasks=[0, 1], trials=5
    )
    ship(checkpoint, log, recipes, evaluated, out=out)
    card = (out / "README.md").read_text()
    assert "`MUJOCO_GL=egl cogvla eval libero --suite libero_spatial --trials 5 --tasks 0,1`" in card
    # The shipped protocol stays the checkpoint's, whatever subset was evaluated.
    assert json.loads((out / "eval_protocol.json").read_text()) == PROTOCOL


def test_a_gripper_close_delay_is_shipped_in_the_protocol_and_named_on_the_card(
    checkpoint, recipes, tmp_path
):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out, gripper_close_delay=3)
    assert json.loads((out / "eval_protocol.json").read_text()) == {**PROTOCOL, "gripper_close_delay": 3}
    assert "fast_render=True, mesh_faces=0, gripper_close_delay=3." in (out / "README.md").read_text()
    # Evaluated with the delay switched off, the card's command says so.
    evaluated = _eval_dir(tmp_path / "eval", out, {"libero_spatial": [0]}, gripper_close_delay=0)
    ship(checkpoint, log, recipes, evaluated, out=out, gripper_close_delay=3)
    assert "--trials 50 --gripper-close-delay 0`" in (out / "README.md").read_text()
    with pytest.raises(ShipError, match="gripper_close_delay: expected >= 0, got -1"):
        ship(checkpoint, log, recipes, out=out, gripper_close_delay=-1)


def test_a_shipped_default_changes_its_close_delay_in_place_and_is_measured_again(
    checkpoint, recipes, tmp_path
):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out)
    old_eval = _eval_dir(tmp_path / "old", out, {"libero_spatial": [0]})
    ship(checkpoint, log, recipes, old_eval, out=out)
    card = (out / "README.md").read_text()
    weights = (out / "model.safetensors").read_bytes()

    assert main(["--default", str(out), "--gripper-close-delay", "2"]) == 0
    assert json.loads((out / "eval_protocol.json").read_text()) == {**PROTOCOL, "gripper_close_delay": 2}
    changed = (out / "README.md").read_text()
    # The old figures measured other files: only the measured section changes, to "not evaluated".
    assert changed.split("## Measured success")[0] == card.split("## Measured success")[0]
    assert "Not evaluated yet" in changed and "40/50" not in changed
    assert (out / "model.safetensors").read_bytes() == weights

    # An evaluation of the files before the change is refused and leaves the protocol as it was.
    with pytest.raises(ShipError, match="is not the shipped files'"):
        ship_default.update_default(out, old_eval, gripper_close_delay=1)
    assert json.loads((out / "eval_protocol.json").read_text())["gripper_close_delay"] == 2

    new_eval = _eval_dir(tmp_path / "new", out, {"libero_spatial": [0, 1]}, gripper_close_delay=2)
    assert main(["--default", str(out), "--eval", str(new_eval)]) == 0
    measured = (out / "README.md").read_text().split("## Measured success\n")[1]
    assert "| 1 | 40/50 | 0.80 | [0.50, 0.90] |" in measured
    assert "gripper_close_delay=2): 100 episodes" in measured


def test_requery_before_grasp_travels_in_the_protocol_and_is_switched_in_place(checkpoint, recipes, tmp_path):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out, requery_before_grasp=True)
    assert json.loads((out / "eval_protocol.json").read_text()) == {
        **PROTOCOL,
        "requery_before_grasp": True,
    }
    assert "mesh_faces=0, requery_before_grasp=True." in (out / "README.md").read_text()
    # Evaluated without it, the card's command names the departure.
    evaluated = _eval_dir(tmp_path / "eval", out, {"libero_spatial": [0]}, requery_before_grasp=False)
    ship(checkpoint, log, recipes, evaluated, out=out, requery_before_grasp=True)
    assert "--trials 50 --no-requery-before-grasp`" in (out / "README.md").read_text()

    assert main(["--default", str(out), "--no-requery-before-grasp"]) == 0
    assert json.loads((out / "eval_protocol.json").read_text()) == PROTOCOL
    assert "Not evaluated yet" in (out / "README.md").read_text()
    assert main(["--default", str(out), "--requery-before-grasp", "--gripper-close-delay", "1"]) == 0
    assert json.loads((out / "eval_protocol.json").read_text()) == {
        **PROTOCOL,
        "gripper_close_delay": 1,
        "requery_before_grasp": True,
    }
    with pytest.raises(ShipError, match="nothing to change"):
        ship_default.update_default(out, requery_before_grasp=True)


def test_update_default_needs_a_shipped_default_and_something_to_change(checkpoint, recipes, tmp_path):
    with pytest.raises(ShipError, match="expected a shipped default with eval_protocol.json and README.md"):
        ship_default.update_default(tmp_path)
    out = ship(checkpoint, checkpoint.parents[1] / "log.jsonl", recipes, out=tmp_path / "default")
    card = (out / "README.md").read_text()
    for delay in (None, 0):
        with pytest.raises(ShipError, match="nothing to change; pass --gripper-close-delay, "):
            ship_default.update_default(out, gripper_close_delay=delay)
    assert (out / "README.md").read_text() == card


def test_a_two_suite_checkpoint_ships_as_the_default_of_one_suite(checkpoint, recipes, tmp_path, monkeypatch):
    monkeypatch.setattr(ship_default, "DEFAULTS_DIR", tmp_path / "defaults")
    log = checkpoint.parents[1] / "log.jsonl"
    out = ship(checkpoint, log, recipes, suites=("libero_object",))
    assert out == tmp_path / "defaults" / "libero_object"
    assert json.loads((out / "eval_protocol.json").read_text()) == {**PROTOCOL, "suites": ["libero_object"]}
    card = (out / "README.md").read_text()
    assert card.startswith("# Embedded default policy of `libero_object`: CogVLA")
    # The data section still tells every demo the weights were trained on.
    assert "### libero_spatial\n| task | name | demos" in card
    evaluated = _eval_dir(tmp_path / "eval", out, {"libero_object": [0, 1]}, suites=["libero_object"])
    ship(checkpoint, log, recipes, evaluated, suites=("libero_object",))
    assert (
        "`MUJOCO_GL=egl cogvla eval libero --suite libero_object --trials 50` on the fixed"
        in (out / "README.md").read_text()
    )
    # Each suite keeps one default: a second one for libero_object is refused, the first kept.
    before = _files(out)
    with pytest.raises(
        ShipError, match="suite: libero_object already has the embedded default libero_object"
    ):
        ship(checkpoint, log, recipes)
    assert _files(out) == before and not (tmp_path / "defaults" / "libero_object+libero_spatial").exists()
    assert ship(checkpoint, log, recipes, suites=("libero_spatial",)).name == "libero_spatial"
    with pytest.raises(
        ShipError, match=r"suite: expected some of the checkpoint's suites .* got \['libero_goal'\]"
    ):
        ship(checkpoint, log, recipes, suites=("libero_goal",))
    assert main(["--checkpoint", str(checkpoint), "--train-log", str(log), "--suite", "libero_10"]) == 2


def test_eval_of_other_weights_is_refused_and_the_default_kept(checkpoint, recipes, tmp_path):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out)
    before = _files(out)
    other = tmp_path / "other"
    CogVLAModel.from_pretrained(checkpoint).save_pretrained(other)
    evaluated = _eval_dir(tmp_path / "eval", other, {"libero_spatial": [0]})
    with pytest.raises(ShipError, match=r"policy_fingerprint .* is not the shipped files'"):
        ship(checkpoint, log, recipes, evaluated, out=out)
    assert _files(out) == before and not (tmp_path / "default.partial").exists()


def test_an_eval_on_randomized_resets_is_refused_for_the_card(checkpoint, recipes, tmp_path):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out)
    before = _files(out)
    validation = _eval_dir(tmp_path / "eval", out, {"libero_spatial": [0]}, resets="randomized")
    with pytest.raises(
        ShipError, match="resets: a card's figures come from the benchmark's fixed init states"
    ):
        ship(checkpoint, log, recipes, validation, out=out)
    assert _files(out) == before


def test_too_large_checkpoint_is_refused_and_the_default_kept(checkpoint, recipes, tmp_path, monkeypatch):
    log, out = checkpoint.parents[1] / "log.jsonl", tmp_path / "default"
    ship(checkpoint, log, recipes, out=out)
    monkeypatch.setattr(ship_default, "_MAX_BYTES", 1000)
    with pytest.raises(ShipError, match="checkpoint: expected at most 1000 bytes to embed"):
        ship(checkpoint, log, recipes, out=out)
    assert (out / "README.md").is_file() and not (tmp_path / "default.partial").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read it .*expected a recipe's status.json"),
        ("{not json", "not valid JSON .*expected a recipe's status.json"),
        ("[1, 2]", "expected a JSON object with at least one of the stages demos, train, eval"),
        ('{"train": {"finished_at": "x"}}', "train: expected a number in wall_s_total or wall_s"),
        (
            '{"demos": {"wall_s": 1, "report": {"suite": "libero_spatial", "tasks": [{"task_id": 3}]}}}',
            "demos report of libero_spatial: task 3: missing task_name, demos, attempts",
        ),
    ],
)
def test_bad_recipe_file_is_named_with_what_was_expected(tmp_path, capsys, content, expected):
    path = tmp_path / "status.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ShipError, match=f"recipe {path}: {expected}"):
        load_recipe(path)
    argv = ["--checkpoint", str(tmp_path), "--train-log", str(tmp_path / "log.jsonl"), "--recipe", str(path)]
    assert main(argv) == 2


def test_recipes_without_demos_reports_are_refused(checkpoint, tmp_path):
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"train": {"wall_s": 10.0}}))
    with pytest.raises(ShipError, match="has a demos report"):
        ship(checkpoint, tmp_path / "log.jsonl", {path: load_recipe(path)}, out=tmp_path / "default")


def test_a_fine_tune_on_demo_sets_alone_ships_without_a_recipe(checkpoint, tmp_path):
    path = _demo_set(tmp_path / "more" / "recover", rollin_policy="run5", handover_steps=[0, 144])
    assert main([*_cli_argv(checkpoint, tmp_path / "cli"), "--demos-report", str(path)]) == 0
    card = (tmp_path / "cli" / "README.md").read_text()
    assert "This run trained on 50 demos of 1 tasks" in card
    assert "| 1 | bowl_b | 50 | 50 | 60 | 0.83 | 10.0 |" in card
    assert "Per extra demo set (its last run):\n" in card
    assert "| demos | `recover` (libero_spatial, recovery) | 10 min |" in card
    assert "Started from the checkpoint `default`" in card


def test_a_ship_with_no_demos_at_all_is_refused_and_says_what_to_pass(checkpoint, tmp_path, caplog):
    assert main(_cli_argv(checkpoint, tmp_path / "cli")) == 2
    assert "a recipe with a demos stage (run its demos stage) or a --demos-report" in caplog.text
    assert not (tmp_path / "cli").exists()
