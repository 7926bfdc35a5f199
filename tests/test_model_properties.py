"""Targeted properties of the CogVLA stages, where a comparison with the reference is weak
or where the property itself is the point: stream order in the gate, pass-through of
pruned tokens, a prefix blind to the action slots, the head's read window, batch
independence, and the stream loop against ``transformers``' own ViT forward."""

import pytest
import torch
from model_probe import lively_model, micro_config, micro_inputs, trace_model


@pytest.fixture(scope="module")
def model():
    return lively_model(micro_config())


@pytest.fixture(scope="module")
def inputs(model):
    return micro_inputs(model.config)


def test_a_one_hot_gate_passes_exactly_one_stream(model, inputs):
    router = model.vision_projector
    bias = router.gate[2].bias
    saved = bias.detach().clone()
    streams = {}
    try:
        with torch.no_grad():
            for winner, logits in (("dino", [50.0, -50.0]), ("siglip", [-50.0, 50.0])):
                bias.copy_(torch.tensor(logits, dtype=bias.dtype))
                trace = trace_model(model, inputs)
                streams[winner] = trace.out.vision_tokens
                projector = router.dino_proj if winner == "dino" else router.siglip_proj
                expected = projector(getattr(trace, winner)).flatten(1, 2)
                torch.testing.assert_close(trace.out.vision_tokens, expected, rtol=0, atol=1e-12)
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    assert (streams["dino"] - streams["siglip"]).abs().max() > 0.1, (
        "the two streams must not be interchangeable"
    )


def test_pruned_tokens_leave_every_routed_layer_unchanged(model, inputs):
    trace = trace_model(model, inputs)
    routed = 0
    for layer, (before, after, index) in enumerate(
        zip(trace.layer_inputs, trace.layer_outputs, trace.out.kept_indices, strict=True)
    ):
        if index is None:
            continue
        routed += 1
        for b in range(before.shape[0]):
            pruned = torch.ones(before.shape[1], dtype=torch.bool)
            pruned[index[b]] = False
            assert int(pruned.sum()) > 0, f"layer {layer} pruned nothing"
            assert torch.equal(after[b, pruned], before[b, pruned]), f"layer {layer} changed a pruned token"
            assert bool((after[b, ~pruned] != before[b, ~pruned]).any(dim=-1).all()), (
                f"layer {layer} left a kept token unchanged"
            )
    assert routed == 4


def test_the_prefix_never_sees_the_action_slots(model, inputs):
    block = model.config.num_action_tokens + 1

    def fill_action_block(module, args):
        embeds = args[0].clone()
        generator = torch.Generator().manual_seed(3)
        embeds[:, -block:] = (
            torch.randn(embeds[:, -block:].shape, generator=generator, dtype=embeds.dtype) * 3
        )
        return (embeds, *args[1:])

    before = trace_model(model, inputs)
    handle = model.llm.register_forward_pre_hook(fill_action_block)
    try:
        after = trace_model(model, inputs)
    finally:
        handle.remove()
    for layer, (a, b) in enumerate(zip(before.layer_outputs, after.layer_outputs, strict=True)):
        torch.testing.assert_close(b[:, :-block], a[:, :-block], rtol=0, atol=1e-12, msg=f"layer {layer}")
        assert (b[:, -block:] - a[:, -block:]).abs().amax(dim=-1).min() > 1e-3
    for x, y in zip(before.out.kept_indices, after.out.kept_indices, strict=True):
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize(
    ("offset", "changed_steps"),
    [(1, None), (2, None), (None, [0])],
    ids=["stop", "last-action-slot", "last-prompt-token"],
)
def test_the_head_reads_the_window_shifted_one_left(model, inputs, offset, changed_steps):
    """Rows from the end: the stop token and the last slot are never read; the last prompt
    token is the first row read, so it feeds step 0 only."""
    seq = inputs["input_ids"].shape[1] + model.config.num_vision_tokens + model.config.num_action_tokens + 3
    row = seq - offset if offset is not None else seq - model.config.num_action_tokens - 2

    def perturb(module, args, output):
        hidden = output[0].clone()
        hidden[:, row] += 1.0
        return (hidden, *output[1:])

    plain = trace_model(model, inputs).out.actions
    handle = model.llm.register_forward_hook(perturb)
    try:
        moved = trace_model(model, inputs).out.actions
    finally:
        handle.remove()
    changed = [step for step in range(plain.shape[1]) if not torch.equal(plain[:, step], moved[:, step])]
    assert changed == (changed_steps or [])


def test_each_sample_is_computed_as_if_alone(model, inputs):
    batched = trace_model(model, inputs).out
    for b in range(inputs["input_ids"].shape[0]):
        alone = {key: value[b : b + 1] for key, value in inputs.items()}
        pads = int((alone["attention_mask"] == 0).sum())
        alone["input_ids"], alone["attention_mask"] = (
            alone["input_ids"][:, pads:],
            alone["attention_mask"][:, pads:],
        )
        single = trace_model(model, alone).out
        torch.testing.assert_close(single.actions[0], batched.actions[b], rtol=0, atol=1e-9)
        torch.testing.assert_close(single.vision_tokens[0], batched.vision_tokens[b], rtol=0, atol=1e-12)


@pytest.mark.parametrize("stream", ["dino", "siglip"])
def test_an_unconditioned_stream_is_the_hf_forward_at_block_l_minus_2(stream):
    dense = lively_model(micro_config("dense"))
    encoder = getattr(dense, stream)
    vit = encoder.config
    images = micro_inputs(dense.config)["pixel_values"]
    mean = torch.tensor(vit.mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(vit.std, dtype=images.dtype).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = encoder(images)
        hf = encoder.vit(pixel_values=(images.flatten(0, 1) - mean) / std, output_hidden_states=True)
    # hidden_states[0] is the embedding output, so block i's output is hidden_states[i + 1]
    features = hf.hidden_states[vit.feature_layer + 1][:, vit.num_prefix_tokens :]
    assert features.shape[1] == encoder.num_patches
    torch.testing.assert_close(ours.flatten(0, 1), features, rtol=0, atol=1e-12)
