"""Image preprocessing against OpenVLA's official LIBERO front-end, on real LIBERO renders.

Renders 20 frames once (10 init states of libero_spatial tasks, agentview and wrist, 256 px,
full rendering; cached under the cogvla cache), then compares each path's uint8 model input
(224 px, 90%-area centre crop) with the official sequence of TensorFlow calls, written out
below as the reference eval makes them:

- ``openvla-tf``: this project's TensorFlow backend (``cogvla.openvla_images``);
- ``openvla``: the backend without TensorFlow (Pillow + simplejpeg JPEG, lanczos3 in torch);
- ``openvla-pillow-decoder``: the same where simplejpeg is not installed;
- ``bicubic``: the project's own preprocessing (no JPEG, bicubic resize, float crop).

Needs the ``openvla-tf`` extra and LIBERO. Prints and writes JSON::

    MUJOCO_GL=egl python benchmarks/bench_preprocess.py --out ~/.cache/cogvla/bench/preprocess.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cogvla.openvla_images import openvla_images
from cogvla.paths import cache_dir
from cogvla.preprocess import center_crop, images_to_tensor

SIZE = 224
FRAMES = 20


def render_frames(path: Path) -> np.ndarray:
    """``(20, 256, 256, 3)`` uint8 LIBERO camera images, rendered once and cached in ``path``."""
    if path.is_file():
        return np.load(path)["frames"]
    from envs.libero_env import LiberoEnv

    frames = []
    for task_id in range(FRAMES // 2):
        env = LiberoEnv("libero_spatial", task_id, image_size=256)
        obs, _ = env.reset(seed=0, options={"init_state_id": task_id})
        frames += [obs["image"], obs["wrist_image"]]
        env.close()
    stacked = np.stack(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, frames=stacked)
    return stacked


def official(image: np.ndarray) -> np.ndarray:
    """The reference eval's calls, in its order: resize for the policy, then centre crop via PIL."""
    import tensorflow as tf
    from PIL import Image

    encoded = tf.image.encode_jpeg(image)
    decoded = tf.io.decode_image(encoded, expand_animations=False, dtype=tf.uint8)
    resized = tf.image.resize(decoded, (SIZE, SIZE), method="lanczos3", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
    pil = Image.fromarray(resized).convert("RGB")
    tensor = tf.convert_to_tensor(np.array(pil))
    unit = tf.expand_dims(tf.image.convert_image_dtype(tensor, tf.float32), axis=0)
    side = tf.reshape(tf.clip_by_value(tf.sqrt(0.9), 0, 1), shape=(1,))
    offset = (1 - side) / 2
    boxes = tf.stack([offset, offset, offset + side, offset + side], axis=1)
    cropped = tf.image.crop_and_resize(unit, boxes, tf.range(1), (SIZE, SIZE))[0]
    out = tf.image.convert_image_dtype(tf.clip_by_value(cropped, 0, 1), tf.uint8, saturate=True)
    return np.asarray(Image.fromarray(out.numpy()).convert("RGB"))


def project(image: np.ndarray) -> np.ndarray:
    """The project's own preprocessing, as uint8 for comparison."""
    unit = center_crop(images_to_tensor([image], SIZE))[0]
    return unit.mul(255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _without_simplejpeg(run):
    """``run()`` as on a machine without simplejpeg (a None entry makes its import fail)."""
    saved = sys.modules.get("simplejpeg")
    sys.modules["simplejpeg"] = None
    try:
        return run()
    finally:
        sys.modules["simplejpeg"] = saved


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    return images.mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def compare(frames: np.ndarray) -> dict:
    start = time.perf_counter()
    reference = np.stack([official(frame) for frame in frames]).astype(np.int16)
    timings = {"official": time.perf_counter() - start}
    paths = {
        "openvla-tf": lambda: _as_uint8(openvla_images(list(frames), SIZE, center_crop=True, backend="tf")),
        "openvla": lambda: _as_uint8(openvla_images(list(frames), SIZE, center_crop=True, backend="torch")),
        "openvla-pillow-decoder": lambda: _without_simplejpeg(
            lambda: _as_uint8(openvla_images(list(frames), SIZE, center_crop=True, backend="torch"))
        ),
        "bicubic": lambda: np.stack([project(frame) for frame in frames]),
    }
    results = {}
    for name, run in paths.items():
        start = time.perf_counter()
        out = run().astype(np.int16)
        timings[name] = time.perf_counter() - start
        diff = np.abs(out - reference)
        results[name] = {
            "max_abs_diff": int(diff.max()),
            "mean_abs_diff": round(float(diff.mean()), 4),
            "pixels_off_by_1": int((diff == 1).sum()),
            "pixels_off_by_more": int((diff > 1).sum()),
            "frames_identical": int(sum(not d.any() for d in diff)),
        }
    per_frame_ms = {name: round(seconds * 1000.0 / len(frames), 2) for name, seconds in timings.items()}
    return {
        "frames": len(frames),
        "frame_shape": list(frames.shape[1:]),
        "values": int(math.prod(reference.shape)),
        "vs_official": results,
        "ms_per_image": per_frame_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=cache_dir("bench") / "preprocess.json")
    args = parser.parse_args()
    frames = render_frames(cache_dir("preprocess") / "libero_frames.npz")
    report = compare(frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
