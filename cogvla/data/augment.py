"""Training-time image augmentation in torch, batched, with explicit per-sample randomness.

The recipe is OpenVLA-OFT's (``--image_aug True``), applied in this order:

1. random resized crop of 90% of the area, aspect ratio 1, resized back to the input size
   (``cogvla.preprocess.crop_resize``: serving takes the centred box of the same area);
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

from cogvla.preprocess import CROP_AREA, crop_resize

__all__ = ["AugmentConfig", "augment_images", "hsv_to_rgb", "rgb_to_hsv", "sample_params"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the training augmentation (OpenVLA-OFT defaults)."""

    # Additive brightness delta range +-brightness.
    brightness: float = 0.2
    # Multiplicative contrast factor range.
    contrast: tuple[float, float] = (0.8, 1.2)
    # Multiplicative HSV saturation factor range.
    saturation: tuple[float, float] = (0.8, 1.2)
    # Hue shift range +-hue, in turns.
    hue: float = 0.05

    def __post_init__(self) -> None:
        for name in ("contrast", "saturation"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"AugmentConfig.{name}: expected 0 <= low <= high, got ({low}, {high})")


def sample_params(seeds: Sequence[int], config: AugmentConfig) -> torch.Tensor:
    """``(B, 6)`` float32 parameters, one row per seed.

    Columns: crop offset y and x in [0, 1] (fraction of the free margin), brightness
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


def augment_images(
    images: torch.Tensor, params: torch.Tensor, config: AugmentConfig, crop_area: float = CROP_AREA
) -> torch.Tensor:
    """Augment ``images (B, n_img, 3, H, W)`` float in [0, 1] with ``params (B, 6)``; same shape out.

    ``crop_area`` is the area of the random box (1.0 = no crop).
    """
    if not 0.0 < crop_area <= 1.0:
        raise ValueError(f"crop_area: expected a value in (0, 1], got {crop_area}")
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"images: expected shape (B, n_img, 3, H, W), got {tuple(images.shape)}")
    if params.shape != (images.shape[0], 6):
        raise ValueError(f"params: expected shape ({images.shape[0]}, 6), got {tuple(params.shape)}")
    B, N, C, H, W = images.shape
    x = _random_crop(images, params[:, 0], params[:, 1], crop_area).reshape(B * N, C, H, W)
    per_image = params.to(images.dtype).repeat_interleave(N, dim=0)  # (B*N, 6)
    x = (x + per_image[:, 2, None, None, None]).clamp(0.0, 1.0)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * per_image[:, 3, None, None, None] + mean).clamp(0.0, 1.0)
    hue, sat, val = rgb_to_hsv(x).unbind(dim=1)
    sat = (sat * per_image[:, 4, None, None]).clamp(0.0, 1.0)
    hue = torch.remainder(hue + per_image[:, 5, None, None], 1.0)
    x = hsv_to_rgb(torch.stack([hue, sat, val], dim=1)).clamp(0.0, 1.0)
    return x.reshape(B, N, C, H, W)


def _random_crop(x: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor, area: float) -> torch.Tensor:
    """Per-sample crop-and-resize of ``x (B, n_img, 3, H, W)``; one box per sample, shared by its cameras."""
    scale = math.sqrt(area)
    # The box centre may move by (1 - scale) either way in normalized coordinates.
    dy = ((2 * fy - 1) * (1 - scale)).tolist()
    dx = ((2 * fx - 1) * (1 - scale)).tolist()
    return torch.stack([crop_resize(sample, scale, (y, x)) for sample, y, x in zip(x, dy, dx, strict=True)])


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``(M, 3, H, W)`` RGB in [0, 1] -> HSV with hue in turns [0, 1)."""
    r, g, b = rgb.unbind(dim=1)
    value, argmax = rgb.max(dim=1)
    chroma = value - rgb.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.stack([(g - b) / safe, (b - r) / safe + 2.0, (r - g) / safe + 4.0], dim=1)
    hue = torch.gather(hue, 1, argmax.unsqueeze(1)).squeeze(1)
    hue = torch.where(chroma > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    saturation = torch.where(
        value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), value * 0
    )
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
