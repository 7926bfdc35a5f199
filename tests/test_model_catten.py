"""CAtten: the prefix never sees the action block, actions see the whole prefix, both forms agree."""

import pytest
import torch

from cogvla.catten import attend, build_attention_mask, flash_available
from cogvla.config import get_preset
from cogvla.fake_data import fake_batch
from cogvla.llm import SequenceLayout
from cogvla.modeling import CogVLAModel

N_VIS, PROMPT, PADS = 32, 10, 3


def _llm_case(impl: str = "split", variant: str = "cogvla", seed: int = 0):
    """The tiny LLM with random input embeddings; sample 1 has a left-padded prompt."""
    torch.manual_seed(seed)
    config = get_preset("tiny", variant).replace(attention_impl=impl)
    llm = CogVLAModel(config).llm.eval()
    block = config.num_action_tokens + 1
    seq = 1 + N_VIS + 1 + PROMPT + block
    embeds = torch.randn(2, seq, config.llm.hidden_size)
    valid = torch.ones(2, seq, dtype=torch.bool)
    valid[1, N_VIS + 2 : N_VIS + 2 + PADS] = False
    layout = SequenceLayout(
        num_vision=N_VIS, cond_start=1 + N_VIS, cond_end=2 + N_VIS + PROMPT, num_action_block=block
    )
    return llm, embeds, valid, layout, seq - block


@pytest.mark.parametrize("impl", ["split", "mask"])
def test_action_block_never_changes_prefix_outputs(impl):
    llm, embeds, valid, layout, prefix = _llm_case(impl)
    with torch.no_grad():
        before, _ = llm(embeds, valid, layout)
        changed = embeds.clone()
        changed[:, prefix:] = torch.randn_like(changed[:, prefix:]) * 5  # action slots and stop token
        after, _ = llm(changed, valid, layout)
    torch.testing.assert_close(after[:, :prefix], before[:, :prefix], rtol=0, atol=1e-6)
    assert (after[:, prefix:] - before[:, prefix:]).abs().max() > 1e-3


@pytest.mark.parametrize("impl", ["split", "mask"])
def test_later_prompt_token_never_changes_earlier_positions(impl):
    # LFP is off here: its router condition is the mean over proprio + prompt by design
    # (the instruction steers which vision tokens a layer keeps), so with LFP the prompt
    # reaches earlier positions through routing; the attention itself stays causal.
    llm, embeds, valid, layout, prefix = _llm_case(impl, variant="no-lfp")
    position = prefix - 3
    with torch.no_grad():
        before, _ = llm(embeds, valid, layout)
        changed = embeds.clone()
        changed[:, position] += 3.0
        after, _ = llm(changed, valid, layout)
    torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=1e-6)
    assert (after[:, position:] - before[:, position:]).abs().amax(dim=-1).min() > 0


def test_every_action_output_depends_on_every_prefix_token():
    llm, embeds, valid, layout, prefix = _llm_case()
    rows = embeds.shape[1] - prefix
    # one copy of sample 0 per action-block row, so one backward pass gives every row's gradient
    copies = embeds[:1].expand(rows, -1, -1).clone().requires_grad_(True)
    hidden, _ = llm(copies, valid[:1].expand(rows, -1), layout)
    picked = hidden[torch.arange(rows), prefix + torch.arange(rows)]  # (rows, D)
    (grad,) = torch.autograd.grad(picked.sum(), copies)
    reach = grad[:, :prefix].abs().sum(dim=-1)  # (rows, prefix)
    assert bool((reach > 0).all()), (
        f"unreached (row, prefix position) pairs: {torch.nonzero(reach == 0)[:5].tolist()}"
    )


def test_pad_keys_are_invisible():
    llm, embeds, valid, layout, _ = _llm_case()
    pads = torch.where(~valid[1])[0]
    with torch.no_grad():
        before, _ = llm(embeds, valid, layout)
        changed = embeds.clone()
        changed[1, pads] = torch.randn(len(pads), embeds.shape[-1]) * 5
        after, _ = llm(changed, valid, layout)
    keep = valid[1]
    torch.testing.assert_close(after[1, keep], before[1, keep], rtol=0, atol=1e-6)


def test_dense_variant_lets_the_prefix_see_the_actions():
    llm, embeds, valid, layout, prefix = _llm_case(variant="dense")
    with torch.no_grad():
        before, _ = llm(embeds, valid, layout)
        changed = embeds.clone()
        changed[:, prefix:] += 1.0
        after, _ = llm(changed, valid, layout)
    assert (after[:, :prefix] - before[:, :prefix]).abs().max() > 1e-4


def test_mask_matches_the_documented_pattern():
    valid = torch.tensor([[True, True, False, True, True, True]])
    mask = build_attention_mask(valid, num_action=2, catten=True)[0, 0].int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 1, 0, 0],
            [1, 1, 0, 1, 1, 1],
            [1, 1, 0, 1, 1, 1],
        ]
    )
    assert torch.equal(mask, expected)
    all_to_all = build_attention_mask(valid, num_action=2, catten=False)
    # One mask row set per sample, broadcast over the heads, like the CAtten one.
    shape = (1, 1, 6, 6)
    assert all_to_all.shape == build_attention_mask(valid, num_action=2, catten=True).shape == shape
    assert bool(all_to_all[0, 0, :, 2].logical_not().all())


@pytest.mark.parametrize("catten", [True, False])
def test_mask_and_two_call_paths_agree(catten):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 40, 16, generator=generator) for _ in range(3))
    valid = torch.ones(3, 40, dtype=torch.bool)
    valid[1, 5:9] = False
    valid[2, 3:4] = False
    split = attend(q, k, v, valid, 12, catten=catten, impl="split")
    mask = attend(q, k, v, valid, 12, catten=catten, impl="mask")
    torch.testing.assert_close(split, mask, rtol=0, atol=1e-5)


def test_model_actions_agree_between_attention_implementations():
    torch.manual_seed(0)
    split = CogVLAModel(get_preset("tiny")).eval()
    mask = CogVLAModel(get_preset("tiny").replace(attention_impl="mask")).eval()
    mask.load_state_dict(split.state_dict())
    batch = fake_batch(split.config, batch_size=2, left_pad=[0, 4])
    inputs = {key: batch[key] for key in ("pixel_values", "input_ids", "attention_mask", "proprio")}
    with torch.no_grad():
        torch.testing.assert_close(mask(**inputs).actions, split(**inputs).actions, rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_flash_attn_path_matches_sdpa_on_cuda():
    pytest.importorskip("flash_attn")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(3, 4, 40, 64, generator=generator, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    valid = torch.ones(3, 40, dtype=torch.bool, device="cuda")
    valid[1, 5:9] = False
    for catten in (True, False):
        flash = attend(q, k, v, valid, 12, catten=catten, impl="split")
        sdpa = attend(q, k, v, valid, 12, catten=catten, impl="mask")
        torch.testing.assert_close(
            flash[:, :, valid[1]].float(), sdpa[:, :, valid[1]].float(), atol=2e-2, rtol=0
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tensors_on_the_cpu_never_take_the_flash_path(dtype: torch.dtype) -> None:
    # bf16 on the CPU is a supported autocast dtype: it must fall back to SDPA, not flash-attn.
    query = torch.zeros(1, 2, 4, 8, dtype=dtype)
    assert not flash_available(query)
    out = attend(query, query, query, torch.ones(1, 4, dtype=torch.bool), 2, catten=True)
    assert out.shape == query.shape and out.dtype == dtype
