"""Image and observation preprocessing shared by training (datasets) and serving (policy).

OpenVLA's LIBERO protocol (reference section 8): resize every camera image to the model
size, then at inference take the central box of 90% area and resize it back
(``tf.image.crop_and_resize``, bilinear); training uses a random box of the same area.
``crop_resize`` reproduces ``crop_and_resize`` sampling exactly with ``grid_sample``.
Released checkpoints expect OpenVLA's full eval front-end instead (JPEG round trip and
lanczos3 resize first, see ``cogvla.openvla_images``); ``model_images`` picks the path a
model config names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from cogvla.config import CogVLAConfig

__all__ = [
    "CROP_AREA",
    "ObservationError",
    "center_crop",
    "check_observation",
    "crop_resize",
    "images_to_tensor",
    "model_images",
    "random_crop",
]

# fraction of the image area kept by the (center or random) crop
CROP_AREA = 0.9


class ObservationError(ValueError):
    """An observation dict is missing a key or has a value of the wrong type, shape or range."""


def images_to_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` images of any sizes -> ``(n, 3, size, size)`` float32 in [0, 1].

    Resizing is antialiased bicubic (close to the reference's antialiased Lanczos); an
    image already at ``size`` is passed through unchanged.
    """
    out = torch.empty(len(images), 3, size, size)
    for i, image in enumerate(images):
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        if pixels.shape[1:] != (size, size):
            pixels = F.interpolate(
                pixels[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False
            )[0]
        out[i] = pixels.clamp_(0.0, 1.0)
    return out


def model_images(images: Sequence[np.ndarray], config: CogVLAConfig) -> torch.Tensor:
    """One observation's uint8 camera images -> ``(n, 3, S, S)`` model input in [0, 1], by the
    path ``config.image_preprocessing`` names (and its ``center_crop``)."""
    size = config.image_size
    if config.image_preprocessing == "bicubic":
        pixels = images_to_tensor(images, size)
        return center_crop(pixels) if config.center_crop else pixels
    from cogvla.openvla_images import openvla_images

    backend = "tf" if config.image_preprocessing == "openvla-tf" else "torch"
    return openvla_images(images, size, center_crop=config.center_crop, backend=backend)


def crop_resize(images: torch.Tensor, scale: float, offset: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Crop a square box of side ``scale`` (fraction of the image side) and resize it back, bilinearly.

    Args:
        images: ``(..., 3, H, W)`` float.
        scale: box side relative to the image side, in (0, 1].
        offset: box centre ``(dy, dx)`` in normalized coordinates, each within ``±(1 - scale)``.

    Returns:
        ``(..., 3, H, W)``, sampled like ``tf.image.crop_and_resize`` (box corners on pixel centres).
    """
    *lead, channels, height, width = images.shape
    flat = images.reshape(-1, channels, height, width)
    ys = torch.linspace(-scale, scale, height, dtype=flat.dtype, device=flat.device) + offset[0]
    xs = torch.linspace(-scale, scale, width, dtype=flat.dtype, device=flat.device) + offset[1]
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    out = F.grid_sample(
        flat,
        grid.expand(flat.shape[0], -1, -1, -1),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return out.reshape(*lead, channels, height, width)


def center_crop(images: torch.Tensor, area: float = CROP_AREA) -> torch.Tensor:
    """The central box of ``area`` of the image, resized back to the input size. ``(..., 3, H, W)``."""
    return crop_resize(images, math.sqrt(area))


def random_crop(
    images: torch.Tensor, area: float = CROP_AREA, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training counterpart of ``center_crop``: one random box of ``area`` for all of ``images``.

    All cameras of a sample share the box, as the reference augments them with one seed.
    """
    scale = math.sqrt(area)
    dy, dx = ((torch.rand(2, generator=generator) * 2 - 1) * (1 - scale)).tolist()
    return crop_resize(images, scale, (dy, dx))


def check_observation(obs: Any, *, image_keys: Sequence[str], state_dim: int) -> None:
    """Raise ``ObservationError`` naming the key, the expected and the actual value of a malformed ``obs``."""
    if not isinstance(obs, Mapping):
        raise ObservationError(f"obs: expected a dict, got {type(obs).__name__}")
    for key in (*image_keys, "state", "prompt"):
        if key not in obs:
            raise ObservationError(f"{key}: missing from the observation (got keys {sorted(obs)})")
    for key in image_keys:
        image = obs[key]
        if not isinstance(image, np.ndarray):
            raise ObservationError(
                f"{key}: expected a numpy uint8 array (H, W, 3), got {type(image).__name__}"
            )
        if image.dtype != np.uint8:
            raise ObservationError(f"{key}: expected dtype uint8, got {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ObservationError(f"{key}: expected shape (H, W, 3), got {image.shape}")
    try:
        state = np.asarray(obs["state"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ObservationError(
            f"state: expected a float array ({state_dim},), got {type(obs['state']).__name__}"
        ) from exc
    if state.shape != (state_dim,):
        raise ObservationError(f"state: expected shape ({state_dim},), got {state.shape}")
    if not np.isfinite(state).all():
        raise ObservationError(f"state: expected finite values, got {state.tolist()}")
    prompt = obs["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ObservationError(f"prompt: expected a non-empty str, got {prompt!r}")
