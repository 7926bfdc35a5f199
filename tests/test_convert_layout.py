"""Layout detection, Llama defaults, LFP schedule, dataset statistics and LoRA merging."""

from __future__ import annotations

import json

import pytest
import torch

from cogvla.convert.errors import CheckpointFileError, UnnormKeyError, UnsupportedLayoutError
from cogvla.convert.files import read_lora_settings
from cogvla.convert.layout import parse_released_config
from cogvla.convert.sources import LoRAMergedSource, MemorySource
from cogvla.convert.stats import resolve_unnorm_key, select_norm_stats

# The base openvla-7b config.json as OFT re-saves it: text_config is a diff against LlamaConfig().
OFT_CONFIG = {
    "model_type": "openvla",
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_override_act_layers": [None, None],
    "image_sizes": [224, 224],
    "pad_token_id": 32000,
    "text_config": {
        "model_type": "llama",
        "pad_token_id": 32000,
        "torch_dtype": "bfloat16",
        "vocab_size": 32064,
    },
}
COGVLA_CONFIG = {
    **OFT_CONFIG,
    "vision_aggregate_type": "moe",
    "num_vision_aggr": 64,
    "use_aggr": True,
    "use_film": True,
    "text_config": {
        **OFT_CONFIG["text_config"],
        "use_lfp": True,
        "lfp_type": "shiftedcos_decay_0.85_0.15",
        "lfp_average_factor": 0.5,
        "lfp_enable_film": True,
    },
}


def test_absent_cogvla_fields_mean_oft_with_llama_4_40_defaults():
    released = parse_released_config(OFT_CONFIG)
    assert released.kind == "oft" and released.lfp is None and not released.use_film
    text = released.text
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (4096, 32, 32)
    assert (text.intermediate_size, text.vocab_size, text.rms_norm_eps) == (11008, 32064, 1e-6)
    assert text.num_key_value_heads == 32 and text.pad_token_id == 32000


def test_explicit_rms_eps_in_config_wins():
    config = {**OFT_CONFIG, "text_config": {**OFT_CONFIG["text_config"], "rms_norm_eps": 1e-5}}
    assert parse_released_config(config).text.rms_norm_eps == 1e-5


def test_cogvla_layout_routes_layers_8_to_31_with_reference_kept_counts():
    released = parse_released_config(COGVLA_CONFIG)
    assert released.kind == "cogvla" and released.num_vision_aggr == 64
    assert released.lfp_layers == tuple(range(8, 32))
    kept = [int(128 * released.lfp.ratio(i)) for i in range(8, 24)]
    assert kept == [108, 103, 97, 92, 86, 80, 73, 67, 60, 54, 47, 41, 35, 30, 24, 19]


def test_unsupported_fields_are_named():
    with pytest.raises(UnsupportedLayoutError, match=r"timm_override_act_layers: expected \[null, null\]"):
        parse_released_config({**OFT_CONFIG, "timm_override_act_layers": ["gelu_tanh", None]})
    with pytest.raises(
        UnsupportedLayoutError, match=r"lfp_type: expected 'shiftedcos_decay_MAX_MIN', got 'interleave'"
    ):
        parse_released_config(
            {**COGVLA_CONFIG, "text_config": {**COGVLA_CONFIG["text_config"], "lfp_type": "interleave"}}
        )
    with pytest.raises(UnsupportedLayoutError, match=r"model_type: expected 'openvla', got 'llama'"):
        parse_released_config({**OFT_CONFIG, "model_type": "llama"})


def _stats(*keys: str) -> dict:
    block = {"q01": [0.0] * 7, "q99": [2.0] * 7, "mask": [True] * 6 + [False]}
    return {key: {"action": block, "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8}} for key in keys}


def test_unnorm_key_resolution_follows_the_reference():
    stats = _stats("libero_spatial_no_noops", "libero_goal_no_noops")
    assert resolve_unnorm_key(stats, "libero_goal") == "libero_goal_no_noops"
    assert resolve_unnorm_key(stats, "libero_spatial_no_noops") == "libero_spatial_no_noops"
    assert resolve_unnorm_key(_stats("only_key"), None) == "only_key"
    with pytest.raises(UnnormKeyError, match="available keys: libero_goal_no_noops, libero_spatial_no_noops"):
        resolve_unnorm_key(stats, "bridge_orig")


def test_norm_stats_use_q01_q99_and_leave_the_masked_gripper_alone():
    _, stats = select_norm_stats(_stats("k"), "k", action_dim=7, proprio_dim=8)
    robot = stats.unnormalize_actions(torch.tensor([[0.0] * 6 + [1.0]]).numpy())
    assert robot[0, :6].tolist() == pytest.approx([1.0] * 6)
    assert robot[0, 6] == -1.0  # model 1 = open -> LIBERO -1 = open
    with pytest.raises(CheckpointFileError, match=r"k\.proprio\.q01: expected 9 values, got 8"):
        select_norm_stats(_stats("k"), "k", action_dim=7, proprio_dim=9)


def test_lora_merge_is_base_plus_scaled_b_a(tmp_path):
    gen = torch.Generator().manual_seed(0)
    base, a, b = (torch.randn(*s, generator=gen) for s in ((6, 5), (2, 5), (6, 2)))
    source = MemorySource(
        "vision.pt",
        {
            "m.base_layer.weight": base,
            "m.base_layer.bias": torch.ones(6),
            "m.lora_A.default.weight": a,
            "m.lora_B.default.weight": b,
            "cls_token": torch.zeros(1, 1, 5),
        },
    )
    merged = LoRAMergedSource(source, rank=2, scaling=0.5)
    assert sorted(merged.tensor_keys()) == ["cls_token", "m.bias", "m.weight"]
    torch.testing.assert_close(merged.load("m.weight"), base + 0.5 * b @ a)
    assert [key for _, key in merged.origin("m.weight")] == [
        "m.base_layer.weight",
        "m.lora_A.default.weight",
        "m.lora_B.default.weight",
    ]


def test_adapter_config_scaling(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"r": 32, "lora_alpha": 16, "use_rslora": False}))
    assert read_lora_settings(path).scaling == 0.5
    path.write_text(json.dumps({"r": 16, "lora_alpha": 16, "use_rslora": True}))
    assert read_lora_settings(path).scaling == 4.0
    path.write_text(json.dumps({"r": 32, "lora_alpha": 16, "rank_pattern": {"q_proj": 8}}))
    with pytest.raises(UnsupportedLayoutError, match="rank_pattern: per-module LoRA ranks are not supported"):
        read_lora_settings(path)
