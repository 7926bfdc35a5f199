"""``cogvla-client`` installs on its own, without torch, and drives a running server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
from test_ping import ZeroPolicy

from deploy.core import InferenceCore
from deploy.handler import RequestHandler
from deploy.server import ZmqPolicyServer, ZmqServerConfig

CLIENT_DIR = Path(__file__).parents[1] / "clients" / "python"

ROBOT_SCRIPT = """
import importlib.util, json, sys
import numpy as np
from cogvla_client import ActionChunker, ChunkerConfig, PolicyClient
image = np.zeros((224, 224, 3), np.uint8)
obs = {"image": image, "wrist_image": image, "state": np.zeros(8, np.float32), "prompt": "go"}
with PolicyClient(sys.argv[1], timeout_ms=5000) as policy:
    state = policy.wait_ready(timeout_s=30)["state"]
    chunker = ActionChunker(policy, ChunkerConfig(execute_steps=2))
    actions = [chunker.step(obs).tolist() for _ in range(3)]
print(json.dumps({
    "state": state,
    "actions": actions,
    "torch": importlib.util.find_spec("torch") is not None,
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "cogvla", "deploy")),
}))
"""


def test_client_package_installs_without_torch_and_drives_a_server(tmp_path: Path) -> None:
    env_dir = tmp_path / "robot-venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # A copy: building from the checkout would leave build/ and *.egg-info in it.
    source = shutil.copytree(CLIENT_DIR, tmp_path / "client-src")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    core = InferenceCore(ZeroPolicy()).start()
    server = ZmqPolicyServer(RequestHandler(core), ZmqServerConfig(port=0)).start()
    try:
        robot = subprocess.run(
            [str(python), "-c", ROBOT_SCRIPT, server.endpoint], capture_output=True, text=True, timeout=120
        )
    finally:
        server.stop()
        core.stop()
    assert robot.returncode == 0, robot.stderr
    report = json.loads(robot.stdout)
    assert report["torch"] is False and report["modules"] == []
    assert report["state"] == "ready"
    np.testing.assert_array_equal(report["actions"], np.zeros((3, 7)))
    assert core.stats()["served"] == 2, "chunks of 3 rows, 2 executed each: 3 steps need 2 queries"
