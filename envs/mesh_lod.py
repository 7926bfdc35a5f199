"""Coarser visual meshes for CPU rendering: fewer triangles, the same physics.

On a CPU, Mesa's llvmpipe spends a LIBERO frame on vertices, not pixels, and LIBERO's
scanned meshes are far finer than a 128 px camera can show (a bowl has 42,522 faces).
``simplify_visual_meshes`` caps the faces of every mesh that only a visual geom uses.
Collision geoms keep their meshes, and MuJoCo collides with convex hulls computed when the
model was compiled, so the simulation is unchanged; the images change by what coarser
meshes show (measured in docs/throughput.md).

The method is vertex clustering that keeps the mesh's own vertices: vertices are binned
into a grid of cubic cells, each cell keeps the vertex nearest its mean, faces are
re-pointed at the kept vertices, and faces that collapse or repeat are dropped. The cell
grows by 25% until the face count fits. A kept corner takes the normal and texture
coordinate its new vertex has elsewhere in the mesh, so textures stay where they were. The
arrays are rewritten in place (a mesh's face count only shrinks), so the model needs no
recompilation, and the render context uploads the changed meshes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MESH_FACES",
    "MeshLodError",
    "SimplifiedMesh",
    "check_mesh_faces",
    "cluster_faces",
    "simplify_visual_meshes",
]

# The cap new demos are rendered with (and so the checkpoints trained on them): agentview and
# wrist renders about 2x faster, a policy's outcomes on the same episodes nearly unchanged.
DEFAULT_MESH_FACES = 10_000
# First cell edge, as a fraction of the mesh's largest extent; grown by _CELL_GROWTH per try.
_FIRST_CELL_FRACTION = 1.0 / 400.0
_CELL_GROWTH = 1.25


class MeshLodError(ValueError):
    """A face budget that cannot hold a mesh."""


def check_mesh_faces(value: Any) -> int:
    """``value`` if it is a valid face cap: an int >= 0, where 0 keeps the meshes as modelled."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MeshLodError(f"mesh_faces: expected an int >= 0 (0 = meshes as modelled), got {value!r}")
    return value


@dataclass(frozen=True)
class SimplifiedMesh:
    """One mesh whose faces were capped: its MuJoCo id, faces before and after, cell edge (m)."""

    mesh_id: int
    faces_before: int
    faces_after: int
    cell: float


def cluster_faces(vertices: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Faces of a mesh after vertex clustering with cubic cells of edge ``cell``.

    Args:
        vertices: ``(V, 3)`` vertex positions.
        faces: ``(F, 3)`` int vertex indices.
        cell: grid cell edge, in the units of ``vertices``.

    Returns:
        ``(kept, new_faces)``: ``(F',)`` indices of the faces that survive, in order, and their
        ``(F', 3)`` corners re-pointed at each cell's kept vertex (an index into ``vertices``).
    """
    keys = np.floor(np.asarray(vertices, dtype=np.float64) / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    means = np.zeros((counts.size, 3))
    np.add.at(means, cluster, vertices)
    means /= counts[:, None]
    distance = np.linalg.norm(vertices - means[cluster], axis=1)
    # Per cluster, the vertex nearest the mean (ties: the lowest index) is kept.
    order = np.lexsort((np.arange(len(vertices)), distance, cluster))
    firsts = order[np.r_[True, cluster[order][1:] != cluster[order][:-1]]]
    keeper = np.empty(counts.size, dtype=np.int64)
    keeper[cluster[firsts]] = firsts
    corners = keeper[cluster][faces]
    distinct = (
        (corners[:, 0] != corners[:, 1]) & (corners[:, 1] != corners[:, 2]) & (corners[:, 0] != corners[:, 2])
    )
    kept = np.flatnonzero(distinct)
    _, first_of_each = np.unique(np.sort(corners[kept], axis=1), axis=0, return_index=True)
    kept = kept[np.sort(first_of_each)]
    return kept, corners[kept]


def _visual_only_meshes(model: Any) -> list[int]:
    """Meshes that no colliding geom uses."""
    import mujoco

    is_mesh = model.geom_type == mujoco.mjtGeom.mjGEOM_MESH
    colliding = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
    used = set(model.geom_dataid[is_mesh].tolist())
    by_colliders = set(model.geom_dataid[is_mesh & colliding].tolist())
    return sorted(used - by_colliders)


def simplify_visual_meshes(model: Any, max_faces: int, render_context: Any = None) -> list[SimplifiedMesh]:
    """Cap every visual-only mesh of ``model`` (an ``mujoco.MjModel``) at ``max_faces`` faces,
    in place; with ``render_context`` (an ``mujoco.MjrContext`` current on this thread) the
    changed meshes are uploaded again. Returns what changed, in mesh order."""
    if not check_mesh_faces(max_faces):
        raise MeshLodError("mesh_faces: expected an int >= 1 faces to keep, got 0")
    import mujoco

    changed = []
    for mesh in _visual_only_meshes(model):
        count, start = int(model.mesh_facenum[mesh]), int(model.mesh_faceadr[mesh])
        if count <= max_faces:
            continue
        rows = slice(start, start + count)
        faces = model.mesh_face[rows].astype(np.int64)
        normals, texcoords = model.mesh_facenormal[rows].copy(), model.mesh_facetexcoord[rows].copy()
        first_vertex = int(model.mesh_vertadr[mesh])
        vertices = model.mesh_vert[first_vertex : first_vertex + int(model.mesh_vertnum[mesh])]
        # A vertex's normal and texture coordinate, taken from any corner it is used at.
        vertex_normal = np.zeros(len(vertices), dtype=np.int64)
        vertex_normal[faces.reshape(-1)] = normals.reshape(-1)
        vertex_texcoord = np.zeros(len(vertices), dtype=np.int64)
        vertex_texcoord[faces.reshape(-1)] = texcoords.reshape(-1)
        cell = float(np.ptp(vertices, axis=0).max()) * _FIRST_CELL_FRACTION
        _, new_faces = cluster_faces(vertices, faces, cell)
        while len(new_faces) > max_faces:
            cell *= _CELL_GROWTH
            _, new_faces = cluster_faces(vertices, faces, cell)
        if not len(new_faces):
            raise MeshLodError(f"mesh_faces: {max_faces} leaves mesh {mesh} with no faces")
        out = slice(start, start + len(new_faces))
        model.mesh_face[out] = new_faces
        model.mesh_facenormal[out] = vertex_normal[new_faces]
        model.mesh_facetexcoord[out] = vertex_texcoord[new_faces]
        model.mesh_facenum[mesh] = len(new_faces)
        if render_context is not None:
            mujoco.mjr_uploadMesh(model, render_context, mesh)
        changed.append(SimplifiedMesh(mesh, count, len(new_faces), cell))
    return changed
