"""Every CogVLA stage against the float64 reference in ``reference_cogvla``, on a micro model
whose weights make every branch matter (see ``model_probe.lively_model``).

The model runs in float64 too; the Llama RMSNorm (``transformers``) and the RoPE tables
(``cogvla.llm``) are computed in float32 whatever the dtype, so LLM-side stages agree to
about 1e-6, vision-side ones to about 1e-13.
"""

import pytest
import torch
from model_probe import ModelTrace, lively_model, micro_config, micro_inputs, trace_model
from reference_cogvla import VISION, SampleTrace, reference_forward

from cogvla.catten import build_attention_mask
from cogvla.config import CogVLAConfig

VISION_TOL = {"rtol": 0.0, "atol": 1e-10}
LLM_TOL = {"rtol": 1e-5, "atol": 1e-5}

# (variant, attention implementation, padded batch): CogVLA in both CAtten forms, with and
# without pads (attention takes another path when there is none); "dense" covers the
# OpenVLA-OFT paths (patch tokens, fused projector, all-to-all attention, no routing)
CASES = [
    ("cogvla", "split", True),
    ("cogvla", "split", False),
    ("cogvla", "mask", True),
    ("dense", "split", True),
]


@pytest.fixture(
    scope="module",
    params=CASES,
    ids=[f"{variant}-{impl}-{'padded' if padded else 'unpadded'}" for variant, impl, padded in CASES],
)
def case(request) -> tuple[ModelTrace, list[SampleTrace], CogVLAConfig]:
    variant, impl, padded = request.param
    config = micro_config(variant, impl)
    model = lively_model(config)
    inputs = micro_inputs(config, padded=padded)
    return trace_model(model, inputs), reference_forward(model.state_dict(), config, **inputs), config


def _real(trace: ModelTrace, b: int) -> torch.Tensor:
    """Sequence positions of sample ``b``'s real (non-pad) tokens, in order."""
    return torch.where(trace.valid[b])[0]


def test_instruction_vector(case):
    trace, reference, config = case
    if not config.efa:
        assert trace.instruction is None, "without EFA the streams take no instruction"
        return
    for b, ref in enumerate(reference):
        torch.testing.assert_close(trace.instruction[b], ref.instruction, **VISION_TOL)


def test_stream_tokens(case):
    trace, reference, _ = case
    for b, ref in enumerate(reference):
        torch.testing.assert_close(trace.dino[b], ref.dino, **VISION_TOL)
        torch.testing.assert_close(trace.siglip[b], ref.siglip, **VISION_TOL)


def test_gate_and_vision_tokens_after_efa(case):
    trace, reference, _ = case
    for b, ref in enumerate(reference):
        if ref.gate is None:
            assert trace.out.gate is None
        else:
            torch.testing.assert_close(trace.out.gate[b], ref.gate, **VISION_TOL)
        torch.testing.assert_close(trace.out.vision_tokens[b], ref.vision, **VISION_TOL)


def test_llm_input_sequence(case):
    trace, reference, _ = case
    for b, ref in enumerate(reference):
        real = _real(trace, b)
        assert len(real) == len(ref.kinds)
        torch.testing.assert_close(trace.embeds[b, real], ref.embeds, **VISION_TOL)


def test_attention_mask(case):
    trace, reference, config = case
    mask = build_attention_mask(trace.valid, config.num_action_tokens + 1, catten=config.catten)
    for b, ref in enumerate(reference):
        real = _real(trace, b)
        assert torch.equal(mask[b, 0][real][:, real], ref.allowed)
        pads = torch.where(~trace.valid[b])[0]
        assert not bool(mask[b, 0][:, pads].any()), "pad keys must be hidden from every query"


def test_kept_tokens_per_routed_layer(case):
    trace, reference, _ = case
    for b, ref in enumerate(reference):
        real = _real(trace, b).tolist()
        for layer, (index, expected) in enumerate(zip(trace.out.kept_indices, ref.kept, strict=True)):
            if expected is None:
                assert index is None, f"layer {layer} should be dense"
                continue
            got = [real.index(i) for i in index[b].tolist() if i in real]
            assert got == expected, f"layer {layer}: kept {got}, reference {expected}"
            kept_vision = sum(ref.kinds[i] == VISION for i in expected)
            assert trace.out.kept_per_layer[layer] == kept_vision


def test_hidden_states_per_layer(case):
    trace, reference, _ = case
    for b, ref in enumerate(reference):
        real = _real(trace, b)
        for layer, (hidden, expected) in enumerate(zip(trace.layer_outputs, ref.layer_outputs, strict=True)):
            torch.testing.assert_close(
                hidden[b, real], expected, **LLM_TOL, msg=lambda m, layer=layer: f"layer {layer}: {m}"
            )


def test_rows_the_head_reads(case):
    trace, reference, _ = case
    for b, ref in enumerate(reference):
        torch.testing.assert_close(trace.head_rows[b], ref.head_rows, **LLM_TOL)


def test_actions(case):
    trace, reference, _ = case
    for b, ref in enumerate(reference):
        torch.testing.assert_close(trace.out.actions[b], ref.actions, **LLM_TOL)


def test_weights_make_every_branch_matter():
    # last in the file: a wrong stage is then reported by the comparison that names it
    config = micro_config()
    model = lively_model(config)
    inputs = micro_inputs(config)
    trace = trace_model(model, inputs)
    gate = trace.out.gate
    assert bool(((gate[:, 0] - 0.5).abs() > 0.1).all()), f"gate too close to 0.5: {gate.tolist()}"
    assert (gate[0] - gate[1]).abs().max() > 0.01, "the gate must depend on the instruction"
    film = model.dino.film[0]
    gamma, beta = film.params(trace.instruction)
    assert gamma.abs().mean() > 0.1 and beta.abs().mean() > 0.1
    layout_vision = slice(1, 1 + config.num_vision_tokens)
    for layer, x in zip(model.llm.layers, trace.layer_inputs, strict=True):
        if layer.router is None:
            continue
        normed = layer.input_layernorm(x)
        cond = normed[:, 1 + config.num_vision_tokens : -config.num_action_tokens - 1].mean(dim=1)
        probs = layer.router(normed, cond, layout_vision)[:, layout_vision]
        spread = probs.amax(dim=1) - probs.amin(dim=1)
        assert bool((spread > 0.1).all()), f"router probabilities barely spread: {spread.tolist()}"
        film_gamma, _ = layer.router.params(cond)
        assert film_gamma.abs().mean() > 0.1
