"""Why a failed episode failed, read from the simulator's ground truth.

``FailureRecorder`` is an episode observer. It follows every movable object through the
episode: how far it rose above where it started and how far it slid sideways. At the end
it reads the goal: the first sub-goal that does not hold (``envs.oracle_plan.next_subgoal``,
the scripted oracle's own planner) names what the policy still had to do. A failed episode
gets the first of these modes that fits:

``articulation``  the sub-goal left moves a drawer, a door or a knob
``still_holding`` it was lifted and is between both fingers at the end: carried, not placed
``misplaced``     it was lifted and let go, and its centre ended over its target's footprint
                  (an object's box or a region's extent): set down off-centre, tilted or
                  bounced, not lost on the way
``dropped``       it was lifted and is no longer held elsewhere: let go early or lost on the way
``wrong_object``  it never rose, but another object did: the policy took something else
``pushed``        it never rose, but slid by ``SLIDE_M`` or more: knocked or dragged
``missed_grasp``  it stayed put, and the gripper closed at least once
``never_closed``  it stayed put, and the gripper never closed
``goal_met``      every goal atom holds at the end, though the episode did not count a success

A "lift" is a rise of ``LIFT_M`` over the object's start, so a bowl taken off a cabinet and
set down on a lower plate was lifted first, and counts as lifted. A diagnosis also names the
object of the unmet sub-goal and, for ``wrong_object``, the objects lifted instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.oracle_geometry import point_in_box
from envs.oracle_plan import JOINT_RELATIONS, OracleTaskError, next_subgoal

__all__ = [
    "FAILURE_MODES",
    "LIFT_M",
    "SLIDE_M",
    "FailureDiagnosis",
    "FailureRecorder",
    "count_failure_modes",
    "diagnosis_fields",
]

FAILURE_MODES = (
    "articulation",
    "still_holding",
    "misplaced",
    "dropped",
    "wrong_object",
    "pushed",
    "missed_grasp",
    "never_closed",
    "goal_met",
)
# Rise (m) over an object's start that counts as lifted: more than a tilt or a bump.
LIFT_M = 0.03
# Sideways travel (m) that counts as pushed; resets move objects by 1-2 cm, episodes by more.
SLIDE_M = 0.03


@dataclass(frozen=True)
class FailureDiagnosis:
    """A failed episode's mode, the object its first unmet sub-goal concerns (None when the
    goal is met), and the objects lifted instead of it, highest rise first (``wrong_object``)."""

    mode: str
    target: str | None = None
    taken: tuple[str, ...] = ()


@dataclass
class FailureRecorder:
    """Episode observer (``eval.libero.episode.Observer``) that names a failure's mode.

    It reads the env's ``object_positions()`` (each movable object's position ``(3,)``) at
    every tick, and ``diagnose()`` its ``privileged_state()`` (``envs.privileged``) once, as
    ``envs.libero_env.LiberoEnv`` has them; ``explains(env)`` says whether an env does.
    """

    closed: bool = field(default=False, init=False)
    _start: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _rise: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _slide: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _ended: Any = field(default=None, init=False, repr=False)

    def __call__(self, env: Any, obs: Mapping[str, Any], action: np.ndarray | None) -> None:
        for name, pos in env.object_positions().items():
            start = self._start.setdefault(name, np.asarray(pos, dtype=np.float64))
            self._rise[name] = max(self._rise.get(name, 0.0), float(pos[2] - start[2]))
            self._slide[name] = max(self._slide.get(name, 0.0), float(np.linalg.norm(pos[:2] - start[:2])))
        if action is None:
            self._ended = env
        elif float(action[-1]) > 0:
            self.closed = True

    @staticmethod
    def explains(env: Any) -> bool:
        """Whether ``env`` exposes what the recorder reads."""
        return all(callable(getattr(env, name, None)) for name in ("object_positions", "privileged_state"))

    def diagnose(self) -> FailureDiagnosis | None:
        """Why the episode failed (see the module docstring), or None for a goal the oracle's
        planner does not know; call after the episode ended."""
        if self._ended is None:
            raise RuntimeError("diagnose: the episode has not ended (no final observation seen)")
        final = self._ended.privileged_state()
        try:
            subgoal = next_subgoal(final)
        except OracleTaskError:
            return None
        if subgoal is None:
            return FailureDiagnosis("goal_met")
        name = subgoal.obj
        if subgoal.kind in JOINT_RELATIONS:
            return FailureDiagnosis("articulation", name)
        if self._rise.get(name, 0.0) >= LIFT_M:
            if int(final["objects"].get(name, {}).get("finger_contacts", 0)) == 2:
                return FailureDiagnosis("still_holding", name)
            return FailureDiagnosis("misplaced" if _over(final, name, subgoal.target) else "dropped", name)
        taken = [other for other, rise in self._rise.items() if other != name and rise >= LIFT_M]
        if taken:
            return FailureDiagnosis(
                "wrong_object", name, tuple(sorted(taken, key=self._rise.get, reverse=True))
            )
        if self._slide.get(name, 0.0) >= SLIDE_M:
            return FailureDiagnosis("pushed", name)
        return FailureDiagnosis("missed_grasp" if self.closed else "never_closed", name)


def _over(priv: Mapping[str, Any], name: str, target: str) -> bool:
    """Whether object ``name``'s centre lies, horizontally, within ``target``'s box: an object's
    world box or a region site's oriented one (False for a target that has neither)."""
    pos = priv["objects"].get(name, {}).get("pos")
    box = _box_of(priv, target)
    if pos is None or box is None:
        return False
    centre, rot, half = box
    # At the box's own height, so only the horizontal place decides.
    return point_in_box(np.array([pos[0], pos[1], centre[2]]), centre, rot, half)


def _box_of(priv: Mapping[str, Any], target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(centre, rotation, half extents)`` of an object's world box or of a region site."""
    if "aabb" in priv["objects"].get(target, {}):
        lo, hi = np.asarray(priv["objects"][target]["aabb"], dtype=np.float64)
        return (lo + hi) / 2.0, np.eye(3), (hi - lo) / 2.0
    site = priv.get("sites", {}).get(target)
    if site is None:
        return None
    return (
        np.asarray(site["pos"], dtype=np.float64),
        np.asarray(site["rot"], dtype=np.float64),
        np.asarray(site["size"], dtype=np.float64),
    )


def diagnosis_fields(diagnosis: FailureDiagnosis | None) -> dict[str, Any]:
    """An episode record's ``failure_mode``, ``failure_object`` and ``failure_taken``; all None
    without a diagnosis (a success, an error, an env without ground truth, an unknown goal)."""
    if diagnosis is None:
        return {"failure_mode": None, "failure_object": None, "failure_taken": None}
    return {
        "failure_mode": diagnosis.mode,
        "failure_object": diagnosis.target,
        "failure_taken": list(diagnosis.taken),
    }


def count_failure_modes(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many failed episodes ended in each mode, in ``FAILURE_MODES`` order (modes with
    none left out; records without a mode, such as successes, ignored)."""
    modes = [r.get("failure_mode") for r in records if r.get("outcome") == "failure"]
    return {mode: modes.count(mode) for mode in FAILURE_MODES if mode in modes}
