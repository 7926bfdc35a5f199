"""``cogvla eval libero --policy tcp://...`` pings the server before any episode runs."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest
from test_ping import ZeroPolicy

from cogvla.cli import main
from deploy.core import InferenceCore
from deploy.handler import RequestHandler
from deploy.server import ZmqPolicyServer, ZmqServerConfig
from eval.policies import PolicySpecError, check_policy_spec


def dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_a_dead_address_is_refused_before_any_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = dead_endpoint()
    with pytest.raises(PolicySpecError, match=f"{endpoint} is not a ready policy server .*no reply"):
        check_policy_spec(endpoint)
    with caplog.at_level(logging.ERROR):
        code = main(["eval", "libero", "--policy", endpoint, "--trials", "1", "--out", str(tmp_path / "run")])
    assert code != 0
    assert f"cogvla ping {endpoint}" in caplog.text
    assert not (tmp_path / "run").exists(), "no episode may start against a dead server"


def test_a_loading_server_is_waited_for_then_accepted() -> None:
    handler = RequestHandler(None)
    server = ZmqPolicyServer(handler, ZmqServerConfig(port=0)).start()
    core = InferenceCore(ZeroPolicy()).start()
    loaded = threading.Timer(1.0, handler.ready, args=(core,))
    loaded.start()
    try:
        assert check_policy_spec(server.endpoint) == server.endpoint
        assert handler.core is core
    finally:
        loaded.cancel()
        server.stop()
        core.stop()
