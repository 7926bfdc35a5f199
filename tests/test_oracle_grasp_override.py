"""Overrides of the scripted oracle: grasp specs and its own config, directly and through policy specs."""

from __future__ import annotations

import numpy as np
import pytest
from test_oracle import TABLE_Z, _rim_grasp_scene, _scene

from envs.oracle import OracleConfig, OracleConfigError, ScriptedOracle, override_config
from envs.oracle_grasp import GRASP_SPECS, GraspConfig, GraspOverrideError, override_grasps, plan_grasp
from eval.policies import (
    PolicySpecError,
    check_policy_spec,
    is_oracle,
    load_policy,
    oracle_config_overrides,
    oracle_grasp_overrides,
)

BOWL = "akita_black_bowl"


def test_a_deeper_bowl_height_lowers_the_planned_grasp_by_the_difference():
    priv = _scene([0.0, 0.2, TABLE_Z], [-0.2, 0.0, 1.17])
    shallow = plan_grasp(priv, "akita_black_bowl_1", GRASP_SPECS, GraspConfig())
    deep = plan_grasp(priv, "akita_black_bowl_1", override_grasps({f"{BOWL}.height": 0.025}), GraspConfig())
    assert shallow.point[2] - deep.point[2] == pytest.approx(GRASP_SPECS[BOWL].height - 0.025)
    np.testing.assert_allclose(deep.point[:2], shallow.point[:2])


def test_override_leaves_the_base_specs_and_other_categories_alone():
    before = dict(GRASP_SPECS)
    specs = override_grasps({f"{BOWL}.rim_thickness": 0.02})
    assert specs[BOWL].rim_thickness == 0.02 and specs[BOWL].height == GRASP_SPECS[BOWL].height
    assert GRASP_SPECS == before
    assert all(specs[name] == spec for name, spec in GRASP_SPECS.items() if name != BOWL)


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("plate.height", 0.02, "'plate'"),
        (f"{BOWL}.kind", 0.02, "'kind'"),
        (f"{BOWL}.height", -0.01, "finite distance >= 0"),
        (f"{BOWL}.height", float("nan"), "finite distance >= 0"),
    ],
)
def test_bad_overrides_name_the_key_and_what_was_expected(key, value, named):
    with pytest.raises(GraspOverrideError, match=key.replace(".", r"\.")) as error:
        override_grasps({key: value})
    assert named in str(error.value)


def test_an_oracle_spec_with_overrides_builds_an_oracle_that_closes_at_the_deeper_grasp():
    spec = f"oracle:{BOWL}.height=0.025"
    assert is_oracle(spec) and check_policy_spec(spec) == spec
    assert oracle_grasp_overrides(spec) == {f"{BOWL}.height": 0.025}
    oracle = load_policy(spec)
    assert isinstance(oracle, ScriptedOracle) and oracle.grasps[BOWL].height == 0.025
    deep_grasp_scene = _rim_grasp_scene([-0.05, 0.0, TABLE_Z])
    deep_grasp_scene["eef_pos"] = deep_grasp_scene["eef_pos"] - [0.0, 0.0, GRASP_SPECS[BOWL].height - 0.025]
    assert oracle.decide(deep_grasp_scene).phase == "close"
    assert ScriptedOracle().decide(deep_grasp_scene).phase != "close"


def test_a_higher_hover_moves_the_approach_target_up_by_the_difference():
    bowl = [0.0, 0.2, TABLE_Z]
    far_hand = _scene(bowl, [-0.2, 0.0, 1.3])
    grasp = plan_grasp(far_hand, "akita_black_bowl_1", GRASP_SPECS, GraspConfig())
    low, high = (ScriptedOracle(override_config({"hover_height": h})).decide(far_hand) for h in (0.05, 0.13))
    assert low.phase == high.phase == "approach"
    assert low.target[2] == pytest.approx(grasp.point[2] + 0.05)
    assert high.target[2] == pytest.approx(grasp.point[2] + 0.13)
    np.testing.assert_allclose(high.target[:2], low.target[:2])


def test_an_oracle_spec_mixes_config_and_grasp_overrides():
    spec = f"oracle:hover_height=0.12,{BOWL}.height=0.02"
    assert oracle_config_overrides(spec) == {"hover_height": 0.12}
    assert oracle_grasp_overrides(spec) == {f"{BOWL}.height": 0.02}
    oracle = load_policy(spec)
    assert oracle.config == OracleConfig(hover_height=0.12) and oracle.grasps[BOWL].height == 0.02


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [("hover", 0.1, "hover_height"), ("grasp", 0.1, "hover_height"), ("hover_height", -0.1, ">= 0")],
)
def test_bad_config_overrides_name_the_key_and_what_was_expected(key, value, named):
    with pytest.raises(OracleConfigError, match=key) as error:
        override_config({key: value})
    assert named in str(error.value)


@pytest.mark.parametrize(
    "spec",
    [
        "oracle:hover=0.1",
        "oracle:hover_height=high",
        f"oracle:{BOWL}.height",
        f"oracle:{BOWL}.height=deep",
        "oracle:bowl.height=0.02",
        f"oracle:{BOWL}.kind=1",
    ],
)
def test_malformed_oracle_specs_are_policy_spec_errors(spec):
    with pytest.raises(PolicySpecError, match="policy: "):
        check_policy_spec(spec)


def test_demos_cli_refuses_a_demonstrator_that_is_not_the_oracle(tmp_path, capsys):
    from cogvla.cli import main

    assert main(["demos", "--out", str(tmp_path), "--oracle", str(tmp_path)]) == 2
    assert main(["demos", "--out", str(tmp_path), "--oracle", f"oracle:{BOWL}.heigth=0.02"]) == 2
    assert not any(tmp_path.iterdir())
