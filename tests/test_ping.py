"""``cogvla ping`` as an operator's health check, and ``cogvla serve`` end to end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from cogvla.cli import main
from cogvla.policy_api import Policy
from deploy.client import NotReady, PolicyClient, ServerTimeout
from deploy.core import InferenceCore
from deploy.handler import RequestHandler
from deploy.server import ZmqPolicyServer, ZmqServerConfig


class ZeroPolicy(Policy):
    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        return [np.zeros((3, 7), np.float32) for _ in observations]

    def metadata(self) -> dict[str, Any]:
        return {"name": "zero", "chunk_size": 3, "action_dim": 7, "state_dim": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cogvla(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cogvla.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_ping_prints_metadata_as_json_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    core = InferenceCore(ZeroPolicy()).start()
    server = ZmqPolicyServer(RequestHandler(core, info={"weights": "none"}), ZmqServerConfig(port=0)).start()
    try:
        assert main(["ping", server.endpoint, "--timeout-ms", "2000"]) == 0
    finally:
        server.stop()
        core.stop()
    report = json.loads(capsys.readouterr().out)
    assert report["name"] == "zero" and report["chunk_size"] == 3 and report["weights"] == "none"
    assert report["protocol_version"] == 1 and report["ping"]["queue_depth"] == 0


def test_ping_against_nothing_exits_nonzero_with_a_clear_message() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    result = cogvla("ping", endpoint, "--timeout-ms", "200")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"cogvla ping: no reply from {endpoint} within 200 ms "
        "(server down, unreachable, or refusing this client's key)"
    ]


def test_ping_needs_both_curve_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ping", "tcp://127.0.0.1:1", "--server-key", str(tmp_path / "server.key")]) == 1
    assert "--server-key and --client-key go together" in capsys.readouterr().err


def test_serve_gen_keys_writes_a_usable_key_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--gen-keys", str(tmp_path)]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert Path(paths["server_secret"]).is_file() and Path(paths["client_secret"]).is_file()
    assert Path(paths["client_public"]).parent == tmp_path / "authorized_clients"
    assert oct(os.stat(paths["server_secret"]).st_mode & 0o777) == "0o600"


def test_serve_answers_ping_and_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "cogvla.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        with PolicyClient(endpoint, timeout_ms=300, retries=0) as probe:
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    probe.ping()
                    break
                except ServerTimeout:
                    continue
        result = cogvla("ping", endpoint, "--timeout-ms", "5000", "--wait", "120")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["protocol_version"] == 1 and report["action_dim"] == 7 and report["chunk_size"] >= 1
        assert "weights" in report and report["image_keys"]
    finally:
        log = _stop(server)
    assert server.returncode == 0, log
    assert "received SIGTERM, shutting down" in log and "stopped:" in log


def _stop(server: subprocess.Popen) -> str:
    """SIGTERM a serve process (killed if it hangs) and return what it logged."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        log, _ = server.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        log, _ = server.communicate()
    return log


def test_a_loading_server_answers_ping_loading_and_refuses_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = RequestHandler(None)
    server = ZmqPolicyServer(handler, ZmqServerConfig(port=0)).start()
    core = InferenceCore(ZeroPolicy()).start()
    try:
        with PolicyClient(server.endpoint, timeout_ms=2000, retries=0) as client:
            assert client.ping()["state"] == "loading"
            with pytest.raises(NotReady, match="still loading") as info:
                client.metadata()
            assert info.value.code == "loading"
            assert main(["ping", server.endpoint]) == 3
            assert json.loads(capsys.readouterr().out)["ping"]["state"] == "loading"
            handler.ready(core, {"weights": "none"})
            assert client.ping()["state"] == "ready"
            assert client.metadata()["max_message_bytes"] == ZmqServerConfig().max_message_bytes
            image = np.zeros((224, 224, 3), np.uint8)
            obs = {"image": image, "wrist_image": image, "state": np.zeros(8, np.float32), "prompt": "go"}
            assert client.infer(obs).shape == (3, 7)
    finally:
        server.stop()
        core.stop()


def test_serve_on_a_port_in_use_fails_at_once_in_one_line() -> None:
    taken = zmq.Context.instance().socket(zmq.ROUTER)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        result = cogvla("serve", "--port", str(port))
    finally:
        taken.close(linger=0)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"cogvla serve: error: Address already in use (addr='tcp://127.0.0.1:{port}')"
    )
    assert "Traceback" not in result.stderr and "loading the model" not in result.stderr


def test_serve_reloads_its_allow_list_on_sighup(tmp_path: Path) -> None:
    from deploy.auth import CurveClientKeys, generate_keys

    paths = generate_keys(tmp_path / "keys", clients=("robot",))
    later = generate_keys(tmp_path / "later", clients=("arm",))
    robot = CurveClientKeys.from_files(paths["server_public"], paths["robot_secret"])
    arm = CurveClientKeys.from_files(paths["server_public"], later["arm_secret"])
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cogvla.cli",
            "serve",
            "--port",
            str(port),
            "--curve-dir",
            str(tmp_path / "keys"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with PolicyClient(endpoint, timeout_ms=2000, retries=0, curve=robot) as client:
            assert client.wait_ready(timeout_s=120)["state"] == "ready"
        with PolicyClient(endpoint, timeout_ms=300, retries=0, curve=arm) as client:
            with pytest.raises(ServerTimeout):
                client.ping()
        Path(later["arm_public"]).rename(tmp_path / "keys" / "authorized_clients" / "arm.key")
        server.send_signal(signal.SIGHUP)
        with PolicyClient(endpoint, timeout_ms=2000, retries=2, curve=arm) as client:
            assert client.ping()["state"] == "ready"
    finally:
        log = _stop(server)
    assert server.returncode == 0, log
    assert "SIGHUP: allow-list reloaded, 2 client keys" in log
