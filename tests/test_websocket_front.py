"""openpi-client (the published package) against the WebSocket front on the shared core."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from cogvla.policy_api import Policy
from deploy.client import PolicyClient
from deploy.core import InferenceCore
from deploy.handler import RequestHandler
from deploy.server import ZmqPolicyServer, ZmqServerConfig
from deploy.websocket_front import WebSocketFront, openpi_packb, openpi_unpackb

SIDE = 32

# openpi-client itself calls websockets' connect() outside a context manager.
pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)


class ImageStatsPolicy(Policy):
    """Actions depend on every input, so two transports agree only if they deliver the same obs."""

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        chunks = []
        for obs in observations:
            chunk = np.zeros((5, 7), np.float32)
            chunk[0] = obs["state"][:7]
            chunk[1, 0] = obs["image"].mean() / 255.0
            chunk[1, 1] = obs["wrist_image"].std() / 255.0
            chunk[1, 2] = len(obs["prompt"])
            chunks.append(chunk)
        return chunks

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        return self.infer_batch([obs])[0]

    def metadata(self) -> dict[str, Any]:
        return {
            "name": "image-stats",
            "chunk_size": 5,
            "action_dim": 7,
            "state_dim": 8,
            "image_keys": {"image": [SIDE, SIDE, 3], "wrist_image": [SIDE, SIDE, 3]},
        }


@pytest.fixture(scope="module")
def fronts() -> Iterator[tuple[WebSocketFront, ZmqPolicyServer]]:
    core = InferenceCore(ImageStatsPolicy()).start()
    front = WebSocketFront(core, port=0).start()
    server = ZmqPolicyServer(RequestHandler(core), ZmqServerConfig(port=0)).start()
    try:
        yield front, server
    finally:
        server.stop()
        front.stop()
        core.stop()


def libero_obs(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8),
        "state": rng.standard_normal(8),  # float64, as openpi's LIBERO example sends it
        "prompt": "pick up the black bowl",
    }


def as_openpi(obs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "observation/image": obs["image"],
        "observation/wrist_image": obs["wrist_image"],
        "observation/state": obs["state"],
        "prompt": obs["prompt"],
    }


@contextlib.contextmanager
def openpi_client(front: WebSocketFront) -> Iterator[WebsocketClientPolicy]:
    client = WebsocketClientPolicy("127.0.0.1", front.port)
    try:
        yield client
    finally:
        client._ws.close()


def test_openpi_client_gets_the_same_actions_as_the_zmq_path(fronts: Any) -> None:
    front, server = fronts
    with openpi_client(front) as ws, PolicyClient(server.endpoint, timeout_ms=3000) as zmq_client:
        assert ws.get_server_metadata()["chunk_size"] == 5
        for seed in range(3):
            obs = libero_obs(seed)
            result = ws.infer(as_openpi(obs))
            expected = zmq_client.infer(obs)
            assert result["actions"].dtype == np.float32
            np.testing.assert_array_equal(result["actions"], expected)
            assert set(result["server_timing"]) >= {"infer_ms", "total_ms"}
        assert "prev_total_ms" in result["server_timing"]


def test_project_keys_work_over_websocket_too(fronts: Any) -> None:
    front, _ = fronts
    obs = libero_obs(7)
    with openpi_client(front) as ws:
        np.testing.assert_allclose(ws.infer(obs)["actions"][0], obs["state"][:7].astype(np.float32))


def test_bad_observation_raises_runtime_error_and_connection_survives(fronts: Any) -> None:
    front, _ = fronts
    obs = as_openpi(libero_obs(1))
    with openpi_client(front) as ws:
        with pytest.raises(RuntimeError, match=r"bad_request: obs.image: wrong image dtype"):
            ws.infer({**obs, "observation/image": obs["observation/image"].astype(np.float32)})
        with pytest.raises(RuntimeError, match=r"bad_request: obs.state: .*missing"):
            ws.infer({k: v for k, v in obs.items() if k != "observation/state"})
        assert ws.infer(obs)["actions"].shape == (5, 7)


def test_object_arrays_from_the_wire_are_refused(fronts: Any) -> None:
    front, _ = fronts
    evil = msgpack.packb(
        {"prompt": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}}
    )
    with connect(f"ws://127.0.0.1:{front.port}", compression=None) as conn:
        conn.recv()  # metadata frame
        conn.send(evil)
        reply = conn.recv()
        assert isinstance(reply, str) and reply.startswith("decode_error: array dtype")
        conn.send("text")
        assert conn.recv().startswith("decode_error: expected a binary msgpack frame")


def test_codec_matches_openpi_client_both_ways() -> None:
    value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int16(4), "t": "x"}
    ours = openpi_unpackb(msgpack_numpy.packb(value))
    np.testing.assert_array_equal(ours["a"], value["a"])
    assert ours["s"] == 4 and ours["s"].dtype == np.int16 and ours["t"] == "x"
    theirs = msgpack_numpy.unpackb(openpi_packb(value))
    np.testing.assert_array_equal(theirs["a"], value["a"])


def test_healthz_answers_ok(fronts: Any) -> None:
    front, _ = fronts
    with urllib.request.urlopen(f"http://127.0.0.1:{front.port}/healthz", timeout=5) as response:
        assert response.status == 200 and response.read() == b"OK\n"


def test_client_package_websocket_client_reads_actions_and_refusals(fronts: Any) -> None:
    from cogvla_client.websocket_client import WebSocketPolicyClient, WebSocketRefusal

    front, _ = fronts
    obs = libero_obs(1)
    with WebSocketPolicyClient(f"ws://127.0.0.1:{front.port}") as policy:
        assert policy.metadata()["chunk_size"] == 5
        actions = policy.infer(obs)
        assert actions.shape == (5, 7) and actions.dtype == np.float32
        with pytest.raises(WebSocketRefusal, match="obs.image: wrong image dtype") as info:
            policy.infer({**obs, "image": obs["image"].astype(np.float32)})
        assert info.value.code == "bad_request"
        assert policy.infer(obs).shape == (5, 7), "the connection survives a refusal"
