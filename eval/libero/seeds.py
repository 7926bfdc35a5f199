"""Reset seeds of randomized LIBERO scenes: demo attempts and held-out validation episodes.

Both streams hash (base seed, suite/task, index) into a 32-bit seed for LIBERO's placement
RNG. The validation stream adds its own salt, so its scenes are drawn apart from every demo
attempt's: two given seeds coincide with probability 2**-32, so a set of ``n`` demos and ``m``
validation episodes shares a scene with probability about ``n * m / 2**32`` (below 1e-3 for a
thousand of each).
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["attempt_seed", "validation_seed"]

# Fixed forever: changing it would move every validation scene.
_VALIDATION_SALT = 0x56414C


def _task_hash(suite: str, task_name: str) -> int:
    return zlib.crc32(f"{suite}/{task_name}".encode())


def attempt_seed(base_seed: int, suite: str, task_name: str, attempt: int) -> int:
    """The reset seed of a demo attempt: fixed per (task, attempt), distinct across both."""
    return int(
        np.random.SeedSequence([base_seed, _task_hash(suite, task_name), attempt]).generate_state(1)[0]
    )


def validation_seed(base_seed: int, suite: str, task_name: str, index: int) -> int:
    """The reset seed of validation episode ``index`` of a task, drawn apart from demo attempts."""
    entropy = [base_seed, _task_hash(suite, task_name), index, _VALIDATION_SALT]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
