"""Each suite has one embedded default: lookup, `cogvla eval libero` without --policy, serve's choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cogvla import paths
from cogvla.cli import main
from cogvla.paths import default_checkpoint_dir, default_checkpoints
from eval import cli as eval_cli

SHIPPED = sorted(set(default_checkpoints().values()))


def _default(root: Path, suites: list[str], image_size: int) -> Path:
    """A copy of a shipped default that claims ``suites`` at ``image_size`` px."""
    folder = root / "+".join(suites)
    shutil.copytree(SHIPPED[0], folder)
    protocol = {"suites": suites, "tasks": None, "image_size": image_size, "fast_render": True}
    (folder / "eval_protocol.json").write_text(json.dumps(protocol))
    return folder


@pytest.fixture
def two_defaults(tmp_path, monkeypatch) -> dict[str, Path]:
    if not SHIPPED:
        pytest.skip("no embedded checkpoint to copy")
    root = tmp_path / "defaults"
    made = {
        "libero_object": _default(root, ["libero_object"], 96),
        "libero_spatial": _default(root, ["libero_spatial"], 128),
    }
    (root / "notes").mkdir()  # folders without a checkpoint are not defaults
    monkeypatch.setattr(paths, "DEFAULTS_DIR", root)
    return made


def test_each_suite_maps_to_its_default_and_spatial_is_the_first(two_defaults):
    assert default_checkpoints() == two_defaults
    assert list(default_checkpoints()) == ["libero_spatial", "libero_object"]
    assert default_checkpoint_dir("libero_object") == two_defaults["libero_object"]
    assert default_checkpoint_dir("libero_goal") is None
    assert default_checkpoint_dir() == two_defaults["libero_spatial"]


def test_a_package_without_defaults_asks_for_a_checkpoint(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(paths, "DEFAULTS_DIR", tmp_path / "none")
    assert default_checkpoint_dir() is None and default_checkpoints() == {}
    assert main(["eval", "libero", "--out", str(tmp_path / "out")]) == 2
    assert "suite: this package has no embedded default yet; name a checkpoint" in caplog.text
    assert not (tmp_path / "out").exists()


def test_two_defaults_claiming_one_suite_is_an_error(two_defaults, tmp_path):
    _default(tmp_path / "defaults", ["libero_object", "libero_spatial"], 128)
    with pytest.raises(
        ValueError, match="both libero_object and libero_object\\+libero_spatial cover libero_object"
    ):
        default_checkpoints()


def _recorded_runs(monkeypatch) -> list:
    configs = []

    def fake_evaluate(config):
        configs.append(config)
        return 0, {"overall": {"episodes": 1}, "suites": list(config.suites)}

    monkeypatch.setattr(eval_cli, "_evaluate_quietly", fake_evaluate)
    return configs


def test_eval_without_policy_runs_every_default_on_its_suites_with_its_protocol(
    two_defaults, tmp_path, monkeypatch, capsys
):
    configs = _recorded_runs(monkeypatch)
    assert main(["eval", "libero", "--trials", "2", "--out", str(tmp_path / "out")]) == 0
    runs = [(Path(c.policy), c.suites, Path(c.out), c.image_size, c.trials) for c in configs]
    assert runs == [
        (two_defaults["libero_spatial"], ("libero_spatial",), tmp_path / "out" / "libero_spatial", 128, 2),
        (two_defaults["libero_object"], ("libero_object",), tmp_path / "out" / "libero_object", 96, 2),
    ]
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "libero_object": {"overall": {"episodes": 1}, "suites": ["libero_object"]},
        "libero_spatial": {"overall": {"episodes": 1}, "suites": ["libero_spatial"]},
    }


def test_eval_suite_picks_that_suites_default_and_flags_still_win(two_defaults, tmp_path, monkeypatch):
    configs = _recorded_runs(monkeypatch)
    out = tmp_path / "out"
    assert main(["eval", "libero", "--suite", "libero_object", "--image-size", "64", "--out", str(out)]) == 0
    [config] = configs
    assert (Path(config.policy), config.suites, config.image_size) == (
        two_defaults["libero_object"],
        ("libero_object",),
        64,
    )
    assert Path(config.out) == out / "libero_object"


def test_a_defaults_gripper_close_delay_travels_with_it_and_the_flag_wins(
    two_defaults, tmp_path, monkeypatch
):
    protocol_path = two_defaults["libero_spatial"] / "eval_protocol.json"
    protocol_path.write_text(json.dumps({**json.loads(protocol_path.read_text()), "gripper_close_delay": 3}))
    configs = _recorded_runs(monkeypatch)
    assert main(["eval", "libero", "--trials", "1", "--out", str(tmp_path / "a")]) == 0
    assert [(c.suites, c.gripper_close_delay) for c in configs] == [
        (("libero_spatial",), 3),
        (("libero_object",), 0),
    ]
    configs.clear()
    flags = ["--suite", "libero_spatial", "--gripper-close-delay", "0", "--out", str(tmp_path / "b")]
    assert main(["eval", "libero", *flags]) == 0
    assert [c.gripper_close_delay for c in configs] == [0]


def test_a_defaults_requery_before_grasp_travels_with_it_and_the_flag_wins(
    two_defaults, tmp_path, monkeypatch
):
    protocol_path = two_defaults["libero_spatial"] / "eval_protocol.json"
    protocol = json.loads(protocol_path.read_text())
    protocol_path.write_text(json.dumps({**protocol, "requery_before_grasp": True}))
    configs = _recorded_runs(monkeypatch)
    assert main(["eval", "libero", "--trials", "1", "--out", str(tmp_path / "a")]) == 0
    assert [(c.suites, c.requery_before_grasp) for c in configs] == [
        (("libero_spatial",), True),
        (("libero_object",), False),
    ]
    configs.clear()
    flags = ["--suite", "libero_spatial", "--no-requery-before-grasp", "--out", str(tmp_path / "b")]
    assert main(["eval", "libero", *flags]) == 0
    assert [c.requery_before_grasp for c in configs] == [False]


def test_eval_of_a_suite_no_default_covers_is_one_clear_error(two_defaults, tmp_path, monkeypatch, caplog):
    configs = _recorded_runs(monkeypatch)
    assert (
        main(["eval", "libero", "--suite", "libero_spatial,libero_goal", "--out", str(tmp_path / "o")]) == 2
    )
    assert configs == []
    assert (
        "suite: no embedded default covers libero_goal (they cover libero_object, libero_spatial)"
        in caplog.text
    )


def test_a_stopped_default_run_stops_the_rest(two_defaults, tmp_path, monkeypatch):
    calls = []

    def interrupted(config):
        calls.append(config.suites)
        return 130, None

    monkeypatch.setattr(eval_cli, "_evaluate_quietly", interrupted)
    assert main(["eval", "libero", "--out", str(tmp_path / "out")]) == 130
    assert calls == [("libero_spatial",)]


def test_serve_picks_the_suites_default_and_refuses_an_uncovered_suite(two_defaults):
    from deploy.serve_cli import embedded_default

    assert embedded_default(None) == two_defaults["libero_spatial"]
    assert embedded_default("libero_object") == two_defaults["libero_object"]
    with pytest.raises(
        ValueError, match="suite: no embedded default covers libero_10 \\(they cover libero_object"
    ):
        embedded_default("libero_10")


def _demo_file(path: Path, suite: str, task: str) -> None:
    """A file with just the LIBERO attributes that say which suite and task its demos are of."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        data = handle.create_group("data")
        data.attrs["bddl_file_name"] = f"bddl_files/{suite}/{task}.bddl"
        data.attrs["env_args"] = json.dumps({"env_kwargs": {"camera_heights": 128}})


def test_offline_scoring_without_checkpoint_takes_the_demos_suites_default(two_defaults, tmp_path):
    from envs.suites import get_task

    objects, spatial = tmp_path / "object", tmp_path / "spatial"
    _demo_file(objects / "a.hdf5", "libero_object", get_task("libero_object", 3).name)
    _demo_file(spatial / "b.hdf5", "libero_spatial", get_task("libero_spatial", 0).name)
    assert eval_cli._default_for_demos([str(objects)]) == str(two_defaults["libero_object"])
    assert eval_cli._default_for_demos([str(spatial)]) == str(two_defaults["libero_spatial"])
    with pytest.raises(
        ValueError, match="--checkpoint: the demos are not of suites one embedded default covers"
    ):
        eval_cli._default_for_demos([str(objects), str(spatial)])
