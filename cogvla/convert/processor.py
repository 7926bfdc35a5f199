"""OpenVLA's image preprocessing constants, read from ``preprocessor_config.json``.

The Prismatic processor turns each camera image into 6 channels: the 224 px image
normalized with DINOv2's ImageNet mean/std, then with SigLIP's 0.5/0.5 (index 0 =
DINOv2, index 1 = SigLIP). The model takes ``[0, 1]`` images and applies each
stream's mean/std itself, so only the constants carry over. The LIBERO protocol's
180 degree flip happens in the environment wrapper (observations are upright) and its
90%-area center crop is the model config's ``center_crop`` flag.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cogvla.convert.errors import CheckpointFileError, UnsupportedLayoutError

__all__ = ["ImagePreprocessing", "read_image_preprocessing"]

log = logging.getLogger(__name__)

FILE_NAME = "preprocessor_config.json"
Triple = tuple[float, float, float]

_DEFAULT_MEANS = ((0.485, 0.456, 0.406), (0.5, 0.5, 0.5))
_DEFAULT_STDS = ((0.229, 0.224, 0.225), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class ImagePreprocessing:
    """Per-stream pixel normalization (applied to [0, 1] images) for DINOv2 and SigLIP."""

    dino_mean: Triple
    dino_std: Triple
    siglip_mean: Triple
    siglip_std: Triple


def _triples(values: object, field: str, path: Path) -> tuple[Triple, Triple]:
    if (
        not isinstance(values, list)
        or len(values) != 2
        or any(not isinstance(v, list) or len(v) != 3 for v in values)
    ):
        raise CheckpointFileError(
            f"{path}: {field}: expected two lists of 3 numbers (DINOv2, SigLIP), got {values!r}"
        )
    return tuple(float(x) for x in values[0]), tuple(float(x) for x in values[1])


def read_image_preprocessing(directory: str | Path, image_size: int) -> ImagePreprocessing:
    """Means/stds from ``preprocessor_config.json`` (OpenVLA's defaults when the file is absent)."""
    path = Path(directory) / FILE_NAME
    if not path.is_file():
        log.info("%s: absent; using OpenVLA's DINOv2 (ImageNet) and SigLIP (0.5) constants", path)
        return ImagePreprocessing(_DEFAULT_MEANS[0], _DEFAULT_STDS[0], _DEFAULT_MEANS[1], _DEFAULT_STDS[1])
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointFileError(f"{path}: not valid JSON ({exc})") from exc
    if not raw.get("use_fused_vision_backbone", True):
        raise UnsupportedLayoutError(f"{path}: use_fused_vision_backbone: expected true, got false")
    strategy = raw.get("image_resize_strategy", "resize-naive")
    if strategy != "resize-naive":
        raise UnsupportedLayoutError(
            f"{path}: image_resize_strategy: expected 'resize-naive', got {strategy!r}"
        )
    if raw.get("tvf_do_letterbox"):
        raise UnsupportedLayoutError(f"{path}: tvf_do_letterbox: expected false, got true")
    for size in raw.get("input_sizes", []):
        if list(size) != [3, image_size, image_size]:
            raise CheckpointFileError(
                f"{path}: input_sizes: expected [3, {image_size}, {image_size}] (config.json image_sizes), got {size}"
            )
    means = _triples(raw.get("means", [list(m) for m in _DEFAULT_MEANS]), "means", path)
    stds = _triples(raw.get("stds", [list(s) for s in _DEFAULT_STDS]), "stds", path)
    return ImagePreprocessing(means[0], stds[0], means[1], stds[1])
