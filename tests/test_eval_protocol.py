"""Checkpoints carry the eval protocol of their demos, and ``cogvla eval libero --policy
RUN/checkpoints/step_X`` evaluates with it (suites, tasks, camera size, rendering)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train import TASKS, frame_cache, one_thread, run, small_train_config

import eval.cli
from cogvla.cli import main
from cogvla.data.libero_hdf5 import Episode, append_episode
from cogvla.eval_protocol import EVAL_PROTOCOL_FILE, protocol_of_demos

__all__ = ["frame_cache", "one_thread"]  # fixtures shared with test_train

SIZE = 40


def _write_generated_demos(
    folder: Path, fast_render: bool = True, size: int = SIZE, mesh_faces: int = 0
) -> Path:
    """Two libero_spatial tasks' demos with the attributes ``cogvla demos`` records."""
    from envs.suites import get_task

    rng = np.random.default_rng(0)
    for task_id, language in enumerate(TASKS):
        task = get_task("libero_spatial", task_id)
        bddl = f"libero/libero/bddl_files/libero_spatial/{task.name}.bddl"
        env_args = {
            "env_name": task.name,
            "env_kwargs": {"bddl_file_name": bddl, "camera_heights": size, "camera_widths": size},
            "generation": {"policy": "oracle", "fast_render": fast_render, "mesh_faces": mesh_faces},
        }
        for _ in range(2):
            length = 20
            images = rng.integers(0, 255, (length, size, size, 3), dtype=np.uint8)
            actions = np.zeros((length, 7), np.float32)
            actions[:, :6] = rng.normal(0, 0.3, (length, 6))
            actions[:, 6] = -1
            episode = Episode(
                actions=actions,
                agentview_rgb=images,
                eye_in_hand_rgb=images,
                ee_pos=rng.normal(size=(length, 3)),
                ee_ori=np.zeros((length, 3)),
                gripper_states=np.zeros((length, 2)),
                joint_states=np.zeros((length, 7)),
                language=language,
                problem_name=task.name,
                bddl_file=bddl,
            )
            append_episode(folder / f"{task.name}_demo.hdf5", episode, env_args)
    return folder


def test_training_records_the_demos_protocol_and_eval_uses_it(tmp_path, frame_cache, monkeypatch, caplog):
    demos = _write_generated_demos(tmp_path / "demos", mesh_faces=5000)
    config = small_train_config(steps=2, warmup_steps=1, save_every=2)
    result = run(config, demos, tmp_path / "run", frame_cache)
    protocol = json.loads((Path(result.checkpoint) / EVAL_PROTOCOL_FILE).read_text())
    assert protocol == {
        "suites": ["libero_spatial"],
        "tasks": [0, 1],
        "image_size": SIZE,
        "fast_render": True,
        "mesh_faces": 5000,
    }

    evaluated = []
    monkeypatch.setattr(eval.cli, "evaluate", lambda config: evaluated.append(config) or 0)
    assert (
        main(["eval", "libero", "--policy", result.checkpoint, "--trials", "1", "--out", str(tmp_path / "e")])
        == 0
    )
    (config,) = evaluated
    assert (config.suites, config.tasks, config.image_size, config.fast_render, config.mesh_faces) == (
        ("libero_spatial",),
        (0, 1),
        SIZE,
        True,
        5000,
    )
    assert "outside its demos" not in caplog.text
    # Another suite is allowed, with a warning that the checkpoint never saw it.
    main(
        [
            "eval",
            "libero",
            "--policy",
            result.checkpoint,
            "--suite",
            "libero_object",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert evaluated[-1].suites == ("libero_object",)
    assert "trained on libero_spatial only; libero_object is outside its demos" in caplog.text


def test_demos_that_disagree_give_no_protocol(tmp_path):
    _write_generated_demos(tmp_path / "a", fast_render=True)
    _write_generated_demos(tmp_path / "b", fast_render=False)
    files = sorted((tmp_path / "a").glob("*.hdf5")) + sorted((tmp_path / "b").glob("*.hdf5"))
    assert protocol_of_demos(files[:2])["fast_render"] is True
    assert protocol_of_demos(files) is None


def test_the_mesh_face_cap_travels_with_the_demos_and_mixed_caps_give_no_protocol(tmp_path, caplog):
    _write_generated_demos(tmp_path / "a", mesh_faces=10_000)
    _write_generated_demos(tmp_path / "b", mesh_faces=0)
    capped, full = sorted((tmp_path / "a").glob("*.hdf5")), sorted((tmp_path / "b").glob("*.hdf5"))
    assert protocol_of_demos(capped)["mesh_faces"] == 10_000
    assert protocol_of_demos(full)["mesh_faces"] == 0
    assert "rendered differently" not in caplog.text
    assert protocol_of_demos(capped + full) is None
    # The warning names both renders and a file of each, so the odd set out can be found.
    assert "rendered differently" in caplog.text
    assert f"({SIZE}, True, 10000) in {capped[0]}" in caplog.text
    assert f"({SIZE}, True, 0) in {full[0]}" in caplog.text


@pytest.mark.parametrize("bddl", ["", "libero/libero/bddl_files/not_a_suite/task.bddl"])
def test_demos_without_a_libero_suite_give_no_protocol(tmp_path, bddl):
    episode = Episode(
        actions=np.zeros((2, 7), np.float32),
        agentview_rgb=np.zeros((2, 8, 8, 3), np.uint8),
        eye_in_hand_rgb=np.zeros((2, 8, 8, 3), np.uint8),
        ee_pos=np.zeros((2, 3)),
        ee_ori=np.zeros((2, 3)),
        gripper_states=np.zeros((2, 2)),
        joint_states=np.zeros((2, 7)),
        language="do something",
        bddl_file=bddl,
    )
    append_episode(tmp_path / "x.hdf5", episode, {"env_kwargs": {"camera_heights": 8}})
    assert protocol_of_demos([tmp_path / "x.hdf5"]) is None
