"""Strict checking of observations that arrive over the wire.

Every refusal is a ``bad_request`` ``RequestError`` naming the field (``obs.image``), the
expected value and the actual one, so a robot integrator sees at once what to fix instead
of a traceback from deep inside the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from cogvla.policy_api import OBS_IMAGE, OBS_PROMPT, OBS_STATE, OBS_WRIST_IMAGE, STATE_DIM, all_finite
from deploy.protocol import ErrorCode, RequestError

__all__ = ["DEFAULT_IMAGE_SHAPE", "ObservationSpec", "bad_request"]

DEFAULT_IMAGE_SHAPE = (224, 224, 3)
# dtype objects, not names: dtype.name is computed in Python on every access.
_FLOAT32 = np.dtype(np.float32)
_STATE_DTYPES = (_FLOAT32, np.dtype(np.float64))
_UINT8 = np.dtype(np.uint8)


def bad_request(field_name: str, message: str, expected: str, actual: str) -> RequestError:
    """A ``bad_request`` error for one field."""
    return RequestError(
        ErrorCode.BAD_REQUEST,
        f"{field_name}: {message} (expected {expected}, got {actual})",
        field=field_name,
        expected=expected,
        actual=actual,
    )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    return type(value).__name__


def _default_images() -> dict[str, tuple[int, ...]]:
    return {OBS_IMAGE: DEFAULT_IMAGE_SHAPE, OBS_WRIST_IMAGE: DEFAULT_IMAGE_SHAPE}


@dataclass(frozen=True)
class ObservationSpec:
    """What an ``infer`` observation must look like."""

    # camera key -> (H, W, 3) uint8 shape the model runs at; clients should resize to it.
    image_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=_default_images)
    # other sizes are accepted within these bounds (the cap keeps server-side resizes cheap).
    min_image_side: int = 16
    max_image_side: int = 1024
    # length of the float state vector (LIBERO: eef pos 3, axis-angle 3, gripper qpos 2).
    state_dim: int = STATE_DIM
    # the instruction is truncated by the tokenizer anyway; longer text is a client bug.
    max_prompt_chars: int = 2048

    @cached_property
    def observation_keys(self) -> tuple[str, ...]:
        """Every key an observation has, in the order errors list them."""
        return (*self.image_shapes, OBS_STATE, OBS_PROMPT)

    @cached_property
    def _key_set(self) -> frozenset[str]:
        return frozenset(self.observation_keys)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ObservationSpec:
        """The spec a policy's ``metadata()`` announces (``image_keys``/``image_shapes``, ``state_dim``)."""
        images = metadata.get("image_shapes") or metadata.get("image_keys")
        if isinstance(images, Mapping):
            image_shapes = {str(k): tuple(int(n) for n in v) for k, v in images.items()}
        elif isinstance(images, (list, tuple)) and images:
            shape = tuple(int(n) for n in metadata.get("image_shape", DEFAULT_IMAGE_SHAPE))
            image_shapes = {str(k): shape for k in images}
        else:
            image_shapes = _default_images()
        return cls(image_shapes=image_shapes, state_dim=int(metadata.get("state_dim", STATE_DIM)))

    def to_wire(self) -> dict[str, Any]:
        """The spec as plain msgpack-able values (for the ``metadata`` endpoint)."""
        return {
            "image_keys": {k: list(v) for k, v in self.image_shapes.items()},
            "image_dtype": "uint8",
            "image_side_range": [self.min_image_side, self.max_image_side],
            "state_dim": self.state_dim,
            "state_dtype": "float32",
        }

    def validate(self, obs: Any) -> dict[str, Any]:
        """Return a clean observation dict, or raise ``RequestError(bad_request)``."""
        # The exact-type test first: an ABC isinstance check is several times slower.
        if type(obs) is not dict and not isinstance(obs, Mapping):
            raise bad_request("obs", "observation must be a map", "map", _describe(obs))
        if obs.keys() != self._key_set:
            self._check_keys(obs, self.observation_keys)
        clean: dict[str, Any] = {
            key: self._image(key, obs[key], shape) for key, shape in self.image_shapes.items()
        }
        clean[OBS_STATE] = self._state(obs[OBS_STATE])
        clean[OBS_PROMPT] = self._prompt(obs[OBS_PROMPT])
        return clean

    @staticmethod
    def _check_keys(obs: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in obs:
            if key not in allowed:
                raise bad_request(
                    f"obs.{key}", "unknown observation key", f"one of {', '.join(allowed)}", repr(key)
                )
        for key in allowed:
            if key not in obs:
                raise bad_request(f"obs.{key}", "missing observation key", "present", "missing")

    def _image(self, key: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
        # Other sizes are resized by the policy; the announced shape only saves bandwidth.
        lo, hi = self.min_image_side, self.max_image_side
        if not isinstance(value, np.ndarray) or value.dtype != _UINT8:
            raise bad_request(
                f"obs.{key}", "wrong image dtype", self._image_expected(shape), _describe(value)
            )
        if (
            value.ndim != 3
            or value.shape[2] != 3
            or not (lo <= value.shape[0] <= hi and lo <= value.shape[1] <= hi)
        ):
            raise bad_request(
                f"obs.{key}", "wrong image shape", self._image_expected(shape), _describe(value)
            )
        return value

    def _image_expected(self, shape: tuple[int, ...]) -> str:
        lo, hi = self.min_image_side, self.max_image_side
        return f"uint8 array (H, W, 3), {lo} <= H, W <= {hi} (preferred {shape})"

    def _state(self, value: Any) -> np.ndarray:
        name = f"obs.{OBS_STATE}"
        expected = f"float32 array of shape ({self.state_dim},)"
        if not isinstance(value, np.ndarray) or value.dtype not in _STATE_DTYPES:
            raise bad_request(name, "wrong state dtype", expected, _describe(value))
        if value.shape != (self.state_dim,):
            raise bad_request(name, "wrong state shape", expected, _describe(value))
        # Checked after the cast: float64 values beyond float32's range become inf there, which
        # the check below reports; numpy's overflow warning would only add noise to the log.
        with np.errstate(over="ignore"):
            state = value.astype(_FLOAT32, copy=False)
        if not all_finite(state):
            bad = int((~np.isfinite(state)).sum())
            raise bad_request(name, "state must be finite", "finite values", f"{bad} NaN/inf entries")
        return state

    def _prompt(self, value: Any) -> str:
        name = f"obs.{OBS_PROMPT}"
        if not isinstance(value, str):
            raise bad_request(name, "wrong prompt type", "str", _describe(value))
        if not value or value.isspace() or len(value) > self.max_prompt_chars:
            raise bad_request(
                name,
                "prompt must be non-empty text",
                f"1..{self.max_prompt_chars} chars",
                f"{len(value)} chars",
            )
        return value
