"""Which sub-goal the scripted oracle works on now, from the BDDL goal and the current state.

A BDDL goal is an unordered conjunction of atoms (``on``, ``in``, ``open``, ``close``,
``turnon``, ``turnoff``). ``next_subgoal`` orders them so that each step is feasible and
returns the first one that does not hold yet:

1. ``turnon`` / ``turnoff``: knobs first, before pots crowd the stove;
2. ``close`` atoms of containers nothing goes into: an open drawer is in the way of the
   one above or below it;
3. ``clear``: an object bound for a closed drawer that stands where the drawer will be
   once open is set aside first (``envs.oracle_clear``);
4. ``open`` atoms, and the implicit ``open`` of a closed drawer or door that an unmet
   ``in`` atom puts something into;
5. ``on`` / ``in`` placements, in the goal's order;
6. the other ``close`` atoms, once every ``in`` atom into that container holds.

Nothing is remembered between calls: the plan is recomputed from LIBERO's own verdict on
each atom (``privileged["goal_status"]``) and the joint positions, so a slip that undoes an
earlier step simply makes it the current step again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from envs.oracle_clear import in_the_way
from envs.oracle_regions import fits_open_part

__all__ = [
    "JOINT_RELATIONS",
    "PLACE_RELATIONS",
    "OracleTaskError",
    "SubGoal",
    "articulation_state",
    "container_joints",
    "joint_done",
    "next_subgoal",
]

PLACE_RELATIONS = ("on", "in")
JOINT_RELATIONS = ("open", "close", "turnon", "turnoff")
_OPPOSITE = {"open": "close", "close": "open", "turnon": "turnoff", "turnoff": "turnon"}
# A joint this close (m or rad) to the end of its range counts as being at that end.
_LIMIT_SLACK = 0.005

Kind = Literal["on", "in", "open", "close", "turnon", "turnoff", "clear"]


@dataclass(frozen=True)
class SubGoal:
    """One step of the plan: place ``obj`` on/in ``target``, move ``obj``'s joints, or set
    ``obj`` aside out of the way of the drawers of ``joints`` (``clear``)."""

    kind: Kind
    # The object to move, or the articulated object or region (a drawer's region site).
    obj: str
    # Placements: the supporting object or region.
    target: str = ""
    # Articulations: the joints to move; clearing: the drawers whose way to keep clear.
    joints: tuple[str, ...] = ()
    # Placements: LIBERO already counts the atom as holding, though the fingers still touch
    # the object (it rests in or on its target): time to let go.
    resting: bool = False
    # The implicit opening of a drawer an object goes into: that object, which must fit in
    # the part of the drawer open from above.
    fit: str = ""
    # Clearing: where the object is set down (xy of its origin), chosen by ``envs.oracle_clear``.
    spot: tuple[float, ...] = ()


class OracleTaskError(ValueError):
    """The BDDL goal is not one the oracle knows how to achieve."""


def _atom(raw: Any) -> tuple[str, ...]:
    atom = tuple(str(token) for token in raw)
    if not atom:
        raise OracleTaskError("privileged['goal']: expected non-empty atoms, got an empty one")
    atom = (atom[0].lower(), *atom[1:])
    arity = 3 if atom[0] in PLACE_RELATIONS else 2 if atom[0] in JOINT_RELATIONS else 0
    if len(atom) != arity:
        raise OracleTaskError(
            f"privileged['goal']: expected ('on'|'in', object, target) or "
            f"('open'|'close'|'turnon'|'turnoff', object), got {list(raw)!r}"
        )
    return atom


def container_joints(priv: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """Joints that open or close ``name``: a region's own (a drawer) or its owner's (a door)."""
    site = priv["sites"].get(name)
    if site is not None:
        if site.get("joints"):
            return tuple(site["joints"])
        name = site["parent"]
    obj = priv["objects"].get(name)
    if obj is None or not {"open", "close"} & set(obj.get("articulation", {})):
        return ()
    return tuple(obj.get("joints", ()))


def _touched(priv: Mapping[str, Any], name: str) -> bool:
    obj = priv["objects"].get(name)
    return obj is not None and int(obj.get("finger_contacts", 0)) > 0


def _owner(priv: Mapping[str, Any], name: str) -> str:
    site = priv["sites"].get(name)
    return site["parent"] if site is not None and site["parent"] else name


def articulation_state(priv: Mapping[str, Any], joint: str, state: str) -> bool:
    """Whether ``joint`` is in ``state`` (open/close/turnon/turnoff) by LIBERO's thresholds.

    LIBERO compares the joint position with the end of the state's range that faces the
    opposite state: a drawer whose "open" range is [-0.16, -0.14] is open below -0.14.
    """
    info = priv["joints"][joint]
    ranges = priv["objects"][info["owner"]]["articulation"]
    mine, other = np.asarray(ranges[state]), np.asarray(ranges[_OPPOSITE[state]])
    direction = float(np.sign(mine.mean() - other.mean()))
    threshold = mine.min() if direction > 0 else mine.max()
    return bool((info["qpos"] - threshold) * direction > 0)


def _at_limit(priv: Mapping[str, Any], joint: str, state: str) -> bool:
    """Whether ``joint`` is at the end of its range on the side of ``state``."""
    info = priv["joints"][joint]
    ranges = priv["objects"][info["owner"]]["articulation"]
    limits = np.asarray(info["range"], dtype=np.float64)
    if np.mean(ranges[state]) > np.mean(ranges[_OPPOSITE[state]]):
        return info["qpos"] >= limits.max() - _LIMIT_SLACK
    return info["qpos"] <= limits.min() + _LIMIT_SLACK


def joint_done(priv: Mapping[str, Any], joint: str, subgoal: SubGoal) -> bool:
    """Whether ``joint`` is where ``subgoal`` wants it: in LIBERO's state and, for a drawer
    opened to put ``subgoal.fit`` in, open until that object fits or the drawer stops.

    LIBERO's "open" threshold can leave the part of a bottom drawer that sticks out from under
    the one above shorter than a bowl; a bowl dropped there lands tilted on the drawer's wall.
    """
    if not articulation_state(priv, joint, subgoal.kind):
        return False
    if not subgoal.fit:
        return True
    return fits_open_part(priv, subgoal.fit, subgoal.obj) or _at_limit(priv, joint, subgoal.kind)


def next_subgoal(priv: Mapping[str, Any]) -> SubGoal | None:
    """The first sub-goal that does not hold yet, or None once the whole goal holds."""
    atoms = [_atom(raw) for raw in priv["goal"]]
    status = [bool(s) for s in priv["goal_status"]]
    if len(status) != len(atoms):
        raise OracleTaskError(
            f"privileged['goal_status']: expected {len(atoms)} entries (one per goal atom), got {len(status)}"
        )
    knobs, clears, opens, places, closes = [], [], [], [], []
    for atom, holds in zip(atoms, status):
        kind = atom[0]
        if kind in ("turnon", "turnoff"):
            knobs.append((_subgoal(priv, atom), holds))
        elif kind == "open":
            opens.append((_subgoal(priv, atom), holds))
        elif kind == "close":
            closes.append((_subgoal(priv, atom), holds))
        else:
            # An object the fingers still touch is not placed yet: LIBERO's "in" already
            # holds while it is lowered into a basket, and letting go is the last step.
            resting = holds and _touched(priv, atom[1])
            places.append(
                (SubGoal(kind=kind, obj=atom[1], target=atom[2], resting=resting), holds and not resting)
            )
            if kind == "in" and not holds and container_joints(priv, atom[2]):
                opening = _opening(priv, atom[1], atom[2])
                if not any(joint_done(priv, j, opening) for j in opening.joints):
                    opens.append((opening, False))
                    spot = in_the_way(priv, atom[1], opening.joints) if opening.fit else None
                    if spot is not None:
                        aside = SubGoal(kind="clear", obj=atom[1], joints=opening.joints, spot=tuple(spot))
                        clears.append((aside, False))
    # A container something goes into is closed last; any other is closed before anything
    # is opened, since an open drawer is in the way of the one above or below it.
    fillings = [placed for placed, _ in places if placed.kind == "in"]
    early = [
        (c, h)
        for c, h in closes
        if not any(set(c.joints) & set(container_joints(priv, p.target)) for p in fillings)
    ]
    late = [(c, h) for c, h in closes if (c, h) not in early]
    for subgoal, holds in knobs + early + clears + opens + places:
        if not holds:
            return subgoal
    for subgoal, holds in late:
        # Closing waits for whatever still has to go into the same drawer or door.
        waiting = any(
            not holds_in and set(subgoal.joints) & set(container_joints(priv, placed.target))
            for placed, holds_in in places
            if placed.kind == "in"
        )
        if not holds and not waiting:
            return subgoal
    return None


def _subgoal(priv: Mapping[str, Any], atom: tuple[str, ...]) -> SubGoal:
    kind = atom[0]
    if kind in PLACE_RELATIONS:
        return SubGoal(kind=kind, obj=atom[1], target=atom[2])  # type: ignore[arg-type]
    joints = container_joints(priv, atom[1]) if kind in ("open", "close") else ()
    if not joints:
        joints = tuple(priv["objects"].get(_owner(priv, atom[1]), {}).get("joints", ()))
    if not joints:
        raise OracleTaskError(f"goal atom {list(atom)!r}: {atom[1]!r} has no joint to {kind}")
    return SubGoal(kind=kind, obj=atom[1], joints=joints)  # type: ignore[arg-type]


def _opening(priv: Mapping[str, Any], obj: str, container: str) -> SubGoal:
    """The implicit opening of ``container`` that putting ``obj`` in it needs; a drawer (a
    region its own joints move) must open until ``obj`` fits in its open part."""
    opening = _subgoal(priv, ("open", container))
    site = priv["sites"].get(container)
    if site is not None and site.get("joints"):
        return replace(opening, fit=obj)
    return opening
