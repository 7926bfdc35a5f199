"""LFP-Routing: schedule, pass-through of pruned tokens, non-vision tokens always kept, router gradients."""

import torch

from cogvla.config import LFPConfig, get_preset
from cogvla.fake_data import fake_batch
from cogvla.lfp import masked_mean
from cogvla.llm import SequenceLayout, positions_from_valid
from cogvla.modeling import CogVLAModel

# reference section 4.1: kept vision tokens per Llama layer for 2 images x 64 aggregation tokens
PAPER_KEPT = [128] * 8 + [108, 103, 97, 92, 86, 80, 73, 67, 60, 54, 47, 41, 35, 30, 24] + [19] * 9


def _inputs(batch):
    return {key: batch[key] for key in ("pixel_values", "input_ids", "attention_mask", "proprio")}


def test_paper_schedule_routes_layers_8_to_31():
    config = get_preset("cogvla-7b")
    ratios = config.keep_ratios()
    assert [i for i, ratio in enumerate(ratios) if ratio is not None] == list(range(8, 32))
    assert config.kept_vision_tokens() == PAPER_KEPT


def test_schedule_fields_change_the_schedule():
    flat = LFPConfig(max_ratio=0.85, min_ratio=0.5, average=0.5).keep_ratios(6)
    assert flat[-1] == 0.5
    assert LFPConfig(max_ratio=1.0).keep_ratios(6)[0] == 1.0


def test_kept_counts_follow_the_schedule():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    with torch.no_grad():
        out = model(**_inputs(fake_batch(model.config, left_pad=[0, 3])))
    n_vis = model.config.num_vision_tokens
    expected = [n_vis if r is None else int(n_vis * r) for r in model.config.lfp_schedule.keep_ratios(6)]
    assert out.kept_per_layer == expected == [32, 32, 20, 11, 4, 4]
    for kept, index in zip(out.kept_per_layer, out.kept_indices, strict=True):
        if index is not None:
            assert int(((index >= 1) & (index < 1 + n_vis)).sum(dim=1).unique()) == kept


def test_non_vision_tokens_are_never_pruned():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    batch = fake_batch(model.config, left_pad=[0, 3])
    with torch.no_grad():
        out = model(**_inputs(batch))
    n_vis = model.config.num_vision_tokens
    seq = 1 + n_vis + 1 + batch["input_ids"].shape[1] + model.config.num_action_tokens + 1
    non_vision = torch.tensor([0, *range(1 + n_vis, seq)])
    routed = [index for index in out.kept_indices if index is not None]
    assert len(routed) == 4
    for index, kept in zip(routed, out.kept_per_layer[2:], strict=True):
        for row in index:
            assert set(non_vision.tolist()) <= set(row.tolist())
            vision = row[(row >= 1) & (row < 1 + n_vis)]
            assert len(vision) == kept
            assert bool((row[1:] > row[:-1]).all()), "kept tokens must stay in sequence order"


def test_pruned_tokens_leave_a_routed_layer_bit_identical():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    llm = model.llm
    n_vis, prompt, block = 32, 8, model.config.num_action_tokens + 1
    seq = 1 + n_vis + 1 + prompt + block
    x = torch.randn(2, seq, 256)
    valid = torch.ones(2, seq, dtype=torch.bool)
    layout = SequenceLayout(
        num_vision=n_vis, cond_start=1 + n_vis, cond_end=2 + n_vis + prompt, num_action_block=block
    )
    layer = llm.layers[3]
    assert layer.router is not None
    with torch.no_grad():
        out, index = layer(x, llm.prepare(x, valid, layout))
    for row in range(2):
        kept = set(index[row].tolist())
        pruned = [i for i in range(1, 1 + n_vis) if i not in kept]
        assert len(pruned) == n_vis - int(n_vis * layer.keep_ratio)
        assert torch.equal(out[row, pruned], x[row, pruned])
        assert not torch.equal(out[row, sorted(kept)], x[row, sorted(kept)])


def test_routed_layer_renumbers_positions_compactly():
    valid = torch.tensor([[True, True, False, False, True, True]])
    assert positions_from_valid(valid).tolist() == [[0, 1, 1, 1, 2, 3]]


def test_router_gets_gradients():
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).train()
    loss, _ = model.compute_loss(fake_batch(model.config, left_pad=[0, 3]))
    loss.backward()
    routed = [layer for layer in model.llm.layers if layer.router is not None]
    assert len(routed) == 4
    for position, layer in enumerate(routed):
        for name, param in layer.router.named_parameters():
            # The last layer's vision outputs are read by nothing, so its FiLM (which only
            # shapes vision scores) gets no gradient; its classifier still learns through
            # the probabilities of the kept prompt and action tokens.
            if position == len(routed) - 1 and not name.startswith("router."):
                continue
            assert param.grad is not None and param.grad.abs().sum() > 0, (
                f"router parameter {name} got no gradient"
            )


def test_masked_mean_averages_the_kept_positions_and_gives_zero_for_none():
    x = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[False, True, False], [False, False, False]])
    out = masked_mean(x, mask)
    # One position kept: the mean is that row itself; none kept: zeros, not NaN.
    torch.testing.assert_close(out, torch.stack([x[0, 1], torch.zeros(4)]))
    both = masked_mean(x, torch.tensor([[True, False, True], [True, True, True]]))
    torch.testing.assert_close(both, torch.stack([(x[0, 0] + x[0, 2]) / 2, x[1].mean(0)]))
