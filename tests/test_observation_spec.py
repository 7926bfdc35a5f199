"""ObservationSpec: what an ``infer`` observation must be, refused field by field, at its edges."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

from deploy.protocol import ErrorCode, RequestError
from deploy.validation import ObservationSpec

SIDE = 32
SPEC = ObservationSpec(image_shapes={"image": (SIDE, SIDE, 3), "wrist_image": (SIDE, SIDE, 3)})


def obs(**over: object) -> dict[str, object]:
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    base = {"image": image, "wrist_image": image, "state": np.zeros(8, np.float32), "prompt": "pick"}
    return {**base, **over}


def refusal(observation: object, spec: ObservationSpec = SPEC) -> RequestError:
    with pytest.raises(RequestError) as err:
        spec.validate(observation)
    assert err.value.code == ErrorCode.BAD_REQUEST
    return err.value


def test_a_good_observation_comes_back_with_a_float32_state() -> None:
    clean = SPEC.validate(obs(state=np.arange(8, dtype=np.float64)))
    assert set(clean) == {"image", "wrist_image", "state", "prompt"}
    assert clean["state"].dtype == np.float32
    np.testing.assert_array_equal(clean["state"], np.arange(8))


def test_any_mapping_is_an_observation() -> None:
    assert SPEC.validate(types.MappingProxyType(obs()))["prompt"] == "pick"


@pytest.mark.parametrize("observation", [None, [1, 2], "obs", np.zeros(3)])
def test_an_observation_that_is_not_a_map_is_refused(observation: object) -> None:
    err = refusal(observation)
    assert (err.field, err.expected) == ("obs", "map")
    assert err.actual == (
        "float64 array of shape (3,)" if isinstance(observation, np.ndarray) else type(observation).__name__
    )


def test_missing_and_unknown_keys_are_named() -> None:
    observation = obs()
    del observation["wrist_image"]
    assert refusal(observation).field == "obs.wrist_image"
    err = refusal(obs(depth=np.zeros(1)))
    assert err.field == "obs.depth" and err.actual == "'depth'"


@pytest.mark.parametrize(
    ("value", "actual"),
    [
        ([[0, 0, 0]], "list"),
        (np.zeros((SIDE, SIDE, 3), np.float32), f"float32 array of shape ({SIDE}, {SIDE}, 3)"),
        (np.zeros((SIDE, SIDE, 3), bool), f"bool array of shape ({SIDE}, {SIDE}, 3)"),
    ],
)
def test_an_image_that_is_not_uint8_is_refused_with_what_came(value: object, actual: str) -> None:
    err = refusal(obs(image=value))
    assert err.field == "obs.image" and "wrong image dtype" in str(err) and err.actual == actual


@pytest.mark.parametrize(
    ("shape", "accepted"),
    [
        ((16, 16, 3), True),
        ((1024, 1024, 3), True),
        ((16, 1024, 3), True),
        ((15, 32, 3), False),
        ((32, 15, 3), False),
        ((1025, 32, 3), False),
        ((32, 1025, 3), False),
        ((32, 32, 4), False),
        ((32, 32), False),
        ((1, 32, 32, 3), False),
    ],
)
def test_image_sides_are_accepted_within_the_range_inclusive(shape: tuple[int, ...], accepted: bool) -> None:
    observation = obs(wrist_image=np.zeros(shape, np.uint8))
    if accepted:
        assert SPEC.validate(observation)["wrist_image"].shape == shape
    else:
        err = refusal(observation)
        assert err.field == "obs.wrist_image" and "wrong image shape" in str(err)
        assert "16 <= H, W <= 1024" in err.expected


@pytest.mark.parametrize(
    ("value", "message", "actual"),
    [
        ([0.0] * 8, "wrong state dtype", "list"),
        (np.zeros(8, np.int32), "wrong state dtype", "int32 array of shape (8,)"),
        (np.zeros(8, np.float16), "wrong state dtype", "float16 array of shape (8,)"),
        (np.zeros(7, np.float32), "wrong state shape", "float32 array of shape (7,)"),
        (np.zeros((1, 8), np.float32), "wrong state shape", "float32 array of shape (1, 8)"),
        (
            np.array([0, 0, 0, np.nan, 0, np.inf, 0, 0], np.float32),
            "state must be finite",
            "2 NaN/inf entries",
        ),
        # Finite in float64, infinite once cast to the model's float32.
        (np.full(8, 1e300), "state must be finite", "8 NaN/inf entries"),
    ],
)
@pytest.mark.filterwarnings("error")  # an overflowing cast is reported, not warned about
def test_a_bad_state_is_refused_with_the_reason(value: object, message: str, actual: str) -> None:
    err = refusal(obs(state=value))
    assert err.field == "obs.state" and message in str(err) and err.actual == actual


@pytest.mark.parametrize(
    ("value", "message", "actual"),
    [
        (b"pick", "wrong prompt type", "bytes"),
        (None, "wrong prompt type", "NoneType"),
        ("", "prompt must be non-empty text", "0 chars"),
        (" \t\n", "prompt must be non-empty text", "3 chars"),
        ("x" * 2049, "prompt must be non-empty text", "2049 chars"),
    ],
)
def test_a_bad_prompt_is_refused_with_the_reason(value: object, message: str, actual: str) -> None:
    err = refusal(obs(prompt=value))
    assert err.field == "obs.prompt" and message in str(err) and err.actual == actual


def test_a_prompt_of_the_longest_length_passes() -> None:
    assert SPEC.validate(obs(prompt="x" * 2048))["prompt"] == "x" * 2048


def test_the_spec_from_metadata_reads_maps_lists_and_falls_back_to_the_default() -> None:
    mapped = ObservationSpec.from_metadata({"image_shapes": {"image": [64, 48, 3]}, "state_dim": 9})
    assert mapped.image_shapes == {"image": (64, 48, 3)} and mapped.state_dim == 9
    listed = ObservationSpec.from_metadata({"image_keys": ["a", "b"], "image_shape": [96, 96, 3]})
    assert listed.image_shapes == {"a": (96, 96, 3), "b": (96, 96, 3)}
    default = {"image": (224, 224, 3), "wrist_image": (224, 224, 3)}
    assert ObservationSpec.from_metadata({"image_keys": []}).image_shapes == default
    assert ObservationSpec.from_metadata({}).image_shapes == default
    assert ObservationSpec.from_metadata({}).state_dim == 8


def test_the_wire_form_announces_keys_dtypes_and_the_side_range() -> None:
    assert ObservationSpec().to_wire() == {
        "image_keys": {"image": [224, 224, 3], "wrist_image": [224, 224, 3]},
        "image_dtype": "uint8",
        "image_side_range": [16, 1024],
        "state_dim": 8,
        "state_dtype": "float32",
    }


def test_a_spec_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.state_dim = 9  # type: ignore[misc]
