"""What a run starts from and what it trains: a pinned EFA gate, re-initialized modules, frozen ones."""

from __future__ import annotations

import pytest
import torch
from test_train import TASKS, run, small_model_config, small_train_config, weights, write_demos

from cogvla.efa import AggregationRouter
from cogvla.modeling import CogVLAModel
from cogvla.tokenizer import PromptTokenizer
from cogvla.train.run_log import read_log


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


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("demos"), episodes_per_task=1, length=8)


def test_a_run_pinned_to_dino_trains_with_the_dino_stream_only(demos, tmp_path):
    config = small_train_config(steps=3, warmup_steps=1, save_every=3, pin_gate="dino")
    run(config, demos, tmp_path / "run", tmp_path / "f")
    assert all(record["gate_dino"] > 0.999 for record in read_log(tmp_path / "run" / "log.jsonl"))
    dense = small_model_config().replace(efa=False)
    with pytest.raises(ValueError, match="pin_gate: the model has no EFA gate"):
        run(config, demos, tmp_path / "other", tmp_path / "f", model_config=dense)


@pytest.fixture
def saved_model(tmp_path):
    torch.manual_seed(11)
    CogVLAModel(small_model_config()).save_pretrained(
        tmp_path / "saved", tokenizer=PromptTokenizer.train(list(TASKS), vocab_size=512)
    )
    return tmp_path / "saved"


def test_reinit_and_train_only_give_a_fresh_encoder_and_freeze_the_rest(demos, saved_model, tmp_path):
    config = small_train_config(
        steps=2,
        warmup_steps=1,
        save_every=2,
        init_mode="full",
        reinit_modules=("dino",),
        trainable_modules=("siglip",),
    )
    run(config, demos, tmp_path / "run", tmp_path / "f", model_config=None, init_from=saved_model)
    before, after = weights(saved_model), weights(tmp_path / "run" / "checkpoints" / "step_000002")
    torch.manual_seed(config.seed)
    fresh = CogVLAModel(small_model_config()).state_dict()
    dino = [key for key in after if key.startswith("dino.")]
    assert dino and all(torch.equal(after[key], fresh[key].to(after[key].dtype)) for key in dino)
    assert not all(torch.equal(after[key], before[key]) for key in dino)
    frozen = [key for key in after if not key.startswith(("dino.", "siglip."))]
    assert all(torch.equal(after[key], before[key]) for key in frozen)
    assert not all(torch.equal(after[key], before[key]) for key in after if key.startswith("siglip."))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reinit_modules": ("dinov3",)}, r"reinit_modules: no module \['dinov3'\] in the model"),
        ({"trainable_modules": ("llm.nope",)}, r"trainable_modules: no module \['llm.nope'\]"),
        ({"trainable_modules": ("llm",), "init_mode": "lora"}, "trainable_modules: LoRA decides"),
    ],
)
def test_unknown_modules_and_lora_are_refused_by_field(demos, saved_model, tmp_path, changes, message):
    config = small_train_config(steps=1, warmup_steps=0, **{"init_mode": "full", **changes})
    with pytest.raises(ValueError, match=message):
        run(config, demos, tmp_path / "run", tmp_path / "f", model_config=None, init_from=saved_model)
