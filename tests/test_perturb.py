"""LIBERO-PRO perturbations: the rewritten BDDL, the perturbed env and the robustness table.

The BDDL and harness tests need no simulator (the harness runs a fake env); one LIBERO
test builds each kind's env once and resets it (physics only: no camera is read).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from envs.perturb import PERTURBATIONS, Perturbation, PerturbError, parse_perturbations, perturb_task
from envs.suites import get_task
from eval.libero.config import EvalConfig
from eval.libero.episode import EnvSpec
from eval.libero.harness import run_eval

SUITE = "libero_spatial"
# The BDDL field each kind must change (see envs.perturb._fields).
CHANGED_FIELD = {
    "language": "language",
    "object": "objects",
    "position": "placements",
    "environment": "fixtures",
    "task": "goal",
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COGVLA_CACHE", str(tmp_path / "cache"))


def test_perturbation_names_are_checked():
    assert parse_perturbations(" language,task ") == ("language", "task")
    with pytest.raises(PerturbError, match="perturb: expected names from"):
        parse_perturbations("language,lighting")
    with pytest.raises(PerturbError, match="each name once"):
        parse_perturbations("task,task")
    with pytest.raises(ValueError, match="perturb: expected names"):
        EvalConfig(out="x", policy="oracle", perturb=("camera",))


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_each_kind_rewrites_its_part_of_the_bddl_and_repeats_with_its_seed(kind):
    task = get_task(SUITE, 0)
    variant = perturb_task(task, Perturbation(kind, seed=7))
    assert CHANGED_FIELD[kind] in variant.changes
    assert Path(variant.bddl_file).read_text() != Path(task.bddl_file).read_text()
    assert perturb_task(task, Perturbation(kind, seed=7)) == variant
    record = variant.record()
    assert (record["kind"], record["seed"]) == (kind, 7)
    json.dumps(record)
    if kind in ("language", "task"):
        assert variant.language != task.language
    else:
        assert variant.language == task.language


class FakeEnv:
    """Succeeds at once on the nominal task and the language variant, never otherwise;
    refuses a fixed init state for a variant that changes the scene, as LiberoEnv does."""

    def __init__(self, spec: EnvSpec) -> None:
        self.kind = spec.perturbation.kind if spec.perturbation else None
        self.perturbed = (
            perturb_task(get_task(spec.suite, spec.task_id), spec.perturbation) if self.kind else None
        )

    def _obs(self):
        image = np.zeros((8, 8, 3), np.uint8)
        return {"image": image, "wrist_image": image, "state": np.zeros(8, np.float32), "prompt": "fake"}

    def reset(self, *, seed=None, options=None):
        if self.perturbed is not None and self.perturbed.perturbation.changes_scene:
            assert options.get("randomize") is True
        return self._obs(), {}

    def step(self, action):
        success = self.kind in (None, "language")
        return self._obs(), float(success), success, False, {}

    def close(self):
        pass


class ZeroPolicy:
    def reset(self):
        pass

    def infer(self, obs):
        return np.zeros((4, 7), np.float32)


def zero_policy(spec):
    return ZeroPolicy()


def test_harness_rates_each_variant_apart_and_draws_the_table(tmp_path):
    config = EvalConfig(
        out=str(tmp_path / "run"),
        policy="fake",
        tasks=(0,),
        trials=2,
        max_steps=3,
        num_wait_steps=0,
        perturb=("language", "position"),
    )
    summary = run_eval(config, env_factory=FakeEnv, policy_factory=zero_policy)

    records = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    by_key = {r["key"]: r for r in records}
    assert sorted(by_key) == sorted(
        f"{SUITE}/0/{i}{suffix}" for i in (0, 1) for suffix in ("", "/language", "/position")
    )
    assert by_key[f"{SUITE}/0/1/position"]["perturbation"]["kind"] == "position"
    assert by_key[f"{SUITE}/0/1/position"]["init_state_id"] is None
    assert by_key[f"{SUITE}/0/1/language"]["init_state_id"] == 1
    assert by_key[f"{SUITE}/0/0"]["perturbation"] is None

    table = summary["robustness"]
    assert table["variants"] == ["nominal", "language", "position"]
    (row,) = table["per_task"]
    assert [row[v]["successes"] for v in table["variants"]] == [2, 2, 0]
    assert [t.get("perturbation") for t in summary["per_task"]] == [None, "language", "position"]
    assert (tmp_path / "run" / table["plot"]).stat().st_size > 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["perturb"] == ["language", "position"]


@pytest.mark.libero
def test_a_perturbed_reset_of_each_kind_gives_a_valid_observation():
    from envs.libero_env import LiberoEnv

    for kind in PERTURBATIONS:
        env = LiberoEnv(SUITE, 0, image_size=32, fast_render=True, perturbation=Perturbation(kind, seed=7))
        try:
            options = (
                {"randomize": True} if env.perturbed.perturbation.changes_scene else {"init_state_id": 0}
            )
            obs, _ = env.reset(seed=7, options={**options, "lazy_images": True})
            assert obs["state"].shape == (8,) and np.isfinite(obs["state"]).all(), kind
            assert obs["prompt"] == env.perturbed.language, kind
            assert env.perturbed.record()["kind"] == kind
            assert not env.check_success(), kind
            if kind in ("object", "environment"):
                names = env.raw_env.env.sim.model.body_names
                expected = {"object": "yellow_plate_1", "environment": "living_room_table"}[kind]
                assert any(expected in name for name in names), (kind, names)
            if env.perturbed.perturbation.changes_scene:
                with pytest.raises(ValueError, match="changes the scene"):
                    env.reset(options={"init_state_id": 0})
        finally:
            env.close()
