"""Forward-pass input checks: a bad input names itself, the expected and the actual value."""

import pytest
import torch

from cogvla.config import get_preset
from cogvla.fake_data import fake_batch
from cogvla.modeling import CogVLAModel, InputDtypeError, InputShapeError

FORWARD_KEYS = ("pixel_values", "input_ids", "attention_mask", "proprio")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CogVLAModel(get_preset("tiny")).eval()


@pytest.fixture
def inputs(model):
    batch = fake_batch(model.config, batch_size=2, left_pad=[0, 2])
    return {key: batch[key] for key in FORWARD_KEYS}


def test_forward_output_shapes(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    assert out.actions.shape == (2, 8, 7)
    assert out.actions.dtype == torch.float32
    assert bool(torch.isfinite(out.actions).all())
    assert len(out.kept_per_layer) == model.config.llm.num_layers


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        (
            "pixel_values",
            torch.rand(2, 3, 128, 128),
            InputShapeError,
            r"pixel_values: expected shape \(2, 2, 3, 128, 128\)",
        ),
        (
            "pixel_values",
            torch.rand(2, 2, 3, 96, 96),
            InputShapeError,
            r"pixel_values: .*got \(2, 2, 3, 96, 96\)",
        ),
        (
            "pixel_values",
            torch.zeros(2, 2, 3, 128, 128, dtype=torch.uint8),
            InputDtypeError,
            "pixel_values: expected a float",
        ),
        ("input_ids", torch.ones(2, 12), InputDtypeError, r"input_ids: expected torch.int64"),
        ("input_ids", torch.full((2, 12), 5000), InputShapeError, r"input_ids: expected ids in \[0, 1024\)"),
        (
            "attention_mask",
            torch.ones(2, 11, dtype=torch.long),
            InputShapeError,
            r"attention_mask: expected shape \(2, 12\)",
        ),
        ("attention_mask", torch.ones(2, 12), InputDtypeError, "attention_mask: expected an integer or bool"),
        ("proprio", torch.rand(2, 7), InputShapeError, r"proprio: expected shape \(2, 8\)"),
        ("proprio", torch.ones(2, 8, dtype=torch.long), InputDtypeError, "proprio: expected a float"),
        ("proprio", [0.0] * 8, InputDtypeError, "proprio: expected a torch.Tensor"),
    ],
)
def test_bad_input_names_itself(model, inputs, key, value, error, match):
    with pytest.raises(error, match=match):
        model(**dict(inputs, **{key: value}))


def test_right_padded_prompt_is_rejected(model, inputs):
    mask = inputs["attention_mask"].clone()
    mask[0, -1] = 0
    with pytest.raises(InputShapeError, match="attention_mask: expected LEFT-padded"):
        model(**dict(inputs, attention_mask=mask))


def test_compute_loss_checks_the_batch(model):
    batch = fake_batch(model.config)
    with pytest.raises(InputShapeError, match=r"actions: expected shape \(2, 8, 7\)"):
        model.compute_loss(dict(batch, actions=torch.zeros(2, 7, 7)))
    with pytest.raises(InputShapeError, match=r"missing \['actions'\]"):
        model.compute_loss({key: batch[key] for key in FORWARD_KEYS})


def test_compute_loss_is_l1(model):
    batch = fake_batch(model.config)
    with torch.no_grad():
        loss, metrics = model.compute_loss(batch)
        predicted = model(**{key: batch[key] for key in FORWARD_KEYS}).actions
    torch.testing.assert_close(loss, (predicted - batch["actions"]).abs().mean())
    assert set(metrics) >= {"l1", "l1_first_step", "l1_later_steps", "gate_dino"}
    assert all(isinstance(value, float) for value in metrics.values())


def test_weighted_loss_is_the_weighted_mean_of_sample_l1s(model):
    batch = fake_batch(model.config)
    with torch.no_grad():
        plain, plain_metrics = model.compute_loss(batch)
        loss, metrics = model.compute_loss(dict(batch, weight=torch.tensor([3.0, 1.0])))
        per_sample = (model(**{key: batch[key] for key in FORWARD_KEYS}).actions - batch["actions"]).abs()
    per_sample = per_sample.mean(dim=(1, 2))
    torch.testing.assert_close(loss, (3 * per_sample[0] + per_sample[1]) / 4)
    assert metrics["l1"] == pytest.approx(plain_metrics["l1"]) == pytest.approx(plain.item())
    with pytest.raises(InputShapeError, match=r"weight: expected shape \(2,\) \(B,\), got \(3,\)"):
        model.compute_loss(dict(batch, weight=torch.ones(3)))


def test_padding_does_not_change_a_samples_actions(model):
    batch = fake_batch(model.config, batch_size=1, prompt_tokens=8)
    padded = {
        "pixel_values": batch["pixel_values"],
        "input_ids": torch.cat([torch.zeros(1, 3, dtype=torch.long), batch["input_ids"]], dim=1),
        "attention_mask": torch.cat([torch.zeros(1, 3, dtype=torch.long), batch["attention_mask"]], dim=1),
        "proprio": batch["proprio"],
    }
    with torch.no_grad():
        plain = model(**{key: batch[key] for key in FORWARD_KEYS}).actions
        shifted = model(**padded).actions
    torch.testing.assert_close(shifted, plain, rtol=0, atol=1e-5)
