"""Setting an object aside before a drawer opens over it.

A drawer pulled out slides over whatever stands in front of its fixture, lower than the
drawer (the bowl beside libero_goal's cabinet). Its front then hangs over the object, and
a grasp of the object no longer fits between the two. So an object that an ``in`` atom
puts into a closed drawer, and that stands where the drawer's body will be once fully open,
is first picked up and put down at a free spot of the table out of that footprint; then
the drawer opens, and the object goes in.

Markovian like the rest of the oracle: whether an object is in the way, and where it goes,
are functions of the current state. The spot minimises the way from the object to it plus
the way on to the drawer, so it stays put while the object travels straight to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.oracle_geometry import box_half_extents
from envs.oracle_joint import JointBoxes, state_sign

__all__ = ["clearing_spot", "in_the_way", "open_footprint", "table_top"]

# An object this close (xy) to the open drawer's footprint is in its way ...
_TRIGGER_MARGIN = 0.01
# ... and is set down this far from it: the hand needs the room to grasp it again.
_TARGET_MARGIN = 0.035
# While the fingers still touch it, it counts as in the way up to this margin, so that
# it is put down before the drawer skill takes over ...
_HELD_MARGIN = 0.025
# ... and anywhere while its bottom is this far above the table and the hand is in its box
# (grown by the second margin): it is being carried aside.
_LIFTED = 0.02
_HAND_MARGIN = 0.015
# Room kept between the set-down object and every other body on the table.
_OBSTACLE_MARGIN = 0.01
# Search for a spot: grid step, and how far around the drawers' footprint (m).
_STEP = 0.01
_MAX_SHIFT = 0.3
# Spots farther than this (xy) from the robot's base are out of its reach.
_REACH = 0.66
# Points sampled along a carry's way when looking for what it passes.
_CORRIDOR_SAMPLES = 12
# The last stretch of the forearm reaching for a spot (m), and how far it keeps (xy) from
# the open drawers: a spot in front of a drawer has the arm run into it.
_FOREARM_LENGTH = 0.3
_FOREARM_CLEARANCE = 0.1


def open_footprint(priv: Mapping[str, Any], joints: tuple[str, ...]) -> np.ndarray | None:
    """Box ``(2, 3)`` ``[lo, hi]`` around the drawers' moving bodies from where they are now
    to where they stop fully open; None if they have no collision geoms."""
    corners = []
    for joint in joints:
        info = priv["joints"][joint]
        boxes = JointBoxes.of(info)
        extent = boxes.world_extent()
        sign = state_sign(priv, joint, "open")
        limits = np.asarray(info["range"], dtype=np.float64)
        travel = abs((limits.max() if sign > 0 else limits.min()) - float(info["qpos"]))
        shift = np.asarray(info["axis"], dtype=np.float64) * sign * travel
        for offset in (np.zeros(3), shift):
            corners.extend([boxes.centre + offset - extent, boxes.centre + offset + extent])
    stacked = np.concatenate(corners)
    if len(stacked) == 0:
        return None
    return np.stack([stacked.min(axis=0), stacked.max(axis=0)])


def _gaps(lo: np.ndarray, hi: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Horizontal distance ``(..., B)`` between rectangles ``[lo, hi]`` (``(..., 2)`` each) and
    the xy footprints of boxes ``(B, 2, >=2)``; 0 where they overlap."""
    lo, hi = lo[..., None, :], hi[..., None, :]
    outside = np.maximum(boxes[:, 0, :2] - hi, 0.0) + np.maximum(lo - boxes[:, 1, :2], 0.0)
    return np.linalg.norm(outside, axis=-1)


def in_the_way(priv: Mapping[str, Any], obj_name: str, joints: tuple[str, ...]) -> np.ndarray | None:
    """Where to set ``obj_name`` aside (``clearing_spot``) if it stands where the drawers of
    ``joints`` will be once open, below their top, or is being carried aside; else None."""
    obj = priv["objects"][obj_name]
    box = np.asarray(obj["aabb"], dtype=np.float64)
    footprint = open_footprint(priv, joints)
    if footprint is None:
        return None
    touched = int(obj.get("finger_contacts", 0)) > 0
    table = table_top(priv, np.asarray(obj["pos"], dtype=np.float64)[:2])
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    in_hand = bool(np.all(eef >= box[0] - _HAND_MARGIN) and np.all(eef <= box[1] + _HAND_MARGIN))
    carried = in_hand and table is not None and box[0, 2] > table + _LIFTED
    margin = _HELD_MARGIN if touched else _TRIGGER_MARGIN
    below = box[0, 2] < footprint[1, 2] and _gaps(box[0, :2], box[1, :2], footprint[None])[0] <= margin
    return clearing_spot(priv, obj_name, joints) if carried or below else None


def table_top(priv: Mapping[str, Any], xy: np.ndarray) -> float | None:
    """Height of the table surface at ``xy``: the top of the nearest table region (a region
    site with no parent object), or None if the scene has none."""
    best, height = np.inf, None
    for site in priv["sites"].values():
        if site["parent"]:
            continue
        centre = np.asarray(site["pos"], dtype=np.float64)
        half = box_half_extents(
            np.asarray(site["rot"], dtype=np.float64), np.asarray(site["size"], dtype=np.float64)
        )
        distance = float(np.linalg.norm(np.maximum(np.abs(xy - centre[:2]) - half[:2], 0.0)))
        if distance < best:
            best, height = distance, float(centre[2] + half[2])
    return height


def clearing_spot(priv: Mapping[str, Any], obj_name: str, joints: tuple[str, ...]) -> np.ndarray | None:
    """Target ``(2,)`` of ``obj_name``'s origin: a point of the table where its footprint keeps
    clear of the open drawers and of every other body, within the robot's reach, where the
    forearm reaching for it passes clear of the open drawers; of those, the one with the
    shortest way from the object to it and on to the drawers. None if there is none."""
    obj = priv["objects"][obj_name]
    pos = np.asarray(obj["pos"], dtype=np.float64)[:2]
    if table_top(priv, pos) is None:
        return None
    # A square of the object's widest half-extent: the box of a carried, swinging object
    # changes, and the spot must not.
    box = np.asarray(obj["aabb"], dtype=np.float64)
    half = float(np.max(box[1, :2] - box[0, :2]) / 2.0)
    footprint = open_footprint(priv, joints)
    if footprint is None:
        return None
    obstacles, margins = [footprint[None]], [_TARGET_MARGIN]
    for name, other in priv["objects"].items():
        if name != obj_name:
            parts = np.asarray(other["parts"], dtype=np.float64).reshape(-1, 2, 3)
            obstacles.append(parts)
            margins.extend([_OBSTACLE_MARGIN] * len(parts))
    boxes, room = np.concatenate(obstacles), np.asarray(margins)
    axes = [
        np.arange(footprint[0, i] - _MAX_SHIFT, footprint[1, i] + _MAX_SHIFT + _STEP / 2, _STEP)
        for i in range(2)
    ]
    spots = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)  # (P, 2)
    base = np.asarray(priv["robot_base_pos"], dtype=np.float64)[:2]
    spots = spots[np.linalg.norm(spots - base, axis=1) <= _REACH]
    # Gap between each spot's square and each obstacle box, horizontally: (P, B).
    free = np.all(_gaps(spots - half, spots + half, boxes) > room, axis=1)
    # The forearm comes in from the robot's base: sample the line from each spot towards it.
    inwards = base - spots
    inwards /= np.linalg.norm(inwards, axis=1, keepdims=True)
    arm = spots[:, None, :] + np.linspace(0.0, _FOREARM_LENGTH, 7)[None, :, None] * inwards[:, None, :]
    free &= _gaps(arm, arm, footprint[None]).min(axis=(1, 2)) > _FOREARM_CLEARANCE
    if not free.any():
        return None
    spots = spots[free]
    # The way there and on to the drawers, plus the climbs over whatever stands beside either
    # leg (the carry rises over it, up and down again). Without the climbs the cost would be an
    # ellipse's sum of distances, and the chosen spot the best one all the way to it.
    drawers = footprint.mean(axis=0)[:2]
    owners = {priv["joints"][joint]["owner"] for joint in joints}
    tall = [
        np.asarray(other["aabb"], dtype=np.float64)
        for name, other in priv["objects"].items()
        if name != obj_name and name not in owners
    ]
    table = table_top(priv, pos)
    way = np.linalg.norm(spots - pos, axis=1) + np.linalg.norm(spots - drawers, axis=1)
    if tall:
        boxes = np.stack(tall)
        climb = np.maximum(boxes[:, 1, 2] - table, 0.0)
        way += 2.0 * (_climb(pos, spots, boxes, climb, half) + _climb(drawers, spots, boxes, climb, half))
    return spots[int(np.argmin(way))]


def _climb(
    start: np.ndarray, ends: np.ndarray, boxes: np.ndarray, heights: np.ndarray, half: float
) -> np.ndarray:
    """Highest of ``heights`` ``(B,)`` over the boxes ``(B, 2, 3)`` that a square of half-size
    ``half`` passes within ``_OBSTACLE_MARGIN`` of on its way from ``start`` to each of ``ends``
    ``(P, 2)``: ``(P,)``, 0 where it passes none. Sampled every few centimetres."""
    fractions = np.linspace(0.0, 1.0, _CORRIDOR_SAMPLES)[None, :, None]
    points = start + fractions * (ends[:, None, :] - start)  # (P, S, 2)
    passes = np.any(_gaps(points - half, points + half, boxes) <= _OBSTACLE_MARGIN, axis=1)  # (P, B)
    return np.max(np.where(passes, heights[None, :], 0.0), axis=1)
