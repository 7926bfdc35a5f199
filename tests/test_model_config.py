"""Presets, variants, config round trips and the meta-device build of the 7B model."""

import json

import pytest
import torch

from cogvla.config import PRESETS, VARIANTS, CogVLAConfig, ConfigError, get_preset
from cogvla.flops import count_params
from cogvla.modeling import CogVLAModel


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_json_round_trip(preset, variant):
    config = get_preset(preset, variant)
    assert CogVLAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_variants_switch_the_stages():
    assert [
        (c.efa, c.lfp, c.catten)
        for c in (get_preset("tiny", v) for v in ("cogvla", "dense", "no-efa", "no-lfp"))
    ] == [
        (True, True, True),
        (False, False, False),
        (False, True, True),
        (True, False, True),
    ]


def test_paper_dimensions():
    config = get_preset("cogvla-7b")
    assert (config.llm.hidden_size, config.llm.num_layers, config.llm.num_heads) == (4096, 32, 32)
    assert (config.llm.intermediate_size, config.llm.vocab_size, config.llm.rms_norm_eps) == (
        11008,
        32064,
        1e-6,
    )
    assert (
        config.dino.hidden_size,
        config.dino.num_layers,
        config.dino.mlp_dim,
        config.dino.num_register_tokens,
    ) == (1024, 24, 4096, 4)
    assert (config.siglip.hidden_size, config.siglip.num_layers, config.siglip.mlp_dim) == (1152, 27, 4304)
    assert (config.image_size, config.dino.patch_size, config.num_aggregation_tokens) == (224, 14, 64)
    assert (config.num_images, config.chunk_size, config.action_dim, config.proprio_dim) == (2, 8, 7, 8)


def test_7b_builds_on_meta_device_with_the_analytic_parameter_count():
    config = get_preset("cogvla-7b")
    with torch.device("meta"):
        model = CogVLAModel(config)
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) == count_params(config)["total"]


def test_unknown_preset_and_variant_suggest_a_name():
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        get_preset("tinny")
    with pytest.raises(ConfigError, match="did you mean 'no-lfp'"):
        get_preset("tiny", "no_lfp")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"image_size": 100}, "image_size: expected a multiple of dinov2 patch_size=16"),
        ({"num_images": 0}, "num_images: expected >= 1, got 0"),
        ({"attention_impl": "flash"}, "attention_impl: expected 'split' or 'mask'"),
    ],
)
def test_invalid_fields_are_named(changes, match):
    with pytest.raises(ConfigError, match=match):
        get_preset("tiny").replace(**changes)


def test_from_dict_names_odd_keys():
    data = get_preset("tiny").to_dict()
    data["llm"]["hidden"] = data["llm"].pop("hidden_size")
    with pytest.raises(ConfigError, match=r"llm: unknown keys \['hidden'\], missing keys \['hidden_size'\]"):
        CogVLAConfig.from_dict(data)
