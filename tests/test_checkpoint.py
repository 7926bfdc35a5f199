"""Checkpoint folders: exact round trip, dtype casting, and clear errors for corrupt or mismatched contents."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cogvla.checkpoint import CONFIG_FILE, FORMAT_VERSION, NORM_STATS_FILE, WEIGHTS_FILE, CheckpointError
from cogvla.config import get_preset
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel
from cogvla.normalize import NormStats
from cogvla.tokenizer import PromptTokenizer

FORWARD_KEYS = ("pixel_values", "input_ids", "attention_mask", "proprio")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny")).eval()
    tokenizer = PromptTokenizer.train(["put the bowl on the plate", "open the top drawer"])
    rng = np.random.default_rng(0)
    stats = NormStats.from_data(rng.normal(size=(50, 7)), rng.normal(size=(50, 8)))
    directory = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(
        directory, tokenizer=tokenizer, norm_stats=stats, norm_key="libero_spatial_no_noops"
    )
    return model, tokenizer, stats, directory


def _copy(directory, tmp_path):
    for path in directory.rglob("*"):
        target = tmp_path / path.relative_to(directory)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return tmp_path


def test_round_trip_gives_identical_outputs(saved):
    model, tokenizer, stats, directory = saved
    loaded = CogVLAModel.from_pretrained(directory)
    assert loaded.config == model.config
    assert loaded.norm_stats == stats
    assert loaded.norm_key == "libero_spatial_no_noops"
    assert torch.equal(
        loaded.tokenizer.encode_batch(["open the top drawer"])[0],
        tokenizer.encode_batch(["open the top drawer"])[0],
    )
    batch = fake_batch(model.config, left_pad=[0, 3])
    inputs = {key: batch[key] for key in FORWARD_KEYS}
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).actions, model(**inputs).actions)
    buffers = dict(model.named_buffers())
    assert {name for name, _ in loaded.named_buffers()} == set(buffers)
    for name, buffer in loaded.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert all(p.requires_grad and not p.is_meta for p in loaded.parameters())


def test_dtype_casts_the_floating_weights(saved):
    model, _, _, directory = saved
    loaded = CogVLAModel.from_pretrained(directory, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    expected = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key].to(torch.bfloat16)), key
    assert loaded.siglip.vit.embeddings.position_ids.dtype == torch.int64


def test_non_float_dtype_is_rejected(saved):
    with pytest.raises(TypeError, match=r"dtype: expected a floating torch.dtype or None, got torch.int64"):
        CogVLAModel.from_pretrained(saved[3], dtype=torch.int64)


def test_unnorm_key_must_name_the_stored_stats(saved):
    assert CogVLAModel.from_pretrained(saved[3], unnorm_key="libero_spatial").norm_key == (
        "libero_spatial_no_noops"
    )
    with pytest.raises(
        CheckpointError, match=r"unnorm_key 'libero_goal' requested.*norm_key 'libero_spatial_no_noops'"
    ):
        CogVLAModel.from_pretrained(saved[3], unnorm_key="libero_goal")


def test_checkpoint_without_tokenizer_or_stats_loads_the_model(tmp_path):
    torch.manual_seed(0)
    model = CogVLAModel(get_preset("tiny", "dense"))
    model.save_pretrained(tmp_path)
    loaded = CogVLAModel.from_pretrained(tmp_path)
    assert loaded.tokenizer is None and loaded.norm_stats is None
    assert loaded.config.variant == "dense"


def test_missing_and_unexpected_keys_are_named(saved, tmp_path):
    directory = _copy(saved[3], tmp_path)
    state = load_file(str(directory / WEIGHTS_FILE))
    state.pop("action_head.model.fc2.weight")
    state["llm.layers.0.extra.weight"] = torch.zeros(2)
    save_file(state, str(directory / WEIGHTS_FILE))
    with pytest.raises(
        CheckpointError,
        match=r"missing keys \[action_head\.model\.fc2\.weight\]"
        r".*unexpected keys \[llm\.layers\.0\.extra\.weight\]",
    ):
        CogVLAModel.from_pretrained(directory)


def test_config_mismatch_names_keys_and_shapes(saved, tmp_path):
    directory = _copy(saved[3], tmp_path)
    header = json.loads((directory / CONFIG_FILE).read_text())
    header["llm"]["intermediate_size"] = 512
    (directory / CONFIG_FILE).write_text(json.dumps(header))
    with pytest.raises(
        CheckpointError,
        match=r"llm\.layers\.0\.mlp\.down_proj\.weight: expected \(256, 512\), got \(256, 688\)",
    ):
        CogVLAModel.from_pretrained(directory)


def test_corrupt_weights_file_is_reported(saved, tmp_path):
    directory = _copy(saved[3], tmp_path)
    (directory / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot be read as safetensors"):
        CogVLAModel.from_pretrained(directory)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: (d / CONFIG_FILE).unlink(), "config.json: missing"),
        (lambda d: (d / CONFIG_FILE).write_text("{"), "config.json: not valid JSON"),
        (lambda d: (d / WEIGHTS_FILE).unlink(), "model.safetensors: missing"),
        (
            lambda d: (d / NORM_STATS_FILE).write_text('{"action_q01": [0]}'),
            "norm_stats.json: invalid normalization stats",
        ),
    ],
)
def test_broken_files_are_named(saved, tmp_path, edit, match):
    directory = _copy(saved[3], tmp_path)
    edit(directory)
    with pytest.raises(CheckpointError, match=match):
        CogVLAModel.from_pretrained(directory)


def test_unknown_config_field_is_named(saved, tmp_path):
    directory = _copy(saved[3], tmp_path)
    header = json.loads((directory / CONFIG_FILE).read_text())
    header["use_magic"] = True
    (directory / CONFIG_FILE).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"unknown keys \['use_magic'\]"):
        CogVLAModel.from_pretrained(directory)


def test_layout_is_a_hugging_face_model_folder(saved):
    directory = saved[3]
    header = json.loads((directory / CONFIG_FILE).read_text())
    assert header["model_type"] == "cogvla" and header["format_version"] == 2
    assert header["norm_key"] == "libero_spatial_no_noops"
    assert header["name"] == "tiny" and header["llm"]["intermediate_size"] == 688, "config fields at the top"
    assert "config" not in header and "format" not in header
    assert {"tokenizer.json", "tokenizer_config.json", "prompt_tokenizer.json"} <= {
        p.name for p in directory.iterdir()
    }
    assert not (directory / "tokenizer").exists()


def _as_version_1(directory):
    """The same checkpoint in the layout of format version 1 (nested config, tokenizer/ folder)."""
    header = json.loads((directory / CONFIG_FILE).read_text())
    fields = {
        key: value for key, value in header.items() if key not in ("model_type", "format_version", "norm_key")
    }
    legacy = {"format": "cogvla", "format_version": 1, "norm_key": header["norm_key"], "config": fields}
    (directory / CONFIG_FILE).write_text(json.dumps(legacy))
    (directory / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "prompt_tokenizer.json"):
        (directory / name).rename(directory / "tokenizer" / name)
    return directory


def test_version_1_folders_still_load_and_the_shipped_default_is_current(saved, tmp_path):
    model, tokenizer, stats, directory = saved
    legacy = _as_version_1(_copy(directory, tmp_path))
    loaded = CogVLAModel.from_pretrained(legacy)
    assert loaded.config == model.config and loaded.norm_stats == stats
    prompt = ["open the top drawer"]
    assert torch.equal(loaded.tokenizer.encode_batch(prompt)[0], tokenizer.encode_batch(prompt)[0])
    batch = fake_batch(model.config)
    inputs = {key: batch[key] for key in FORWARD_KEYS}
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).actions, model(**inputs).actions)
    from cogvla.paths import default_checkpoints

    for shipped in set(default_checkpoints().values()):
        assert json.loads((shipped / CONFIG_FILE).read_text())["format_version"] == FORMAT_VERSION
        assert CogVLAModel.from_pretrained(shipped).tokenizer is not None


HUB_SCRIPT = """
import json, sys
import numpy as np
from cogvla.checkpoint import CheckpointError
from cogvla.policy import CogVLAPolicy
policy = CogVLAPolicy.from_pretrained(sys.argv[1])
image = np.full((64, 64, 3), 90, np.uint8)
state = np.linspace(-1, 1, 8).astype(np.float32)
obs = {"image": image, "wrist_image": image, "state": state, "prompt": "open the top drawer"}
try:
    CogVLAPolicy.from_pretrained(sys.argv[2])
    missing = "loaded"
except CheckpointError as exc:
    missing = str(exc)
print(json.dumps({"actions": policy.infer(obs).tolist(), "missing": missing}))
"""


def test_a_repo_id_loads_from_the_offline_hub_cache(saved, tmp_path):
    from cogvla.policy import CogVLAPolicy

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--cogvla--tiny-test"
    _copy(saved[3], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    run = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, "cogvla/tiny-test", "cogvla/not-cached"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    image = np.full((64, 64, 3), 90, np.uint8)
    state = np.linspace(-1, 1, 8).astype(np.float32)
    obs = {"image": image, "wrist_image": image, "state": state, "prompt": "open the top drawer"}
    expected = CogVLAPolicy.from_pretrained(saved[3]).infer(obs)
    # another process may run other thread counts: same values up to float32 rounding
    np.testing.assert_allclose(np.array(report["actions"], np.float32), expected, atol=1e-5)
    assert "'cogvla/not-cached' is neither a folder nor a Hub repo" in report["missing"]


def test_push_to_hub_uploads_the_saved_folder(saved, monkeypatch):
    import huggingface_hub

    from cogvla.checkpoint import push_to_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **options):
            calls.append(("create", repo_id, options))

        def upload_folder(self, *, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return f"https://huggingface.co/{repo_id}/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert push_to_hub(saved[3], "me/tiny") == "https://huggingface.co/me/tiny/commit/1"
    assert calls[0] == ("create", "me/tiny", {"private": True, "exist_ok": True})
    assert calls[1][0] == "upload" and {"config.json", "model.safetensors", "prompt_tokenizer.json"} <= set(
        calls[1][2]
    )
