"""The torch intra-op thread count of a training run: set for the run, restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["intra_op_threads"]


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (None = leave torch's setting alone)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        # train() is also called in-process (tests, benchmarks): leave the caller's setting as it was.
        torch.set_num_threads(previous)
