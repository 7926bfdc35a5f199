"""An unmerged LoRA training folder (adapter + the base model it started from) imports to the
same model as the release the reference merge script makes of it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from synthetic_checkpoints import build_cogvla_checkpoint

from cogvla.convert import import_released
from cogvla.convert.errors import CheckpointFileError

RANK = 4
ADAPTED = ("self_attn.q_proj", "mlp.down_proj")


def _shard_tensors(path) -> dict[str, torch.Tensor]:
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    tensors = {}
    for shard in sorted(set(index.values())):
        with safe_open(str(path / shard), framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
    return tensors


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``(merged release, unmerged training folder, base model folder)`` of one synthetic run."""
    root = tmp_path_factory.mktemp("lora")
    merged = build_cogvla_checkpoint(root / "merged")
    scaling = merged.dims.lora_alpha / merged.dims.lora_rank
    shards = _shard_tensors(merged.path)
    trainables = torch.load(next(merged.path.glob("non_lora_trainables--*.pt")), weights_only=True)
    generator = torch.Generator().manual_seed(1)
    base = {key: value for key, value in shards.items() if key not in trainables}
    adapter = {}
    for i in range(merged.dims.llm_layers):
        for name in ADAPTED:
            module = f"language_model.model.layers.{i}.{name}"
            weight = shards[f"{module}.weight"].float()
            lora_a = torch.randn(RANK, weight.shape[1], generator=generator) * 0.1
            lora_b = torch.randn(weight.shape[0], RANK, generator=generator) * 0.1
            base[f"{module}.weight"] = (weight - scaling * lora_b @ lora_a).to(torch.bfloat16)
            adapter[f"base_model.model.{module}.lora_A.weight"] = lora_a
            adapter[f"base_model.model.{module}.lora_B.weight"] = lora_b
    # the wrapped vision adapter, which the reference merge skips
    vision = "base_model.model.vision_backbone.vision_backbone.featurizer.blocks.0.attn.qkv"
    adapter[f"{vision}.lora_A.weight"] = torch.zeros(RANK, merged.dims.dino_width)
    adapter[f"{vision}.lora_B.weight"] = torch.zeros(3 * merged.dims.dino_width, RANK)
    # openvla-7b's fused projector, which CogVLA replaces
    base["projector.fc1.weight"] = torch.zeros(8, 8, dtype=torch.bfloat16)
    (root / "base").mkdir()
    save_file({k: v.contiguous() for k, v in base.items()}, str(root / "base" / "model.safetensors"))
    run = root / "run"
    shutil.copytree(merged.path, run, ignore=shutil.ignore_patterns("model*.safetensors*"))
    save_file(adapter, str(run / "lora_adapter" / "adapter_model.safetensors"))
    return merged, run, root / "base"


def test_unmerged_folder_matches_the_merged_release(folders):
    merged, run, base = folders
    want = import_released(merged.path, unnorm_key="libero_goal", progress=False)
    got = import_released(run, unnorm_key="libero_goal", base=base, progress=False)
    assert got.report["llm_lora"]["merged_modules"] == merged.dims.llm_layers * len(ADAPTED)
    assert got.report["llm_lora"]["skipped_adapter_keys"] == 2
    assert got.report["llm_lora"]["dropped_base_keys"] == ["projector.fc1.weight"]
    want_state, got_state = want.model.state_dict(), got.model.state_dict()
    assert set(got_state) == set(want_state)
    for key, value in want_state.items():
        torch.testing.assert_close(got_state[key], value, atol=2e-3, rtol=0, msg=key)


def test_unmerged_folder_without_a_base_says_what_to_pass(folders):
    _, run, _ = folders
    with pytest.raises(CheckpointFileError, match="unmerged LoRA training folder.*pass --base"):
        import_released(run, unnorm_key="libero_goal", progress=False)
