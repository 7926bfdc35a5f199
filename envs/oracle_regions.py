"""Where in a BDDL region the oracle puts an object, and what it rests on there.

A region is a site box (``privileged["sites"][name]``). Placing *on* a region rests the
object on the highest surface of the region's owner under it (a stove's burner, a
cabinet's top); placing *in* a region (a drawer, a basket, a caddy compartment) rests it on
the region's floor, at the point of the region that is open from above: a drawer pulled
half out is only reachable where it sticks out of the cabinet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.oracle_geometry import box_half_extents, footprint_frame, wrap_angle

__all__ = ["Placement", "fits_open_part", "fitting_turn", "region_placement"]

# Spacing of the candidate grid laid over a region's footprint (m).
_GRID_STEP = 0.01
# Several objects on one region are spread over this fraction of its half-size.
_SLOT_SPREAD = 2.0 / 3.0
# A body whose bottom is this far above the region's floor counts as a ceiling over it.
_CEILING_MARGIN = 0.02
# Clearance an object put into a drawer needs from whatever hangs over the drawer.
_FIT_MARGIN = 0.005


@dataclass(frozen=True)
class Placement:
    """Where a carried object goes."""

    # Target of the object's body origin, horizontally (world, metres).
    xy: np.ndarray
    # Height of the surface it will rest on.
    support_z: float
    # "on" or "in".
    relation: str
    # The region box (centre, rotation, half-sizes) for region targets, None for objects.
    region: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def _other_parts(priv: Mapping[str, Any], exclude: str) -> np.ndarray:
    """Collision boxes ``(G, 2, 3)`` of every object and fixture but ``exclude``."""
    parts = [
        np.asarray(other["parts"], dtype=np.float64).reshape(-1, 2, 3)
        for name, other in priv["objects"].items()
        if name != exclude
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 2, 3))


def _footprint_grid(centre: np.ndarray, half: np.ndarray, inset: np.ndarray) -> np.ndarray:
    """Candidate points ``(P, 2)`` over a footprint shrunk by ``inset`` (never below a line)."""
    reach = np.maximum(half[:2] - inset, 0.0)
    axes = [
        np.linspace(-r, r, max(int(np.ceil(2 * r / _GRID_STEP)) + 1, 1)) if r > 0 else np.zeros(1)
        for r in reach
    ]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    return centre[:2] + grid


def _floor_room(
    priv: Mapping[str, Any], obj_name: str, centre: np.ndarray, half: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """A region's floor height, ``obj_name``'s footprint radius and the boxes ``(G, 2, 3)`` that
    take room over the floor: anything hanging over it, and loose objects already there (not
    those below it, a plate on the table under an open drawer)."""
    objects = priv["objects"]
    floor = float(centre[2] - half[2])
    obj_box = np.asarray(objects[obj_name]["aabb"], dtype=np.float64)
    radius = float(np.max(obj_box[1, :2] - obj_box[0, :2]) / 2.0)
    parts = _other_parts(priv, obj_name)
    loose = [
        np.asarray(other["aabb"], dtype=np.float64)[None]
        for name, other in objects.items()
        if name != obj_name and not other["fixture"] and other["aabb"][1][2] > floor
    ]
    ceilings = np.concatenate([parts[parts[:, 0, 2] > floor + _CEILING_MARGIN], *loose])
    return floor, radius, ceilings


def _room(candidates: np.ndarray, ceilings: np.ndarray, radius: float) -> np.ndarray:
    """Horizontal distance ``(P,)`` from each candidate to the nearest ceiling box, capped at ``radius``."""
    if len(ceilings) == 0:
        return np.full(len(candidates), radius)
    lo, hi = ceilings[None, :, 0, :2], ceilings[None, :, 1, :2]
    gaps = np.maximum(lo - candidates[:, None, :], 0.0) + np.maximum(candidates[:, None, :] - hi, 0.0)
    return np.minimum(np.sqrt(np.sum(gaps * gaps, axis=-1)).min(axis=1), radius)


def _open_point(
    candidates: np.ndarray, ceilings: np.ndarray, radius: float, centre: np.ndarray
) -> np.ndarray:
    """The candidate farthest from every ceiling box (up to ``radius``), nearest the centre on ties."""
    if len(ceilings) == 0:
        return centre[:2].copy()
    off_centre = np.linalg.norm(candidates - centre[:2], axis=1)
    return candidates[int(np.lexsort((off_centre, -_room(candidates, ceilings, radius)))[0])].copy()


def fits_open_part(priv: Mapping[str, Any], obj_name: str, region: str) -> bool:
    """Whether ``obj_name``'s whole footprint fits in the part of the region site ``region`` that
    is open from above (a drawer pulled out far enough for a bowl)."""
    site = priv["sites"][region]
    centre = np.asarray(site["pos"], dtype=np.float64)
    half = box_half_extents(
        np.asarray(site["rot"], dtype=np.float64), np.asarray(site["size"], dtype=np.float64)
    )
    _, radius, ceilings = _floor_room(priv, obj_name, centre, half)
    if np.any(half[:2] < radius):
        return False
    candidates = _footprint_grid(centre, half, np.full(2, radius))
    return bool(_room(candidates, ceilings, radius + _FIT_MARGIN).max() >= radius + _FIT_MARGIN)


def _slot_offset(priv: Mapping[str, Any], obj_name: str, target_name: str, half: np.ndarray) -> np.ndarray:
    """Offset ``(2,)`` of ``obj_name``'s slot when the goal puts several objects on one region.

    The objects go side by side along the region's longer axis, in the goal's order, spread
    over the middle two thirds of it so that each origin stays well inside.
    """
    names = [str(atom[1]) for atom in priv["goal"] if str(atom[0]).lower() == "on" and atom[2] == target_name]
    offset = np.zeros(2)
    if len(names) < 2 or obj_name not in names:
        return offset
    axis = 0 if half[0] >= half[1] else 1
    offset[axis] = np.linspace(-1.0, 1.0, len(names))[names.index(obj_name)] * half[axis] * _SLOT_SPREAD
    return offset


def region_placement(
    priv: Mapping[str, Any], obj_name: str, relation: str, target_name: str
) -> Placement | None:
    """Placement of ``obj_name`` on/in the object or region ``target_name``; None if unknown."""
    objects, sites = priv["objects"], priv["sites"]
    if target_name in objects:
        box = np.asarray(objects[target_name]["aabb"], dtype=np.float64)
        xy = np.asarray(objects[target_name]["pos"], dtype=np.float64)[:2]
        return Placement(xy=xy, support_z=float(box[1, 2]), relation=relation, region=None)
    if target_name not in sites:
        return None
    site = sites[target_name]
    centre = np.asarray(site["pos"], dtype=np.float64)
    rot = np.asarray(site["rot"], dtype=np.float64)
    size = np.asarray(site["size"], dtype=np.float64)
    half = box_half_extents(rot, size)
    region = (centre, rot, size)
    parent = objects.get(site["parent"]) if site["parent"] else None
    if relation == "on":
        support = centre[2] + half[2]
        if parent is not None:
            parts = np.asarray(parent["parts"], dtype=np.float64).reshape(-1, 2, 3)
            under = np.all(parts[:, 0, :2] <= centre[:2], axis=1) & np.all(
                parts[:, 1, :2] >= centre[:2], axis=1
            )
            if under.any():
                support = max(support, float(parts[under, 1, 2].max()))
        xy = centre[:2] + _slot_offset(priv, obj_name, target_name, half)
        return Placement(xy=xy, support_z=float(support), relation=relation, region=region)
    floor, radius, ceilings = _floor_room(priv, obj_name, centre, half)
    inset = np.full(2, min(radius, 0.5 * float(half[:2].min())))
    candidates = _footprint_grid(centre, half, inset)
    return Placement(
        xy=_open_point(candidates, ceilings, radius, centre),
        support_z=floor,
        relation=relation,
        region=region,
    )


def fitting_turn(obj: Mapping[str, Any], placement: Placement) -> float:
    """Yaw turn (rad, within a quarter turn) that makes ``obj``'s footprint fit the region it
    goes into: 0 when it fits already (or the target is no region), else the turn that lines its
    long side up with the region's (a book into a slot of a caddy)."""
    if placement.region is None or placement.relation != "in":
        return 0.0
    _, rot, size = placement.region
    room = box_half_extents(rot, size)[:2]
    yaw, local = footprint_frame(obj)
    half = (local[1, :2] - local[0, :2]) / 2.0
    c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
    if c * half[0] + s * half[1] <= room[0] and s * half[0] + c * half[1] <= room[1]:
        return 0.0
    long_yaw = yaw + (0.0 if half[0] >= half[1] else np.pi / 2)
    room_yaw = 0.0 if room[0] >= room[1] else np.pi / 2
    return wrap_angle(2.0 * (room_yaw - long_yaw)) / 2.0
