"""Where the project keeps things: the embedded default checkpoints and the run cache."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "DEFAULTS_DIR",
    "cache_dir",
    "default_checkpoint_dir",
    "default_checkpoints",
    "default_folder_name",
    "defaults_for",
]

# One folder per embedded default; each folder's eval_protocol.json names the suites it covers.
DEFAULTS_DIR = Path(__file__).resolve().parent / "assets" / "defaults"


def cache_dir(*parts: str) -> Path:
    """A folder under ``$COGVLA_CACHE`` (default ``~/.cache/cogvla``), created on demand.

    Long jobs (demos, training, evaluation runs) write here, outside the repository,
    so that they survive a fresh checkout and can be resumed.
    """
    root = Path(os.environ.get("COGVLA_CACHE", Path.home() / ".cache" / "cogvla")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_folder_name(suites: list[str] | tuple[str, ...]) -> str:
    """The folder under ``DEFAULTS_DIR`` of a default covering ``suites``: their names joined by +."""
    return "+".join(sorted(suites))


def default_checkpoints(root: Path | None = None) -> dict[str, Path]:
    """Each suite an embedded default (a folder of ``root``, default ``DEFAULTS_DIR``) covers,
    mapped to that default's folder, in LIBERO's suite order (libero_spatial, libero_object, ...).

    Raises ValueError when two defaults claim the same suite: which one to run would be a guess.
    """
    from envs.suites import SUITES

    root = DEFAULTS_DIR if root is None else root
    covered: dict[str, Path] = {}
    folders = sorted(root.iterdir()) if root.is_dir() else []
    for folder in folders:
        protocol = folder / "eval_protocol.json"
        if not (folder / "config.json").is_file() or not protocol.is_file():
            continue
        for suite in json.loads(protocol.read_text())["suites"]:
            if suite in covered:
                raise ValueError(
                    f"embedded defaults: both {covered[suite].name} and {folder.name} cover {suite}"
                )
            covered[suite] = folder
    order = {suite: index for index, suite in enumerate(SUITES)}
    return dict(sorted(covered.items(), key=lambda item: order.get(item[0], len(order))))


def default_checkpoint_dir(suite: str | None = None) -> Path | None:
    """The embedded default that covers ``suite``, or None when none does.

    Without ``suite``: the default of the first covered suite in LIBERO's order, the one
    served when nothing is named.
    """
    covered = default_checkpoints()
    if suite is not None:
        return covered.get(suite)
    return next(iter(covered.values()), None)


def defaults_for(suites: Sequence[str] | None = None) -> dict[Path, tuple[str, ...]]:
    """The embedded defaults that cover ``suites`` (None: every covered suite), each with its
    share of them, in the order the suites are given (else LIBERO's).

    Raises ValueError naming the suites no embedded default covers.
    """
    covered = default_checkpoints()
    wanted = tuple(suites) if suites else tuple(covered)
    if not wanted:
        raise ValueError("suite: this package has no embedded default yet; name a checkpoint")
    missing = [suite for suite in wanted if suite not in covered]
    if missing:
        raise ValueError(
            f"suite: no embedded default covers {', '.join(missing)} (they cover "
            f"{', '.join(sorted(covered)) or 'none'}); name a checkpoint"
        )
    runs: dict[Path, tuple[str, ...]] = {}
    for suite in wanted:
        runs[covered[suite]] = runs.get(covered[suite], ()) + (suite,)
    return runs
