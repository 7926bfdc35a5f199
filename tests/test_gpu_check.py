"""scripts/gpu_check.sh in its reduced CPU mode: runs end to end and writes the documented JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cogvla.config import get_preset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def test_cpu_mode_writes_every_figure(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--iters", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert json.loads(done.stdout)["mode"] == "cpu"
    assert (record["mode"], record["preset"], record["dtype"]) == ("cpu", "tiny", "float32")
    assert set(record["variants"]) == {"cogvla", "dense"}
    for variant, values in record["variants"].items():
        config = get_preset("tiny", variant)
        assert values["kept_vision_tokens_per_layer"] == config.kept_vision_tokens()
        assert values["flash_vs_sdpa_max_abs_action_diff"] is None
        assert values["p50_latency_ms"] > 0 and len(values["latency_ms"]) == 1
        assert values["peak_memory_mb"] > 0 and values["params"] > 0
    cogvla_kept = record["variants"]["cogvla"]["kept_vision_tokens_per_layer"]
    assert min(cogvla_kept) < max(cogvla_kept)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_mode_without_a_gpu_is_one_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cogvla.gpu_check", "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert "no CUDA device here; pass --cpu" in done.stderr
    assert "Traceback" not in done.stderr
