"""EFA-Routing: N aggregation tokens per image and stream, instruction-conditioned tokens and gate."""

import torch

from cogvla.config import get_preset
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel


def _inputs(batch):
    return {key: batch[key] for key in ("pixel_values", "input_ids", "attention_mask", "proprio")}


def test_each_image_yields_n_tokens_per_stream():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    config = model.config
    batch = fake_batch(config, batch_size=3)
    cond = torch.randn(3, config.llm.hidden_size)
    with torch.no_grad():
        dino = model.dino(batch["pixel_values"], cond)
        siglip = model.siglip(batch["pixel_values"], cond)
        out = model(**_inputs(batch))
    n_agg = config.num_aggregation_tokens
    assert dino.shape == (3, config.num_images, n_agg, config.dino.hidden_size)
    assert siglip.shape == (3, config.num_images, n_agg, config.siglip.hidden_size)
    assert out.vision_tokens.shape == (3, config.num_images * n_agg, config.llm.hidden_size)


def test_images_are_encoded_independently():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    batch = fake_batch(model.config, batch_size=1)
    changed = batch["pixel_values"].clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])  # wrist camera only
    cond = torch.randn(1, model.config.llm.hidden_size)
    with torch.no_grad():
        before = model.dino(batch["pixel_values"], cond)
        after = model.dino(changed, cond)
    assert torch.equal(before[:, 0], after[:, 0])
    assert not torch.equal(before[:, 1], after[:, 1])


def test_instruction_changes_the_vision_tokens():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    batch = fake_batch(model.config, batch_size=1)
    # a different multiset of tokens: the instruction vector is a mean, so order alone does not matter
    other = dict(_inputs(batch), input_ids=(batch["input_ids"] + 1) % model.config.llm.vocab_size)
    with torch.no_grad():
        a = model(**_inputs(batch)).vision_tokens
        b = model(**other).vision_tokens
    assert (a - b).abs().max() > 1e-6


def test_dense_vision_tokens_ignore_the_instruction():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny", "dense")).eval()
    batch = fake_batch(model.config, batch_size=1)
    other = dict(_inputs(batch), input_ids=(batch["input_ids"] + 1) % model.config.llm.vocab_size)
    with torch.no_grad():
        a = model(**_inputs(batch))
        b = model(**other)
    assert a.gate is None
    assert a.vision_tokens.shape[1] == 2 * model.config.num_patches == 128
    assert torch.equal(a.vision_tokens, b.vision_tokens)


def test_gate_weights_sum_to_one_per_sample():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    with torch.no_grad():
        out = model(**_inputs(fake_batch(model.config, batch_size=3, left_pad=[0, 2, 5])))
    assert out.gate.shape == (3, 2)
    torch.testing.assert_close(out.gate.sum(dim=-1), torch.ones(3))
    assert bool(((out.gate > 0.45) & (out.gate < 0.55)).all()), (
        "N(0, 0.02) init should start the gate near 0.5/0.5"
    )


def test_features_come_from_block_l_minus_2():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    batch = fake_batch(model.config, batch_size=1)
    cond = torch.randn(1, model.config.llm.hidden_size)
    with torch.no_grad():
        before = model.siglip(batch["pixel_values"], cond)
        for param in model.siglip.blocks[-1].parameters():
            param.add_(1.0)
        unchanged = model.siglip(batch["pixel_values"], cond)
        for param in model.siglip.blocks[-2].parameters():
            param.add_(1.0)
        changed = model.siglip(batch["pixel_values"], cond)
    assert torch.equal(before, unchanged)
    assert not torch.equal(before, changed)


def test_stream_weights_use_hf_key_names():
    keys = set(CogVLAModel(get_preset("tiny")).state_dict())
    assert "dino.vit.encoder.layer.0.attention.q_proj.weight" in keys
    assert "siglip.vit.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert "llm.layers.0.self_attn.q_proj.weight" in keys
    assert "llm.layers.5.router.scale.0.weight" in keys
