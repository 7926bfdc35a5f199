"""Test-wide settings: headless rendering, deterministic and thread-limited torch."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import torch
except ImportError:
    pass
else:
    # test processes often run side by side; one thread each avoids oversubscribing the cores
    torch.set_num_threads(1)
