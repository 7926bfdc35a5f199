"""Door skills of the scripted oracle: push a hinged door along its arc, or pull it by its handle.

The door is the largest box of the hinge's moving body. The closed fingers, hand pointing
down, press on the door's outer face near its free edge and just under its top, so that
the palm passes over the door; each tick aims a little further along the arc.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.oracle_decision import Decision
from envs.oracle_geometry import nearest_equivalent_yaw
from envs.oracle_handle import HandleGrasp, pull_handle
from envs.oracle_joint import (
    ArticulationConfig,
    JointBoxes,
    axis_rotation,
    hand_state,
    holding,
    horizontal,
    rotate_about,
    state_sign,
    yaw_of_finger_axis,
)

__all__ = ["DoorFrame", "door_frame", "open_door", "pull_door", "push_door"]

_UP = np.array([0.0, 0.0, 1.0])
# Half thickness of the closed fingers across the finger axis (m).
_FINGER_HALF_WIDTH = 0.011


@dataclass(frozen=True)
class DoorFrame:
    """A door at this tick: hinge, radial and pushing directions, size (world, metres)."""

    anchor: np.ndarray
    axis: np.ndarray
    # Horizontal unit vector from the hinge towards the free edge.
    radial: np.ndarray
    # Horizontal unit vector the door's face moves along towards the state.
    tangent: np.ndarray
    # +1 if the state lies at larger joint angles (right-handed about ``axis``), else -1.
    sign: float
    # Horizontal unit normal of the door's plane when closed, pointing into the fixture.
    inward: np.ndarray
    # Distance from the hinge to the free edge, half thickness, top height.
    length: float
    half_thickness: float
    top: float


def door_frame(priv: Mapping[str, Any], joint: str, state: str) -> DoorFrame:
    """The door moved by ``joint`` and the direction its face moves towards ``state``."""
    info = priv["joints"][joint]
    boxes = JointBoxes.of(info)
    panel = int(np.argmax(np.prod(np.abs(boxes.half), axis=1)))
    axis = np.asarray(info["axis"], dtype=np.float64)
    anchor = np.asarray(info["anchor"], dtype=np.float64)
    radial = horizontal(boxes.centre[panel] - anchor)
    sign = state_sign(priv, joint, state)
    tangent = sign * np.cross(axis, radial)
    closing = state_sign(priv, joint, "close")
    closed = float(np.mean(priv["objects"][info["owner"]]["articulation"]["close"]))
    shut = axis_rotation(axis, closed - float(info["qpos"])) @ radial
    length = float((boxes.centre[panel] - anchor) @ radial + boxes.extent_along(radial)[panel])
    return DoorFrame(
        anchor=anchor,
        axis=axis,
        radial=radial,
        tangent=tangent,
        sign=sign,
        inward=closing * np.cross(axis, shut),
        length=length,
        half_thickness=float(boxes.extent_along(tangent)[panel]),
        top=float(boxes.centre[panel, 2] + boxes.extent_along(_UP)[panel]),
    )


def push_door(priv: Mapping[str, Any], joint: str, state: str, config: ArticulationConfig) -> Decision:
    """Push the door along its arc towards ``state`` from the side it moves away from."""
    info = priv["joints"][joint]
    owner = info["owner"]
    hand = hand_state(priv, owner)
    door = door_frame(priv, joint, state)
    # Of the two equivalent finger yaws, the one nearer the wrist's middle keeps clear of its limits.
    yaw = nearest_equivalent_yaw(yaw_of_finger_axis(door.radial), 0.0)
    height = door.top - config.finger_depth
    radius = door.length - 2 * config.finger_depth
    face = door.half_thickness + _FINGER_HALF_WIDTH
    contact = door.anchor + door.radial * radius - door.tangent * face
    contact[2] = height

    rel = hand.pos - door.anchor
    out_along = float(rel @ door.radial)
    behind = float(rel @ door.tangent)
    depth = float(rel @ door.inward)
    if depth > 0.0 and _within(priv, owner, hand.pos):
        # The hand is inside the fixture (e.g. it just put something in): back out past the doorway first.
        exit_point = hand.pos - door.inward * (depth + config.push_standoff + door.half_thickness)
        return Decision.down("withdraw", exit_point, hand.yaw, -1.0)
    on_door = door.length / 3 <= out_along <= door.length
    pushing = -(face + config.push_standoff) <= behind <= 0.0 and on_door
    if pushing and abs(hand.pos[2] - height) <= config.insert_tolerance:
        target = rotate_about(contact, door.anchor, door.axis, door.sign * config.door_lead)
        target[2] = height
        return Decision.down("push", target, yaw, 1.0)
    prepush = contact - door.tangent * config.push_standoff
    if float(np.linalg.norm((hand.pos - prepush)[:2])) <= config.insert_tolerance:
        return Decision.down("descend", prepush, yaw, 1.0)
    if holding(priv, hand, config):
        # Let go of whatever the fingers hold before travelling.
        return Decision("release", hand.pos.copy(), hand.rot, -1.0)
    travel = door.top + config.travel_clearance
    if behind > 0.0 and hand.pos[2] < travel - config.grasp_tolerance:
        # Fingers stay open on the way up, so that they cannot close on the handle again.
        return Decision.down("rise", np.array([hand.pos[0], hand.pos[1], travel]), yaw, -1.0)
    return Decision.down("approach", np.array([prepush[0], prepush[1], travel]), yaw, 1.0)


def _within(priv: Mapping[str, Any], owner: str, point: np.ndarray) -> bool:
    box = np.asarray(priv["objects"][owner]["aabb"], dtype=np.float64)
    return bool(np.all(point >= box[0]) and np.all(point <= box[1]))


def open_door(priv: Mapping[str, Any], joint: str, config: ArticulationConfig) -> Decision:
    """Swing a door open: by its handle while it is nearly shut, then pushing its inner face."""
    ranges = priv["objects"][priv["joints"][joint]["owner"]]["articulation"]
    angle = float(priv["joints"][joint]["qpos"])
    ajar = float(np.min(np.abs(np.asarray(ranges["close"]) - angle)))
    if ajar >= config.door_push_from:
        return push_door(priv, joint, "open", config)
    return pull_door(priv, joint, "open", config)


def pull_door(priv: Mapping[str, Any], joint: str, state: str, config: ArticulationConfig) -> Decision:
    """Grasp the door's handle from outside and swing the door along its arc towards ``state``."""
    info = priv["joints"][joint]
    door = door_frame(priv, joint, state)
    boxes = JointBoxes.of(info)
    # The handle is what sticks out furthest on the side the door swings towards.
    index = boxes.furthest_along(door.tangent)
    point = boxes.centre[index]
    turn = door.sign * config.door_pull_lead
    handle = HandleGrasp(
        point=point,
        outward=door.tangent,
        finger=door.radial,
        half_thickness=float(boxes.extent_along(door.radial)[index]),
        drag=rotate_about(point, door.anchor, door.axis, turn),
        drag_turn=turn * float(np.sign(door.axis[2]) or 1.0),
    )
    return pull_handle(priv, info["owner"], handle, config)
