"""The forward pass never reads tensor values back to the host: it traces into one graph
with ``torch.compile(fullgraph=True)`` and runs on ``meta`` tensors, which have no values."""

from __future__ import annotations

import pytest
import torch

from cogvla.catten import attend
from cogvla.config import get_preset
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel

FORWARD_KEYS = ("pixel_values", "input_ids", "attention_mask", "proprio")


def _inputs(config, device: str = "cpu") -> list[torch.Tensor]:
    batch = fake_batch(config, batch_size=2, left_pad=[0, 2])
    return [batch[key].to(device) for key in FORWARD_KEYS]


def test_tiny_forward_compiles_as_one_graph():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    inputs = _inputs(model.config)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        eager = model(*inputs)
        traced = compiled(*inputs)
    torch.testing.assert_close(traced.actions, eager.actions, rtol=1e-5, atol=1e-6)
    assert traced.kept_per_layer == eager.kept_per_layer


@pytest.mark.parametrize("variant", ["cogvla", "dense"])
def test_forward_reads_no_values(variant):
    config = get_preset("tiny", variant)
    with torch.device("meta"):
        model = CogVLAModel(config).eval()
    with torch.no_grad():
        out = model(*_inputs(config, "meta"), padded=True)
    assert out.actions.shape == (2, config.chunk_size, config.action_dim)
    assert out.actions.is_meta


def test_meta_tensors_catch_a_value_read():
    query = torch.empty(1, 2, 6, 4, device="meta")
    valid = torch.ones(1, 6, dtype=torch.bool, device="meta")
    attend(query, query, query, valid, 2, catten=True, padded=True)
    with pytest.raises((RuntimeError, NotImplementedError)):
        attend(query, query, query, valid, 2, catten=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for the sync debug mode")
def test_cuda_forward_does_not_sync():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval().cuda()
    inputs = _inputs(model.config, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            model(*inputs, padded=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
