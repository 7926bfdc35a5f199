"""Where and at which yaw the scripted oracle grasps an object, from its current pose alone.

Three grasp kinds, chosen per object category (``GRASP_SPECS``):

- ``"rim"``: pinch the wall of an open vessel (bowls, mugs), one finger inside, one outside.
  Inside a container (a drawer) it pinches the end of the container's long axis that faces
  the robot.
- ``"top"``: straddle the body from above across the narrow side of its own horizontal
  footprint (cans, bottles, cartons, boxes, a book lying turned).
- ``"handle"``: straddle a handle at a fixed point of the object's frame (moka pots). A rim
  spec may carry a handle too (a mug's), used when the caller asks for it: sliding the mug
  into a roofed region, the hand must stay behind it.

Among a few candidate sides/yaws/offsets, the planner keeps the one whose open fingers and
hand stay clear of neighbouring objects (and of the vessel's own handle); among clear ones it
prefers little wrist turn from the home yaw and a comfortable reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from envs.oracle_geometry import (
    fixture_region_at,
    footprint_frame,
    quat_to_mat,
    rectangle_clearance,
    wrap_angle,
)

__all__ = [
    "DEFAULT_GRASP",
    "GRASP_SPECS",
    "Grasp",
    "GraspConfig",
    "GraspOverrideError",
    "GraspSpec",
    "grasp_spec",
    "grasp_width_bound",
    "lowest_part_top",
    "override_grasps",
    "plan_grasp",
]


@dataclass(frozen=True)
class GraspSpec:
    """How to grasp one object category."""

    # "rim": pinch the wall of an open vessel; "top": straddle the body from above;
    # "handle": straddle a handle at a fixed point of the object's frame.
    kind: Literal["rim", "top", "handle"] = "top"
    # rim: distance of the grasp point from the vessel's axis (m).
    rim_radius: float = 0.0
    # rim: grasp height above the body origin along the vessel's up axis;
    # top: depth of the grasp point below the object's top (m).
    height: float = 0.03
    # rim: finger gap when pinching the wall (m); top grasps use the object's width.
    rim_thickness: float = 0.0
    # rim: the vessel's axis in the object's frame (x, y), when the body origin is off it (mugs).
    axis_offset: tuple[float, float] = (0.0, 0.0)
    # handle (or a rim spec's optional handle, when handle_width > 0): grip-site point and finger
    # axis (x, y) in the object's frame, and the handle's thickness.
    handle_point: tuple[float, float, float] = (0.0, 0.0, 0.0)
    handle_axis: tuple[float, float] = (1.0, 0.0)
    handle_width: float = 0.0


# The bowl's wall is ~3 mm thick, 5.1 cm tall and 5.35 cm in radius: pinch it 1 cm below the rim.
# The mugs' walls are 2-4 mm plates on a ~4 cm circle whose centre is off the body origin (the
# handle side is heavier); pinch them 1 cm below the rim, away from the handle.
GRASP_SPECS: dict[str, GraspSpec] = {
    "akita_black_bowl": GraspSpec(kind="rim", rim_radius=0.05, height=0.041, rim_thickness=0.01),
    # Its handle loop (1.8 cm thick, 1.5-6.8 cm out along the frame's +x, up to 8.6 cm high) is
    # straddled at its outer bar, with the hand's bottom just over the loop's top.
    "white_yellow_mug": GraspSpec(
        kind="rim",
        rim_radius=0.042,
        height=0.092,
        rim_thickness=0.005,
        axis_offset=(-0.018, 0.0),
        handle_point=(0.06, 0.0, 0.062),
        handle_axis=(0.0, 1.0),
        handle_width=0.018,
    ),
    "porcelain_mug": GraspSpec(
        kind="rim", rim_radius=0.04, height=0.098, rim_thickness=0.005, axis_offset=(0.017, 0.0)
    ),
    # The moka pot is 8 cm across its body, too wide to straddle; its handle loop (1.4 cm thick,
    # 6-9 cm out along the frame's +y, up to 6.8 cm above the origin) is gripped 2 cm below its top.
    "moka_pot": GraspSpec(
        kind="handle", handle_point=(0.0, 0.072, 0.048), handle_axis=(1.0, 0.0), handle_width=0.016
    ),
}
DEFAULT_GRASP = GraspSpec(kind="top", height=0.03)
# Spec fields a caller may override: the scalar distances (metres).
_OVERRIDABLE = tuple(f.name for f in fields(GraspSpec) if f.type in ("float", float))


class GraspOverrideError(ValueError):
    """An override of a grasp spec that names an unknown category or field, or a bad value."""


def override_grasps(
    overrides: Mapping[str, float], base: Mapping[str, GraspSpec] = GRASP_SPECS
) -> dict[str, GraspSpec]:
    """``base`` with scalar fields replaced, keyed ``"category.field"``.

    E.g. ``{"akita_black_bowl.height": 0.025}`` pinches the bowl 2.6 cm below its rim instead
    of 1 cm, which leaves a policy that imitates the grasp more room for height error.
    """
    specs = dict(base)
    for key, value in overrides.items():
        category, _, name = key.partition(".")
        if category not in specs:
            raise GraspOverrideError(f"{key}: expected a category among {sorted(specs)}, got {category!r}")
        if name not in _OVERRIDABLE:
            raise GraspOverrideError(f"{key}: expected a field among {list(_OVERRIDABLE)}, got {name!r}")
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise GraspOverrideError(f"{key}: expected a finite distance >= 0 in metres, got {value!r}")
        specs[category] = replace(specs[category], **{name: float(value)})
    return specs


@dataclass(frozen=True)
class GraspConfig:
    """Gripper dimensions (metres, grip-site frame) and the candidate grasps to try."""

    # Panda hand box: half-length along the finger axis, half-width across it, bottom above the grip site.
    hand_half_length: float = 0.105
    hand_half_width: float = 0.035
    hand_bottom: float = 0.024
    # Open fingers: reach along the finger axis from the grip site, half-width, depth below the grip site.
    finger_reach: float = 0.055
    finger_half_width: float = 0.013
    fingertip_depth: float = 0.013
    # Clearance beyond which a candidate counts as free; ties go to the smallest deviation.
    clearance_cap: float = 0.02
    # Preferences among equally clear grasps (score units are metres of clearance): per radian
    # of wrist turn from home, per metre of slide off the object's middle, per metre of reach
    # from the robot base, per metre from the hand, and per metre beyond a comfortable reach
    # (the arm is near full stretch past ~0.7 m and tracks poorly there).
    yaw_cost: float = 0.004
    slide_cost: float = 0.1
    reach_cost: float = 0.01
    hand_distance_cost: float = 0.02
    comfortable_reach: float = 0.7
    over_reach_cost: float = 1.0
    # Widest object the open fingers (7.8 cm) reliably straddle.
    max_width: float = 0.072
    # Top grasps: keep the grip site this far above the object's bottom (fingertips reach 1.3 cm lower).
    min_grasp_height: float = 0.014
    # Horizontal extents within this ratio count as round.
    round_ratio: float = 1.15
    # Unknown vessels: a middle this much below the top makes one; the rim grasp's radius as a
    # fraction of the half-width, its depth below the top and the wall it expects (the known
    # bowl's spec in proportion).
    vessel_depth: float = 0.005
    # Shallower than this is a dish (a plate, 1.9 cm), whose sloped rim slips out of a pinch
    # when lifted: it is too wide to grasp and gets dragged instead (a bowl is 5 cm).
    vessel_min_height: float = 0.03
    vessel_rim_ratio: float = 0.93
    vessel_rim_depth: float = 0.01
    vessel_wall: float = 0.01
    # Rim grasps: parts of the vessel this far outside its rim circle are appendages (a handle).
    appendage_margin: float = 0.012
    # Rim grasps: candidate sides (world angle of the grasp point around the vessel, rad).
    rim_angles: tuple[float, ...] = tuple(np.deg2rad(np.arange(0.0, 360.0, 15.0)).tolist())
    # Top grasps: yaw offsets from "across the narrow side" (rad) and slides along the long side (m).
    top_yaws: tuple[float, ...] = tuple(np.deg2rad([0.0, -15.0, 15.0, -30.0, 30.0]).tolist())
    top_slides: tuple[float, ...] = (0.0, -0.01, 0.01, -0.02, 0.02)
    # Keep slid grasps this far inside the object's ends.
    slide_margin: float = 0.02


@dataclass(frozen=True)
class Grasp:
    """A grasp for the object's current pose."""

    # Grip-site target (world, metres).
    point: np.ndarray
    # Finger-axis yaw (rad, from world +y about +z; a half turn gives the same grasp).
    yaw: float
    # Expected finger gap once the fingers rest on the object (m).
    width: float


def _axis_yaw(direction: np.ndarray) -> float:
    """Yaw of a finger axis pointing along horizontal ``direction``."""
    return float(np.arctan2(direction[0], -direction[1]))


def _nearby_parts(priv: Mapping[str, Any], obj_name: str, cfg: GraspConfig) -> np.ndarray:
    """Collision boxes ``(B, 2, 3)`` of the other objects within the hand's reach of ``obj_name``.

    Per-geom boxes, not whole-object boxes: a bowl on a stove sits inside the stove's outline.
    """
    box = np.asarray(priv["objects"][obj_name]["aabb"], dtype=np.float64)
    reach = cfg.hand_half_length + float(np.max(box[1, :2] - box[0, :2]))
    lo, hi = box[0, :2] - reach, box[1, :2] + reach
    parts = [
        np.asarray(other["parts"], dtype=np.float64).reshape(-1, 2, 3)
        for name, other in priv["objects"].items()
        if name != obj_name
    ]
    if not parts:
        return np.zeros((0, 2, 3))
    boxes = np.concatenate(parts)
    near = np.all(boxes[:, 1, :2] >= lo, axis=1) & np.all(boxes[:, 0, :2] <= hi, axis=1)
    return boxes[near]


def _footprint_clearance(
    parts: np.ndarray, points: np.ndarray, directions: np.ndarray, cfg: GraspConfig
) -> np.ndarray:
    """Horizontal room ``(C,)`` around the open fingers and the hand for C candidate grasps.

    ``points`` ``(C, 3)`` are grip-site targets, ``directions`` ``(C, 2)`` unit finger axes.
    """
    parts = parts[parts[:, 1, 2] > points[:, 2].min() - cfg.fingertip_depth]
    tops = parts[:, 1, 2]
    under_fingers = tops[None, :] > points[:, 2:3] - cfg.fingertip_depth
    under_hand = tops[None, :] > points[:, 2:3] + cfg.hand_bottom
    finger_room = rectangle_clearance(
        points[:, :2], directions, cfg.finger_reach, cfg.finger_half_width, parts, under_fingers
    )
    hand_room = rectangle_clearance(
        points[:, :2], directions, cfg.hand_half_length, cfg.hand_half_width, parts, under_hand
    )
    return np.minimum(finger_room, hand_room)


def _grasp_cost(yaw: float, point: np.ndarray, priv: Mapping[str, Any], cfg: GraspConfig) -> float:
    """Preference among equally clear grasps: little wrist turn, no over-reach, close to the hand."""
    turn = abs(wrap_angle(2.0 * yaw)) / 2.0  # a half turn of a parallel gripper changes nothing
    reach = float(np.linalg.norm(point[:2] - np.asarray(priv["robot_base_pos"], dtype=np.float64)[:2]))
    over_reach = max(reach - cfg.comfortable_reach, 0.0)
    # Distance from the hand keeps near-ties from flipping sides while the hand closes in.
    hand = float(np.linalg.norm(point - np.asarray(priv["eef_pos"], dtype=np.float64)))
    return (
        cfg.yaw_cost * turn
        + cfg.reach_cost * reach
        + cfg.over_reach_cost * over_reach
        + cfg.hand_distance_cost * hand
    )


def _container_side(priv: Mapping[str, Any], obj_name: str, centre: np.ndarray) -> np.ndarray | None:
    """For an object in a fixture region (a drawer): the end of the region's long horizontal
    axis that faces the robot. None if the object is in no such region."""
    site = fixture_region_at(priv["sites"], centre, exclude=obj_name)
    if site is None:
        return None
    rot = np.asarray(site["rot"], dtype=np.float64)
    size = np.asarray(site["size"], dtype=np.float64)
    horizontal = [i for i in range(3) if abs(rot[2, i]) < 0.5]
    axis = rot[:, max(horizontal, key=lambda i: size[i])].copy()
    axis[2] = 0.0
    axis /= np.linalg.norm(axis)
    towards_robot = np.asarray(priv["robot_base_pos"], dtype=np.float64) - centre
    return axis if float(axis[:2] @ towards_robot[:2]) >= 0.0 else -axis


def _rim_grasp(priv: Mapping[str, Any], obj_name: str, spec: GraspSpec, cfg: GraspConfig) -> Grasp:
    obj = priv["objects"][obj_name]
    box = np.asarray(obj["aabb"], dtype=np.float64)
    centre = (box[0] + box[1]) / 2.0
    frame = quat_to_mat(obj["quat"])
    up = frame[:, 2]
    pos = np.asarray(obj["pos"], dtype=np.float64) + frame @ np.array([*spec.axis_offset, 0.0])

    def rim_point(direction: np.ndarray) -> np.ndarray:
        # Follow a tilted vessel (e.g. a bowl resting on a ramekin): radial and height in its own frame.
        radial = direction - direction.dot(up) * up
        return pos + spec.height * up + spec.rim_radius * radial / np.linalg.norm(radial)

    side = _container_side(priv, obj_name, centre)
    if side is not None:
        # In a drawer only the ends of its long axis leave room for the outer finger, and the
        # walls are rotated boxes, too coarse for the clearance search. The end facing the
        # robot measured 50/50 on LIBERO's drawer task, the far end 14/50.
        return Grasp(rim_point(side), _axis_yaw(side), spec.rim_thickness)
    angles = np.asarray(cfg.rim_angles)
    directions = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    points = np.stack([rim_point(direction) for direction in directions])
    yaws = [_axis_yaw(direction) for direction in directions]
    # The vessel's own appendages (a mug's handle) are in the way as much as its neighbours.
    own = np.asarray(obj["parts"], dtype=np.float64).reshape(-1, 2, 3)
    own_centres = (own[:, 0, :2] + own[:, 1, :2]) / 2.0
    handle = own[np.linalg.norm(own_centres - pos[:2], axis=1) > spec.rim_radius + cfg.appendage_margin]
    obstacles = np.concatenate([_nearby_parts(priv, obj_name, cfg), handle])
    room = _footprint_clearance(obstacles, points, directions[:, :2], cfg)
    scores = [min(r, cfg.clearance_cap) - _grasp_cost(y, p, priv, cfg) for r, y, p in zip(room, yaws, points)]
    best = int(np.argmax(scores))
    return Grasp(points[best], yaws[best], spec.rim_thickness)


def _top_widths(extent: np.ndarray, cfg: GraspConfig) -> list[tuple[float, float]]:
    """``(yaw offset, finger gap across the object)`` for each allowed top-grasp yaw offset, for
    a footprint ``extent`` ``(>=2,)`` in the object's own frame."""
    narrow, long = sorted((float(extent[0]), float(extent[1])))
    round_body = long <= narrow * cfg.round_ratio
    widths = []
    for yaw_offset in cfg.top_yaws:
        width = narrow if round_body else narrow * abs(np.cos(yaw_offset)) + long * abs(np.sin(yaw_offset))
        if width <= cfg.max_width or yaw_offset == 0.0:
            widths.append((yaw_offset, width))
    return widths


def _top_grasp(priv: Mapping[str, Any], obj_name: str, spec: GraspSpec, cfg: GraspConfig) -> Grasp:
    obj = priv["objects"][obj_name]
    box = np.asarray(obj["aabb"], dtype=np.float64)
    # Across the narrow side of the object's own footprint: a book lying turned is thin along
    # its own axis, not along the world's.
    frame_yaw, local = footprint_frame(obj)
    c, s = np.cos(frame_yaw), np.sin(frame_yaw)
    turn = np.array([[c, -s], [s, c]])
    extent = local[1] - local[0]
    centre = np.asarray(obj["pos"], dtype=np.float64)[:2] + turn @ ((local[0, :2] + local[1, :2]) / 2.0)
    z = max(box[1, 2] - spec.height, box[0, 2] + cfg.min_grasp_height)
    narrow_axis = 1 if extent[1] <= extent[0] else 0
    narrow, long = extent[narrow_axis], extent[1 - narrow_axis]
    round_body = long <= narrow * cfg.round_ratio
    # Straddling round bodies along world y keeps the hand at its home yaw.
    base = np.array([0.0, 1.0]) if round_body else turn[:, narrow_axis]
    long_dir = np.array([base[1], -base[0]])
    slide_limit = 0.0 if round_body else max(long / 2.0 - cfg.slide_margin, 0.0)
    candidates = []
    for yaw_offset, width in _top_widths(extent, cfg):
        c, s = np.cos(yaw_offset), np.sin(yaw_offset)
        direction = np.array([c * base[0] - s * base[1], s * base[0] + c * base[1]])
        for slide in cfg.top_slides:
            if abs(slide) <= slide_limit:
                point = np.array([*(centre + slide * long_dir), z])
                candidates.append((point, direction, float(width), abs(slide)))
    points = np.stack([c[0] for c in candidates])
    directions = np.stack([c[1] for c in candidates])
    room = _footprint_clearance(_nearby_parts(priv, obj_name, cfg), points, directions, cfg)
    scores = []
    for r, (point, direction, _, slide) in zip(room, candidates):
        cost = _grasp_cost(_axis_yaw(direction), point, priv, cfg) + cfg.slide_cost * slide
        scores.append(min(r, cfg.clearance_cap) - cost)
    point, direction, width, _ = candidates[int(np.argmax(scores))]
    return Grasp(point, _axis_yaw(direction), width)


def _handle_grasp(priv: Mapping[str, Any], obj_name: str, spec: GraspSpec) -> Grasp:
    obj = priv["objects"][obj_name]
    frame = quat_to_mat(obj["quat"])
    point = np.asarray(obj["pos"], dtype=np.float64) + frame @ np.asarray(spec.handle_point)
    axis = frame @ np.array([*spec.handle_axis, 0.0])
    return Grasp(point, _axis_yaw(axis[:2]), spec.handle_width)


def lowest_part_top(obj: Mapping[str, Any]) -> float:
    """Top of the object's lowest collision part: below the object's top for a dish or a bowl."""
    return float(np.asarray(obj["parts"], dtype=np.float64).reshape(-1, 2, 3)[:, 1, 2].min())


def grasp_spec(obj: Mapping[str, Any], specs: Mapping[str, GraspSpec], cfg: GraspConfig) -> GraspSpec:
    """How to grasp ``obj``: its category's spec; else, for a round open vessel too wide to
    straddle (an unknown bowl), a rim grasp scaled from its size; else a top grasp."""
    if obj["category"] in specs:
        return specs[obj["category"]]
    box = np.asarray(obj["aabb"], dtype=np.float64)
    extent = box[1] - box[0]
    narrow, long = sorted((float(extent[0]), float(extent[1])))
    vessel = (
        lowest_part_top(obj) < box[1, 2] - cfg.vessel_depth
        and long <= narrow * cfg.round_ratio
        and extent[2] >= cfg.vessel_min_height
    )
    if not vessel or narrow <= cfg.max_width:
        return DEFAULT_GRASP
    height = box[1, 2] - float(np.asarray(obj["pos"], dtype=np.float64)[2]) - cfg.vessel_rim_depth
    return GraspSpec(
        kind="rim", rim_radius=cfg.vessel_rim_ratio * long / 2.0, height=height, rim_thickness=cfg.vessel_wall
    )


def grasp_width_bound(
    priv: Mapping[str, Any],
    obj_name: str,
    specs: Mapping[str, GraspSpec],
    cfg: GraspConfig,
    by_handle: bool = False,
) -> float:
    """Widest finger gap any planned grasp of ``obj_name`` would rest at (cheap; no search);
    ``by_handle`` as in ``plan_grasp``."""
    obj = priv["objects"][obj_name]
    spec = grasp_spec(obj, specs, cfg)
    if by_handle and spec.handle_width > 0.0:
        return spec.handle_width
    if spec.kind == "rim":
        return spec.rim_thickness
    if spec.kind == "handle":
        return spec.handle_width
    local = footprint_frame(obj)[1]
    return max(width for _, width in _top_widths(local[1] - local[0], cfg))


def plan_grasp(
    priv: Mapping[str, Any],
    obj_name: str,
    specs: Mapping[str, GraspSpec],
    cfg: GraspConfig,
    by_handle: bool = False,
) -> Grasp:
    """The grasp of ``obj_name`` for the current privileged state; ``by_handle`` takes its
    handle if its spec has one."""
    spec = grasp_spec(priv["objects"][obj_name], specs, cfg)
    if spec.kind == "handle" or (by_handle and spec.handle_width > 0.0):
        return _handle_grasp(priv, obj_name, spec)
    if spec.kind == "rim":
        return _rim_grasp(priv, obj_name, spec, cfg)
    return _top_grasp(priv, obj_name, spec, cfg)
