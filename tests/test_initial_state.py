"""Randomized resets that keep the task's ``:init``: which atoms are checked, where a
region-bound object is re-placed, and one LIBERO task whose own sampler breaks it."""

from __future__ import annotations

import numpy as np
import pytest

from envs.initial_state import checked_atoms, placement_in_region


def _box(lo, hi) -> np.ndarray:
    return np.array([lo, hi], dtype=np.float64)


def _priv(site_rot=None, site_size=(0.08, 0.08, 0.002), site_joints=()) -> dict:
    """A bowl (origin 2 cm above its bottom) far from a stove whose burner tops out at z=1.0."""
    bowl_box = _box([1.95, 1.95, 2.0], [2.05, 2.05, 2.06])
    return {
        "objects": {
            "bowl": {
                "fixture": False,
                "pos": np.array([2.0, 2.0, 2.02]),
                "aabb": bowl_box,
                "parts": bowl_box[None],
            },
            "stove": {
                "fixture": True,
                "pos": np.zeros(3),
                "aabb": _box([-0.2, -0.2, 0.9], [0.2, 0.2, 1.0]),
                # A low body and a raised burner; only the burner lies under the region.
                "parts": np.stack(
                    [_box([-0.2, -0.2, 0.9], [0.2, 0.2, 0.95]), _box([-0.1, -0.1, 0.95], [0.1, 0.1, 1.0])]
                ),
            },
            "plate": {"fixture": False, "pos": np.zeros(3), "aabb": _box([0, 0, 0], [0.1, 0.1, 0.02])},
        },
        "sites": {
            "stove_cook_region": {
                "parent": "stove",
                "pos": np.array([0.0, 0.0, 0.9]),
                "rot": np.eye(3) if site_rot is None else site_rot,
                "size": np.array(site_size),
                "joints": list(site_joints),
            },
            "table_plate_region": {
                "parent": "",
                "pos": np.zeros(3),
                "rot": np.eye(3),
                "size": np.full(3, 0.01),
                "joints": [],
            },
        },
        "joints": {},
    }


def test_checked_atoms_skip_table_regions_and_fixtures():
    init = [
        ["On", "bowl", "stove_cook_region"],
        ["On", "plate", "table_plate_region"],
        ["On", "stove", "table_plate_region"],
        ["On", "bowl", "plate"],
        ["Open", "stove_cook_region"],
    ]
    assert checked_atoms(init, _priv()) == [
        ["On", "bowl", "stove_cook_region"],
        ["On", "bowl", "plate"],
        ["Open", "stove_cook_region"],
    ]


@pytest.mark.parametrize(
    ("site_rot", "site_size"),
    # LIBERO's drawer sites have their thin axis along a horizontal site axis, turned upright.
    [(np.eye(3), (0.08, 0.08, 0.002)), (np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]]), (0.002, 0.08, 0.08))],
)
def test_placement_rests_on_the_support_inside_the_region(site_rot, site_size):
    priv = _priv(site_rot=site_rot, site_size=site_size)
    rng = np.random.default_rng(0)
    points = np.array([placement_in_region(priv, "bowl", "stove_cook_region", rng) for _ in range(200)])
    # The bowl's 5 cm radius stays inside the 8 cm region, so its centre keeps within 3 cm.
    assert np.all(np.abs(points[:, :2]) <= 0.03 + 1e-12)
    assert np.ptp(points[:, 0]) > 0.04 and np.ptp(points[:, 1]) > 0.04, "placements are spread"
    # Bottom just above the burner (1.0), the origin 2 cm above the bottom: not the site's z (0.9).
    np.testing.assert_allclose(points[:, 2], 1.0 + 0.02 + 0.003)


def test_placement_in_a_drawer_rests_on_the_moving_body():
    priv = _priv(site_joints=["stove_drawer"])
    priv["joints"]["stove_drawer"] = {
        "boxes": {
            "centre": np.array([[0.0, 0.0, 0.5]]),
            "rot": np.eye(3)[None],
            "half": np.array([[0.2, 0.2, 0.01]]),
        }
    }
    pos = placement_in_region(priv, "bowl", "stove_cook_region", np.random.default_rng(1))
    np.testing.assert_allclose(pos[2], 0.51 + 0.02 + 0.003)


@pytest.mark.libero
def test_randomized_reset_keeps_a_bowl_on_the_stove():
    from envs.libero_env import LiberoEnv

    env = LiberoEnv("libero_spatial", 7, image_size=32, fast_render=True)
    try:
        domain = env.raw_env.env
        for seed in (3, 4):
            env.reset(seed=seed, options={"randomize": True, "lazy_images": True})
            assert domain._eval_predicate(["on", "akita_black_bowl_1", "flat_stove_1_cook_region"])
            assert domain._eval_predicate(["on", "akita_black_bowl_2", "wooden_cabinet_1_top_side"])
    finally:
        env.close()
