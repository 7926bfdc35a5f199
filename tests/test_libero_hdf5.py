"""LIBERO-schema HDF5 round trips: the project's writer and a hand-built official-layout file."""

from __future__ import annotations

import json
import os
import resource
import signal

import h5py
import numpy as np
import pytest

from cogvla.data.libero_hdf5 import (
    Episode,
    EpisodeFormatError,
    append_episode,
    count_episodes,
    read_episodes,
    write_episode,
)

INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def make_episode(length: int, seed: int = 0, language: str = INSTRUCTION, size: int = 8) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        actions=rng.uniform(-1, 1, (length, 7)).astype(np.float32),
        agentview_rgb=rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
        eye_in_hand_rgb=rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
        ee_pos=rng.normal(size=(length, 3)),
        ee_ori=rng.normal(size=(length, 3)),
        gripper_states=rng.normal(size=(length, 2)),
        joint_states=rng.normal(size=(length, 7)),
        language=language,
        states=rng.normal(size=(length, 11)),
        problem_name="libero_tabletop_manipulation",
        bddl_file="libero_spatial/task.bddl",
    )


def test_round_trip_preserves_every_field(tmp_path):
    path = tmp_path / "demos.hdf5"
    written = [make_episode(5, seed=1), make_episode(9, seed=2)]
    keys = [append_episode(path, episode) for episode in written]
    assert keys == ["demo_0", "demo_1"]
    assert count_episodes(path) == 2
    read = list(read_episodes(path))
    for before, after in zip(written, read, strict=True):
        for name in ("actions", "agentview_rgb", "eye_in_hand_rgb", "ee_pos", "ee_ori", "gripper_states"):
            np.testing.assert_array_equal(getattr(after, name), getattr(before, name), err_msg=name)
        np.testing.assert_array_equal(after.states, before.states)
        assert after.language == INSTRUCTION
        assert after.bddl_file == "libero_spatial/task.bddl"
        assert after.state.shape == (len(before), 8)
        np.testing.assert_array_equal(after.state[:, 6:], before.gripper_states)


def test_file_attrs_follow_libero_schema(tmp_path):
    path = tmp_path / "demos.hdf5"
    episode = make_episode(4)
    append_episode(path, episode, env_args={"type": 1, "env_name": "LIBERO_Tabletop", "env_kwargs": {}})
    append_episode(path, make_episode(6, seed=3))
    with h5py.File(path, "r") as handle:
        data = handle["data"]
        info = json.loads(data.attrs["problem_info"])
        assert info == {
            "problem_name": "libero_tabletop_manipulation",
            "domain_name": "robosuite",
            "language_instruction": INSTRUCTION,
        }
        assert json.loads(data.attrs["env_args"])["env_name"] == "LIBERO_Tabletop"
        assert data.attrs["num_demos"] == 2 and data.attrs["total"] == 10
        assert data["demo_1"].attrs["num_samples"] == 6
        demo = data["demo_0"]
        for key in ("actions", "states", "robot_states", "rewards", "dones"):
            assert key in demo, key
        for key in (
            "agentview_rgb",
            "eye_in_hand_rgb",
            "ee_pos",
            "ee_ori",
            "ee_states",
            "gripper_states",
            "joint_states",
        ):
            assert key in demo["obs"], key
        assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
        # On disk the image is upside down (robosuite's OpenGL convention).
        np.testing.assert_array_equal(demo["obs/agentview_rgb"][0], episode.agentview_rgb[0, ::-1, ::-1])
        # robot_states = gripper(2) | eef pos(3) | eef quaternion xyzw(4), a unit quaternion.
        robot_states = demo["robot_states"][()]
        assert robot_states.shape == (4, 9)
        np.testing.assert_allclose(np.linalg.norm(robot_states[:, 5:], axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(robot_states[:, 2:5], episode.ee_pos, atol=1e-6)


def test_append_refuses_a_second_task(tmp_path):
    path = tmp_path / "demos.hdf5"
    append_episode(path, make_episode(3))
    with pytest.raises(EpisodeFormatError, match="one file per task"):
        append_episode(path, make_episode(3, language="open the drawer"))


def test_count_episodes_of_a_missing_file_is_zero(tmp_path):
    assert count_episodes(tmp_path / "nothing.hdf5") == 0


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("actions", np.zeros((4, 6)), EpisodeFormatError, r"actions: expected shape \(T, 7\)"),
        ("agentview_rgb", np.zeros((4, 8, 8, 3), dtype=np.float32), TypeError, "expected dtype uint8"),
        (
            "eye_in_hand_rgb",
            np.zeros((3, 8, 8, 3), dtype=np.uint8),
            EpisodeFormatError,
            r"expected shape \(4, H, W, 3\)",
        ),
        ("ee_pos", np.zeros((5, 3)), EpisodeFormatError, "ee_pos: expected 4 steps, got 5"),
        ("language", "", EpisodeFormatError, "language: expected a non-empty str"),
    ],
)
def test_episode_rejects_bad_fields(field, value, error, match):
    fields = vars(make_episode(4)).copy()
    fields[field] = value
    with pytest.raises(error, match=match):
        Episode(**fields)


def write_official_layout(path, lengths, size=6, seed=0):
    """A file laid out like LIBERO's released ``*_demo.hdf5`` (keys and attrs of create_dataset.py)."""
    rng = np.random.default_rng(seed)
    raw = []
    with h5py.File(path, "w") as handle:
        data = handle.create_group("data")
        data.attrs["env_name"] = "LIBERO_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps(
            {
                "problem_name": "libero_tabletop_manipulation",
                "domain_name": "robosuite",
                "language_instruction": INSTRUCTION,
            }
        )
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = "chiliocosm/bddl_files/libero_spatial/task.bddl"
        data.attrs["bddl_file_content"] = "(define (problem LIBERO_Tabletop_Manipulation))"
        data.attrs["env_args"] = json.dumps(
            {"type": 1, "env_name": "LIBERO_Tabletop_Manipulation", "env_kwargs": {}}
        )
        for i, length in enumerate(lengths):
            demo = data.create_group(f"demo_{i}")
            obs = demo.create_group("obs")
            ee_states = rng.normal(size=(length, 6))
            agentview = rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8)
            obs.create_dataset("gripper_states", data=rng.normal(size=(length, 2)))
            obs.create_dataset("joint_states", data=rng.normal(size=(length, 7)))
            obs.create_dataset("ee_states", data=ee_states)
            obs.create_dataset("ee_pos", data=ee_states[:, :3])
            obs.create_dataset("ee_ori", data=ee_states[:, 3:])
            obs.create_dataset("agentview_rgb", data=agentview)
            obs.create_dataset(
                "eye_in_hand_rgb", data=rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8)
            )
            actions = rng.uniform(-1, 1, (length, 7))
            demo.create_dataset("actions", data=actions)
            states = rng.normal(size=(length, 79))
            demo.create_dataset("states", data=states)
            demo.create_dataset("robot_states", data=rng.normal(size=(length, 9)))
            demo.create_dataset("rewards", data=np.eye(length, dtype=np.uint8)[-1])
            demo.create_dataset("dones", data=np.eye(length, dtype=np.uint8)[-1])
            demo.attrs["num_samples"] = length
            demo.attrs["model_file"] = "<mujoco/>"
            demo.attrs["init_state"] = states[0]
            raw.append({"actions": actions, "agentview": agentview, "ee_states": ee_states})
        data.attrs["num_demos"] = len(lengths)
        data.attrs["total"] = sum(lengths)
    return raw


def test_reads_official_libero_layout(tmp_path):
    path = tmp_path / "pick_up_the_black_bowl_demo.hdf5"
    raw = write_official_layout(path, [4, 3, 5])
    episodes = list(read_episodes(path))
    assert count_episodes(path) == 3
    assert [len(e) for e in episodes] == [4, 3, 5]
    first = episodes[0]
    assert first.language == INSTRUCTION
    assert first.problem_name == "libero_tabletop_manipulation"
    assert first.bddl_file.endswith("libero_spatial/task.bddl")
    assert first.actions.dtype == np.float32
    np.testing.assert_allclose(first.actions, raw[0]["actions"], rtol=1e-6)
    # Read upright: the raw (upside-down) frame rotated by 180 degrees.
    np.testing.assert_array_equal(first.agentview_rgb, raw[0]["agentview"][:, ::-1, ::-1])
    np.testing.assert_allclose(first.state[:, :6], raw[0]["ee_states"], rtol=1e-6)
    assert first.states.shape == (4, 79)


def test_demos_are_read_in_numeric_order(tmp_path):
    path = tmp_path / "demos.hdf5"
    lengths = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # demo_10 sorts before demo_2 as text
    for length in lengths:
        append_episode(path, make_episode(length, seed=length))
    assert [len(e) for e in read_episodes(path)] == lengths


def test_reader_names_a_missing_dataset(tmp_path):
    path = tmp_path / "broken.hdf5"
    write_official_layout(path, [3])
    with h5py.File(path, "a") as handle:
        del handle["data/demo_0/obs/joint_states"]
    with pytest.raises(EpisodeFormatError, match="missing dataset 'joint_states'"):
        list(read_episodes(path))


def _killed_while_writing(folder, episode, max_file_bytes: int) -> bool:
    """Write ``episode`` in a forked child that the kernel kills (SIGXFSZ) once a file it
    writes would grow past ``max_file_bytes``: a kill at that point of the write."""
    pid = os.fork()
    if pid == 0:
        # Python ignores SIGXFSZ; its default action is to kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        try:
            write_episode(folder, episode)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


def test_a_kill_at_any_point_of_a_write_leaves_the_earlier_demos_readable(tmp_path):
    folder = tmp_path / "task_demo"
    for length, seed in ((5, 1), (6, 2)):
        write_episode(folder, make_episode(length, seed=seed))
    new = make_episode(7, seed=3, size=16)
    full_size = write_episode(tmp_path / "scratch", new).stat().st_size
    limits = np.linspace(0, full_size, 25, endpoint=False).astype(int)[1:]
    for limit in limits:
        assert _killed_while_writing(folder, new, int(limit))
        assert count_episodes(folder) == 2
        assert [len(episode) for episode in read_episodes(folder)] == [5, 6]
    # Resuming writes where the killed writers stopped.
    assert write_episode(folder, new).name == "demo_2.hdf5"
    assert [len(episode) for episode in read_episodes(folder)] == [5, 6, 7]
    assert count_episodes(tmp_path / "missing") == 0
