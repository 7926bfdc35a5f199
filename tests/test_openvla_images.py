"""OpenVLA's image front-end: the lanczos3 weights, the JPEG round trip, the TensorFlow parity
(where TensorFlow is installed), and that a config's ``image_preprocessing`` decides the path."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from cogvla.config import ConfigError, get_preset
from cogvla.fake_data import fake_observation
from cogvla.openvla_images import jpeg_round_trip, lanczos3_matrix, openvla_images
from cogvla.policy import CogVLAPolicy
from cogvla.preprocess import model_images


def _scene(side: int = 256, seed: int = 0) -> np.ndarray:
    """A render-like image: smooth gradients, a few flat boxes with hard edges, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    image = np.stack([200 * x, 120 + 80 * y, 60 + 100 * x * y], axis=-1)
    for _ in range(6):
        top, left = rng.integers(0, side - 40, 2)
        image[top : top + 40, left : left + 30] = rng.integers(0, 256, 3)
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_lanczos3_is_identity_at_the_same_size_and_rows_sum_to_one():
    torch.testing.assert_close(lanczos3_matrix(32, 32), torch.eye(32, dtype=torch.float64))
    shrink = lanczos3_matrix(256, 224)
    torch.testing.assert_close(shrink.sum(dim=1), torch.ones(224, dtype=torch.float64))
    # antialiased: each output pixel of a shrink reads more than the 6 taps of plain lanczos3
    assert int((shrink[100] != 0).sum()) == 7


def test_shrinking_stripes_averages_them_instead_of_aliasing():
    stripes = np.zeros((64, 64, 3), dtype=np.float64)
    stripes[:, ::2] = 255.0
    halves = lanczos3_matrix(64, 32)
    out = np.einsum("pw,hwc->hpc", halves.numpy(), stripes)[:, 4:-4]
    assert np.abs(out - 127.5).max() < 1.0


def test_jpeg_round_trip_keeps_the_picture_and_loses_detail():
    image = _scene()
    decoded = jpeg_round_trip(image)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int) - image)
    assert 0 < error.mean() < 4


def test_images_at_the_model_size_skip_jpeg_and_resize():
    image = _scene(224)
    out = openvla_images([image], 224, center_crop=False)
    np.testing.assert_array_equal(out[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy(), image)


def test_torch_path_is_within_one_step_of_tensorflow():
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("simplejpeg")
    assert tf is not None
    images = [_scene(seed=seed) for seed in range(2)]
    exact = openvla_images(images, 224, center_crop=True, backend="tf")
    ours = openvla_images(images, 224, center_crop=True, backend="torch")
    assert (exact - ours).abs().max().item() <= 1.0 / 255.0 + 1e-6


def test_tf_backend_without_tensorflow_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"openvla-tf.*pip install"):
        openvla_images([_scene()], 224, center_crop=True, backend="tf")


def test_config_names_the_path_and_refuses_unknown_ones():
    config = get_preset("tiny").replace(image_preprocessing="openvla")
    images = [_scene(seed=1), _scene(seed=2)]
    expected = openvla_images(images, config.image_size, center_crop=True)
    torch.testing.assert_close(model_images(images, config), expected)
    bicubic = model_images(images, get_preset("tiny"))
    assert (bicubic - expected).abs().max() > 1.0 / 255.0
    expected_error = "image_preprocessing: expected one of bicubic, openvla, openvla-tf,"
    with pytest.raises(ConfigError, match=expected_error):
        get_preset("tiny").replace(image_preprocessing="lanczos")


def test_policy_prepares_images_as_its_config_says():
    policy = CogVLAPolicy.random("tiny")
    policy.model.config = policy.model.config.replace(image_preprocessing="openvla")
    obs = fake_observation(256, seed=4)
    (pixel_values, *_), _ = policy._model_inputs([obs], [policy.norm_stats])
    expected = openvla_images([obs["image"], obs["wrist_image"]], 128, center_crop=True)
    torch.testing.assert_close(pixel_values[0], expected)
