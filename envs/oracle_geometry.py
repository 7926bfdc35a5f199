"""Rotation and bounding-box helpers for the scripted oracle (plain numpy, no simulator).

Conventions: quaternions are ``(x, y, z, w)`` as in robosuite observations; boxes are
``(2, 3)`` arrays ``[lo, hi]`` in world coordinates (metres); a yaw ``psi`` is the
angle of the gripper's finger axis from world +y about world +z.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "box_half_extents",
    "down_rotation",
    "fixture_region_at",
    "footprint_frame",
    "gripper_yaw",
    "nearest_equivalent_yaw",
    "point_in_box",
    "quat_to_mat",
    "rectangle_clearance",
    "rotation_error",
    "segment_box_overlap",
    "wrap_angle",
    "xy_distance_to_box",
]


def quat_to_mat(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` of a unit quaternion ``(x, y, z, w)``."""
    x, y, z, w = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _mat_to_rotvec(rot: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (angle in [0, pi])."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-4:
        # Near a half turn the antisymmetric part vanishes; read the axis off the symmetric part.
        axis = np.sqrt(np.clip((np.diag(rot) + 1.0) / 2.0, 0.0, None))
        pivot = int(np.argmax(axis))
        signs = np.sign(rot[pivot] + rot[:, pivot])
        signs[pivot] = 1.0
        return angle * axis * np.where(signs == 0, 1.0, signs)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]]) / (
        2 * np.sin(angle)
    )
    return angle * axis


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame axis-angle ``(3,)`` that rotates ``current`` onto ``target`` (both ``(3, 3)``)."""
    return _mat_to_rotvec(target @ current.T)


def wrap_angle(angle: float) -> float:
    """Angle wrapped to ``[-pi, pi)``."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def down_rotation(psi: float) -> np.ndarray:
    """Hand orientation pointing straight down with the finger axis at yaw ``psi``.

    At ``psi = 0`` this is LIBERO's home orientation (a half turn about world x), whose
    fingers close along world y.
    """
    c, s = np.cos(psi), np.sin(psi)
    yaw = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return yaw @ np.diag([1.0, -1.0, -1.0])


def gripper_yaw(hand_rot: np.ndarray) -> float:
    """Yaw of the finger axis (hand y axis) of a hand orientation ``(3, 3)``."""
    finger = hand_rot[:, 1]
    return float(np.arctan2(finger[0], -finger[1]))


def nearest_equivalent_yaw(psi: float, current: float) -> float:
    """``psi`` or ``psi + pi`` (a parallel gripper is symmetric), whichever is closer to ``current``."""
    first = current + wrap_angle(psi - current)
    second = current + wrap_angle(psi + np.pi - current)
    return first if abs(first - current) <= abs(second - current) else second


def box_half_extents(rot: np.ndarray, size: np.ndarray) -> np.ndarray:
    """World-axis half extents ``(3,)`` of a box with frame ``rot`` and half-sizes ``size``."""
    return np.abs(rot) @ np.abs(size)


def point_in_box(point: np.ndarray, centre: np.ndarray, rot: np.ndarray, size: np.ndarray) -> bool:
    """Whether ``point`` lies inside the oriented box (``rot`` maps box frame to world)."""
    local = rot.T @ (np.asarray(point) - np.asarray(centre))
    return bool(np.all(np.abs(local) <= np.abs(size)))


def fixture_region_at(
    sites: Mapping[str, Mapping[str, Any]], point: np.ndarray, exclude: str
) -> Mapping[str, Any] | None:
    """The first region site owned by a fixture or object other than ``exclude`` that holds
    ``point`` (a drawer's interior holding a bowl), or None."""
    for site in sites.values():
        if (
            site["parent"]
            and site["parent"] != exclude
            and point_in_box(
                point,
                np.asarray(site["pos"], dtype=np.float64),
                np.asarray(site["rot"], dtype=np.float64),
                np.asarray(site["size"], dtype=np.float64),
            )
        ):
            return site
    return None


# A body whose up axis is within this cosine of world up counts as standing upright.
_UPRIGHT_COS = 0.9


def footprint_frame(obj: Mapping[str, Any]) -> tuple[float, np.ndarray]:
    """Yaw of an object's own horizontal frame and its box ``[lo, hi]`` ``(2, 3)`` in that frame,
    relative to its origin.

    A rotated book's own frame gives its true width and thickness where the world box only
    gives a square. A body tipped over, or without a ``frame_box``, is taken along the world axes.
    """
    pos = np.asarray(obj["pos"], dtype=np.float64)
    rot = quat_to_mat(obj["quat"])
    if "frame_box" not in obj or rot[2, 2] < _UPRIGHT_COS:
        return 0.0, np.asarray(obj["aabb"], dtype=np.float64) - pos
    return float(np.arctan2(rot[1, 0], rot[0, 0])), np.asarray(obj["frame_box"], dtype=np.float64)


def segment_box_overlap(start: np.ndarray, end: np.ndarray, box: np.ndarray, margin: float) -> bool:
    """Whether the xy segment ``start -> end`` comes within ``margin`` of a box's xy footprint."""
    lo, hi = box[0, :2] - margin, box[1, :2] + margin
    start, end = np.asarray(start[:2], dtype=np.float64), np.asarray(end[:2], dtype=np.float64)
    delta = end - start
    t_lo, t_hi = 0.0, 1.0
    for axis in range(2):
        if abs(delta[axis]) < 1e-12:
            if start[axis] < lo[axis] or start[axis] > hi[axis]:
                return False
            continue
        t0 = (lo[axis] - start[axis]) / delta[axis]
        t1 = (hi[axis] - start[axis]) / delta[axis]
        t_lo, t_hi = max(t_lo, min(t0, t1)), min(t_hi, max(t0, t1))
        if t_lo > t_hi:
            return False
    return True


def xy_distance_to_box(point: np.ndarray, box: np.ndarray) -> float:
    """Horizontal distance from ``point`` to a box's xy footprint (0 inside it)."""
    outside = np.maximum(box[0, :2] - point[:2], 0.0) + np.maximum(point[:2] - box[1, :2], 0.0)
    return float(np.linalg.norm(outside))


# Spacing of the sample grid laid over a rectangle (m).
_GRID_STEP = 0.02


def rectangle_clearance(
    centres: np.ndarray,
    axes: np.ndarray,
    half_length: float,
    half_width: float,
    boxes: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """Horizontal room ``(C,)`` between C oriented rectangles and the boxes' xy footprints.

    Args:
        centres: ``(C, 2)`` rectangle centres.
        axes: ``(C, 2)`` unit vectors along each rectangle's length.
        half_length, half_width: rectangle half-sizes.
        boxes: ``(B, 2, >=2)`` boxes ``[lo, hi]``; only their xy is used.
        active: ``(C, B)`` which boxes count for which rectangle.

    Each rectangle is sampled on a grid about 2 cm apart, so the result is exact to about
    1 cm; 0 means a sample lies inside a box, ``inf`` that no box is active.
    """
    across = np.stack([-axes[:, 1], axes[:, 0]], axis=1)
    n_along = int(np.ceil(2 * half_length / _GRID_STEP)) + 1
    n_across = int(np.ceil(2 * half_width / _GRID_STEP)) + 1
    offsets_along = np.linspace(-half_length, half_length, n_along)[:, None]  # (n_along, 1)
    offsets_across = np.linspace(-half_width, half_width, n_across)[:, None]  # (n_across, 1)
    points = (
        centres[:, None, None, :]
        + offsets_along[None, :, None, :] * axes[:, None, None, :]
        + offsets_across[None, None, :, :] * across[:, None, None, :]
    ).reshape(len(centres), -1, 2)  # (C, P, 2)
    lo = boxes[None, None, :, 0, :2]
    hi = boxes[None, None, :, 1, :2]
    gaps = np.maximum(lo - points[:, :, None, :], 0.0) + np.maximum(points[:, :, None, :] - hi, 0.0)
    distance = np.sqrt(np.sum(gaps * gaps, axis=-1))  # (C, P, B)
    distance = np.where(active[:, None, :], distance, np.inf)
    if distance.shape[1] * distance.shape[2] == 0:
        return np.full(len(centres), np.inf)
    return distance.min(axis=(1, 2))
