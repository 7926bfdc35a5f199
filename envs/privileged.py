"""Simulator ground truth for the scripted oracle, as plain numpy/str values.

``privileged_state(raw_env)`` reads one control tick of a LIBERO environment and returns::

    "language":     str                      task instruction from the BDDL file
    "goal":         list[list[str]]          BDDL goal atoms, e.g. [["on", "akita_black_bowl_1", "plate_1"]]
    "eef_pos":      float64 (3,)             grip-site position (world, metres), as in obs "robot0_eef_pos"
    "eef_quat":     float64 (4,)             hand orientation (x, y, z, w), as in obs "robot0_eef_quat"
    "gripper_qpos": float64 (2,)             finger joints; fingers[0] - fingers[1] is the finger gap
    "robot_base_pos": float64 (3,)           robot base position (world)
    "objects":      {name: {                 every BDDL object and fixture with a body
                        "category": str,     BDDL category, e.g. "akita_black_bowl"
                        "fixture":  bool,
                        "pos":      (3,),    body origin (world)
                        "quat":     (4,),    body orientation (x, y, z, w)
                        "aabb":     (2, 3),  world axis-aligned box [lo, hi] of its collision geoms
                        "parts":    (G, 2, 3), the same box for each collision geom (finer shape)
                        "frame_box": (2, 3), box [lo, hi] of its collision geoms in its own frame
                                     (relative to "pos", along the axes of "quat")
                        "finger_contacts": int,  how many of the two fingers touch it (0, 1, 2)
                        "joints":   list[str],  its hinge/slide joints (drawers, doors, knobs)
                        "articulation": {str: (2,)},  LIBERO's joint ranges per state, e.g.
                                     {"open": [-0.16, -0.14], "close": [0.0, 0.005]}
                    }}
    "joints":       {name: {                 every hinge/slide joint of an object or fixture
                        "owner":  str,       the object/fixture it belongs to
                        "type":   str,       "hinge" or "slide"
                        "qpos":   float,     current position (rad or metres)
                        "range":  (2,),      joint limits
                        "axis":   (3,),      world joint axis
                        "anchor": (3,),      world point on the axis
                        "boxes":  {"centre": (G, 3), "rot": (G, 3, 3), "half": (G, 3)}
                                             oriented boxes of the moving body's collision geoms
                    }}
    "sites":        {name: {                 BDDL regions (object sites), e.g. a drawer's interior
                        "parent": str,       owning object/fixture ("" for workspace regions)
                        "pos":    (3,),
                        "rot":    (3, 3),    site frame -> world rotation
                        "size":   (3,),      half-extents in the site frame
                        "joints": list[str], joints that move the region (a drawer's slide)
                    }}
    "goal_status":  list[bool]               LIBERO's own verdict on each goal atom, in order

``object_positions(raw_env)`` is the cheap per-tick subset: where each movable object is.
Nothing here keeps state between calls, so the dict can be rebuilt from any simulator state
and sent across process boundaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PrivilegedStateError", "object_positions", "privileged_state"]

# Corner signs of a unit box, used to turn a geom's local AABB into 8 world points.
_BOX_CORNERS = np.array(
    [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64
)


class PrivilegedStateError(TypeError):
    """The object passed in is not a LIBERO environment this module can read."""


def _domain_env(raw_env: Any) -> Any:
    """The BDDL domain env (the one owning ``parsed_problem`` and ``sim``) behind a wrapper."""
    for candidate in (raw_env, getattr(raw_env, "env", None)):
        if candidate is not None and hasattr(candidate, "parsed_problem") and hasattr(candidate, "sim"):
            return candidate
    raise PrivilegedStateError(
        "raw_env: expected LIBERO's OffScreenRenderEnv or its inner BDDL env (with parsed_problem and sim), "
        f"got {type(raw_env).__name__}"
    )


def _wxyz_to_xyzw(quat: np.ndarray) -> np.ndarray:
    return np.array([quat[1], quat[2], quat[3], quat[0]], dtype=np.float64)


def _collision_corners(model: Any, data: Any, root_ids: list[int]) -> dict[int, np.ndarray]:
    """World corners ``(G, 8, 3)`` of each collision geom's box under each root body id (``G >= 1``)."""
    collide = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
    geom_root = model.body_rootid[model.geom_bodyid]
    corners: dict[int, np.ndarray] = {}
    for root in root_ids:
        geoms = np.flatnonzero(collide & (geom_root == root))
        if geoms.size == 0:
            corners[root] = np.repeat(np.asarray(data.xpos[root], dtype=np.float64)[None, None], 8, axis=1)
            continue
        centre = model.geom_aabb[geoms, :3]
        half = model.geom_aabb[geoms, 3:]
        local = centre[:, None, :] + _BOX_CORNERS[None, :, :] * half[:, None, :]  # (G, 8, 3)
        rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
        world = np.einsum("gij,gkj->gki", rot, local) + data.geom_xpos[geoms][:, None, :]
        corners[root] = world.astype(np.float64)
    return corners


def _frame_box(corners: np.ndarray, pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Box ``(2, 3)`` ``[lo, hi]`` in the body frame ``(pos, rot)`` around world corners ``(G, 8, 3)``."""
    local = (corners.reshape(-1, 3) - pos) @ rot
    return np.stack([local.min(axis=0), local.max(axis=0)])


def _union(boxes: np.ndarray) -> np.ndarray:
    """Box ``(2, 3)`` enclosing boxes ``(G, 2, 3)``."""
    return np.stack([boxes[:, 0].min(axis=0), boxes[:, 1].max(axis=0)])


def _finger_contacts(model: Any, data: Any, gripper: Any) -> dict[int, int]:
    """Number of distinct fingers (0-2) touching each root body, from the active contacts."""
    finger_of_geom = {}
    for finger, key in enumerate(("left_finger", "right_finger")):
        for name in gripper.important_geoms[key]:
            finger_of_geom[int(model.geom(name).id)] = finger
    touching: dict[int, set[int]] = {}
    for contact in data.contact[: data.ncon]:
        for mine, other in ((contact.geom1, contact.geom2), (contact.geom2, contact.geom1)):
            finger = finger_of_geom.get(int(mine))
            if finger is not None and int(other) not in finger_of_geom:
                root = int(model.body_rootid[model.geom_bodyid[other]])
                touching.setdefault(root, set()).add(finger)
    return {root: len(fingers) for root, fingers in touching.items()}


_JOINT_TYPES = {2: "slide", 3: "hinge"}


def _joints(model: Any, data: Any, env: Any) -> dict[str, dict[str, Any]]:
    """Hinge and slide joints of every BDDL object and fixture (see module docstring)."""
    collide = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
    joints = {}
    for owner, obj in {**env.objects_dict, **env.fixtures_dict}.items():
        for name in getattr(obj, "joints", None) or []:
            joint = model.joint(name)
            kind = _JOINT_TYPES.get(int(joint.type[0]))
            if kind is None:
                continue
            geoms = np.flatnonzero(collide & (model.geom_bodyid == joint.bodyid[0]))
            rot = data.geom_xmat[geoms].reshape(-1, 3, 3)
            offset = np.einsum("gij,gj->gi", rot, model.geom_aabb[geoms, :3])
            joints[name] = {
                "owner": owner,
                "type": kind,
                "qpos": float(data.qpos[joint.qposadr[0]]),
                "range": np.array(joint.range, dtype=np.float64),
                "axis": np.array(data.xaxis[joint.id], dtype=np.float64),
                "anchor": np.array(data.xanchor[joint.id], dtype=np.float64),
                "boxes": {
                    "centre": np.asarray(data.geom_xpos[geoms] + offset, dtype=np.float64),
                    "rot": np.asarray(rot, dtype=np.float64),
                    "half": np.array(model.geom_aabb[geoms, 3:], dtype=np.float64),
                },
            }
    return joints


def _articulation(obj: Any) -> dict[str, np.ndarray]:
    """LIBERO's joint ranges per articulation state ("open", "close", "turnon", "turnoff")."""
    ranges = getattr(obj, "object_properties", {}).get("articulation", {})
    out = {}
    for key, value in ranges.items():
        if key.startswith("default_") and key.endswith("_ranges") and len(value) == 2:
            out[key[len("default_") : -len("_ranges")]] = np.array(value, dtype=np.float64)
    return out


def privileged_state(raw_env: Any) -> dict[str, Any]:
    """Ground-truth poses, geometry and the BDDL goal at the current tick (see module docstring)."""
    env = _domain_env(raw_env)
    sim = env.sim
    model, data = sim.model._model, sim.data._data
    robot = env.robots[0]

    categories = {}
    for group in ("objects", "fixtures"):
        for category, names in env.parsed_problem[group].items():
            for name in names:
                categories[name] = category

    body_ids = {name: int(body) for name, body in env.obj_body_id.items()}
    corners = _collision_corners(model, data, [int(model.body_rootid[b]) for b in body_ids.values()])
    contacts = _finger_contacts(model, data, robot.gripper)
    joints = _joints(model, data, env)
    objects = {}
    for name, body in body_ids.items():
        root = int(model.body_rootid[body])
        parts = np.stack([corners[root].min(axis=1), corners[root].max(axis=1)], axis=1)
        objects[name] = {
            "category": categories.get(name, name),
            "fixture": name in env.fixtures_dict,
            "pos": np.array(data.xpos[body], dtype=np.float64),
            "quat": _wxyz_to_xyzw(data.xquat[body]),
            "aabb": _union(parts),
            "parts": parts,
            "frame_box": _frame_box(
                corners[root], data.xpos[body], np.asarray(data.xmat[body], dtype=np.float64).reshape(3, 3)
            ),
            "finger_contacts": contacts.get(root, 0),
            "joints": [j for j in joints if joints[j]["owner"] == name],
            "articulation": _articulation(env.get_object(name)),
        }

    sites = {}
    for name, site in env.object_sites_dict.items():
        site_id = sim.model.site_name2id(name)
        sites[name] = {
            "parent": site.parent_name or "",
            "pos": np.array(data.site_xpos[site_id], dtype=np.float64),
            "rot": np.array(data.site_xmat[site_id], dtype=np.float64).reshape(3, 3),
            "size": np.asarray(site.size, dtype=np.float64).reshape(3),
            "joints": [str(j) for j in getattr(site, "joints", None) or []],
        }

    eef_body = sim.model.body_name2id(robot.robot_model.eef_name)
    language = env.parsed_problem["language_instruction"]
    return {
        "language": language if isinstance(language, str) else " ".join(language),
        "goal": [[str(token) for token in atom] for atom in env.parsed_problem["goal_state"]],
        "eef_pos": np.array(data.site_xpos[robot.eef_site_id], dtype=np.float64),
        "eef_quat": _wxyz_to_xyzw(data.xquat[eef_body]),
        "gripper_qpos": np.array(data.qpos[robot._ref_gripper_joint_pos_indexes], dtype=np.float64),
        "robot_base_pos": np.array(
            data.xpos[sim.model.body_name2id(robot.robot_model.root_body)], dtype=np.float64
        ),
        "objects": objects,
        "sites": sites,
        "joints": joints,
        "goal_status": [bool(env._eval_predicate(atom)) for atom in env.parsed_problem["goal_state"]],
    }


def object_positions(raw_env: Any) -> dict[str, np.ndarray]:
    """Position ``(3,)`` (world, metres) of every non-fixture object: one tick's worth of
    ``privileged_state``'s objects at a small fraction of its cost."""
    env = _domain_env(raw_env)
    data = env.sim.data._data
    return {
        name: np.array(data.xpos[body], dtype=np.float64)
        for name, body in env.obj_body_id.items()
        if name not in env.fixtures_dict
    }
