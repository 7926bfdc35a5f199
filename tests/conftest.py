"""Test-wide settings: headless rendering, deterministic and thread-limited torch."""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import torch
except ImportError:
    pass
else:
    # test processes often run side by side; one thread each avoids oversubscribing the cores
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """The toy demos of ``test_train.write_demos``, written once per test module."""
    from test_train import write_demos

    return write_demos(tmp_path_factory.mktemp("demos"))
