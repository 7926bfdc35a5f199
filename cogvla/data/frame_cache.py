"""Decode every frame of a set of demo files once, into a memory-mapped uint8 array.

Decompressing HDF5 images on every training step would put gzip on the critical path.
Instead the frames go once into ``images.npy`` (``(N, 2, H, W, 3)`` uint8: agentview then
wrist, upright), next to ``meta.npz`` with the low-dimensional data. Data-loader workers
map the same file read-only, so the operating system's page cache holds the frames once
for all of them.

The cache key hashes the files' paths, sizes and modification times plus the caller's
image transform tag, so changed demos or a new resolution build a new cache. Each cache
also lists the files it holds under a per-file key, so a new cache (demos added to a set,
another mix of sets) copies the frames of files an earlier cache already decoded instead
of decompressing them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from cogvla.data.file_lock import exclusive
from cogvla.data.libero_hdf5 import read_episodes

__all__ = ["FrameCache", "find_demo_files", "load_frame_cache"]

logger = logging.getLogger(__name__)

_VERSION = 1
_SUFFIXES = (".hdf5", ".h5")


@dataclass(frozen=True)
class FrameCache:
    """Every frame of a dataset; per-frame arrays share the first axis ``N``."""

    # (N, 2, H, W, 3) uint8, read-only memory map: agentview, wrist; upright.
    images: np.ndarray
    # (N, 7) float32, robot units.
    actions: np.ndarray
    # (N, 8) float32: eef pos | axis-angle | gripper qpos.
    proprio: np.ndarray
    # (E,) int64: first frame of each episode.
    episode_starts: np.ndarray
    # (E,) int64.
    episode_lengths: np.ndarray
    # (E,) the task instruction of each episode.
    languages: tuple[str, ...]
    # (E,) "file:demo_key" of each episode, for error messages and reports.
    sources: tuple[str, ...]

    @property
    def num_frames(self) -> int:
        return len(self.actions)


def find_demo_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every ``*.hdf5``/``*.h5`` file among ``paths`` (files, or folders searched recursively), sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path.resolve())
        elif path.is_dir():
            found.extend(p.resolve() for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        else:
            raise FileNotFoundError(f"data: {path} is neither a demo file nor a folder")
    if not found:
        raise FileNotFoundError(f"data: no {'/'.join(_SUFFIXES)} files under {[str(p) for p in paths]}")
    return sorted(set(found))


def load_frame_cache(
    files: Sequence[Path],
    cache_root: Path,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    transform_tag: str = "",
    progress: bool = True,
) -> FrameCache:
    """The cache of ``files``, building it under ``cache_root`` on first use.

    Args:
        files: demo files in LIBERO's schema (see ``find_demo_files``).
        cache_root: parent folder of all frame caches.
        transform: maps one episode's ``(T, H, W, 3)`` uint8 frames to the cached
            resolution (e.g. the serving resize); None keeps them as they are.
        transform_tag: names ``transform`` in the cache key; change it when the transform changes.
        progress: show a progress bar while the cache is built.
    """
    key = _cache_key(files, transform_tag)
    directory = Path(cache_root) / key
    with exclusive(Path(cache_root) / f"{key}.lock"):
        if not (directory / "meta.npz").is_file():
            shutil.rmtree(directory, ignore_errors=True)
            _build(files, directory, transform, transform_tag, progress)
    return _open(directory)


def _stamp(path: Path) -> str:
    """What identifies one file's content for the caches: its path, size and modification time."""
    stat = Path(path).stat()
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _cache_key(files: Sequence[Path], transform_tag: str) -> str:
    digest = hashlib.sha256(f"v{_VERSION}|{transform_tag}".encode())
    for path in files:
        digest.update(f"|{_stamp(path)}".encode())
    return digest.hexdigest()[:16]


def _file_key(path: Path, transform_tag: str) -> str:
    return hashlib.sha256(f"v{_VERSION}|{transform_tag}|{_stamp(path)}".encode()).hexdigest()[:16]


def _count_frames(files: Sequence[Path]) -> tuple[int, int]:
    frames = episodes = 0
    for path in files:
        with h5py.File(path, "r") as handle:
            for key, group in handle["data"].items():
                if key.startswith("demo_"):
                    frames += len(group["actions"])
                    episodes += 1
    return frames, episodes


@dataclass(frozen=True)
class _Stored:
    """Where a finished cache holds one file's episodes."""

    directory: Path
    first_episode: int
    episodes: int


def _stored_files(cache_root: Path, wanted: set[str]) -> dict[str, _Stored]:
    """File key -> the finished cache that already holds that file's frames, for each wanted key."""
    found: dict[str, _Stored] = {}
    for index in sorted(cache_root.glob("*/episodes.json")):
        if index.parent.name.endswith(".partial"):
            continue
        try:
            entries = json.loads(index.read_text()).get("files", [])
        except (OSError, ValueError):
            continue  # a cache removed while it is read: decode those files instead
        for entry in entries:
            if entry["key"] in wanted and entry["key"] not in found:
                found[entry["key"]] = _Stored(index.parent, entry["first_episode"], entry["episodes"])
    return found


@dataclass(frozen=True)
class _Episode:
    frames: np.ndarray  # (T, 2, H, W, 3) uint8
    actions: np.ndarray
    proprio: np.ndarray
    language: str
    source: str


def _decoded(path: Path, transform: Callable[[np.ndarray], np.ndarray] | None) -> Iterator[_Episode]:
    for index, episode in enumerate(read_episodes(path)):
        frames = np.stack([episode.agentview_rgb, episode.eye_in_hand_rgb], axis=1)
        if transform is not None:
            frames = np.stack([transform(frames[:, 0]), transform(frames[:, 1])], axis=1)
        yield _Episode(frames, episode.actions, episode.state, episode.language, f"{path}:demo_{index}")


def _copied(cache: FrameCache, stored: _Stored) -> Iterator[_Episode]:
    for episode in range(stored.first_episode, stored.first_episode + stored.episodes):
        start = int(cache.episode_starts[episode])
        frames = slice(start, start + int(cache.episode_lengths[episode]))
        yield _Episode(
            cache.images[frames],
            cache.actions[frames],
            cache.proprio[frames],
            cache.languages[episode],
            cache.sources[episode],
        )


def _build(
    files: Sequence[Path],
    directory: Path,
    transform: Callable[[np.ndarray], np.ndarray] | None,
    transform_tag: str,
    progress: bool,
) -> None:
    total, num_episodes = _count_frames(files)
    keys = [_file_key(path, transform_tag) for path in files]
    stored = _stored_files(directory.parent, set(keys))
    logger.info(
        "building the frame cache of %d frames, %d episodes from %d files (%d of them copied from "
        "earlier caches) in %s",
        total,
        num_episodes,
        len(files),
        sum(key in stored for key in keys),
        directory,
    )
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    images: np.ndarray | None = None
    actions, proprio, starts, lengths, languages, sources, index = [], [], [], [], [], [], []
    donors: dict[Path, FrameCache] = {}
    cursor = 0
    with tqdm(total=num_episodes, desc="decode demos", unit="ep", disable=not progress) as bar:
        for path, key in zip(files, keys, strict=True):
            if key in stored:
                donor = stored[key].directory
                if donor not in donors:
                    donors[donor] = _open(donor)
                episodes = _copied(donors[donor], stored[key])
            else:
                episodes = _decoded(path, transform)
            first_episode = len(starts)
            for episode in episodes:
                if images is None:
                    images = np.lib.format.open_memmap(
                        partial / "images.npy",
                        mode="w+",
                        dtype=np.uint8,
                        shape=(total, *episode.frames.shape[1:]),
                    )
                if episode.frames.shape[1:] != images.shape[1:]:
                    raise ValueError(
                        f"{episode.source}: expected frames of shape {images.shape[1:]} like the first "
                        f"episode, got {episode.frames.shape[1:]}"
                    )
                images[cursor : cursor + len(episode.frames)] = episode.frames
                actions.append(episode.actions)
                proprio.append(episode.proprio)
                starts.append(cursor)
                lengths.append(len(episode.frames))
                languages.append(episode.language)
                sources.append(episode.source)
                cursor += len(episode.frames)
                bar.update()
            index.append(
                {"key": key, "first_episode": first_episode, "episodes": len(starts) - first_episode}
            )
    if images is None:
        raise ValueError(f"data: the files {[str(p) for p in files]} hold no demos")
    images.flush()
    del images
    np.savez(
        partial / "meta.npz",
        actions=np.concatenate(actions),
        proprio=np.concatenate(proprio),
        episode_starts=np.asarray(starts, dtype=np.int64),
        episode_lengths=np.asarray(lengths, dtype=np.int64),
    )
    (partial / "episodes.json").write_text(
        json.dumps({"languages": languages, "sources": sources, "files": index})
    )
    os.replace(partial, directory)


def _open(directory: Path) -> FrameCache:
    meta = np.load(directory / "meta.npz")
    episodes = json.loads((directory / "episodes.json").read_text())
    return FrameCache(
        images=np.load(directory / "images.npy", mmap_mode="r"),
        actions=meta["actions"],
        proprio=meta["proprio"],
        episode_starts=meta["episode_starts"],
        episode_lengths=meta["episode_lengths"],
        languages=tuple(episodes["languages"]),
        sources=tuple(episodes["sources"]),
    )
