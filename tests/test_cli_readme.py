"""The README's in-process Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def test_readme_in_process_example_returns_a_chunk() -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text[text.index("## From Python") :]
    example = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    chunk = scope["chunk"]
    assert chunk.shape == (8, 7) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
