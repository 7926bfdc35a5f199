"""Test-wide settings: headless rendering, deterministic and thread-limited torch."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
