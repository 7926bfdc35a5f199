"""The server profiler: the client-side split of a round trip, the stage-split wrapper, one real run.

The real run serves a freshly saved random-weight ``tiny`` checkpoint from a child
process on loopback with a free port and sends 1 x 2 and 2 x 2 requests. Budget: ~30 s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cogvla.cli import main as cogvla_main
from cogvla.config import get_preset
from cogvla.modeling import CogVLAModel
from cogvla.policy import identity_norm_stats
from cogvla.policy_api import Policy
from cogvla.tokenizer import PromptTokenizer
from eval.profile.policy_timing import StageSplitPolicy, with_stage_split
from eval.profile.server_profile import COMPONENTS, ServerProfileConfig, split_timing


def test_split_components_add_up_to_the_client_latency() -> None:
    timing = {
        "client_encode_ms": 0.2,
        "client_decode_ms": 0.05,
        "decode_ms": 0.1,
        "round_trip_ms": 30.0,
        "total_ms": 28.0,
        "queue_ms": 1.0,
        "preprocess_ms": 2.0,
        "model_ms": 24.0,
        "postprocess_ms": 0.5,
        "client_total_ms": 30.4,
    }
    parts = split_timing(timing)
    assert set(parts) == {*COMPONENTS, "total"}
    assert parts["serialization"] == pytest.approx(0.35)
    assert parts["transport"] == pytest.approx(2.0)
    assert sum(parts[name] for name in COMPONENTS) == pytest.approx(parts["total"])


class _Doubler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _ModelPolicy(Policy):
    def __init__(self) -> None:
        self.model = _Doubler()

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        values = torch.tensor([float(obs["state"][0]) for obs in observations])
        out = self.model(values).numpy()
        return [np.full((2, 7), value, np.float32) for value in out]


def test_stage_split_wrapper_times_around_the_model() -> None:
    policy, source = with_stage_split(_ModelPolicy())
    assert isinstance(policy, StageSplitPolicy) and source.startswith("forward hooks")
    chunk = policy.infer({"state": [1.5]})
    assert chunk.shape == (2, 7) and chunk[0, 0] == 3.0
    assert set(policy.last_timing) == {"preprocess_ms", "model_ms", "postprocess_ms"}
    assert all(value >= 0 for value in policy.last_timing.values())


def test_stage_split_keeps_policies_that_time_themselves() -> None:
    class SelfTimed(_ModelPolicy):
        last_timing = None

    policy = SelfTimed()
    assert with_stage_split(policy) == (policy, "policy.last_timing")
    with pytest.raises(TypeError, match="policy.model: expected a torch.nn.Module, got NoneType"):
        StageSplitPolicy(Policy())


def test_config_rejects_bad_client_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clients: expected positive client counts"):
        ServerProfileConfig(clients=(0,))
    with pytest.raises(ValueError, match="checkpoint: expected a checkpoint folder"):
        ServerProfileConfig(checkpoint=tmp_path / "nothing")


def test_profile_server_end_to_end(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    tokenizer = PromptTokenizer.train(["pick up the black bowl and place it on the plate"], vocab_size=300)
    CogVLAModel(get_preset("tiny")).save_pretrained(
        checkpoint, tokenizer=tokenizer, norm_stats=identity_norm_stats()
    )
    out = tmp_path / "server.json"
    argv = ["profile", "server", "--checkpoint", str(checkpoint), "--clients", "1,2", "--requests", "2"]
    argv += ["--warmup", "1", "--json", str(out)]
    assert cogvla_main(argv) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"] == str(checkpoint)
    assert result["stage_split_source"] in ("forward hooks on policy.model", "policy.last_timing")
    assert list(result["runs"]) == ["1", "2"]
    for clients, run in result["runs"].items():
        assert run["requests"] == int(clients) * 2
        assert set(run["components"]) == set(COMPONENTS)
        assert run["retries"] == 0
        means = sum(run["components"][name]["mean_ms"] for name in COMPONENTS)
        assert means == pytest.approx(run["total"]["mean_ms"], rel=1e-9)
        assert run["components"]["model"]["p50_ms"] > 0
        assert run["components"]["preprocessing"]["p50_ms"] > 0
    assert result["runs"]["1"]["batch_size"]["counts"] == {"1": 2}
    assert out.with_suffix(".png").stat().st_size > 0
