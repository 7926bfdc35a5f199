"""Broken released checkpoints fail loudly, naming the file and the key."""

from __future__ import annotations

import argparse
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic_checkpoints import build_cogvla_checkpoint, build_oft_checkpoint

from cogvla.convert import load_released
from cogvla.convert.errors import (
    CheckpointFileError,
    KeyMismatchError,
    ReleasedCheckpointError,
    ShapeMismatchError,
    UnsupportedLayoutError,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    return {"oft": build_oft_checkpoint(root / "oft"), "cogvla": build_cogvla_checkpoint(root / "cogvla")}


@pytest.fixture
def oft(pristine, tmp_path):
    shutil.copytree(pristine["oft"].path, tmp_path / "oft")
    return SimpleNamespace(path=tmp_path / "oft", dims=pristine["oft"].dims)


@pytest.fixture
def cogvla(pristine, tmp_path):
    shutil.copytree(pristine["cogvla"].path, tmp_path / "cogvla")
    return SimpleNamespace(path=tmp_path / "cogvla", dims=pristine["cogvla"].dims)


def _shard_of(path, key: str) -> str:
    return json.loads((path / "model.safetensors.index.json").read_text())["weight_map"][key]


def _edit_shard(path, key: str, value: torch.Tensor | None, *, index: bool = True) -> str:
    """Replace (or add, or with ``value=None`` delete) ``key`` in the shard holding its layer."""
    index_path = path / "model.safetensors.index.json"
    weight_map = json.loads(index_path.read_text())
    shard = weight_map["weight_map"].get(key) or _shard_of(path, "language_model.model.norm.weight")
    tensors = load_file(str(path / shard))
    if value is None:
        del tensors[key]
        weight_map["weight_map"].pop(key)
    else:
        tensors[key] = value
        weight_map["weight_map"][key] = shard
    save_file(tensors, str(path / shard), metadata={"format": "pt"})
    if index:
        index_path.write_text(json.dumps(weight_map))
    return shard


def test_missing_shard_names_the_file_and_what_it_holds(oft):
    (oft.path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(
        CheckpointFileError,
        match=r"shard file\(s\) model-00002-of-00003\.safetensors missing.*hold \d+ tensor",
    ):
        load_released(oft.path, progress=False)


def test_wrong_shape_names_source_file_key_and_target(oft):
    key = "language_model.model.layers.1.mlp.up_proj.weight"
    shard = _edit_shard(oft.path, key, torch.zeros(95, oft.dims.llm_hidden, dtype=torch.bfloat16))
    pattern = rf"{shard}:{key} \(95, 64\): becomes llm\.layers\.1\.mlp\.up_proj\.weight .* expects \(96, 64\)"
    with pytest.raises(ShapeMismatchError, match=pattern):
        load_released(oft.path, progress=False)


def test_extra_key_is_an_error_not_a_silent_skip(oft):
    key = "language_model.model.layers.0.self_attn.rotary_emb.inv_freq"
    shard = _edit_shard(oft.path, key, torch.ones(8))
    with pytest.raises(KeyMismatchError, match=rf"unknown keys(.|\n)*{shard}: 1 key\(s\): {key}"):
        load_released(oft.path, progress=False)


def test_missing_key_is_named(oft):
    _edit_shard(oft.path, "vision_backbone.featurizer.blocks.2.ls2.scale_factor", None)
    with pytest.raises(
        KeyMismatchError,
        match=r"missing keys(.|\n)*vision_backbone\.featurizer\.blocks\.2\.ls2\.scale_factor",
    ):
        load_released(oft.path, progress=False)


def test_shard_disagreeing_with_index_is_named(oft):
    shard = _edit_shard(oft.path, "projector.fc9.weight", torch.ones(2), index=False)
    with pytest.raises(
        CheckpointFileError,
        match=rf"{shard}: does not match model.safetensors.index.json: keys the index does not list: projector\.fc9\.weight",
    ):
        load_released(oft.path, progress=False)


def test_pickle_that_needs_weights_only_false_is_refused(oft):
    path = next(oft.path.glob("proprio_projector--*.pt"))
    state = torch.load(path, weights_only=True)
    torch.save({**state, "module.train_args": argparse.Namespace(lr=5e-4)}, path)
    with pytest.raises(
        CheckpointFileError,
        match=rf"{path.name}: refusing to load: it needs torch.load\(weights_only=False\).*argparse\.Namespace",
    ):
        load_released(oft.path, progress=False)


def test_non_tensor_entry_in_state_dict_is_named(oft):
    path = next(oft.path.glob("action_head--*.pt"))
    torch.save({**torch.load(path, weights_only=True), "module.step": 150000}, path)
    with pytest.raises(
        CheckpointFileError,
        match=r"only tensors in the state dict, these keys hold other objects: module\.step",
    ):
        load_released(oft.path, progress=False)


def test_unpaired_lora_tensor_names_the_module(cogvla):
    path = next(cogvla.path.glob("vision_backbone--*.pt"))
    state = torch.load(path, weights_only=True)
    del state["vision_backbone.featurizer.blocks.1.block.mlp.fc2.lora_B.default.weight"]
    torch.save(state, path)
    with pytest.raises(
        CheckpointFileError,
        match=r"LoRA-wrapped vision_backbone\.featurizer\.blocks\.1\.block\.mlp\.fc2: .* lacks .*lora_B\.default\.weight",
    ):
        load_released(cogvla.path, unnorm_key="libero_10", progress=False)


def test_lora_rank_must_match_adapter_config(cogvla):
    config_path = cogvla.path / "lora_adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "r": 32}))
    with pytest.raises(ShapeMismatchError, match=r"lora_A \(32, in\).*rank 32 from adapter_config\.json"):
        load_released(cogvla.path, unnorm_key="libero_10", progress=False)


def test_cogvla_without_vision_backbone_file_is_refused(cogvla):
    next(cogvla.path.glob("vision_backbone--*.pt")).unlink()
    with pytest.raises(
        CheckpointFileError, match=r"use_film=true but there is no vision_backbone--<STEP>_checkpoint\.pt"
    ):
        load_released(cogvla.path, unnorm_key="libero_10", progress=False)


def test_duplicate_trainables_must_equal_the_merged_shards(cogvla):
    path = next(cogvla.path.glob("non_lora_trainables--*.pt"))
    state = torch.load(path, weights_only=True)
    state["aggregation_router.router.2.bias"] = state["aggregation_router.router.2.bias"] + 1
    torch.save(state, path)
    with pytest.raises(
        ReleasedCheckpointError,
        match=r"non_lora_trainables--80000_checkpoint\.pt:aggregation_router\.router\.2\.bias differs .*model-0000\d-of-00003\.safetensors:aggregation_router\.router\.2\.bias",
    ):
        load_released(cogvla.path, unnorm_key="libero_10", progress=False)


def test_stray_weight_file_is_refused(oft):
    torch.save({"w": torch.ones(1)}, oft.path / "ema_weights.pt")
    with pytest.raises(CheckpointFileError, match=r"ema_weights\.pt match none of the known components"):
        load_released(oft.path, progress=False)


def test_unsupported_config_fields_are_named(oft):
    config_path = oft.path / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "vision_aggregate_type": "mean"}))
    with pytest.raises(
        UnsupportedLayoutError,
        match=r"vision_aggregate_type: expected 'concat' \(OFT\) or 'moe' \(CogVLA\), got 'mean'",
    ):
        load_released(oft.path, progress=False)
