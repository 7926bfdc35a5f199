"""Typed errors raised while reading a released checkpoint directory.

Every message names the file and, where there is one, the tensor key, so a user
with a partial download or an unexpected release can see at once what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CheckpointFileError",
    "ImportOutputError",
    "KeyMismatchError",
    "ReleasedCheckpointError",
    "ShapeMismatchError",
    "UnnormKeyError",
    "UnsupportedLayoutError",
]

_LIST_LIMIT = 20


def format_keys(keys: Iterable[str], limit: int = _LIST_LIMIT) -> str:
    """``a, b, c (+N more)``: a bounded, sorted listing for error messages."""
    ordered = sorted(keys)
    shown = ", ".join(ordered[:limit])
    rest = len(ordered) - limit
    return f"{shown} (+{rest} more)" if rest > 0 else shown


class ReleasedCheckpointError(ValueError):
    """Base class: the checkpoint directory cannot be imported as it is."""


class CheckpointFileError(ReleasedCheckpointError):
    """A file is missing, duplicated, unreadable or unsafe to unpickle."""


class KeyMismatchError(ReleasedCheckpointError):
    """Source keys nobody consumes, or target keys nobody produces."""

    def __init__(self, what: str, keys_by_file: dict[str, list[str]]) -> None:
        self.keys_by_file = {name: sorted(keys) for name, keys in keys_by_file.items() if keys}
        lines = [f"{what}:"]
        for name, keys in self.keys_by_file.items():
            lines.append(f"  {name}: {len(keys)} key(s): {format_keys(keys)}")
        super().__init__("\n".join(lines))


class ShapeMismatchError(ReleasedCheckpointError):
    """A tensor does not have the shape the layout or the target model requires."""


class UnnormKeyError(ReleasedCheckpointError):
    """The requested dataset key is not in ``dataset_statistics.json``."""


class UnsupportedLayoutError(ReleasedCheckpointError):
    """A ``config.json`` field combination this runtime cannot reproduce."""


class ImportOutputError(ReleasedCheckpointError):
    """The output folder of an import cannot be used (it exists already)."""
