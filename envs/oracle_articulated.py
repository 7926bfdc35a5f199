"""Scripted skills for articulated fixtures: drawers, doors and stove knobs.

``articulate`` picks the skill from the joint's type and the sub-goal's state, from the
privileged state alone: slide joints are drawers (pulled open by the handle, pushed
closed), hinges are knobs when the goal turns them on or off (grasped and twisted) and
doors otherwise (pushed closed along their arc; pulled open by the handle until there is
room to push the inner face). Each skill is Markovian: its phase follows from
the joint position, the hand pose relative to the handle, door or knob, the finger gap and
the finger contacts. A sub-goal whose joints are all in their state already gets ``let_go``:
open the fingers, then back away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envs.oracle_decision import Decision
from envs.oracle_door import open_door, push_door
from envs.oracle_drawer import pull_drawer, push_drawer, push_drawer_out
from envs.oracle_joint import ArticulationConfig, hand_state
from envs.oracle_knob import twist_knob
from envs.oracle_plan import SubGoal, articulation_state, joint_done

__all__ = ["ArticulationConfig", "ArticulationError", "articulate", "let_go"]


class ArticulationError(ValueError):
    """A sub-goal the articulation skills cannot carry out."""


def let_go(priv: Mapping[str, Any], owner: str, config: ArticulationConfig) -> Decision:
    """Open the fingers where the hand is, then back away along the hand's pointing direction."""
    hand = hand_state(priv, owner)
    if hand.gap < config.open_gap:
        return Decision("release", hand.pos.copy(), hand.rot, -1.0)
    return Decision("back_off", hand.pos - hand.rot[:, 2] * config.back_off, hand.rot, -1.0)


def articulate(priv: Mapping[str, Any], subgoal: SubGoal, config: ArticulationConfig) -> Decision:
    """The next hand pose towards ``subgoal`` (open/close/turnon/turnoff of ``subgoal.joints``)."""
    if not subgoal.joints:
        raise ArticulationError(f"subgoal.joints: expected at least one joint to {subgoal.kind}, got none")
    for joint in subgoal.joints:
        if joint not in priv["joints"]:
            raise ArticulationError(f"subgoal.joints: {joint!r} is not in privileged['joints']")
    # Several joints (e.g. a double door): work on the first one not yet in the state.
    pending = [j for j in subgoal.joints if not joint_done(priv, j, subgoal)]
    if not pending:
        return let_go(priv, priv["joints"][subgoal.joints[0]]["owner"], config)
    joint = pending[0]
    kind = priv["joints"][joint]["type"]
    if subgoal.kind in ("turnon", "turnoff"):
        return twist_knob(priv, joint, subgoal.kind, config)
    if kind == "slide" and subgoal.kind == "open" and articulation_state(priv, joint, "open"):
        # Open, but not far enough for what goes in (``joint_done``): push it further out.
        return push_drawer_out(priv, joint, subgoal.obj, config)
    if kind == "slide":
        return (
            pull_drawer(priv, joint, config) if subgoal.kind == "open" else push_drawer(priv, joint, config)
        )
    if subgoal.kind == "close":
        return push_door(priv, joint, "close", config)
    return open_door(priv, joint, config)
