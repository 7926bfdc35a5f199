"""Quiet logs: no LIBERO ``[info]`` lines on stdout, no robosuite macro advice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cogvla.tokenizer import libero_instructions


def test_libero_instructions_print_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(libero_instructions(("libero_spatial",))) == 10
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "[info]" in captured.err, "LIBERO's chatter goes to stderr, not away"


def test_robosuite_macro_advice_is_silenced_in_every_process_that_uses_envs() -> None:
    code = "import envs, libero.libero.envs"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "macro" not in quiet.stderr and quiet.stdout == ""
    loud = subprocess.run(
        [sys.executable, "-c", "import libero.libero.envs"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "No private macro file found" in loud.stderr, "the advice this test silences must exist"
