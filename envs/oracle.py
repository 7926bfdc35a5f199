"""A Markovian scripted oracle for LIBERO, driven by the task's BDDL goal and privileged state.

The oracle reads ``obs["privileged"]`` (see ``envs.privileged``) and answers with one
OSC_POSE delta action. It keeps no memory: every decision is a function of the current
geometry, joint positions and gripper opening, so a policy that sees the scene can imitate
it, and a slip (DART noise, a dropped object, a drawer bumped shut) just changes what the
next tick does. One tick:

1. Plan: ``envs.oracle_plan.next_subgoal`` orders the goal's atoms (knobs, closing what
   nothing goes into, setting aside an object a closed drawer would open over, opening
   drawers/doors including the implicit opening an ``in`` needs, placements, the remaining
   closing) and picks the first that does not hold.
2. Decide the phase of that sub-goal's skill from geometry alone:

   - drawers, doors and knobs: ``envs.oracle_articulated``; before any other skill, a hand
     they left pointing sideways lets go, backs away and comes in towards the robot;
   - an object too wide for the fingers: pushed there (``envs.oracle_push``);
   - pick and place, on or in an object or region (``envs.oracle_regions`` says where), or
     onto a free spot of the table out of a drawer's way (``envs.oracle_clear``):
     *held* (the fingers rest on the object and the hand is inside its box): slide out
     from under anything overhead, lift to a carry height that clears everything between
     the object and the target, carry over the target (turning it in line with a region too
     narrow for it as it lies, a book for a caddy's slot), lower, and open once LIBERO counts
     the object placed or its bottom is within a few centimetres of the support surface;
     *placed*: finish opening, then retreat up; otherwise hover above the grasp point
     (``envs.oracle_grasp``, relative to the object), turn the fingers to the grasp yaw,
     descend with the gripper open, close on arrival.
3. Turn the phase's target pose into a saturated proportional command
   (``envs.oracle_decision``).

Example::

    oracle = ScriptedOracle()
    action = oracle.infer(obs)[0]          # obs from an env created with privileged=True
    oracle.decide(obs["privileged"]).phase  # e.g. "carry"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from cogvla.policy_api import Policy
from envs.oracle_articulated import ArticulationConfig, articulate
from envs.oracle_clear import table_top
from envs.oracle_decision import Decision, closing_on, osc_command
from envs.oracle_geometry import (
    fixture_region_at,
    gripper_yaw,
    nearest_equivalent_yaw,
    point_in_box,
    quat_to_mat,
    segment_box_overlap,
    wrap_angle,
    xy_distance_to_box,
)
from envs.oracle_grasp import GRASP_SPECS, GraspConfig, GraspSpec, grasp_width_bound, plan_grasp
from envs.oracle_insert import Entry, InsertConfig, at_opening, hand_behind, push_in, roofed_entry, slide_in
from envs.oracle_joint import JointBoxes
from envs.oracle_plan import JOINT_RELATIONS, OracleTaskError, SubGoal, next_subgoal
from envs.oracle_push import PushConfig, push
from envs.oracle_regions import Placement, fitting_turn, region_placement

__all__ = [
    "Decision",
    "OracleConfig",
    "OracleConfigError",
    "OracleTaskError",
    "PrivilegedObservationError",
    "ScriptedOracle",
    "override_config",
]

_REQUIRED_KEYS = (
    "goal",
    "goal_status",
    "eef_pos",
    "eef_quat",
    "gripper_qpos",
    "robot_base_pos",
    "objects",
    "sites",
    "joints",
)
_OBJECT_KEYS = ("category", "fixture", "pos", "quat", "aabb", "parts", "finger_contacts")


class PrivilegedObservationError(ValueError):
    """The observation lacks the privileged simulator state the oracle needs."""


@dataclass(frozen=True)
class OracleConfig:
    """Gains and geometric thresholds (metres, radians) of the scripted oracle."""

    # Proportional gains in action units per full-scale error (5 cm, 0.5 rad); >1 saturates sooner.
    position_gain: float = 2.0
    rotation_gain: float = 1.0
    # Hover point above the grasp point before the straight descent.
    hover_height: float = 0.08
    # Horizontal/vertical distance to the grasp point at which the fingers close.
    grasp_tolerance_xy: float = 0.008
    grasp_tolerance_z: float = 0.01
    # Horizontal distance to the grasp point below which the descent starts.
    descend_tolerance: float = 0.01
    # Yaw error (rad) allowed before descending.
    yaw_tolerance: float = 0.1
    # Finger gap above which the gripper counts as open, and below which it closed on nothing.
    open_gap: float = 0.07
    empty_gap: float = 0.003
    # Slack over the object's width for "fingers resting on the object".
    held_gap_margin: float = 0.008
    # How far outside the object's box the grip site may be while holding it.
    held_box_margin: float = 0.015
    # Height of the carried object's bottom over obstacles between it and the target.
    carry_clearance: float = 0.05
    # Horizontal margin around the carried object's path when looking for obstacles.
    corridor_margin: float = 0.01
    # Carried object vs target centre: descend fully within the first, start descending within the second.
    lower_tolerance: float = 0.01
    hold_tolerance: float = 0.03
    # Object-bottom height over the support at which the gripper opens, per relation.
    release_clearance: dict[str, float] = field(default_factory=lambda: {"on": 0.02, "in": 0.03})
    # Horizontal tolerance for opening over the target.
    release_tolerance: float = 0.015
    # Horizontal step towards the robot that takes a held object out from under an overhang.
    slide_step: float = 0.04
    # Height of the grip site over the placed object's top when retreating.
    retreat_height: float = 0.1
    # Height of the fingertips over a just-placed object's top before another skill turns the wrist.
    let_go_clearance: float = 0.01
    # Grasp planning (gripper dimensions, candidate grasps).
    grasp: GraspConfig = field(default_factory=GraspConfig)
    # Pushing objects too wide to grasp.
    push: PushConfig = field(default_factory=PushConfig)
    # Sliding objects into roofed regions (a microwave).
    insert: InsertConfig = field(default_factory=InsertConfig)
    # Drawers, doors and knobs.
    articulation: ArticulationConfig = field(default_factory=ArticulationConfig)


# Horizontal distance (m) from the robot's base within which a sideways hand may turn down.
_TURN_RADIUS = 0.66
_COME_IN_MARGIN = 0.02
# A hand pointing less than 20 degrees off the horizontal is level (as a pull leaves it).
_LEVEL_SIN = float(np.sin(np.radians(20.0)))


class OracleConfigError(ValueError):
    """An oracle config override that names no scalar field of ``OracleConfig`` or gives a bad value."""


def override_config(overrides: Mapping[str, float], base: OracleConfig | None = None) -> OracleConfig:
    """``base`` (default ``OracleConfig()``) with top-level scalar fields replaced.

    E.g. ``{"hover_height": 0.12}`` starts every straight descent onto a grasp 12 cm above it
    instead of 8: demos made at several hover heights close after descents of different
    lengths, so a policy that imitates them must read the hand's height to know when to close.
    """
    base = base or OracleConfig()
    names = [f.name for f in fields(OracleConfig) if isinstance(getattr(base, f.name), float)]
    for key, value in overrides.items():
        if key not in names:
            raise OracleConfigError(f"{key}: expected an oracle field among {names}")
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise OracleConfigError(f"{key}: expected a finite value >= 0, got {value!r}")
    return replace(base, **{key: float(value) for key, value in overrides.items()})


def _within(point: np.ndarray, box: np.ndarray, margin: float) -> bool:
    """Whether ``point`` lies in the box ``[lo, hi]`` grown by ``margin`` (any number of axes)."""
    return bool(np.all(point >= box[0] - margin) and np.all(point <= box[1] + margin))


def _require(mapping: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in mapping:
            raise PrivilegedObservationError(
                f"{where}[{key!r}] is missing: expected the keys {list(keys)} from envs.privileged.privileged_state"
            )


class ScriptedOracle(Policy):
    """Scripted pick-and-place policy over privileged state; ``infer`` returns a ``(1, 7)`` chunk."""

    def __init__(self, config: OracleConfig | None = None, grasps: Mapping[str, GraspSpec] | None = None):
        self.config = config or OracleConfig()
        self.grasps = dict(GRASP_SPECS if grasps is None else grasps)

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "name": "scripted_oracle", "needs_privileged": True}

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Action chunk ``(1, 7)`` float32 for the current tick."""
        if "privileged" not in obs:
            raise PrivilegedObservationError(
                "obs['privileged'] is missing: the scripted oracle needs the env created with privileged=True"
            )
        priv = obs["privileged"]
        decision = self.decide(priv)
        return self.action(priv, decision)[None, :]

    def decide(self, priv: Mapping[str, Any]) -> Decision:
        """The phase and target pose for one privileged state (see the module docstring)."""
        _require(priv, _REQUIRED_KEYS, "privileged")
        subgoal = next_subgoal(priv)
        if subgoal is None:
            return self._done(priv)
        if subgoal.kind in JOINT_RELATIONS:
            return self._let_go(priv) or articulate(priv, subgoal, self.config.articulation)
        return self._leave_fixture(priv) or self._place(priv, subgoal)

    def _place(self, priv: Mapping[str, Any], subgoal: SubGoal) -> Decision:
        obj_name = subgoal.obj
        objects = priv["objects"]
        if obj_name not in objects:
            raise PrivilegedObservationError(
                f"privileged['objects'][{obj_name!r}] is missing (named by the goal)"
            )
        obj = objects[obj_name]
        _require(obj, _OBJECT_KEYS, f"privileged['objects'][{obj_name!r}]")
        placement = self._placement(priv, subgoal)
        if placement is None:
            raise OracleTaskError(
                f"goal target {subgoal.target!r}: expected an object or a site in privileged state"
            )

        eef = np.asarray(priv["eef_pos"], dtype=np.float64)
        gap = float(priv["gripper_qpos"][0] - priv["gripper_qpos"][1])
        current_yaw = gripper_yaw(quat_to_mat(priv["eef_quat"]))
        # Under a roof the hand cannot follow the object in: hold it from behind (by a handle).
        entry = roofed_entry(priv, priv["sites"].get(subgoal.target), placement, self.config.insert)
        width = grasp_width_bound(priv, obj_name, self.grasps, self.config.grasp, entry is not None)
        if width > self.config.grasp.max_width:
            # Too wide for the fingers (a plate): slide it there instead.
            return push(priv, obj_name, placement.xy, current_yaw, self.config.push)
        # Set down at a roofed opening short of the region: the closed fingers behind it push it
        # the rest of the way (touching it, they would otherwise look like holding it).
        opening = entry is not None and at_opening(priv, obj_name, entry, self.config.insert)
        pushing = opening and hand_behind(priv, obj_name, entry, self.config.insert)
        if not pushing and self._held(obj, eef, gap, width):
            if subgoal.resting:
                return Decision.down("release", eef.copy(), current_yaw, -1.0)
            if entry is not None:
                return self._insert(priv, obj_name, entry, eef, current_yaw)
            return self._transport(priv, obj_name, placement, eef, current_yaw)
        if self._placed(obj, placement):
            return self._retreat(obj, eef, current_yaw, gap)
        if opening:
            phase, target = push_in(priv, obj_name, entry, self.config.insert, self.config.grasp)
            return Decision.down(phase, target, current_yaw, -1.0 if phase == "clear" else 1.0)
        grasp = plan_grasp(priv, obj_name, self.grasps, self.config.grasp, entry is not None)
        return self._pick(priv, obj_name, grasp.point, grasp.yaw, eef, current_yaw, gap)

    @staticmethod
    def _placement(priv: Mapping[str, Any], subgoal: SubGoal) -> Placement | None:
        """Where the sub-goal puts its object: on/in its target, or aside on the table."""
        if subgoal.kind != "clear":
            return region_placement(priv, subgoal.obj, subgoal.kind, subgoal.target)
        spot = np.asarray(subgoal.spot, dtype=np.float64)
        height = table_top(priv, spot)
        return None if height is None else Placement(xy=spot, support_z=height, relation="on", region=None)

    def _let_go(self, priv: Mapping[str, Any]) -> Decision | None:
        """Fingers still around a loose object (one just slid into a microwave by its handle):
        open them and lift them straight up clear of its top, since the next skill may turn the
        wrist, which would catch the fingers on it. None when the hand is clear of every object."""
        cfg = self.config
        eef = np.asarray(priv["eef_pos"], dtype=np.float64)
        gap = float(priv["gripper_qpos"][0] - priv["gripper_qpos"][1])
        yaw = gripper_yaw(quat_to_mat(priv["eef_quat"]))
        for obj in priv["objects"].values():
            box = np.asarray(obj["aabb"], dtype=np.float64)
            clear_z = box[1, 2] + cfg.grasp.fingertip_depth + cfg.let_go_clearance
            over = _within(eef[:2], box[:, :2], cfg.held_box_margin)
            if obj["fixture"] or not over or not box[0, 2] <= eef[2] < clear_z:
                continue
            if gap < cfg.open_gap:
                return Decision.down("release", eef.copy(), yaw, -1.0)
            return Decision.down(
                "clear", np.array([eef[0], eef[1], clear_z + cfg.let_go_clearance]), yaw, -1.0
            )
        return None

    def _leave_fixture(self, priv: Mapping[str, Any]) -> Decision | None:
        """A hand a joint skill left level (at the handle of a drawer it just pulled open):
        open the fingers, back away along the pointing direction while a fixture's moving part
        is near, and come in towards the robot; then the pick-and-place skill turns it down.
        Turning it down at the handle hooks the fingers on it; farther out the elbow is nearly
        straight, and turning down there and rising over the fixture stretches the arm to its
        limit, where it stalls. None for a hand that points down or has begun to turn (the two
        skills would otherwise take turns), or is clear of the fixture and near enough."""
        eef = np.asarray(priv["eef_pos"], dtype=np.float64)
        rot = quat_to_mat(priv["eef_quat"])
        pointing = rot[:, 2]
        if abs(pointing[2]) > _LEVEL_SIN:
            return None
        back_off = self.config.articulation.back_off
        near = False
        for info in priv["joints"].values():
            boxes = JointBoxes.of(info)
            extent = boxes.world_extent()
            outside = np.maximum(np.abs(eef - boxes.centre) - extent, 0.0)
            near = near or float(np.linalg.norm(outside, axis=1).min()) < back_off
        base = np.asarray(priv["robot_base_pos"], dtype=np.float64)
        outwards = eef[:2] - base[:2]
        radius = float(np.linalg.norm(outwards))
        if not near and radius <= _TURN_RADIUS:
            return None
        gap = float(priv["gripper_qpos"][0] - priv["gripper_qpos"][1])
        if near and gap < self.config.open_gap:
            return Decision("release", eef.copy(), rot, -1.0)
        target = eef - pointing * back_off if near else eef.copy()
        if radius > _TURN_RADIUS:
            # Aim inside the radius: a proportional approach only ever nears its target.
            target[:2] -= outwards * (1.0 - (_TURN_RADIUS - _COME_IN_MARGIN) / radius)
        return Decision("back_off", target, rot, -1.0)

    def _done(self, priv: Mapping[str, Any]) -> Decision:
        """Every goal atom holds: open the hand and hold still."""
        eef = np.asarray(priv["eef_pos"], dtype=np.float64)
        return Decision("done", eef.copy(), quat_to_mat(priv["eef_quat"]), -1.0)

    def action(self, priv: Mapping[str, Any], decision: Decision) -> np.ndarray:
        """Saturated proportional OSC_POSE command ``(7,)`` float32 towards ``decision``."""
        return osc_command(priv, decision, self.config.position_gain, self.config.rotation_gain)

    def _held(self, obj: Mapping[str, Any], eef: np.ndarray, gap: float, width: float) -> bool:
        cfg = self.config
        box = np.asarray(obj["aabb"], dtype=np.float64)
        if not _within(eef, box, cfg.held_box_margin) or gap > width + cfg.held_gap_margin:
            return False
        contacts = int(obj["finger_contacts"])
        # A finger can lose contact for a tick while the object swings; a gap that stopped at
        # the object's width, short of fully closed, still shows it is between the fingers.
        return contacts >= 2 or (gap <= width and (contacts >= 1 or gap > 2 * cfg.empty_gap))

    def _placed(self, obj: Mapping[str, Any], placement: Placement) -> bool:
        cfg = self.config
        box = np.asarray(obj["aabb"], dtype=np.float64)
        pos = np.asarray(obj["pos"], dtype=np.float64)
        if placement.region is not None and placement.relation == "in":
            centre, rot, size = placement.region
            lowered = centre - np.array([0.0, 0.0, 0.005])
            return point_in_box(pos, lowered, rot, size + np.array([0.0, 0.0, 0.005]))
        near = np.linalg.norm(pos[:2] - placement.xy) <= cfg.hold_tolerance
        low = box[0, 2] - placement.support_z <= cfg.release_clearance[placement.relation]
        return bool(near and low)

    def _corridor_top(
        self, priv: Mapping[str, Any], obj_name: str, start: np.ndarray, end: np.ndarray
    ) -> float:
        """Highest top of any other body whose footprint the carried object would sweep over."""
        obj_box = np.asarray(priv["objects"][obj_name]["aabb"], dtype=np.float64)
        radius = float(np.max(obj_box[1, :2] - obj_box[0, :2]) / 2.0) + self.config.corridor_margin
        top = -np.inf
        for name, other in priv["objects"].items():
            if name == obj_name:
                continue
            box = np.asarray(other["aabb"], dtype=np.float64)
            if segment_box_overlap(start, end, box, radius):
                top = max(top, float(box[1, 2]))
        return top

    def _insert(
        self, priv: Mapping[str, Any], obj_name: str, entry: Entry, eef: np.ndarray, yaw: float
    ) -> Decision:
        """Held, bound for a roofed region: set it down low in front of the opening, slide it in."""
        phase, point = slide_in(priv, obj_name, entry, self.config.insert, self.config.grasp)
        if phase == "release":
            return Decision.down("release", point, yaw, -1.0)
        if phase == "insert":
            return Decision.down("insert", point, yaw, 1.0)
        stage = Placement(xy=point[:2], support_z=float(point[2]), relation="in", region=None)
        return self._transport(priv, obj_name, stage, eef, yaw, release=False)

    def _transport(
        self,
        priv: Mapping[str, Any],
        obj_name: str,
        placement: Placement,
        eef: np.ndarray,
        yaw: float,
        release: bool = True,
    ) -> Decision:
        cfg = self.config
        obj = priv["objects"][obj_name]
        box = np.asarray(obj["aabb"], dtype=np.float64)
        pos = np.asarray(obj["pos"], dtype=np.float64)
        bottom = float(box[0, 2])
        offset_xy = placement.xy - pos[:2]
        distance = float(np.linalg.norm(offset_xy))
        above_support = bottom - placement.support_z
        near = distance <= cfg.release_tolerance
        if release and near and above_support <= cfg.release_clearance[placement.relation]:
            return Decision.down("release", eef.copy(), yaw, -1.0)
        obstacles = self._corridor_top(priv, obj_name, pos, placement.xy)
        carry_bottom = max(obstacles, placement.support_z) + cfg.carry_clearance
        rise = carry_bottom - bottom
        # The held object turns with the hand: line it up with a narrow region on the way there.
        turn = fitting_turn(obj, placement)
        yaw += turn
        if distance > cfg.hold_tolerance:
            if rise > 0.02:
                out = self._out_from_under(priv, obj_name, eef, rise)
                if out is not None:
                    return Decision.down("slide_out", eef + np.array([*out, 0.0]), yaw, 1.0)
                return Decision.down("lift", eef + np.array([0.0, 0.0, rise]), yaw, 1.0)
            return Decision.down("carry", eef + np.array([offset_xy[0], offset_xy[1], rise]), yaw, 1.0)
        # A funnel over the target: the closer to centred, the lower the object may go, so
        # centring and lowering happen together and neither waits for the other.
        openness = np.clip(
            (distance - cfg.lower_tolerance) / (cfg.hold_tolerance - cfg.lower_tolerance), 0.0, 1.0
        )
        if abs(turn) > cfg.yaw_tolerance:
            openness = 1.0
        floor = placement.support_z + openness * (carry_bottom - placement.support_z)
        target = eef + np.array([offset_xy[0], offset_xy[1], floor - bottom])
        return Decision.down("lower", target, yaw, 1.0)

    def _out_from_under(
        self, priv: Mapping[str, Any], obj_name: str, eef: np.ndarray, rise: float
    ) -> np.ndarray | None:
        """A horizontal step ``(2,)`` towards the robot if something hangs over the hand (an open
        drawer above a bowl), so that lifting would hit it; None when the way up is clear.

        An object inside a fixture's region (a bowl in a drawer) is lifted straight out: sliding
        it would drag the drawer along.
        """
        cfg = self.config
        pos = np.asarray(priv["objects"][obj_name]["pos"], dtype=np.float64)
        if fixture_region_at(priv["sites"], pos, exclude=obj_name) is not None:
            return None
        hand_bottom = eef[2] + cfg.grasp.hand_bottom
        overhead = []
        for name, other in priv["objects"].items():
            if name == obj_name:
                continue
            parts = np.asarray(other["parts"], dtype=np.float64).reshape(-1, 2, 3)
            above = (parts[:, 0, 2] > hand_bottom) & (parts[:, 0, 2] < eef[2] + rise + cfg.grasp.hand_bottom)
            overhead.extend(parts[above])
        if not any(xy_distance_to_box(eef, box) < cfg.grasp.hand_half_length for box in overhead):
            return None
        towards_robot = np.asarray(priv["robot_base_pos"], dtype=np.float64)[:2] - eef[:2]
        return cfg.slide_step * towards_robot / np.linalg.norm(towards_robot)

    def _retreat(self, obj: Mapping[str, Any], eef: np.ndarray, yaw: float, gap: float) -> Decision:
        cfg = self.config
        if gap < cfg.open_gap:
            return Decision.down("release", eef.copy(), yaw, -1.0)
        top = float(np.asarray(obj["aabb"], dtype=np.float64)[1, 2])
        return Decision.down("retreat", np.array([eef[0], eef[1], top + cfg.retreat_height]), yaw, -1.0)

    def _pick(
        self,
        priv: Mapping[str, Any],
        obj_name: str,
        grasp_point: np.ndarray,
        grasp_yaw: float,
        eef: np.ndarray,
        current_yaw: float,
        gap: float,
    ) -> Decision:
        cfg = self.config
        yaw = nearest_equivalent_yaw(grasp_yaw, current_yaw)
        error = grasp_point - eef
        error_xy = float(np.linalg.norm(error[:2]))
        hover = grasp_point + np.array([0.0, 0.0, cfg.hover_height])
        obstacles = self._corridor_top(priv, obj_name, eef, grasp_point)
        hover[2] = max(hover[2], obstacles + cfg.carry_clearance)
        if gap <= cfg.empty_gap:
            return Decision.down("reopen", hover, yaw, -1.0)
        if closing_on(error, gap, cfg.grasp_tolerance_xy, cfg.grasp_tolerance_z, cfg.open_gap):
            return Decision.down("close", grasp_point, yaw, 1.0)
        aligned = abs(wrap_angle(yaw - current_yaw)) <= cfg.yaw_tolerance
        # Once on the way down, a small sideways drift is corrected in place rather than by climbing back.
        descending = error_xy <= 2 * cfg.descend_tolerance and eef[2] < hover[2] - 0.01
        if (error_xy <= cfg.descend_tolerance or descending) and aligned and gap >= cfg.open_gap:
            return Decision.down("descend", grasp_point, yaw, -1.0)
        return Decision.down("approach", hover, yaw, -1.0)
