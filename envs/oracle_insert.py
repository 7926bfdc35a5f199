"""Putting an object into a region under a roof (a microwave) by sliding it in sideways.

The hand is taller than any such cavity, so it never goes under the roof: the object is held
by its part that faces out of the opening (a mug's handle), set down in front of the opening
with its bottom just over the cavity's floor, slid in horizontally until the hand's front
reaches the roof's front edge (or the region's centre), and let go there. If it is not yet
in the region, the closed fingers push it from behind as far as the hand may go. Everything is
recomputed each tick from the object's pose and the hand's offset from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.oracle_geometry import quat_to_mat
from envs.oracle_grasp import GraspConfig
from envs.oracle_regions import Placement

__all__ = ["Entry", "InsertConfig", "at_opening", "hand_behind", "push_in", "roofed_entry", "slide_in"]


@dataclass(frozen=True)
class InsertConfig:
    """Distances (metres) of sliding an object into a roofed region."""

    # A part of the region's owner whose bottom is this far above the region's floor is a roof.
    roof_margin: float = 0.02
    # Height of the object's bottom over the floor while it slides in.
    floor_clearance: float = 0.012
    # Gap between the object's front and the opening when set down in front of it.
    entry_margin: float = 0.02
    # Gap kept between the hand's front and the roof's front edge.
    hand_margin: float = 0.012
    # Object within this of the slide line (sideways, and in height) counts as lined up.
    line_tolerance: float = 0.012
    # Object within this of its deepest point along the slide is let go.
    release_tolerance: float = 0.01
    # How far the opening is searched for walls from the region's centre.
    wall_search: float = 0.3
    # Pushing a set-down object the rest of the way: gap between the closed fingers' centre and
    # the object's back, the fingers' height over its bottom as a fraction of its height, the
    # clearance over its top while moving behind it, and the step of each push tick.
    push_offset: float = 0.012
    push_height: float = 0.5
    push_clearance: float = 0.02
    push_stride: float = 0.03
    # The hand is lined up behind the object within this (metres).
    push_tolerance: float = 0.01
    # An object set down this far to the side of the slide line is still pushed straight in.
    push_width: float = 0.03


@dataclass(frozen=True)
class Entry:
    """How an object slides into a roofed region."""

    # Horizontal unit vector pointing into the opening.
    inward: np.ndarray
    # The region's centre (world), the floor height and the roof front's coordinate along ``inward``.
    centre: np.ndarray
    floor_z: float
    roof_front: float


def roofed_entry(
    priv: Mapping[str, Any], site: Mapping[str, Any] | None, placement: Placement, cfg: InsertConfig
) -> Entry | None:
    """The sideways entry into ``placement``'s region ``site`` if part of its owner hangs over
    the region's centre (a roof); None for open regions, regions with no open side, and regions
    that move with a joint (a drawer's interior, pulled out from under its cabinet instead)."""
    if site is None or site["joints"] or placement.region is None or placement.relation != "in":
        return None
    owner = priv["objects"].get(site["parent"]) if site["parent"] else None
    if owner is None:
        return None
    centre = placement.region[0]
    parts = np.asarray(owner["parts"], dtype=np.float64).reshape(-1, 2, 3)
    floor = placement.support_z
    over = (
        (parts[:, 0, 2] > floor + cfg.roof_margin)
        & np.all(parts[:, 0, :2] <= centre[:2], axis=1)
        & np.all(parts[:, 1, :2] >= centre[:2], axis=1)
    )
    if not over.any():
        return None
    roof = parts[over][np.argmin(parts[over, 0, 2])]
    # The region's box may reach below the cavity's floor: the floor is the owner's highest
    # surface under the centre and below the roof.
    under = np.all(parts[:, 0, :2] <= centre[:2], axis=1) & np.all(parts[:, 1, :2] >= centre[:2], axis=1)
    tops = parts[under & (parts[:, 1, 2] < roof[0, 2]), 1, 2]
    floor = max(floor, float(tops.max())) if len(tops) else floor
    # Walls: parts spanning the height between the floor and the roof's underside.
    mid_z = (floor + roof[0, 2]) / 2.0
    walls = parts[(parts[:, 0, 2] < mid_z) & (parts[:, 1, 2] > mid_z)]
    for inward in _sides(priv, centre):
        if not _blocked(centre, -inward, walls, cfg.wall_search):
            return Entry(
                inward, np.asarray(centre, dtype=np.float64), floor, float((_corners(roof) @ inward).min())
            )
    return None


def slide_in(
    priv: Mapping[str, Any], obj_name: str, entry: Entry, cfg: InsertConfig, grasp: GraspConfig
) -> tuple[str, np.ndarray]:
    """For a held object: ``("insert" | "release", grip-site target)`` once it is lined up low in
    front of (or inside) the opening; else ``("stage", (x, y, bottom z))``, where the ordinary
    carry sets the object's origin and bottom down in front of the opening."""
    obj = priv["objects"][obj_name]
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    pos = np.asarray(obj["pos"], dtype=np.float64)
    box = np.asarray(obj["aabb"], dtype=np.float64)
    inward = entry.inward
    across = np.array([-inward[1], inward[0]])
    # The hand's footprint reaches this far ahead of the object's origin along the slide.
    hand_ahead = float((eef[:2] - pos[:2]) @ inward) + _hand_reach(priv, inward, grasp)
    deepest = min(float(entry.centre[:2] @ inward), entry.roof_front - cfg.hand_margin - hand_ahead)
    obj_ahead = float(((_corners(box) - pos[:2]) @ inward).max())
    outside = entry.roof_front - cfg.entry_margin - obj_ahead
    slide_z = entry.floor_z + cfg.floor_clearance
    depth = float(pos[:2] @ inward)
    sideways = float((pos[:2] - entry.centre[:2]) @ across)
    line_xy = entry.centre[:2] + (deepest - float(entry.centre[:2] @ inward)) * inward
    lined_up = abs(sideways) <= cfg.line_tolerance and abs(box[0, 2] - slide_z) <= cfg.line_tolerance
    if lined_up and depth >= outside - cfg.line_tolerance:
        if abs(depth - deepest) <= cfg.release_tolerance:
            return "release", eef.copy()
        return "insert", eef + np.array([*(line_xy - pos[:2]), slide_z - box[0, 2]])
    return "stage", np.array([*(line_xy + (outside - deepest) * inward), slide_z])


def at_opening(priv: Mapping[str, Any], obj_name: str, entry: Entry, cfg: InsertConfig) -> bool:
    """Whether ``obj_name`` rests on the floor level in line with the opening and at least partly
    in it (set down there, to be pushed the rest of the way)."""
    obj = priv["objects"][obj_name]
    pos = np.asarray(obj["pos"], dtype=np.float64)
    box = np.asarray(obj["aabb"], dtype=np.float64)
    across = np.array([-entry.inward[1], entry.inward[0]])
    front = float((_corners(box) @ entry.inward).max())
    return bool(
        abs(float((pos[:2] - entry.centre[:2]) @ across)) <= cfg.push_width
        and abs(box[0, 2] - entry.floor_z) <= cfg.line_tolerance
        and front >= entry.roof_front
    )


def hand_behind(priv: Mapping[str, Any], obj_name: str, entry: Entry, cfg: InsertConfig) -> bool:
    """Whether the grip site is behind ``obj_name``'s back, on the outer side of the opening."""
    box = np.asarray(priv["objects"][obj_name]["aabb"], dtype=np.float64)
    back = float((_corners(box) @ entry.inward).min())
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    return float(eef[:2] @ entry.inward) <= back - cfg.push_offset + cfg.push_tolerance


def push_in(
    priv: Mapping[str, Any], obj_name: str, entry: Entry, cfg: InsertConfig, grasp: GraspConfig
) -> tuple[str, np.ndarray]:
    """``(phase, grip-site target)`` pushing an object at the opening further in with the closed
    fingers: up clear of it, behind it, down, then along the slide while the hand stays out."""
    obj = priv["objects"][obj_name]
    eef = np.asarray(priv["eef_pos"], dtype=np.float64)
    box = np.asarray(obj["aabb"], dtype=np.float64)
    inward = entry.inward
    back = float((_corners(box) @ inward).min())
    pos = np.asarray(obj["pos"], dtype=np.float64)
    behind = pos[:2] + (back - cfg.push_offset - float(pos[:2] @ inward)) * inward
    push_z = box[0, 2] + cfg.push_height * (box[1, 2] - box[0, 2])
    over_z = box[1, 2] + grasp.fingertip_depth + cfg.push_clearance
    hand_back = float(eef[:2] @ inward)
    if not hand_behind(priv, obj_name, entry, cfg):
        # Fingers over or beside it: up first, then back.
        if eef[2] < over_z - cfg.push_tolerance:
            return "clear", np.array([eef[0], eef[1], over_z])
        return "back_off", np.array([*behind, over_z])
    if (
        float(np.linalg.norm(eef[:2] - behind)) > 2 * cfg.push_tolerance
        and eef[2] > push_z + cfg.push_tolerance
    ):
        return "line_up", np.array([*behind, max(eef[2], over_z)])
    if eef[2] > push_z + cfg.push_tolerance:
        return "lower", np.array([*behind, push_z])
    limit = entry.roof_front - cfg.hand_margin - _hand_reach(priv, inward, grasp)
    ahead = min(hand_back + cfg.push_stride, limit)
    return "push", np.array([*(eef[:2] + (ahead - hand_back) * inward), push_z])


def _hand_reach(priv: Mapping[str, Any], direction: np.ndarray, grasp: GraspConfig) -> float:
    """How far the hand's footprint reaches ahead of the grip site along a horizontal direction."""
    finger_axis = quat_to_mat(priv["eef_quat"])[:2, 1]
    finger_axis = finger_axis / max(float(np.linalg.norm(finger_axis)), 1e-9)
    along = abs(float(finger_axis @ direction))
    across = abs(float(finger_axis[0] * direction[1] - finger_axis[1] * direction[0]))
    return grasp.hand_half_length * along + grasp.hand_half_width * across


def _corners(box: np.ndarray) -> np.ndarray:
    """The four horizontal corners ``(4, 2)`` of a box ``[lo, hi]``."""
    return np.stack(np.meshgrid(box[:, 0], box[:, 1], indexing="ij"), axis=-1).reshape(-1, 2)


def _sides(priv: Mapping[str, Any], centre: np.ndarray) -> list[np.ndarray]:
    """The four horizontal axis directions, the one pointing away from the robot first."""
    away = centre[:2] - np.asarray(priv["robot_base_pos"], dtype=np.float64)[:2]
    sides = [np.array(v, dtype=np.float64) for v in ((1, 0), (0, 1), (-1, 0), (0, -1))]
    return sorted(sides, key=lambda v: -float(v @ away))


def _blocked(centre: np.ndarray, outward: np.ndarray, walls: np.ndarray, search: float) -> bool:
    """Whether a wall crosses the horizontal ray from ``centre`` along ``outward``."""
    for t in np.linspace(0.0, search, int(search / 0.005) + 1):
        point = centre[:2] + t * outward
        if np.any(np.all(walls[:, 0, :2] <= point, axis=1) & np.all(walls[:, 1, :2] >= point, axis=1)):
            return True
    return False
