"""Coarser visual meshes (envs.mesh_lod): fewer faces over the mesh's own vertices, physics untouched."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from envs.mesh_lod import MeshLodError, check_mesh_faces, cluster_faces, simplify_visual_meshes


def _grid_sphere(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere of radius 0.05 m: ``(V, 3)`` vertices, ``(F, 3)`` outward faces."""
    theta = np.linspace(0.0, np.pi, n + 1)[1:-1]
    phi = np.linspace(0.0, 2 * np.pi, 2 * n, endpoint=False)
    ring = np.stack(
        [
            np.outer(np.sin(theta), np.cos(phi)),
            np.outer(np.sin(theta), np.sin(phi)),
            np.outer(np.cos(theta), np.ones_like(phi)),
        ],
        axis=-1,
    ).reshape(-1, 3)
    vertices = 0.05 * np.vstack([[0.0, 0.0, 1.0], ring, [0.0, 0.0, -1.0]])
    rows, cols, bottom = len(theta), len(phi), len(vertices) - 1

    def at(r: int, c: int) -> int:
        return 1 + r * cols + c % cols

    faces = [[0, at(0, c), at(0, c + 1)] for c in range(cols)]
    for r in range(rows - 1):
        for c in range(cols):
            faces += [[at(r, c), at(r + 1, c), at(r + 1, c + 1)], [at(r, c), at(r + 1, c + 1), at(r, c + 1)]]
    faces += [[bottom, at(rows - 1, c + 1), at(rows - 1, c)] for c in range(cols)]
    return vertices, np.asarray(faces)


def _model(vertices: np.ndarray, faces: np.ndarray) -> mujoco.MjModel:
    """A visual-only sphere mesh on a falling body whose collider uses the same shape as another mesh."""
    vert = " ".join(f"{v:.6f}" for v in vertices.ravel())
    face = " ".join(str(i) for i in faces.ravel())
    xml = f"""
    <mujoco>
      <asset>
        <mesh name="look" vertex="{vert}" face="{face}"/>
        <mesh name="touch" vertex="{vert}" face="{face}"/>
      </asset>
      <worldbody>
        <geom type="plane" size="1 1 0.1"/>
        <body pos="0 0 0.3">
          <freejoint/>
          <geom type="mesh" mesh="look" contype="0" conaffinity="0" group="1"/>
          <geom type="mesh" mesh="touch" group="0"/>
        </body>
      </worldbody>
    </mujoco>"""
    return mujoco.MjModel.from_xml_string(xml)


def test_a_tiny_cell_keeps_every_face_and_a_coarse_one_keeps_fewer_valid_ones():
    vertices, faces = _grid_sphere()
    kept, same = cluster_faces(vertices, faces, cell=1e-6)
    np.testing.assert_array_equal(same, faces)
    np.testing.assert_array_equal(kept, np.arange(len(faces)))

    kept, coarse = cluster_faces(vertices, faces, cell=0.02)
    assert 0 < len(coarse) < len(faces)
    assert set(np.unique(coarse)) <= set(range(len(vertices)))  # the mesh's own vertices
    assert np.all(
        (coarse[:, 0] != coarse[:, 1]) & (coarse[:, 1] != coarse[:, 2]) & (coarse[:, 0] != coarse[:, 2])
    )
    assert len(np.unique(np.sort(coarse, axis=1), axis=0)) == len(coarse)
    assert np.all(np.diff(kept) > 0)
    # Still a sphere: every kept vertex lies on it, and the kept vertices span it.
    used = vertices[np.unique(coarse)]
    np.testing.assert_allclose(np.linalg.norm(used, axis=1), 0.05, rtol=1e-6)
    assert np.ptp(used, axis=0).min() > 0.09


def test_simplify_caps_only_visual_meshes_and_leaves_the_physics_alone():
    vertices, faces = _grid_sphere()
    full, capped = _model(vertices, faces), _model(vertices, faces)
    changed = simplify_visual_meshes(capped, 300)
    look, touch = capped.mesh("look").id, capped.mesh("touch").id
    assert [c.mesh_id for c in changed] == [look]
    assert (
        changed[0].faces_before == len(faces) and changed[0].faces_after == capped.mesh_facenum[look] <= 300
    )
    assert capped.mesh_facenum[touch] == len(faces)
    start = capped.mesh_faceadr[look]
    assert capped.mesh_face[start : start + capped.mesh_facenum[look]].max() < capped.mesh_vertnum[look]

    trajectories = []
    for model in (full, capped):
        data = mujoco.MjData(model)
        for _ in range(300):
            mujoco.mj_step(model, data)
        trajectories.append(np.concatenate([data.qpos, data.qvel]))
    np.testing.assert_array_equal(trajectories[0], trajectories[1])
    assert trajectories[0][2] < 0.1  # it fell and landed on its collider


def test_meshes_under_the_cap_are_left_as_they_are():
    vertices, faces = _grid_sphere(8)
    model = _model(vertices, faces)
    before = model.mesh_face.copy()
    assert simplify_visual_meshes(model, len(faces)) == []
    np.testing.assert_array_equal(model.mesh_face, before)


@pytest.mark.parametrize("value", [-1, 2.5, "1000", True, None])
def test_bad_face_caps_name_the_field(value):
    with pytest.raises(MeshLodError, match="mesh_faces: expected an int >= 0"):
        check_mesh_faces(value)


def test_a_zero_cap_is_refused_by_simplify_but_valid_as_a_setting():
    assert check_mesh_faces(0) == 0
    vertices, faces = _grid_sphere(8)
    with pytest.raises(MeshLodError, match="mesh_faces"):
        simplify_visual_meshes(_model(vertices, faces), 0)
