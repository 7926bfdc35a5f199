"""Where the project keeps things: the embedded default checkpoint and the run cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_CHECKPOINT", "cache_dir", "default_checkpoint_dir"]

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "default"


def cache_dir(*parts: str) -> Path:
    """A folder under ``$COGVLA_CACHE`` (default ``~/.cache/cogvla``), created on demand.

    Long jobs (demos, training, evaluation runs) write here, outside the repository,
    so that they survive a fresh checkout and can be resumed.
    """
    root = Path(os.environ.get("COGVLA_CACHE", Path.home() / ".cache" / "cogvla")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_checkpoint_dir() -> Path | None:
    """The checkpoint shipped inside the package, or None while there is none."""
    return DEFAULT_CHECKPOINT if (DEFAULT_CHECKPOINT / "config.json").is_file() else None
