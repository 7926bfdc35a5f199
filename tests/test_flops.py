"""Analytic FLOPs/params equal brute-force counts of the real model, and match the paper's Table 3."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from cogvla.cli import main
from cogvla.config import VARIANTS, get_preset
from cogvla.fake_data import fake_batch
from cogvla.flops import count_flops, count_params
from cogvla.modeling import CogVLAModel

# CogVLA Table 3 (reference section 7.3), TFLOPs per LIBERO query
PAPER_TFLOPS = {"cogvla": 2.72, "dense": 8.45, "no-efa": 5.38, "no-lfp": 3.52}


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs):
    # torch's counter has no formula for the CPU flash kernel SDPA dispatches to
    return sdpa_flop_count(query, key, value)


@pytest.mark.parametrize(
    ("variant", "impl", "batch_size"),
    [
        ("cogvla", "split", 2),
        ("cogvla", "mask", 1),
        ("dense", "split", 1),
        ("no-efa", "mask", 1),
        ("no-lfp", "split", 1),
    ],
)
def test_analytic_flops_equal_counted_flops_on_tiny(variant, impl, batch_size):
    torch.manual_seed(0)
    config = get_preset("tiny", variant).replace(attention_impl=impl)
    model = CogVLAModel(config).eval()
    batch = fake_batch(config, batch_size=batch_size, prompt_tokens=17)
    counter = FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops},
    )
    with torch.no_grad(), counter:
        model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["proprio"])
    assert count_flops(config, prompt_tokens=17, batch_size=batch_size).total == counter.get_total_flops()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_analytic_params_equal_model_params_on_tiny(variant):
    config = get_preset("tiny", variant)
    assert count_params(config)["total"] == sum(p.numel() for p in CogVLAModel(config).parameters())


@pytest.mark.parametrize("variant", sorted(PAPER_TFLOPS))
def test_7b_flops_within_10_percent_of_table_3(variant):
    tflops = count_flops(get_preset("cogvla-7b", variant)).total / 1e12
    assert abs(tflops / PAPER_TFLOPS[variant] - 1) < 0.10, (
        f"{variant}: {tflops:.3f} T vs paper {PAPER_TFLOPS[variant]} T"
    )


def test_7b_vision_tokens_and_new_module_sizes():
    config = get_preset("cogvla-7b")
    report = count_flops(config)
    params = count_params(config)
    assert report.vision_tokens_in_llm == 128
    assert count_flops(get_preset("cogvla-7b", "dense")).vision_tokens_in_llm == 512
    # reference sections 6.2 and 2.4-2.8
    assert params["vision_film"] == 456_241_920
    assert params["aggregation_tokens"] == 139_264
    assert params["projector_gate"] == 59_273_218
    assert params["lfp_routers"] == 805_797_936
    assert params["proprio_projector"] == 16_818_176
    assert params["action_head"] == 151_117_831


def test_flops_cli_prints_json(capsys):
    assert main(["flops", "--preset", "cogvla-7b", "--variant", "no-lfp", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["variant"] == "no-lfp"
    assert result["vision_tokens_in_llm"] == 128
    assert result["tflops"] == pytest.approx(sum(result["stages"].values()))
    assert result["params_b"] == pytest.approx(count_params(get_preset("cogvla-7b", "no-lfp"))["total"] / 1e9)


def test_flops_rejects_empty_prompt():
    with pytest.raises(ValueError, match="prompt_tokens: expected >= 1, got 0"):
        count_flops(get_preset("tiny"), prompt_tokens=0)
