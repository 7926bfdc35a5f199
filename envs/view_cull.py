"""Frustum culling for MuJoCo camera renders: geoms a camera cannot see are not drawn.

On a CPU, Mesa's llvmpipe transforms every vertex of every geom in the scene, seen or
not, and LIBERO's scenes are heavy (about 290k triangles, most of them scanned meshes
and the robot's links). The wrist camera sees a small part of that, so skipping the geoms
whose bounding sphere lies wholly outside its view pyramid saves about a third of its
render time; agentview gains a little.

The culled image is the same image, pixel for pixel, as long as a geom outside the view
cannot affect one inside it: no light may cast shadows and reflections must be off
(``envs.fast_render`` turns them off). ``ViewCuller.for_model`` says whether that holds
for a model and returns None when it does not. Planes (infinite, bounding radius 0) and
height fields are never culled.

A culled geom is moved into a geom group the render options hide, for one render, and
put back afterwards; physics never reads geom groups.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["ViewCuller", "outside_view"]


def outside_view(
    centers: np.ndarray,
    radii: np.ndarray,
    cam_pos: np.ndarray,
    cam_mat: np.ndarray,
    fovy_deg: float,
    aspect: float,
) -> np.ndarray:
    """Which spheres lie wholly outside a MuJoCo camera's view pyramid.

    Args:
        centers: ``(N, 3)`` sphere centres in world coordinates.
        radii: ``(N,)`` sphere radii.
        cam_pos: ``(3,)`` camera position; ``cam_mat``: ``(3, 3)`` camera orientation (MuJoCo
            cameras look along their -z axis, with +y up).
        fovy_deg: vertical field of view; ``aspect``: image width / height.

    Returns:
        ``(N,)`` bool, True for a sphere no ray of the camera can meet.
    """
    local = (np.asarray(centers) - cam_pos) @ np.asarray(cam_mat).reshape(3, 3)
    x, y, depth = local[:, 0], local[:, 1], -local[:, 2]
    half_y = np.deg2rad(fovy_deg) / 2.0
    half_x = np.arctan(np.tan(half_y) * aspect)
    outside = depth < -radii
    for coordinate, half in ((x, half_x), (y, half_y)):
        # Signed distance of the centre beyond each side plane of the pyramid.
        beyond = np.abs(coordinate) * np.cos(half) - depth * np.sin(half)
        outside |= beyond > radii
    return outside


class ViewCuller:
    """Hides a model's out-of-view geoms around one render (see the module docstring)."""

    def __init__(self, model: Any, hidden_group: int, cullable: np.ndarray) -> None:
        self.model = model
        self.hidden_group = hidden_group
        self.cullable = cullable

    @classmethod
    def for_model(cls, model: Any, geomgroup: Sequence[int]) -> ViewCuller | None:
        """A culler for ``model`` (an ``mujoco.MjModel``) rendered with the option's
        ``geomgroup`` visibility flags, or None when culling could change pixels (a light
        casts shadows) or no geom group is hidden to move culled geoms into."""
        import mujoco

        hidden = [group for group, shown in enumerate(geomgroup) if not shown]
        if not hidden or np.any(model.light_castshadow):
            return None
        unbounded = np.isin(model.geom_type, (mujoco.mjtGeom.mjGEOM_PLANE, mujoco.mjtGeom.mjGEOM_HFIELD))
        return cls(model, hidden[0], ~unbounded)

    @contextmanager
    def culled(self, data: Any, camera_id: int, aspect: float = 1.0) -> Iterator[int]:
        """Within the block, geoms outside camera ``camera_id``'s view are hidden; yields
        how many were hidden."""
        model = self.model
        outside = self.cullable & outside_view(
            data.geom_xpos,
            model.geom_rbound,
            data.cam_xpos[camera_id],
            data.cam_xmat[camera_id],
            float(model.cam_fovy[camera_id]),
            aspect,
        )
        saved = model.geom_group[outside].copy()
        model.geom_group[outside] = self.hidden_group
        try:
            yield int(outside.sum())
        finally:
            model.geom_group[outside] = saved
