"""Importing synthetic OpenVLA-OFT and CogVLA checkpoints (reference key names, tiny widths).

The central check: the imported model computes exactly what a model does when the
same weights are put into its modules by hand (attribute by attribute, independently
of the importer's key tables), for both layouts.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from synthetic_checkpoints import (
    SPACE_ID,
    SyntheticDims,
    build_cogvla_checkpoint,
    build_oft_checkpoint,
    real_depth_dims,
)

from cogvla.cli import main as cli_main
from cogvla.config import CogVLAConfig
from cogvla.convert import import_released, is_released_checkpoint, load_released
from cogvla.convert.errors import UnnormKeyError
from cogvla.modeling import CogVLAModel


@pytest.fixture(scope="module")
def oft(tmp_path_factory):
    return build_oft_checkpoint(tmp_path_factory.mktemp("oft") / "openvla-7b-oft-finetuned-libero-spatial")


@pytest.fixture(scope="module")
def cogvla(tmp_path_factory):
    return build_cogvla_checkpoint(tmp_path_factory.mktemp("cogvla") / "cogvla-libero")


def _set(param: torch.Tensor, value: torch.Tensor) -> None:
    assert param.shape == value.shape, (param.shape, value.shape)
    param.data.copy_(value)


def _linear(module, w, key: str) -> None:
    _set(module.weight, w[f"{key}.weight"])
    if getattr(module, "bias", None) is not None:
        _set(module.bias, w[f"{key}.bias"])


def _load_dino(stream, w, prefix: str) -> None:
    emb = stream.vit.embeddings
    _set(emb.cls_token, w[f"{prefix}cls_token"])
    _set(emb.register_tokens, w[f"{prefix}reg_token"])
    pos = w[f"{prefix}pos_embed"]
    _set(emb.position_embeddings, torch.cat([torch.zeros(1, 1, pos.shape[-1]), pos], dim=1))
    _linear(emb.patch_embeddings.projection, w, f"{prefix}patch_embed.proj")
    for i, layer in enumerate(stream.vit.encoder.layer):
        p = f"{prefix}blocks.{i}"
        _linear(layer.norm1, w, f"{p}.norm1")
        _linear(layer.norm2, w, f"{p}.norm2")
        for proj, rows_w, rows_b in zip(
            (layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj),
            w[f"{p}.attn.qkv.weight"].chunk(3),
            w[f"{p}.attn.qkv.bias"].chunk(3),
            strict=True,
        ):
            _set(proj.weight, rows_w)
            _set(proj.bias, rows_b)
        _linear(layer.attention.o_proj, w, f"{p}.attn.proj")
        _set(layer.layer_scale1.lambda1, w[f"{p}.ls1.scale_factor"])
        _set(layer.layer_scale2.lambda1, w[f"{p}.ls2.scale_factor"])
        _linear(layer.mlp.fc1, w, f"{p}.mlp.fc1")
        _linear(layer.mlp.fc2, w, f"{p}.mlp.fc2")


def _load_siglip(stream, w, prefix: str) -> None:
    emb = stream.vit.embeddings
    _set(emb.position_embedding.weight, w[f"{prefix}pos_embed"][0])
    _linear(emb.patch_embedding, w, f"{prefix}patch_embed.proj")
    for i, layer in enumerate(stream.vit.encoder.layers):
        p = f"{prefix}blocks.{i}"
        _linear(layer.layer_norm1, w, f"{p}.norm1")
        _linear(layer.layer_norm2, w, f"{p}.norm2")
        attn = layer.self_attn
        for proj, rows_w, rows_b in zip(
            (attn.q_proj, attn.k_proj, attn.v_proj),
            w[f"{p}.attn.qkv.weight"].chunk(3),
            w[f"{p}.attn.qkv.bias"].chunk(3),
            strict=True,
        ):
            _set(proj.weight, rows_w)
            _set(proj.bias, rows_b)
        _linear(attn.out_proj, w, f"{p}.attn.proj")
        _linear(layer.mlp.fc1, w, f"{p}.mlp.fc1")
        _linear(layer.mlp.fc2, w, f"{p}.mlp.fc2")


def _direct_model(config, w: dict) -> CogVLAModel:
    """A model whose weights are placed by hand from the semantic synthetic tensors."""
    model = CogVLAModel(config).eval()
    with torch.no_grad():
        _load_dino(model.dino, w, "vision_backbone.featurizer.")
        _load_siglip(model.siglip, w, "vision_backbone.fused_featurizer.")
        if config.efa:
            for stream, tower in ((model.dino, "featurizer"), (model.siglip, "fused_featurizer")):
                _set(stream.aggregation_tokens, w[f"vision_aggr_{tower}"])
                for i, film in enumerate(stream.film):
                    _linear(film.scale, w, f"vision_backbone.{tower}.blocks.{i}.scale")
                    _linear(film.shift, w, f"vision_backbone.{tower}.blocks.{i}.shift")
            router = model.vision_projector
            _linear(router.dino_proj.fc1, w, "featurizer_proj.fc1")
            _linear(router.dino_proj.fc2, w, "featurizer_proj.fc2")
            _linear(router.siglip_proj.fc1, w, "fused_featurizer_proj.fc1")
            _linear(router.siglip_proj.fc2, w, "fused_featurizer_proj.fc2")
            _linear(router.gate[0], w, "aggregation_router.router.0")
            _linear(router.gate[2], w, "aggregation_router.router.2")
        else:
            for name in ("fc1", "fc2", "fc3"):
                _linear(getattr(model.vision_projector, name), w, f"projector.{name}")
        llm = model.llm
        _set(llm.embed_tokens.weight, w["language_model.model.embed_tokens.weight"])
        _set(llm.norm.weight, w["language_model.model.norm.weight"])
        for i, layer in enumerate(llm.layers):
            p = f"language_model.model.layers.{i}"
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                _linear(getattr(layer.self_attn, name), w, f"{p}.self_attn.{name}")
            for name in ("gate_proj", "up_proj", "down_proj"):
                _linear(getattr(layer.mlp, name), w, f"{p}.mlp.{name}")
            _linear(layer.input_layernorm, w, f"{p}.input_layernorm")
            _linear(layer.post_attention_layernorm, w, f"{p}.post_attention_layernorm")
            if layer.router is not None:
                _linear(layer.router.router, w, f"{p}.router.router")
                for m in ("scale", "shift"):
                    _linear(getattr(layer.router, m)[0], w, f"{p}.router.{m}.0")
                    _linear(getattr(layer.router, m)[2], w, f"{p}.router.{m}.2")
        head = model.action_head.model
        for name in ("layer_norm1", "fc1", "layer_norm2", "fc2"):
            _linear(getattr(head, name), w, f"action_head.model.{name}")
        for b, block in enumerate(head.mlp_resnet_blocks):
            _linear(block.ffn[0], w, f"action_head.model.mlp_resnet_blocks.{b}.ffn.0")
            _linear(block.ffn[1], w, f"action_head.model.mlp_resnet_blocks.{b}.ffn.1")
        _linear(model.proprio_projector.fc1, w, "proprio_projector.fc1")
        _linear(model.proprio_projector.fc2, w, "proprio_projector.fc2")
    return model


def _inputs(model: CogVLAModel, tokenizer) -> tuple[torch.Tensor, ...]:
    config = model.config
    gen = torch.Generator().manual_seed(3)
    pixels = torch.rand(2, config.num_images, 3, config.image_size, config.image_size, generator=gen)
    ids, mask = tokenizer.encode_batch(["put the bowl on the plate", "open the top drawer of the cabinet"])
    proprio = torch.rand(2, config.proprio_dim, generator=gen) * 2 - 1
    return pixels, ids, mask, proprio


@pytest.mark.parametrize("layout", ["oft", "cogvla"])
def test_imported_model_equals_hand_loaded_model(layout, request):
    ckpt = request.getfixturevalue(layout)
    result = import_released(ckpt.path, unnorm_key="libero_spatial", progress=False)
    model = result.model
    assert model.config.variant == ("dense" if layout == "oft" else "cogvla")
    assert (model.config.efa, model.config.lfp, model.config.catten) == (
        (False,) * 3 if layout == "oft" else (True,) * 3
    )
    direct = _direct_model(model.config, ckpt.weights)
    inputs = _inputs(model, result.tokenizer)
    with torch.no_grad():
        got, want = model(*inputs), direct(*inputs)
    assert got.actions.shape == (2, 8, 7)
    torch.testing.assert_close(got.actions, want.actions, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.vision_tokens, want.vision_tokens, atol=1e-5, rtol=1e-5)
    if layout == "cogvla":
        assert got.kept_per_layer == want.kept_per_layer
        assert max(got.kept_per_layer) < got.vision_tokens.shape[1]


@pytest.mark.parametrize("layout", ["oft", "cogvla"])
def test_report_shows_every_key_used_once_and_every_target_set(layout, request):
    ckpt = request.getfixturevalue(layout)
    report = import_released(ckpt.path, unnorm_key="libero_spatial", progress=False).report
    keys = report["source_keys"]
    stored = sum(f["stored_keys"] for f in report["files"])
    assert keys["each_used_exactly_once"] and keys["total"] == stored
    assert keys["loaded"] + keys["verified_duplicate"] + keys["discarded"] == stored
    assert report["weight_keys"]["found"] == report["weight_keys"]["expected_at_these_depths"]
    listing = report["target"]["listing"]
    assert all(entry["from"] or name.endswith("mask_token") for name, entry in listing.items())
    assert report["target"]["total_params"] == sum(
        torch.Size(entry["shape"]).numel() for entry in listing.values()
    )
    if layout == "cogvla":
        assert report["lora"]["scaling"] == ckpt.dims.lora_alpha / ckpt.dims.lora_rank
        assert report["lora"]["merged_modules"] == 4 * (ckpt.dims.dino_depth + ckpt.dims.siglip_depth) + 5


def test_real_depth_checkpoints_have_the_release_key_counts(tmp_path):
    dims = real_depth_dims()
    for build, expected in ((build_oft_checkpoint, 982), (build_cogvla_checkpoint, 1228)):
        ckpt = build(tmp_path / build.__name__, dims)
        weight_map = json.loads((ckpt.path / "model.safetensors.index.json").read_text())["weight_map"]
        assert len(weight_map) == expected
        if ckpt.kind == "cogvla":
            assert len(torch.load(next(ckpt.path.glob("vision_backbone--*.pt")), weights_only=True)) == 1309
            report = import_released(ckpt.path, unnorm_key="libero_10", progress=False).report
            assert report["weight_keys"] == {
                "found": 1228,
                "expected_at_these_depths": 1228,
                "expected_in_7b_release": 1228,
            }
            routed = [
                i for i, r in enumerate(CogVLAConfig.from_dict(report["model_config"]).keep_ratios()) if r
            ]
            assert routed == list(range(8, 32))


def test_stats_tokenizer_and_llama_settings_follow_the_release(cogvla):
    model, tokenizer, stats = load_released(cogvla.path, unnorm_key="libero_goal", progress=False)
    raw = json.loads((cogvla.path / "dataset_statistics.json").read_text())["libero_goal_no_noops"]
    assert model.norm_key == "libero_goal_no_noops"
    assert list(stats.action_q01) == pytest.approx(raw["action"]["q01"])
    assert list(stats.proprio_q99) == pytest.approx(raw["proprio"]["q99"])
    assert stats.action_mask == (True,) * 6 + (False,)
    ids = tokenizer.encode("Open the top drawer")
    assert ids[-1] == SPACE_ID and ids[0] != 1
    assert tokenizer.pad_token_id == 32000
    llm = model.config.llm
    assert (llm.vocab_size, llm.rms_norm_eps, llm.pad_token_id) == (32064, 1e-6, 32000)
    assert model.config.dino.mean == (0.485, 0.456, 0.406) and model.config.siglip.std == (0.5, 0.5, 0.5)
    assert model.config.center_crop


def test_unknown_unnorm_key_lists_the_available_keys(cogvla):
    with pytest.raises(UnnormKeyError, match=r"'libero_90' not found; available keys: libero_10_no_noops, "):
        load_released(cogvla.path, unnorm_key="libero_90", progress=False)
    with pytest.raises(UnnormKeyError, match=r"pick one with --unnorm-key"):
        load_released(cogvla.path, progress=False)


def test_cli_import_then_from_pretrained_round_trips(oft, tmp_path, capsys):
    out = tmp_path / "oft-spatial"
    assert cli_main(["import", str(oft.path), "--out", str(out), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["variant"] == "dense" and printed["source_keys"]["each_used_exactly_once"]
    report = json.loads((out / "import_report.json").read_text())
    assert report["unnorm_key"] == "libero_spatial_no_noops"
    assert is_released_checkpoint(oft.path) and not is_released_checkpoint(out)
    loaded = CogVLAModel.from_pretrained(out)
    model, tokenizer, _ = load_released(oft.path, progress=False)
    inputs = _inputs(model, tokenizer)
    assert torch.equal(
        loaded.tokenizer.encode_batch(["pick up the bowl"])[0],
        tokenizer.encode_batch(["pick up the bowl"])[0],
    )
    with torch.no_grad():
        assert torch.equal(loaded(*inputs).actions, model(*inputs).actions)


def test_bf16_import_keeps_bf16_weights(oft):
    model, _, _ = load_released(oft.path, dtype=torch.bfloat16, progress=False)
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.bfloat16}


def test_other_depths_follow_the_reference_schedule_fixed_for_32_layers(tmp_path):
    dims = replace(SyntheticDims(), llm_layers=16, lfp_average=0.5, step=80000)
    ckpt = build_cogvla_checkpoint(tmp_path / "cogvla-16-layers", dims)
    model = import_released(ckpt.path, unnorm_key="libero_goal", progress=False).model
    routed = [i for i, ratio in enumerate(model.config.keep_ratios()) if ratio is not None]
    assert routed == list(range(8, 16))
    assert model.config.lfp_schedule.schedule_layers == 32
