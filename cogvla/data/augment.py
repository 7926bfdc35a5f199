"""Training-time image augmentation in torch, batched, with explicit per-sample randomness.

The recipe is OpenVLA-OFT's (``--image_aug True``), applied in this order:

1. random resized crop of 90% of the area, aspect ratio 1, resized back to the input size;
2. brightness: add ``U(-0.2, 0.2)``;
3. contrast: scale the distance to the per-channel mean by ``U(0.8, 1.2)``;
4. saturation: scale HSV saturation by ``U(0.8, 1.2)``;
5. hue: rotate HSV hue by ``U(-0.05, 0.05)`` of a turn;

clipping to [0, 1] after each step. Every camera of a sample gets the same crop box and
the same colour factors (the reference seeds both cameras alike).

Each sample's parameters come from its own seed, so a sample is augmented the same way
whichever worker, rank or micro-batch it lands in; that makes resumed and distributed
runs reproduce single-process ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_images", "hsv_to_rgb", "rgb_to_hsv", "sample_params"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the training augmentation (OpenVLA-OFT defaults)."""

    # Area of the random crop relative to the image; the reference uses a fixed 0.9.
    crop_area: float = 0.9
    # Additive brightness delta range +-brightness.
    brightness: float = 0.2
    # Multiplicative contrast factor range.
    contrast: tuple[float, float] = (0.8, 1.2)
    # Multiplicative HSV saturation factor range.
    saturation: tuple[float, float] = (0.8, 1.2)
    # Hue shift range +-hue, in turns.
    hue: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_area <= 1.0:
            raise ValueError(f"AugmentConfig.crop_area: expected a value in (0, 1], got {self.crop_area}")
        for name in ("contrast", "saturation"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"AugmentConfig.{name}: expected 0 <= low <= high, got ({low}, {high})")


def sample_params(seeds: Sequence[int], config: AugmentConfig) -> torch.Tensor:
    """``(B, 6)`` float32 parameters, one row per seed.

    Columns: crop offset x and y in [0, 1] (fraction of the free margin), brightness
    delta, contrast factor, saturation factor, hue shift.
    """
    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        u = torch.rand(6, generator=generator, dtype=torch.float64)
        rows.append(
            [
                u[0],
                u[1],
                (2 * u[2] - 1) * config.brightness,
                config.contrast[0] + u[3] * (config.contrast[1] - config.contrast[0]),
                config.saturation[0] + u[4] * (config.saturation[1] - config.saturation[0]),
                (2 * u[5] - 1) * config.hue,
            ]
        )
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 6)


def augment_images(images: torch.Tensor, params: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """Augment ``images (B, n_img, 3, H, W)`` float in [0, 1] with ``params (B, 6)``; same shape out."""
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"images: expected shape (B, n_img, 3, H, W), got {tuple(images.shape)}")
    if params.shape != (images.shape[0], 6):
        raise ValueError(f"params: expected shape ({images.shape[0]}, 6), got {tuple(params.shape)}")
    B, N, C, H, W = images.shape
    per_image = params.to(images.dtype).repeat_interleave(N, dim=0)  # (B*N, 6)
    x = images.reshape(B * N, C, H, W)
    x = _random_crop(x, per_image[:, 0], per_image[:, 1], config.crop_area)
    x = (x + per_image[:, 2, None, None, None]).clamp(0.0, 1.0)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * per_image[:, 3, None, None, None] + mean).clamp(0.0, 1.0)
    hue, sat, val = rgb_to_hsv(x).unbind(dim=1)
    sat = (sat * per_image[:, 4, None, None]).clamp(0.0, 1.0)
    hue = torch.remainder(hue + per_image[:, 5, None, None], 1.0)
    x = hsv_to_rgb(torch.stack([hue, sat, val], dim=1)).clamp(0.0, 1.0)
    return x.reshape(B, N, C, H, W)


def _random_crop(x: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, area: float) -> torch.Tensor:
    """Bilinear crop-and-resize of a square-aspect box covering ``area`` of ``x (M, 3, H, W)``."""
    side = math.sqrt(area)
    # In affine_grid's [-1, 1] coordinates the box spans 2*side and its centre can move
    # by (1 - side) either way; fx, fy in [0, 1] pick the position.
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, 0, 2] = (2 * fx - 1) * (1 - side)
    theta[:, 1, 2] = (2 * fy - 1) * (1 - side)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``(M, 3, H, W)`` RGB in [0, 1] -> HSV with hue in turns [0, 1)."""
    r, g, b = rgb.unbind(dim=1)
    value, argmax = rgb.max(dim=1)
    chroma = value - rgb.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.stack([(g - b) / safe, (b - r) / safe + 2.0, (r - g) / safe + 4.0], dim=1)
    hue = torch.gather(hue, 1, argmax.unsqueeze(1)).squeeze(1)
    hue = torch.where(chroma > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), value * 0)
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``(M, 3, H, W)`` HSV (hue in turns) -> RGB, the inverse of ``rgb_to_hsv``."""
    hue, saturation, value = hsv.unbind(dim=1)
    # Closed form per channel n in (R=5, G=3, B=1): V - V*S*clamp(min(k, 4 - k), 0, 1),
    # with k = (n + 6*hue) mod 6.
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * ramp)
