"""Drawer skills of the scripted oracle: pull a drawer open by its handle, push it closed.

The handle is the part of the drawer's moving body that sticks out furthest along the
opening direction. Pulling grasps it with a horizontal hand pointing into the fixture and
fingers closing vertically around the bar (a top-down grasp would hit the drawer above);
pushing presses the closed fingers against the handle's front, the hand leaning with its
fingertips ahead so that the wrist stays clear of the drawers above. A drawer that is open
already but not far enough is pushed further out from inside, the closed fingers pointing
down behind its front: its handle then sticks so far out that the arm, pointing in at it,
would run into whatever stands in front of the fixture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.oracle_decision import Decision
from envs.oracle_geometry import box_half_extents, wrap_angle
from envs.oracle_handle import HandleGrasp, over_fixture, pull_handle, travel_height
from envs.oracle_joint import (
    ArticulationConfig,
    JointBoxes,
    hand_state,
    holding,
    horizontal,
    leaning_rotation,
    state_sign,
    via_home,
    yaw_of_finger_axis,
)

__all__ = ["pull_drawer", "push_drawer", "push_drawer_out"]

_UP = np.array([0.0, 0.0, 1.0])


def _opening(priv: Mapping[str, Any], joint: str) -> np.ndarray:
    """World direction a drawer's front moves in while it opens."""
    info = priv["joints"][joint]
    return np.asarray(info["axis"], dtype=np.float64) * state_sign(priv, joint, "open")


def _handle(boxes: JointBoxes, opening: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Handle centre, its reach along ``opening`` and its half thickness along z."""
    index = boxes.furthest_along(opening)
    centre = boxes.centre[index]
    reach = float(boxes.extent_along(opening)[index])
    thickness = float(boxes.extent_along(_UP)[index])
    return centre, reach, thickness


def pull_drawer(priv: Mapping[str, Any], joint: str, config: ArticulationConfig) -> Decision:
    """Grasp the drawer's handle from the front and pull it along the opening direction."""
    info = priv["joints"][joint]
    opening = horizontal(_opening(priv, joint))
    point, _, thickness = _handle(JointBoxes.of(info), opening)
    handle = HandleGrasp(
        point=point,
        outward=opening,
        finger=_UP,
        half_thickness=thickness,
        drag=point + opening * config.pull_step,
    )
    return pull_handle(priv, info["owner"], handle, config)


def push_drawer(priv: Mapping[str, Any], joint: str, config: ArticulationConfig) -> Decision:
    """Press the closed fingers against the handle's front and push the drawer in."""
    info = priv["joints"][joint]
    owner = info["owner"]
    hand = hand_state(priv, owner)
    opening = horizontal(_opening(priv, joint))
    centre, reach, _ = _handle(JointBoxes.of(info), opening)
    front = centre + opening * reach
    rotation = leaning_rotation(-opening, config.push_tilt)

    rel = hand.pos - front
    along = float(rel @ opening)
    lateral = float(np.linalg.norm(rel[:2] - along * opening[:2]))
    in_front = -config.grasp_tolerance <= along <= config.push_standoff + config.grasp_tolerance
    if in_front and lateral <= 2 * config.insert_tolerance and abs(rel[2]) <= config.insert_tolerance:
        return Decision("push", front - opening * config.push_depth, rotation, 1.0)
    prepush = front + opening * config.push_standoff
    if float(np.linalg.norm((hand.pos - prepush)[:2])) <= config.insert_tolerance:
        return Decision("descend", prepush, rotation, 1.0)
    if holding(priv, hand, config):
        # Let go of whatever the fingers hold before travelling.
        return Decision("release", hand.pos.copy(), hand.rot, -1.0)
    travel = travel_height(priv, owner, config)
    low = hand.pos[2] < travel - config.grasp_tolerance
    if along < config.push_standoff / 2 and low and over_fixture(priv, owner, hand, config.travel_clearance):
        return Decision(
            "rise", np.array([hand.pos[0], hand.pos[1], travel]), via_home(rotation, hand, config), 1.0
        )
    return Decision(
        "approach", np.array([prepush[0], prepush[1], travel]), via_home(rotation, hand, config), 1.0
    )


def push_drawer_out(priv: Mapping[str, Any], joint: str, region: str, config: ArticulationConfig) -> Decision:
    """Lower the closed fingers into the open drawer whose inside is the site ``region``, just
    behind its front, and push the front further out."""
    info = priv["joints"][joint]
    hand = hand_state(priv, info["owner"])
    opening = horizontal(_opening(priv, joint))
    site = priv["sites"][region]
    centre = np.asarray(site["pos"], dtype=np.float64)
    half = box_half_extents(
        np.asarray(site["rot"], dtype=np.float64), np.asarray(site["size"], dtype=np.float64)
    )
    reach = float(np.abs(opening) @ half) - config.inside_gap
    contact = centre + opening * reach
    contact[2] = centre[2] + half[2] - config.inside_depth
    # Fingers side by side along the front, so that both press on it.
    yaw = yaw_of_finger_axis(np.cross(_UP, opening))
    rel = hand.pos - contact
    along = float(rel @ opening)
    lateral = float(np.linalg.norm(rel[:2] - along * opening[:2]))
    inside = hand.pos[2] < centre[2] + half[2] and lateral <= config.insert_tolerance
    if inside and -2 * config.inside_gap <= along <= config.inside_gap:
        return Decision.down("push_out", contact + opening * config.push_depth, yaw, 1.0)
    if holding(priv, hand, config):
        # Let go of whatever the fingers hold before travelling.
        return Decision("release", hand.pos.copy(), hand.rot, -1.0)
    aligned = abs(wrap_angle(2.0 * (hand.yaw - yaw))) / 2.0 <= config.rotation_tolerance
    if float(np.linalg.norm(rel[:2])) <= config.insert_tolerance and aligned:
        return Decision.down("descend", contact, yaw, 1.0)
    above = contact + np.array([0.0, 0.0, travel_height(priv, info["owner"], config) - contact[2]])
    if inside:
        # Stuck low in the drawer, off the push line: come up before moving over.
        return Decision.down("rise", np.array([hand.pos[0], hand.pos[1], above[2]]), yaw, 1.0)
    return Decision.down("approach", above, yaw, 1.0)
