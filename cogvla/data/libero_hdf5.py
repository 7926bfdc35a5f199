"""Demonstrations in LIBERO's HDF5 dataset schema: one writer, one reader.

On disk a file holds the demos of one task, laid out exactly like the official LIBERO
datasets (``scripts/create_dataset.py`` upstream)::

    data                      attrs: problem_info (JSON: language_instruction, problem_name,
                                     domain_name), env_args (JSON), bddl_file_name,
                                     env_name, macros_image_convention, num_demos, total
    data/demo_{i}             attrs: num_samples[, init_state]
        actions          (T, 7)     float64, robot units (gripper -1 open / +1 close)
        states           (T, S)     float64, flattened MuJoCo states
        robot_states     (T, 9)     gripper qpos(2) | eef pos(3) | eef quat xyzw(4)
        rewards, dones   (T,)       uint8, 1 on the last step
        obs/agentview_rgb, obs/eye_in_hand_rgb   (T, H, W, 3) uint8, as robosuite renders
                                                 them (upside down, OpenGL convention)
        obs/ee_pos (T, 3), obs/ee_ori (T, 3) axis-angle, obs/ee_states (T, 6),
        obs/gripper_states (T, 2), obs/joint_states (T, 7)

In memory (``Episode``) images are upright, as in the policy's observation schema; the
180 degree rotation happens here and nowhere else, so official files and the project's
own demos read the same way.

A kill while HDF5 metadata is being written leaves the whole file unreadable, so demo
generation never appends to a file that already holds demos: ``write_episode`` puts each
episode in a file of its own, ``FOLDER/demo_{i}.hdf5`` in the layout above, written under
another name and renamed when complete. Readers take a file or such a folder alike.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cogvla.data.file_lock import exclusive

__all__ = [
    "DEFAULT_PROBLEM_NAME",
    "Episode",
    "EpisodeFormatError",
    "append_episode",
    "count_episodes",
    "read_episodes",
    "write_episode",
]

DEFAULT_PROBLEM_NAME = "libero_tabletop_manipulation"
_DOMAIN_NAME = "robosuite"
_DEMO_KEY = re.compile(r"^demo_(\d+)$")
_EPISODE_FILE = re.compile(r"^demo_(\d+)\.hdf5$")
# Fixed-width per-frame chunks: random access to one frame reads one chunk.
_IMAGE_COMPRESSION = {"compression": "gzip", "compression_opts": 4}


class EpisodeFormatError(ValueError):
    """An episode or a file does not follow the LIBERO demo schema."""


@dataclass
class Episode:
    """One demonstration; every per-step array has the same length ``T``."""

    actions: np.ndarray
    agentview_rgb: np.ndarray
    eye_in_hand_rgb: np.ndarray
    ee_pos: np.ndarray
    ee_ori: np.ndarray
    gripper_states: np.ndarray
    joint_states: np.ndarray
    language: str
    states: np.ndarray | None = None
    problem_name: str = ""
    bddl_file: str = ""

    def __post_init__(self) -> None:
        self.actions = _as_float(self.actions, "actions", 7, np.float32)
        length = len(self.actions)
        for name in ("agentview_rgb", "eye_in_hand_rgb"):
            images = np.asarray(getattr(self, name))
            if images.dtype != np.uint8:
                raise TypeError(f"Episode.{name}: expected dtype uint8, got {images.dtype}")
            if images.ndim != 4 or images.shape[-1] != 3 or len(images) != length:
                raise EpisodeFormatError(
                    f"Episode.{name}: expected shape ({length}, H, W, 3), got {tuple(images.shape)}"
                )
            setattr(self, name, images)
        for name, width in (("ee_pos", 3), ("ee_ori", 3), ("gripper_states", 2), ("joint_states", 7)):
            array = _as_float(getattr(self, name), name, width, np.float32)
            if len(array) != length:
                raise EpisodeFormatError(f"Episode.{name}: expected {length} steps, got {len(array)}")
            setattr(self, name, array)
        if self.states is not None:
            self.states = np.asarray(self.states, dtype=np.float64)
            if self.states.ndim != 2 or len(self.states) != length:
                raise EpisodeFormatError(
                    f"Episode.states: expected shape ({length}, S), got {tuple(self.states.shape)}"
                )
        if not isinstance(self.language, str) or not self.language:
            raise EpisodeFormatError(f"Episode.language: expected a non-empty str, got {self.language!r}")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def state(self) -> np.ndarray:
        """``(T, 8)`` float32 proprio: eef pos(3) | eef axis-angle(3) | gripper qpos(2)."""
        return np.concatenate([self.ee_pos, self.ee_ori, self.gripper_states], axis=1)


def append_episode(path: str | Path, episode: Episode, env_args: dict[str, Any] | None = None) -> str:
    """Append ``episode`` as ``data/demo_{i}`` to ``path`` and return the demo key.

    The file and LIBERO's file-level attributes are created on the first call. A file
    holds one task, as in LIBERO, so an episode whose language differs from the file's is
    refused. Concurrent appenders to the same file are serialized by a lock file. A kill
    during the append can leave the file unreadable; ``write_episode`` cannot.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(path.name + ".lock")), h5py.File(path, "a") as handle:
        data = handle.require_group("data")
        if "problem_info" not in data.attrs:
            _write_file_attrs(data, episode, env_args)
        else:
            language = _problem_info(data, path)["language_instruction"]
            if language != episode.language:
                raise EpisodeFormatError(
                    f"{path}: holds demos of {language!r}; cannot append an episode of "
                    f"{episode.language!r} (write one file per task)"
                )
        keys = _demo_keys(data)
        key = f"demo_{_demo_index(keys[-1]) + 1 if keys else 0}"
        _write_demo(data.create_group(key), episode)
        data.attrs["num_demos"] = len(keys) + 1
        data.attrs["total"] = int(data.attrs.get("total", 0)) + len(episode)
    return key


def write_episode(folder: str | Path, episode: Episode, env_args: dict[str, Any] | None = None) -> Path:
    """Write ``episode`` as the next ``folder/demo_{i}.hdf5`` (a one-demo LIBERO file) and return it.

    The file appears complete or not at all: it is written as ``demo_{i}.hdf5.partial``,
    synced and renamed, so a kill at any point leaves the folder's earlier demos readable.
    Concurrent writers to one folder are serialized by a lock file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / ".lock"):
        indices = [int(m.group(1)) for m in map(_EPISODE_FILE.match, os.listdir(folder)) if m]
        path = folder / f"demo_{max(indices, default=-1) + 1}.hdf5"
        partial = path.with_name(path.name + ".partial")
        with h5py.File(partial, "w") as handle:
            data = handle.create_group("data")
            _write_file_attrs(data, episode, env_args)
            _write_demo(data.create_group("demo_0"), episode)
            data.attrs["num_demos"] = 1
            data.attrs["total"] = len(episode)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


def read_episodes(path: str | Path) -> Iterator[Episode]:
    """Yield the episodes of a LIBERO-schema file (the project's or an official one), or of a
    ``write_episode`` folder, in demo order."""
    path = Path(path)
    if path.is_dir():
        for file in _episode_files(path):
            yield from read_episodes(file)
        return
    with h5py.File(path, "r") as handle:
        if "data" not in handle:
            raise EpisodeFormatError(f"{path}: expected a top-level 'data' group, got {sorted(handle)}")
        data = handle["data"]
        info = _problem_info(data, path)
        bddl_file = _text(data.attrs.get("bddl_file_name", ""))
        for key in _demo_keys(data):
            yield _read_demo(data[key], f"{path}:{key}", info, bddl_file)


def count_episodes(path: str | Path) -> int:
    """Number of demos in a file or a ``write_episode`` folder; 0 when it does not exist yet."""
    path = Path(path)
    if not path.exists():
        return 0
    if path.is_dir():
        return sum(count_episodes(file) for file in _episode_files(path))
    with h5py.File(path, "r") as handle:
        return len(_demo_keys(handle["data"])) if "data" in handle else 0


def _write_file_attrs(data: h5py.Group, episode: Episode, env_args: dict[str, Any] | None) -> None:
    problem_name = episode.problem_name or DEFAULT_PROBLEM_NAME
    if env_args is None:
        env_args = {
            "type": 1,
            "env_name": problem_name,
            "problem_name": problem_name,
            "bddl_file": episode.bddl_file,
            "env_kwargs": {},
        }
    data.attrs["problem_info"] = json.dumps(
        {"problem_name": problem_name, "domain_name": _DOMAIN_NAME, "language_instruction": episode.language}
    )
    data.attrs["env_args"] = json.dumps(env_args)
    data.attrs["env_name"] = str(env_args.get("env_name", problem_name))
    data.attrs["bddl_file_name"] = episode.bddl_file
    data.attrs["macros_image_convention"] = "opengl"
    data.attrs["num_demos"] = 0
    data.attrs["total"] = 0


def _write_demo(group: h5py.Group, episode: Episode) -> None:
    length = len(episode)
    obs = group.create_group("obs")
    for name in ("agentview_rgb", "eye_in_hand_rgb"):
        raw = np.ascontiguousarray(getattr(episode, name)[:, ::-1, ::-1])
        obs.create_dataset(name, data=raw, chunks=(1, *raw.shape[1:]), **_IMAGE_COMPRESSION)
    ee_states = np.concatenate([episode.ee_pos, episode.ee_ori], axis=1).astype(np.float64)
    obs.create_dataset("ee_pos", data=ee_states[:, :3])
    obs.create_dataset("ee_ori", data=ee_states[:, 3:])
    obs.create_dataset("ee_states", data=ee_states)
    obs.create_dataset("gripper_states", data=episode.gripper_states.astype(np.float64))
    obs.create_dataset("joint_states", data=episode.joint_states.astype(np.float64))
    group.create_dataset("actions", data=episode.actions.astype(np.float64))
    states = episode.states if episode.states is not None else np.zeros((length, 0))
    group.create_dataset("states", data=states)
    robot_states = np.concatenate(
        [episode.gripper_states, episode.ee_pos, _axis_angle_to_quat(episode.ee_ori)], axis=1
    )
    group.create_dataset("robot_states", data=robot_states.astype(np.float64))
    terminal = np.zeros(length, dtype=np.uint8)
    terminal[-1] = 1
    group.create_dataset("rewards", data=terminal)
    group.create_dataset("dones", data=terminal)
    group.attrs["num_samples"] = length
    if episode.states is not None:
        group.attrs["init_state"] = episode.states[0]


def _read_demo(group: h5py.Group, where: str, info: dict[str, Any], bddl_file: str) -> Episode:
    if "obs" not in group:
        raise EpisodeFormatError(f"{where}: expected an 'obs' group, got {sorted(group)}")
    obs = group["obs"]

    def need(container: h5py.Group, key: str) -> np.ndarray:
        if key not in container:
            raise EpisodeFormatError(f"{where}: missing dataset {key!r}; present: {sorted(container)}")
        return container[key][()]

    if "ee_pos" in obs and "ee_ori" in obs:
        ee_pos, ee_ori = obs["ee_pos"][()], obs["ee_ori"][()]
    else:
        ee_states = need(obs, "ee_states")
        ee_pos, ee_ori = ee_states[:, :3], ee_states[:, 3:6]
    states = group["states"][()] if "states" in group else None
    return Episode(
        actions=need(group, "actions"),
        agentview_rgb=np.ascontiguousarray(need(obs, "agentview_rgb")[:, ::-1, ::-1]),
        eye_in_hand_rgb=np.ascontiguousarray(need(obs, "eye_in_hand_rgb")[:, ::-1, ::-1]),
        ee_pos=ee_pos,
        ee_ori=ee_ori,
        gripper_states=need(obs, "gripper_states"),
        joint_states=need(obs, "joint_states"),
        language=info["language_instruction"],
        states=states if states is not None and states.ndim == 2 and states.shape[1] > 0 else None,
        problem_name=info.get("problem_name", ""),
        bddl_file=bddl_file,
    )


def _problem_info(data: h5py.Group, path: Path) -> dict[str, Any]:
    if "problem_info" not in data.attrs:
        raise EpisodeFormatError(
            f"{path}: 'data' has no 'problem_info' attribute; attrs: {sorted(data.attrs)}"
        )
    info = json.loads(_text(data.attrs["problem_info"]))
    if not info.get("language_instruction"):
        raise EpisodeFormatError(f"{path}: problem_info has no 'language_instruction'; got {info}")
    return info


def _episode_files(folder: Path) -> list[Path]:
    """The complete episode files of a ``write_episode`` folder, in index order."""
    found = [
        (int(m.group(1)), folder / m.group(0)) for m in map(_EPISODE_FILE.match, os.listdir(folder)) if m
    ]
    return [path for _, path in sorted(found)]


def _demo_keys(data: h5py.Group) -> list[str]:
    return sorted((key for key in data if _DEMO_KEY.match(key)), key=_demo_index)


def _demo_index(key: str) -> int:
    return int(_DEMO_KEY.match(key).group(1))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_float(value: Any, name: str, width: int, dtype: type) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.ndim != 2 or array.shape[1] != width:
        raise EpisodeFormatError(f"Episode.{name}: expected shape (T, {width}), got {tuple(array.shape)}")
    return array


def _axis_angle_to_quat(axis_angle: np.ndarray) -> np.ndarray:
    """``(T, 3)`` axis-angle -> ``(T, 4)`` quaternion in robosuite's xyzw order."""
    angle = np.linalg.norm(axis_angle, axis=1, keepdims=True)
    # sin(a/2)/a -> 1/2 as a -> 0; the guarded division keeps zero rotations exact.
    scale = np.where(angle > 1e-12, np.sin(angle / 2) / np.maximum(angle, 1e-12), 0.5)
    return np.concatenate([axis_angle * scale, np.cos(angle / 2)], axis=1)
