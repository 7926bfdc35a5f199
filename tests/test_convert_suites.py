"""One import of a four-suite release serves every LIBERO suite with that suite's statistics,
and stats that belong to another suite are refused unless forced."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_checkpoints import build_cogvla_checkpoint

from cogvla.checkpoint import read_config
from cogvla.cli import build_parser
from cogvla.cli import main as cli_main
from cogvla.convert.cli import staging_folder
from cogvla.convert.errors import ImportOutputError
from cogvla.fake_data import fake_observation
from cogvla.normalize import NORM_TABLE_FILE, NormKeyError, use_suite_stats
from cogvla.policy import (
    OBS_NORM_KEY,
    CogVLAPolicy,
    ObservationError,
    check_checkpoint_suites,
)

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_cogvla_checkpoint(tmp_path_factory.mktemp("release") / "cogvla-libero")


@pytest.fixture(scope="module")
def imported(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "cogvla-all-suites"
    assert cli_main(["import", str(release.path), "--out", str(out), "--no-progress"]) == 0
    return out


def _observation(side: int) -> dict:
    obs = fake_observation(side, seed=3)
    obs["state"] = np.linspace(-0.4, 0.6, 8)
    return obs


def test_one_import_keeps_every_suite_and_picks_none(release, imported):
    stored = json.loads((imported / NORM_TABLE_FILE).read_text())
    assert sorted(stored) == sorted(release.unnorm_keys)
    config, norm_key = read_config(imported)
    assert norm_key is None
    assert config.image_preprocessing == "openvla"
    assert not (imported / "norm_stats.json").exists()
    assert not list(imported.parent.glob(".*importing*"))


def test_each_suite_is_served_with_its_own_stats(release, imported):
    policy = CogVLAPolicy.from_pretrained(imported)
    raw = json.loads((release.path / "dataset_statistics.json").read_text())
    obs = _observation(policy.model.config.image_size)
    with pytest.raises(ObservationError, match="none is chosen"):
        policy.infer(obs)
    chunks = {}
    for suite in SUITES:
        use_suite_stats(policy, suite)
        key = f"{suite}_no_noops"
        assert policy.norm_key == key
        assert list(policy.norm_stats.action_q99) == pytest.approx(raw[key]["action"]["q99"])
        assert list(policy.norm_stats.proprio_q01) == pytest.approx(raw[key]["proprio"]["q01"])
        chunks[suite] = policy.infer(obs)
        # the model's own output, unnormalized by hand with this suite's stats
        inputs, padded = policy._model_inputs([obs], [policy.norm_stats])
        expected = policy.norm_stats.unnormalize_actions(policy._predict(*inputs, padded=padded)[0])
        np.testing.assert_allclose(chunks[suite], expected, rtol=1e-6, atol=1e-6)
        per_request = policy.infer({**obs, OBS_NORM_KEY: suite})
        np.testing.assert_array_equal(per_request, chunks[suite])
    assert not np.allclose(chunks["libero_spatial"][:, :6], chunks["libero_goal"][:, :6])


def test_unknown_key_per_request_is_a_clear_error(imported):
    policy = CogVLAPolicy.from_pretrained(imported, unnorm_key="libero_goal")
    assert policy.metadata()["norm_key"] == "libero_goal_no_noops"
    assert policy.metadata()["norm_keys"] == sorted(f"{s}_no_noops" for s in SUITES)
    obs = _observation(policy.model.config.image_size)
    with pytest.raises(ObservationError, match=r"'libero_90' not found; available keys: libero_10_no_noops"):
        policy.infer({**obs, OBS_NORM_KEY: "libero_90"})


def test_stats_of_another_suite_are_refused_unless_forced(release, tmp_path):
    out = tmp_path / "goal-only"
    argv = ["import", str(release.path), "--out", str(out), "--unnorm-key", "libero_goal", "--no-progress"]
    assert cli_main(argv) == 0
    (out / NORM_TABLE_FILE).unlink()
    check_checkpoint_suites(out, ["libero_goal"])
    with pytest.raises(NormKeyError, match="'libero_goal_no_noops', not for suite 'libero_spatial'"):
        check_checkpoint_suites(out, ["libero_goal", "libero_spatial"])
    check_checkpoint_suites(out, ["libero_spatial"], force=True)
    policy = CogVLAPolicy.from_pretrained(out)
    with pytest.raises(NormKeyError, match="--force-norm-key"):
        policy.use_suite("libero_spatial")
    policy.use_suite("libero_spatial", force=True)
    assert policy.norm_key == "libero_goal_no_noops"


def test_stats_of_a_project_run_name_no_suite(tmp_path):
    policy = CogVLAPolicy.random("tiny")
    policy.use_suite("libero_object")
    assert policy.norm_key == "identity"


def test_import_refuses_an_existing_output(release, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    args = build_parser("import").parse_args(["import", str(release.path), "--out", str(out)])
    with pytest.raises(ImportOutputError, match="already exists"):
        args.run(args)


def test_a_failed_write_leaves_no_output(tmp_path):
    out = tmp_path / "ckpt"
    with pytest.raises(OSError, match="No space left"), staging_folder(out) as staging:
        (staging / "model.safetensors").write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    with staging_folder(out) as staging:
        (staging / "config.json").write_text("{}")
    assert (out / "config.json").is_file()
