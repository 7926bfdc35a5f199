"""OpenVLA's LIBERO image front-end, which released OpenVLA-OFT and CogVLA weights expect.

Per camera image (reference ``openvla_utils.py``), when it is not already at the model size:

1. JPEG encode (quality 95, 4:2:0 chroma) and decode, as the RLDS builder stored the
   training frames;
2. resize with an antialiased lanczos3 kernel (``tf.image.resize``), round and clip to uint8;
3. with ``center_crop``: scale to [0, 1] (``x * (1/255)``), take the centred box of 90% area
   with bilinear ``crop_and_resize`` back to the model size, and quantize to uint8 the way
   ``tf.image.convert_image_dtype`` does (``floor(x * 255.5)``, saturated);
4. the HF processor divides by 255.

Two backends compute it. ``"tf"`` runs TensorFlow's own ops (the optional ``openvla-tf``
extra) and is exact. ``"torch"`` needs no TensorFlow: JPEG through Pillow and simplejpeg
(see ``jpeg_round_trip``), the lanczos3 weights built here in float64 as TensorFlow's
``ScaleAndTranslate`` defines them, and the crop with ``cogvla.preprocess.crop_resize``;
its measured difference from the TensorFlow path is in ``docs/gpu.md``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from PIL import Image

from cogvla.preprocess import CROP_AREA, crop_resize

__all__ = ["JPEG_QUALITY", "Backend", "jpeg_round_trip", "lanczos3_matrix", "openvla_images"]

Backend = Literal["torch", "tf"]
# tf.image.encode_jpeg's default quality, used by the RLDS dataset builder
JPEG_QUALITY = 95
_LANCZOS_RADIUS = 3.0


def openvla_images(
    images: Sequence[np.ndarray], size: int, *, center_crop: bool, backend: Backend = "torch"
) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` camera images -> ``(n, 3, size, size)`` float32 in [0, 1], as OpenVLA's eval."""
    prepare = _tf_image if backend == "tf" else _torch_image
    out = torch.empty(len(images), 3, size, size)
    for i, image in enumerate(images):
        out[i] = torch.from_numpy(prepare(np.ascontiguousarray(image), size, center_crop)).permute(2, 0, 1)
    return out.div_(255.0)


def jpeg_round_trip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``image`` (uint8 ``(H, W, 3)``) after TensorFlow's JPEG encode and decode, without TensorFlow.

    Pillow's encoder with 4:2:0 chroma writes the same coefficients as ``tf.image.encode_jpeg``.
    TensorFlow decodes with libjpeg's fast integer IDCT and fancy upsampling; simplejpeg
    (the ``openvla`` extra) exposes that IDCT, Pillow only the accurate one, which is used
    when simplejpeg is absent and differs by a few levels per pixel.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    try:
        import simplejpeg
    except ImportError:
        return np.array(Image.open(buffer).convert("RGB"))
    return simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False)


@lru_cache(maxsize=16)
def lanczos3_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``(out_size, in_size)`` float64 resampling weights of an antialiased lanczos3 resize.

    Output pixel ``i`` samples the input at ``(i + 0.5) * in / out``; when shrinking, the
    kernel is stretched by ``in / out`` (antialiasing); each row sums to 1.
    """
    inv_scale = in_size / out_size
    kernel_scale = max(inv_scale, 1.0)
    reach = _LANCZOS_RADIUS * kernel_scale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        centre = (i + 0.5) * inv_scale
        start = max(math.ceil(centre - reach - 0.5), 0)
        stop = min(math.floor(centre + reach - 0.5), in_size - 1)
        taps = torch.arange(start, stop + 1, dtype=torch.float64)
        row = _lanczos3((taps + 0.5 - centre) / kernel_scale)
        weights[i, start : stop + 1] = row / row.sum()
    return weights


def _lanczos3(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    px = math.pi * x
    value = _LANCZOS_RADIUS * torch.sin(px) * torch.sin(px / _LANCZOS_RADIUS) / (px * px).clamp(min=1e-300)
    value = torch.where(x <= 1e-3, torch.ones_like(x), value)
    return torch.where(x > _LANCZOS_RADIUS, torch.zeros_like(x), value)


def _torch_image(image: np.ndarray, size: int, center_crop: bool) -> np.ndarray:
    if image.shape[:2] != (size, size):
        decoded = torch.from_numpy(jpeg_round_trip(image)).to(torch.float64)  # (H, W, 3)
        rows, cols = lanczos3_matrix(image.shape[0], size), lanczos3_matrix(image.shape[1], size)
        height, width, channels = decoded.shape
        by_rows = (rows @ decoded.reshape(height, width * channels)).reshape(size, width, channels)
        resized = torch.einsum("owc,pw->opc", by_rows, cols)
        image = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    if not center_crop:
        return image
    unit = torch.from_numpy(image).permute(2, 0, 1).float() * (1.0 / 255.0)
    cropped = crop_resize(unit, math.sqrt(CROP_AREA)).clamp(0.0, 1.0)
    return (cropped * 255.5).to(torch.uint8).permute(1, 2, 0).numpy()


def _tf_image(image: np.ndarray, size: int, center_crop: bool) -> np.ndarray:
    tf = _tensorflow()
    pixels = tf.convert_to_tensor(image)
    if image.shape[:2] != (size, size):
        decoded = tf.io.decode_image(tf.image.encode_jpeg(pixels), expand_animations=False, dtype=tf.uint8)
        resized = tf.image.resize(decoded, (size, size), method="lanczos3", antialias=True)
        pixels = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    if not center_crop:
        return pixels.numpy()
    # the box in float32, as the reference computes it with TF ops
    side = np.sqrt(np.float32(CROP_AREA))
    low = (np.float32(1.0) - side) / np.float32(2.0)
    high = low + side
    unit = tf.image.convert_image_dtype(pixels, tf.float32)[None]
    cropped = tf.image.crop_and_resize(unit, [[low, low, high, high]], [0], (size, size))[0]
    return tf.image.convert_image_dtype(tf.clip_by_value(cropped, 0, 1), tf.uint8, saturate=True).numpy()


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            "image_preprocessing 'openvla-tf' needs TensorFlow: pip install 'cogvla[openvla-tf]' "
            "(or use 'openvla', the same steps without TensorFlow)"
        ) from exc
    return tf
