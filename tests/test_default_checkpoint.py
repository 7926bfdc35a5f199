"""The checkpoints shipped inside the package load, act, and each carries its protocol and card."""

import json

import numpy as np
import pytest

from cogvla.paths import DEFAULTS_DIR, default_checkpoints, default_folder_name
from envs.suites import num_tasks
from eval.cli import EVAL_PROTOCOL_FILE, checkpoint_eval_defaults

SHIPPED = sorted(set(default_checkpoints().values()))
pytestmark = pytest.mark.skipif(not SHIPPED, reason="no embedded checkpoint")


def _observation(side: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        "state": rng.normal(size=8).astype(np.float32),
        "prompt": "pick up the black bowl between the plate and the ramekin and place it on the plate",
    }


def test_the_defaults_cover_whole_libero_spatial_and_libero_object():
    covered = default_checkpoints()
    assert {"libero_spatial", "libero_object"} <= set(covered)
    for folder in set(covered.values()):
        protocol = checkpoint_eval_defaults(str(folder))
        for suite in protocol["suites"]:
            assert protocol["tasks"] in (None, list(range(num_tasks(suite))))
    assert sorted(path.name for path in DEFAULTS_DIR.iterdir()) == sorted(folder.name for folder in SHIPPED)


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda folder: folder.name)
def test_shipped_checkpoint_gives_finite_chunks_in_robot_units(folder):
    from cogvla.policy import CogVLAPolicy

    policy = CogVLAPolicy.from_pretrained(folder)
    meta = policy.metadata()
    assert not meta["random_weights"]
    actions = policy.infer(_observation(meta["image_keys"]["image"][0]))
    assert actions.shape == (meta["chunk_size"], meta["action_dim"])
    assert actions.dtype == np.float32
    assert np.isfinite(actions).all()
    assert set(np.unique(actions[:, -1])) <= {-1.0, 1.0}


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda folder: folder.name)
def test_shipped_checkpoint_carries_its_eval_protocol_and_card(folder):
    defaults = checkpoint_eval_defaults(str(folder))
    assert defaults == json.loads((folder / EVAL_PROTOCOL_FILE).read_text())
    assert folder.name == default_folder_name(defaults["suites"])
    card = (folder / "README.md").read_text()
    assert card.startswith(f"# Embedded default policy of {', '.join(f'`{s}`' for s in defaults['suites'])}")
    measured = card.split("## Measured success\n", 1)[1]
    assert "Not evaluated yet" not in measured
    for suite in defaults["suites"]:
        table = measured.split(f"### {suite}\n", 1)[1].split("\n\n", 1)[0]
        assert "95% Wilson" in table
        cells = [row.split(" | ") for row in table.splitlines()[2:]]
        assert [row[0] for row in cells] == [f"| {task}" for task in range(num_tasks(suite))]
        assert all(row[1].endswith("/50") for row in cells)
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert size <= 20 * 1024 * 1024
