"""Grasp a fixture's handle from the side it faces and drag it: drawers pulled open, doors swung open.

The hand points at the handle (horizontally, against ``outward``) with its fingers closing
across the bar. Phases, from geometry alone: rise over the fixture if the hand is low above
it, approach a hover point in front of the handle, align in front of it, move in with the
fingers open, close on the bar, and drag it while both the gap and the contacts say it is
held; fingers that closed on nothing open again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.oracle_decision import Decision
from envs.oracle_joint import ArticulationConfig, Hand, axis_rotation, hand_state, holding, pointing_rotation

__all__ = ["HandleGrasp", "over_fixture", "pull_handle", "travel_height"]


@dataclass(frozen=True)
class HandleGrasp:
    """Where a handle is held and where it is dragged to (world, metres)."""

    # Grasp point on the bar.
    point: np.ndarray
    # Horizontal unit vector from the fixture out through the handle; the hand comes from there.
    outward: np.ndarray
    # Unit finger axis, across the bar.
    finger: np.ndarray
    # Half thickness of the bar along ``finger``.
    half_thickness: float
    # Grip-site target while holding the handle, and the turn (rad, about world z) of the hand with it.
    drag: np.ndarray
    drag_turn: float = 0.0


def travel_height(priv: Mapping[str, Any], owner: str, config: ArticulationConfig) -> float:
    """Height at which the hand can move over the fixture."""
    box = np.asarray(priv["objects"][owner]["aabb"], dtype=np.float64)
    return float(box[1, 2]) + config.travel_clearance


def over_fixture(priv: Mapping[str, Any], owner: str, hand: Hand, margin: float) -> bool:
    """Whether the hand is over the fixture's footprint grown by ``margin``."""
    box = np.asarray(priv["objects"][owner]["aabb"], dtype=np.float64)
    return bool(np.all(hand.pos[:2] >= box[0, :2] - margin) and np.all(hand.pos[:2] <= box[1, :2] + margin))


def pull_handle(
    priv: Mapping[str, Any], owner: str, handle: HandleGrasp, config: ArticulationConfig
) -> Decision:
    """The next hand pose for taking hold of ``handle`` and dragging it."""
    hand = hand_state(priv, owner)
    rotation = pointing_rotation(-handle.outward, handle.finger, hand.rot)
    rel = hand.pos - handle.point
    along = float(rel @ handle.outward)
    off = float(np.linalg.norm(rel - along * handle.outward))
    tol = config.grasp_tolerance
    near = off <= 2 * tol and abs(along) <= 2 * tol
    on_bar = config.empty_gap < hand.gap <= 2 * handle.half_thickness + config.held_gap_margin
    held = off <= config.held_tolerance and abs(along) <= config.held_tolerance
    if hand.contacts >= 1 and on_bar and held:
        turned = axis_rotation(np.array([0.0, 0.0, 1.0]), handle.drag_turn) @ rotation
        return Decision("pull", handle.drag, turned, 1.0)
    pregrasp = handle.point + handle.outward * config.handle_standoff
    if hand.gap <= config.empty_gap and near:
        # Closed on nothing (the bar slipped out): open and back out in front of the handle.
        return Decision("reopen", pregrasp, rotation, -1.0)
    closing = config.empty_gap < hand.gap < config.open_gap and near
    if (off <= tol and abs(along) <= tol) or closing:
        return Decision("grip", handle.point, rotation, 1.0)
    aligned = hand.rotation_error(rotation) <= config.rotation_tolerance
    in_corridor = off <= config.insert_tolerance and -tol <= along <= config.handle_standoff + 2 * tol
    if in_corridor and aligned and hand.gap >= config.open_gap:
        return Decision("insert", handle.point, rotation, -1.0)
    if float(np.linalg.norm((hand.pos - pregrasp)[:2])) <= 2 * config.insert_tolerance:
        return Decision("align", pregrasp, rotation, -1.0)
    if holding(priv, hand, config):
        # Let go of whatever the fingers hold before travelling.
        return Decision("release", hand.pos.copy(), hand.rot, -1.0)
    travel = travel_height(priv, owner, config)
    # Behind the handle (e.g. over the fixture after a placement): go over the top first.
    low = hand.pos[2] < travel - tol
    if along < 0.0 and low and over_fixture(priv, owner, hand, config.travel_clearance):
        return Decision("rise", np.array([hand.pos[0], hand.pos[1], travel]), hand.rot, -1.0)
    hover = pregrasp + np.array([0.0, 0.0, config.travel_clearance])
    return Decision("approach", hover, rotation, -1.0)
