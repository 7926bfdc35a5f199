"""Weight interpolation of checkpoints: the mix, what is kept, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import TASKS, small_model_config, small_norm_stats

from cogvla.average import AverageError, average_checkpoints
from cogvla.cli import main
from cogvla.modeling import CogVLAModel
from cogvla.normalize import NormStats
from cogvla.tokenizer import PromptTokenizer

PROTOCOL = {"suites": ["libero_spatial"], "tasks": None, "image_size": 32, "fast_render": True}


@pytest.fixture(scope="module")
def tokenizer() -> PromptTokenizer:
    return PromptTokenizer.train(list(TASKS), vocab_size=512)


def _checkpoint(folder: Path, seed: int, tokenizer: PromptTokenizer, stats: NormStats | None = None) -> Path:
    torch.manual_seed(seed)
    model = CogVLAModel(small_model_config())
    model.save_pretrained(
        folder, tokenizer=tokenizer, norm_stats=stats or small_norm_stats(), norm_key=folder.name
    )
    (folder / "eval_protocol.json").write_text(json.dumps(PROTOCOL))
    return folder


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return CogVLAModel.from_pretrained(folder).state_dict()


def test_the_mix_is_the_weighted_sum_and_keeps_the_first_checkpoints_files(tmp_path, tokenizer):
    start = _checkpoint(tmp_path / "start", 0, tokenizer)
    tuned = _checkpoint(tmp_path / "tuned", 1, tokenizer)
    out = average_checkpoints([start, tuned], [0.25, 0.75], tmp_path / "mix")
    a, b, mix = _weights(start), _weights(tuned), _weights(out)
    floats = [name for name, tensor in a.items() if tensor.is_floating_point()]
    assert floats and any(not torch.equal(a[name], b[name]) for name in floats)
    for name in floats:
        torch.testing.assert_close(mix[name], 0.25 * a[name] + 0.75 * b[name])
    assert json.loads((out / "eval_protocol.json").read_text()) == PROTOCOL
    loaded = CogVLAModel.from_pretrained(out)
    assert loaded.norm_key == "start" and loaded.norm_stats == small_norm_stats()


def test_the_cli_averages_with_equal_weights_by_default(tmp_path, tokenizer, capsys):
    start = _checkpoint(tmp_path / "start", 0, tokenizer)
    tuned = _checkpoint(tmp_path / "tuned", 1, tokenizer)
    assert main(["average", "--checkpoints", str(start), str(tuned), "--out", str(tmp_path / "mix")]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == [0.5, 0.5]
    a, b, mix = _weights(start), _weights(tuned), _weights(tmp_path / "mix")
    name = next(name for name, tensor in a.items() if tensor.is_floating_point() and tensor.numel() > 1)
    torch.testing.assert_close(mix[name], (a[name] + b[name]) / 2)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.5], "weights: expected one weight per checkpoint"),
        ([0.7, 0.7], "weights: expected non-negative weights that sum to 1"),
        ([1.5, -0.5], "weights: expected non-negative weights that sum to 1"),
    ],
)
def test_bad_weights_are_refused_by_name(tmp_path, tokenizer, weights, message):
    start = _checkpoint(tmp_path / "start", 0, tokenizer)
    with pytest.raises(AverageError, match=message):
        average_checkpoints([start, start], weights, tmp_path / "mix")
    assert not (tmp_path / "mix").exists()


def test_checkpoints_with_other_stats_are_refused(tmp_path, tokenizer):
    start = _checkpoint(tmp_path / "start", 0, tokenizer)
    other = _checkpoint(tmp_path / "other", 1, tokenizer, small_norm_stats(action_high=3.0))
    with pytest.raises(AverageError, match=f"checkpoint {other}: its norm_stats differs"):
        average_checkpoints([start, other], [0.5, 0.5], tmp_path / "mix")
    assert not (tmp_path / "mix").exists()
