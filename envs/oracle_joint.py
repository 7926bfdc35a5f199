"""Geometry of articulated joints for the scripted oracle: directions, handles, hand poses.

Everything is read from the privileged state (``envs.privileged``): a joint's world axis
and anchor, its owner's LIBERO ranges per state, and the oriented boxes of the moving
body's collision geoms. Nothing here knows a fixture by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.oracle_geometry import down_rotation, gripper_yaw, quat_to_mat, rotation_error

__all__ = [
    "ArticulationConfig",
    "Hand",
    "JointBoxes",
    "axis_rotation",
    "box_extent_along",
    "hand_state",
    "holding",
    "horizontal",
    "leaning_rotation",
    "pointing_rotation",
    "rotate_about",
    "state_sign",
    "via_home",
    "yaw_of_finger_axis",
]

_OPPOSITE = {"open": "close", "close": "open", "turnon": "turnoff", "turnoff": "turnon"}


@dataclass(frozen=True)
class ArticulationConfig:
    """Geometric thresholds (metres, radians) of the articulation skills."""

    # Finger gap above which the hand counts as open, and below which it closed on nothing.
    open_gap: float = 0.07
    empty_gap: float = 0.003
    # Hand orientation error (rad) allowed before moving in on a handle, knob or door.
    rotation_tolerance: float = 0.2
    # Height over the highest nearby part at which the hand travels to a fixture.
    travel_clearance: float = 0.06
    # Drawer handles: distance of the pre-grasp point in front of the handle, and how far
    # off the insertion line (sideways or vertically) the hand may be while moving in.
    handle_standoff: float = 0.08
    insert_tolerance: float = 0.015
    # Grip site vs handle (or knob) grasp point at which the fingers close.
    grasp_tolerance: float = 0.01
    # How far ahead of the handle each pull tick aims.
    pull_step: float = 0.06
    # Pushing drawers: the hand leans this far (rad) from vertical, fingertips ahead of the
    # wrist, so that the wrist stays clear of the fixture's face above the drawer.
    push_tilt: float = 0.5
    # Pushing drawers and doors: standoff before contact, and how far past contact each tick aims.
    push_standoff: float = 0.06
    push_depth: float = 0.05
    # Opening an open drawer further from inside: the closed fingers go this far behind the
    # inner face of its front, and this far below the top of its walls.
    inside_gap: float = 0.02
    inside_depth: float = 0.035
    # Depth of the fingertips below the top edge of what they push or grasp.
    finger_depth: float = 0.02
    # Door pushes, and pulls by the handle, aim this angle (rad) ahead of the door's current angle.
    door_lead: float = 0.3
    door_pull_lead: float = 0.12
    # A door opened this far (rad) from its closed range leaves room to push it open from inside.
    door_push_from: float = 0.45
    # Handle vs grip site while dragging it: farther than this means it slipped out.
    held_tolerance: float = 0.03
    # Knobs: twist aimed ahead per tick (rad) and the margin past LIBERO's threshold.
    twist_step: float = 0.5
    # How far the hand backs away, against its pointing direction, once the joint is in its state.
    back_off: float = 0.08
    # A hand this far (rad) from its target orientation turns back to LIBERO's home
    # orientation first: the shortest turn from far away can run the wrist into its limit.
    max_direct_turn: float = 2.2
    # Slack over a handle's or fin's thickness for "closed on it".
    held_gap_margin: float = 0.012


@dataclass(frozen=True)
class Hand:
    """The hand at this tick: grip site, orientation, finger gap and contacts with the fixture."""

    pos: np.ndarray
    rot: np.ndarray
    gap: float
    contacts: int

    @property
    def yaw(self) -> float:
        """Yaw of the finger axis."""
        return gripper_yaw(self.rot)

    def rotation_error(self, target: np.ndarray) -> float:
        """Angle (rad) between the hand and ``target`` orientation."""
        return float(np.linalg.norm(rotation_error(target, self.rot)))


def holding(priv: Mapping[str, Any], hand: Hand, config: ArticulationConfig) -> bool:
    """Whether the fingers are closed on something (a handle, a knob, an object), not open or empty."""
    touching = any(int(obj["finger_contacts"]) >= 1 for obj in priv["objects"].values())
    return touching and config.empty_gap < hand.gap < config.open_gap


def hand_state(priv: Mapping[str, Any], owner: str) -> Hand:
    """The hand, with the number of fingers touching ``owner``."""
    return Hand(
        pos=np.asarray(priv["eef_pos"], dtype=np.float64),
        rot=quat_to_mat(priv["eef_quat"]),
        gap=float(priv["gripper_qpos"][0] - priv["gripper_qpos"][1]),
        contacts=int(priv["objects"][owner]["finger_contacts"]),
    )


@dataclass(frozen=True)
class JointBoxes:
    """Oriented boxes of a joint's moving body: centres ``(G, 3)``, frames ``(G, 3, 3)``, half-sizes ``(G, 3)``."""

    centre: np.ndarray
    rot: np.ndarray
    half: np.ndarray

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> JointBoxes:
        boxes = info["boxes"]
        return cls(
            np.asarray(boxes["centre"], dtype=np.float64).reshape(-1, 3),
            np.asarray(boxes["rot"], dtype=np.float64).reshape(-1, 3, 3),
            np.asarray(boxes["half"], dtype=np.float64).reshape(-1, 3),
        )

    def extent_along(self, direction: np.ndarray) -> np.ndarray:
        """Half extent ``(G,)`` of each box along a world ``direction``."""
        return box_extent_along(self.rot, self.half, direction)

    def world_extent(self) -> np.ndarray:
        """Half extent ``(G, 3)`` of each box along the world axes (its world-aligned box)."""
        return np.stack([self.extent_along(axis) for axis in np.eye(3)], axis=1)

    def furthest_along(self, direction: np.ndarray) -> int:
        """Index of the box that reaches furthest along ``direction``."""
        return int(np.argmax(self.centre @ direction + self.extent_along(direction)))

    def top(self) -> float:
        """Highest point of all boxes."""
        return float(np.max(self.centre[:, 2] + self.extent_along(np.array([0.0, 0.0, 1.0]))))


def box_extent_along(rot: np.ndarray, half: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Half extent ``(G,)`` of oriented boxes (``rot`` ``(G, 3, 3)``, ``half`` ``(G, 3)``) along ``direction``."""
    # Column j of a box frame is its j-th axis in world coordinates.
    cosines = np.einsum("gij,i->gj", rot, direction)
    return np.sum(np.abs(cosines) * np.abs(half), axis=1)


def state_sign(priv: Mapping[str, Any], joint: str, state: str) -> float:
    """+1 if ``state`` lies at larger joint positions than its opposite, else -1."""
    ranges = priv["objects"][priv["joints"][joint]["owner"]]["articulation"]
    if state not in ranges or _OPPOSITE[state] not in ranges:
        raise ValueError(
            f"privileged['objects'][...]['articulation']: expected ranges for {state!r} and "
            f"{_OPPOSITE[state]!r} of joint {joint!r}, got {sorted(ranges)}"
        )
    return float(np.sign(np.mean(ranges[state]) - np.mean(ranges[_OPPOSITE[state]])) or 1.0)


def horizontal(vector: np.ndarray) -> np.ndarray:
    """``vector`` with its z component dropped, normalised (zero stays zero)."""
    flat = np.array([vector[0], vector[1], 0.0])
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 1e-9 else flat


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` of ``angle`` (rad, right-handed) about ``axis``."""
    x, y, z = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def rotate_about(point: np.ndarray, anchor: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``point`` turned by ``angle`` (rad, right-handed) about the line through ``anchor`` along ``axis``."""
    return anchor + axis_rotation(axis, angle) @ (np.asarray(point) - anchor)


def yaw_of_finger_axis(finger: np.ndarray) -> float:
    """Yaw ``psi`` of a downward hand whose finger axis is the horizontal ``finger``."""
    return float(np.arctan2(finger[0], -finger[1]))


def pointing_rotation(approach: np.ndarray, finger: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Hand orientation ``(3, 3)`` pointing along ``approach`` with fingers closing along ``finger``.

    A parallel gripper is symmetric, so of the two finger signs the one nearer ``current`` is used.
    """
    approach = approach / np.linalg.norm(approach)
    finger = finger - approach * float(finger @ approach)
    finger = finger / np.linalg.norm(finger)
    candidates = []
    for sign in (1.0, -1.0):
        y = sign * finger
        candidates.append(np.stack([np.cross(y, approach), y, approach], axis=1))
    errors = [np.linalg.norm(rotation_error(rot, current)) for rot in candidates]
    return candidates[int(np.argmin(errors))]


def leaning_rotation(push: np.ndarray, tilt: float) -> np.ndarray:
    """A downward hand leaning ``tilt`` (rad) towards the horizontal ``push`` direction, fingers across it.

    The hand's x axis (the side the wrist does not bulge to) points along the push.
    """
    push = horizontal(push)
    up = np.array([0.0, 0.0, 1.0])
    x = push * np.cos(tilt) + up * np.sin(tilt)
    approach = -up * np.cos(tilt) + push * np.sin(tilt)
    return np.stack([x, np.cross(approach, x), approach], axis=1)


def via_home(target: np.ndarray, hand: Hand, config: ArticulationConfig) -> np.ndarray:
    """``target`` orientation, or the home orientation (pointing down, yaw 0) while ``target`` is too far."""
    if hand.rotation_error(target) <= config.max_direct_turn:
        return target
    return down_rotation(0.0)
