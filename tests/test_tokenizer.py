"""PromptTokenizer: template, left padding, save/load round trip, suffix ids, errors."""

import pytest
import torch

from cogvla.tokenizer import PromptTokenizer, format_prompt, libero_instructions

INSTRUCTIONS = [
    "put the black bowl on the plate",
    "open the top drawer and put the bowl inside",
    "turn on the stove",
]


@pytest.fixture(scope="module")
def tokenizer():
    return PromptTokenizer.train(INSTRUCTIONS, vocab_size=400)


def test_prompt_template_lowercases_the_instruction():
    assert (
        format_prompt("Turn ON the stove")
        == "In: What action should the robot take to turn on the stove?\nOut:"
    )


def test_special_ids_follow_llama(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.vocab_size <= 400


def test_encode_batch_left_pads(tokenizer):
    ids, mask = tokenizer.encode_batch(["turn on the stove", INSTRUCTIONS[1]])
    assert ids.dtype == mask.dtype == torch.long
    assert bool(mask[:, -1].all())
    short = int(mask[0].sum())
    assert short < int(mask[1].sum()) == ids.shape[1]
    assert bool((mask[0, : ids.shape[1] - short] == 0).all())
    assert bool((ids[0, : ids.shape[1] - short] == tokenizer.pad_token_id).all())
    assert tokenizer.decode(ids[0, mask[0].bool()].tolist()) == format_prompt("turn on the stove")
    assert 1 not in ids[0, mask[0].bool()].tolist(), "BOS is added by the model, not the tokenizer"


def test_unseen_words_still_encode(tokenizer):
    ids = tokenizer.encode("Pick up the ZEBRA")
    assert tokenizer.decode(ids) == format_prompt("pick up the zebra")


def test_save_load_round_trip_keeps_ids_and_suffix(tokenizer, tmp_path):
    with_suffix = PromptTokenizer(tokenizer.tokenizer, suffix_ids=(7,), max_length=64)
    with_suffix.save(tmp_path)
    loaded = PromptTokenizer.load(tmp_path)
    assert loaded.suffix_ids == (7,)
    assert torch.equal(loaded.encode_batch(INSTRUCTIONS)[0], with_suffix.encode_batch(INSTRUCTIONS)[0])
    assert loaded.encode(INSTRUCTIONS[0])[-1] == 7


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([], ValueError, "instructions: expected a non-empty sequence"),
        ("turn on the stove", ValueError, "instructions: expected a non-empty sequence"),
        (["  "], ValueError, "instruction: expected a non-empty string"),
        ([3], TypeError, "instruction: expected str, got int"),
    ],
)
def test_bad_instructions_are_named(tokenizer, value, error, match):
    with pytest.raises(error, match=match):
        tokenizer.encode_batch(value)


def test_too_long_prompt_is_rejected(tokenizer):
    short = PromptTokenizer(tokenizer.tokenizer, max_length=8)
    with pytest.raises(ValueError, match="instruction: expected at most 8 prompt tokens"):
        short.encode(INSTRUCTIONS[1])


def test_libero_instructions_cover_every_suite():
    pytest.importorskip("libero")
    instructions = libero_instructions()
    assert len(instructions) > 100
    assert (
        "pick up the black bowl between the plate and the ramekin and place it on the plate" in instructions
    )
