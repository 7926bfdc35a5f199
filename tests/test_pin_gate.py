"""Pinning the EFA gate to one encoder stream: the router's mix and a training run that starts pinned."""

from __future__ import annotations

import pytest
import torch
from test_train import small_model_config, small_train_config, write_demos

from cogvla.efa import AggregationRouter
from cogvla.train.run_log import read_log
from cogvla.train.trainer import train


@pytest.mark.parametrize(("stream", "index"), [("dino", 0), ("siglip", 1)])
def test_a_pinned_router_passes_one_stream_for_every_instruction(stream, index):
    torch.manual_seed(0)
    router = AggregationRouter(8, 12, 16)
    dino, siglip, instruction = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 12), torch.randn(3, 16)
    _, before = router(dino, siglip, instruction)
    router.pin_stream(stream)
    tokens, gate = router(dino, siglip, instruction)
    assert before[:, index].max() < 0.9
    assert gate[:, index].min() > 1 - 1e-3
    chosen = router.dino_proj(dino) if stream == "dino" else router.siglip_proj(siglip)
    torch.testing.assert_close(tokens, chosen.flatten(1, 2), atol=1e-3, rtol=1e-3)


def test_pin_stream_refuses_an_unknown_stream():
    with pytest.raises(ValueError, match="expected one of .*'clip'"):
        AggregationRouter(8, 8, 8).pin_stream("clip")


def test_a_run_pinned_to_dino_trains_with_the_dino_stream_only(tmp_path):
    demos = write_demos(tmp_path / "demos", episodes_per_task=1, length=8)
    config = small_train_config(steps=3, warmup_steps=1, save_every=3, pin_gate="dino")
    train(
        config,
        [demos],
        tmp_path / "run",
        model_config=small_model_config(),
        cache_root=tmp_path / "f",
        progress=False,
    )
    assert all(record["gate_dino"] > 0.999 for record in read_log(tmp_path / "run" / "log.jsonl"))
    dense = small_model_config().replace(efa=False)
    with pytest.raises(ValueError, match="pin_gate: the model has no EFA gate"):
        train(
            config, [demos], tmp_path / "other", model_config=dense, cache_root=tmp_path / "f", progress=False
        )
