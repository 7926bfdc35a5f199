"""CogVLAPolicy: observation checks, one batched forward, stage timing, checkpoint loading
(own and released folders), shared preprocessing."""

import time

import numpy as np
import pytest
import torch
from synthetic_checkpoints import build_oft_checkpoint

from cogvla.checkpoint import CheckpointError
from cogvla.config import get_preset
from cogvla.convert.errors import UnnormKeyError
from cogvla.fake_data import fake_observation
from cogvla.modeling import CogVLAModel
from cogvla.policy import STAGE_KEYS, CogVLAPolicy, ObservationError
from cogvla.policy_api import Policy, all_finite, validate_action_chunk
from cogvla.preprocess import center_crop, crop_resize, images_to_tensor, random_crop
from cogvla.tokenizer import PromptTokenizer


@pytest.fixture(scope="module")
def policy():
    return CogVLAPolicy.random("tiny")


def test_random_policy_is_labelled(policy):
    meta = policy.metadata()
    assert isinstance(policy, Policy)
    assert "random weights, untrained" in meta["name"]
    assert meta["random_weights"] is True
    assert meta["chunk_size"] == 8 and meta["action_dim"] == 7 and meta["state_dim"] == 8
    assert meta["image_keys"] == {"image": [128, 128, 3], "wrist_image": [128, 128, 3]}


def test_infer_returns_a_valid_chunk(policy):
    actions = policy.infer(fake_observation(256, 200))
    assert actions.shape == (8, 7) and actions.dtype == np.float32
    validate_action_chunk(actions)
    assert set(np.unique(actions[:, -1])) <= {-1.0, 1.0}


def test_infer_batch_matches_single_inference(policy):
    observations = [
        fake_observation(seed=0),
        fake_observation(seed=1, prompt="open the top drawer of the cabinet"),
    ]
    batched = policy.infer_batch(observations)
    assert len(batched) == 2
    for obs, chunk in zip(observations, batched, strict=True):
        np.testing.assert_allclose(chunk, policy.infer(obs), atol=1e-5)
    assert policy.infer_batch([]) == []


def test_infer_batch_records_its_stage_timing(policy):
    observations = [fake_observation(seed=0), fake_observation(seed=1)]
    start = time.perf_counter()
    policy.infer_batch(observations)
    wall_ms = (time.perf_counter() - start) * 1000.0
    timing = policy.last_timing
    assert set(timing) == set(STAGE_KEYS) == {"preprocess_ms", "model_ms", "postprocess_ms"}
    assert all(isinstance(value, float) and value >= 0.0 for value in timing.values())
    assert sum(timing.values()) <= wall_ms
    policy.infer_batch([])
    assert policy.last_timing == dict.fromkeys(STAGE_KEYS, 0.0)
    with pytest.raises(ObservationError):
        policy.infer({"prompt": "open the drawer"})
    assert policy.last_timing is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"image": None}, "image: missing"),
        (
            {"wrist_image": np.zeros((64, 64, 3), dtype=np.float32)},
            "wrist_image: expected dtype uint8, got float32",
        ),
        ({"image": np.zeros((64, 64), dtype=np.uint8)}, r"image: expected shape \(H, W, 3\), got \(64, 64\)"),
        ({"state": np.zeros(7)}, r"state: expected shape \(8,\), got \(7,\)"),
        ({"state": np.full(8, np.nan)}, "state: expected finite values"),
        ({"prompt": ""}, "prompt: expected a non-empty str"),
    ],
)
def test_bad_observation_names_the_key(policy, change, match):
    obs = fake_observation()
    for key, value in change.items():
        if value is None:
            del obs[key]
        else:
            obs[key] = value
    with pytest.raises(ObservationError, match=match):
        policy.infer(obs)


def test_from_pretrained_round_trip(policy, tmp_path):
    policy.model.save_pretrained(
        tmp_path, tokenizer=policy.tokenizer, norm_stats=policy.norm_stats, norm_key="libero"
    )
    loaded = CogVLAPolicy.from_pretrained(tmp_path)
    assert loaded.metadata()["random_weights"] is False
    assert loaded.metadata()["norm_key"] == "libero"
    obs = fake_observation()
    np.testing.assert_array_equal(loaded.infer(obs), policy.infer(obs))


def test_released_oft_folder_loads_as_a_policy(tmp_path):
    release = build_oft_checkpoint(tmp_path / "openvla-7b-oft-finetuned-libero-spatial", keep_weights=False)
    loaded = CogVLAPolicy.from_pretrained(release.path, unnorm_key="libero_spatial")
    assert loaded.metadata()["norm_key"] == "libero_spatial_no_noops"
    assert loaded.metadata()["variant"] == "dense"
    actions = loaded.infer(fake_observation())
    assert actions.shape == (8, 7) and actions.dtype == np.float32
    assert np.isfinite(actions).all()
    bf16 = CogVLAPolicy.from_pretrained(release.path, dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    with pytest.raises(UnnormKeyError, match="'libero_90' not found"):
        CogVLAPolicy.from_pretrained(release.path, unnorm_key="libero_90")


def test_from_pretrained_needs_tokenizer_and_stats(tmp_path):
    CogVLAModel(get_preset("tiny")).save_pretrained(
        tmp_path, tokenizer=PromptTokenizer.train(["open the drawer"])
    )
    with pytest.raises(CheckpointError, match=r"missing \['norm_stats.json'\]"):
        CogVLAPolicy.from_pretrained(tmp_path)


def test_images_to_tensor_resizes_and_scales():
    image = np.full((200, 300, 3), 255, dtype=np.uint8)
    out = images_to_tensor([image, np.zeros((128, 128, 3), dtype=np.uint8)], 128)
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.ones(3, 128, 128))
    assert torch.equal(out[1], torch.zeros(3, 128, 128))


def test_center_crop_samples_the_central_box():
    ramp = torch.linspace(0, 1, 101).repeat(1, 3, 101, 1)  # value = x / 100
    assert torch.allclose(crop_resize(ramp, 1.0), ramp, atol=1e-6)
    cropped = center_crop(ramp, area=0.81)  # side 0.9: x from 5 to 95 pixels
    torch.testing.assert_close(cropped[0, 0, 50], torch.linspace(0.05, 0.95, 101), atol=1e-5, rtol=0)


def test_random_crop_shares_one_box_across_cameras():
    images = torch.rand(2, 3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    cropped = random_crop(torch.stack([images[0], images[0]]), generator=generator)
    assert torch.equal(cropped[0], cropped[1])
    assert not torch.equal(cropped[0], center_crop(images[:1])[0])


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        ([0.0, 1.0, -1.0], True),
        ([], True),
        ([np.finfo(np.float32).max] * 64, True),  # near the float32 limit, but a Python sum does not overflow
        ([1.0, np.nan], False),
        ([np.inf, 0.0], False),
        ([-np.inf], False),
        ([np.inf, -np.inf], False),  # the sum is NaN, not 0
    ],
)
def test_all_finite_matches_numpy(values: list[float], finite: bool) -> None:
    array = np.asarray(values, np.float32).reshape(-1, 1)
    assert all_finite(array) is finite
    assert bool(np.isfinite(array).all()) is finite
