"""The simulator profiler: option checks, and one small fast-render run in LIBERO.

Budget: ~15 s (one env at 64 px, a handful of steps and renders).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cogvla.cli import main as cogvla_main
from eval.profile.env_profile import CAMERAS, EnvProfileConfig

TIMED = ("reset_ms", "set_init_state_ms", "env_reset_ms", "step_render_ms", "step_no_render_ms")


def test_config_rejects_unknown_mode_and_bad_counts() -> None:
    with pytest.raises(
        ValueError,
        match=r"modes: expected a non-empty subset of \['standard', 'fast_render', 'capped_meshes'\]",
    ):
        EnvProfileConfig(modes=("turbo",))
    with pytest.raises(ValueError, match="steps: expected an int >= 1, got 0"):
        EnvProfileConfig(steps=0)


@pytest.mark.libero
def test_profile_env_reports_every_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "env.json"
    argv = [
        "profile",
        "env",
        "--modes",
        "fast_render",
        "--image-size",
        "64",
        "--steps",
        "2",
        "--renders",
        "1",
    ]
    argv += ["--resets", "1", "--policy-ms", "50", "--json", str(out)]
    assert cogvla_main(argv) == 0
    result = json.loads(out.read_text())
    mode = result["modes"]["fast_render"]
    assert mode["create_s"] > 0
    for key in TIMED:
        assert mode[key]["p50_ms"] > 0, key
    assert set(mode["render_ms"]) == set(CAMERAS)
    assert 0 < mode["episode"]["simulator_share"] < 1
    assert mode["episode"]["steps"] == 230
    printed = capsys.readouterr().out
    assert "| step, 2 cameras rendered (ms) |" in printed and "| simulator share of episode |" in printed
