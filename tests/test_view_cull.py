"""Frustum culling: which geoms a camera cannot see, when culling is allowed, and that the
hidden geoms come back. Pure MuJoCo, no rendering (the pixel check is in test_env.py)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from envs.view_cull import ViewCuller, outside_view

# A camera at z=1 looking down -z with the default 45 degree field of view: at depth 1 its
# view spans |x|, |y| <= tan(22.5 deg) = 0.41.
SCENE = """
<mujoco>
  <worldbody>
    <light pos="0 0 3" castshadow="{shadow}"/>
    <camera name="down" pos="0 0 1" xyaxes="1 0 0 0 1 0"/>
    <geom name="seen" type="sphere" size=".1" pos="0 0 0"/>
    <geom name="behind" type="sphere" size=".1" pos="0 0 2"/>
    <geom name="aside" type="sphere" size=".1" pos="3 0 0"/>
    <geom name="straddling" type="sphere" size=".5" pos="0 .8 0"/>
    <geom name="far_plane" type="plane" size="1 1 .1" pos="50 0 0"/>
  </worldbody>
</mujoco>
"""
SHOWN_GROUPS = (0, 1, 1, 0, 0, 0)


def _scene(shadow: bool = False) -> tuple[mujoco.MjModel, mujoco.MjData]:
    model = mujoco.MjModel.from_xml_string(SCENE.format(shadow=str(shadow).lower()))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return model, data


def _names(model: mujoco.MjModel, mask: np.ndarray) -> set[str]:
    return {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in np.flatnonzero(mask)}


def test_spheres_wholly_outside_the_view_pyramid_are_outside():
    model, data = _scene()
    outside = outside_view(data.geom_xpos, model.geom_rbound, data.cam_xpos[0], data.cam_xmat[0], 45.0, 1.0)
    # The plane's bounding radius is 0: by geometry alone it is outside; the culler keeps it.
    assert _names(model, outside) == {"behind", "aside", "far_plane"}


def test_a_wider_image_sees_further_sideways():
    centers = np.array([[0.6, 0.0, 0.0], [0.0, 0.6, 0.0]])
    square = outside_view(centers, np.zeros(2), np.array([0, 0, 1.0]), np.eye(3), 45.0, 1.0)
    wide = outside_view(centers, np.zeros(2), np.array([0, 0, 1.0]), np.eye(3), 45.0, 2.0)
    assert square.tolist() == [True, True] and wide.tolist() == [False, True]


def test_culled_geoms_are_hidden_inside_the_block_and_restored_after():
    model, data = _scene()
    groups = model.geom_group.copy()
    model.geom_group[:] = 2
    culler = ViewCuller.for_model(model, SHOWN_GROUPS)
    assert culler is not None and culler.hidden_group == 0
    with culler.culled(data, camera_id=0) as hidden:
        assert hidden == 2
        assert _names(model, model.geom_group == 0) == {"behind", "aside"}
    np.testing.assert_array_equal(model.geom_group, 2)
    model.geom_group[:] = groups


@pytest.mark.parametrize(
    ("shadow", "shown", "why"),
    [
        (True, SHOWN_GROUPS, "a shadow from outside the view can fall inside it"),
        (False, (1,) * 6, "no hidden group"),
    ],
)
def test_no_culler_when_culling_could_change_pixels_or_has_nowhere_to_hide(shadow, shown, why):
    model, _ = _scene(shadow=shadow)
    assert ViewCuller.for_model(model, shown) is None, why
