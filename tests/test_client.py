"""PolicyClient: real timeouts, Lazy Pirate retries, typed errors, no torch on the robot side."""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from cogvla.policy_api import Policy
from deploy.client import (
    BadRequest,
    DeadlineExceeded,
    MalformedReply,
    NotReady,
    Overloaded,
    PolicyClient,
    ProtocolMismatch,
    ServerError,
    ServerTimeout,
    UnknownEndpoint,
)
from deploy.protocol import decode, encode

# Reply function of a scripted server: (request, index of the request) -> payload or None (drop it).
Script = Callable[[dict[str, Any], int], bytes | None]


def ok(request: dict[str, Any], result: dict[str, Any], version: int = 1) -> bytes:
    return encode(
        {
            "v": version,
            "id": request.get("id"),
            "endpoint": request["endpoint"],
            "status": "ok",
            "result": result,
        }
    )


def error(request: dict[str, Any], code: str) -> bytes:
    return encode(
        {
            "v": 1,
            "id": request.get("id"),
            "endpoint": request["endpoint"],
            "status": "error",
            "error": {
                "code": code,
                "message": f"scripted {code}",
                "field": "f",
                "expected": "e",
                "actual": "a",
            },
        }
    )


@contextlib.contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """A ROUTER that answers with ``script``; yields its endpoint."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def loop() -> None:
        index = 0
        while not stop.is_set():
            if not sock.poll(50):
                continue
            frames = sock.recv_multipart()
            reply = script(decode(frames[-1]), index)
            index += 1
            if reply is not None:
                sock.send_multipart([*frames[:-1], reply])

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(2)
        sock.close()


@contextlib.contextmanager
def client_of(script: Script, **options: Any) -> Iterator[PolicyClient]:
    """A ``PolicyClient`` of a scripted server, with a 1 s timeout unless ``options`` say otherwise."""
    with (
        scripted_server(script) as endpoint,
        PolicyClient(endpoint, **{"timeout_ms": 1000, **options}) as client,
    ):
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_timeout_fires_against_a_dead_server_within_budget() -> None:
    budget_ms, retries = 200, 1
    client = PolicyClient(f"127.0.0.1:{free_port()}", timeout_ms=budget_ms, retries=retries)
    started = time.monotonic()
    with pytest.raises(ServerTimeout, match=r"no reply from tcp://127\.0\.0\.1:\d+ to 'ping' within 200 ms"):
        client.ping()
    # generous bound: proves the wait is bounded, not how precise it is
    assert time.monotonic() - started < 5 * budget_ms * (retries + 1) / 1000.0
    client.close()


def test_timeout_fires_against_a_server_that_never_answers() -> None:
    with scripted_server(lambda request, index: None) as endpoint:
        client = PolicyClient(endpoint, timeout_ms=150, retries=2)
        started = time.monotonic()
        with pytest.raises(ServerTimeout, match="3 attempts"):
            client.metadata()
        assert time.monotonic() - started < 5 * 0.150 * 3
        assert isinstance(ServerTimeout("x"), TimeoutError)


def test_lazy_pirate_retry_on_a_fresh_socket_recovers(caplog: pytest.LogCaptureFixture) -> None:
    chunk = np.arange(14, dtype=np.float32).reshape(2, 7)
    seen_ids: list[Any] = []

    def drop_first(request: dict[str, Any], index: int) -> bytes | None:
        seen_ids.append(request["id"])
        return None if index == 0 else ok(request, {"actions": chunk, "timing": {"total_ms": 1.0}})

    with (
        caplog.at_level(logging.WARNING, logger="cogvla_client.client"),
        client_of(drop_first, timeout_ms=200, retries=1) as client,
    ):
        actions = client.infer({"state": np.zeros(8, np.float32)})
        assert client.last_timing is not None and client.last_timing["attempts"] == 2.0
    assert [r.getMessage() for r in caplog.records] == [
        f"no reply from {client.endpoint} to infer within 200 ms (attempt 1/2)"
    ]
    np.testing.assert_array_equal(actions, chunk)
    assert actions.dtype == np.float32 and actions.flags.writeable
    assert seen_ids == [1, 1]


def test_reply_with_another_protocol_version_raises_protocol_mismatch() -> None:
    with scripted_server(lambda request, index: ok(request, {}, version=2)) as endpoint:
        with (
            PolicyClient(endpoint, timeout_ms=1000) as client,
            pytest.raises(
                ProtocolMismatch, match="server replied with protocol version 2, this client speaks 1"
            ),
        ):
            client.ping()


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        ("bad_request", BadRequest),
        ("decode_error", BadRequest),
        ("unknown_endpoint", UnknownEndpoint),
        ("overloaded", Overloaded),
        ("deadline_exceeded", DeadlineExceeded),
        ("version_mismatch", ProtocolMismatch),
        ("loading", NotReady),
        ("internal_error", ServerError),
    ],
)
def test_error_codes_raise_typed_exceptions(code: str, exc_type: type[ServerError]) -> None:
    with scripted_server(lambda request, index: error(request, code)) as endpoint:
        with (
            PolicyClient(endpoint, timeout_ms=1000) as client,
            pytest.raises(exc_type, match=f"scripted {code}") as info,
        ):
            client.ping()
    assert info.value.code == code
    assert (info.value.field, info.value.expected, info.value.actual) == ("f", "e", "a")


def test_bad_request_is_a_value_error() -> None:
    assert issubclass(BadRequest, ValueError) and issubclass(BadRequest, ServerError)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (lambda r: b"\xc1\xc1", "undecodable reply"),
        (lambda r: encode([1]), "is a list, expected a map"),
        (lambda r: encode({"v": 1, "id": r["id"], "status": "maybe"}), "neither status 'ok'"),
        (lambda r: encode({"v": 1, "id": r["id"], "status": "ok", "result": [1]}), "neither status 'ok'"),
        (lambda r: encode({"v": 1, "id": 999, "status": "ok", "result": {}}), "does not match request id"),
    ],
    ids=["garbage", "list", "status", "result", "id"],
)
def test_malformed_replies_raise_malformed_reply(
    reply: Callable[[dict[str, Any]], bytes], match: str
) -> None:
    with scripted_server(lambda request, index: reply(request)) as endpoint:
        with PolicyClient(endpoint, timeout_ms=1000) as client, pytest.raises(MalformedReply, match=match):
            client.ping()


def test_invalid_action_chunk_from_server_is_refused() -> None:
    bad = np.zeros((2, 5), np.float32)
    with scripted_server(lambda request, index: ok(request, {"actions": bad})) as endpoint:
        with (
            PolicyClient(endpoint, timeout_ms=1000) as client,
            pytest.raises(ValueError, match=r"\(chunk>=1, 7\)"),
        ):
            client.infer({})


def test_client_is_a_policy_with_a_stable_session() -> None:
    client = PolicyClient("tcp://127.0.0.1:1", timeout_ms=100)
    assert isinstance(client, Policy)
    assert client.session != PolicyClient("tcp://127.0.0.1:1").session
    assert PolicyClient("127.0.0.1:1", session="arm-2").session == "arm-2"
    with pytest.raises(ValueError, match="timeout_ms: expected > 0, got 0"):
        PolicyClient("tcp://127.0.0.1:1", timeout_ms=0)
    with pytest.raises(ValueError, match="retries: expected >= 0, got -1"):
        PolicyClient("tcp://127.0.0.1:1", retries=-1)
    assert PolicyClient("tcp://127.0.0.1:1", retries=0).retries == 0
    assert PolicyClient("tcp://127.0.0.1:1", timeout_ms=1).timeout_ms == 1


def test_defaults_are_a_two_second_timeout_two_retries_and_one_ping_a_second() -> None:
    client = PolicyClient("tcp://127.0.0.1:1")
    assert (client.timeout_ms, client.retries, client.deadline_ms) == (2000, 2, None)
    assert inspect.signature(PolicyClient.wait_ready).parameters["poll_s"].default == 1.0


@pytest.mark.parametrize(
    ("given", "address"),
    [
        ("127.0.0.1:5555", "tcp://127.0.0.1:5555"),
        ("tcp://robot-pc:1", "tcp://robot-pc:1"),
        ("tcp://[::1]:65535", "tcp://[::1]:65535"),
        ("ipc:///tmp/cogvla.sock", "ipc:///tmp/cogvla.sock"),
    ],
)
def test_endpoints_become_zeromq_addresses(given: str, address: str) -> None:
    assert PolicyClient(given).endpoint == address


@pytest.mark.parametrize(
    "given", ["127.0.0.1", ":5555", "tcp://host:0", "tcp://host:65536", "tcp://host:-1", "h:80a"]
)
def test_an_endpoint_without_host_or_valid_port_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match=rf"endpoint: expected tcp://HOST:PORT .*got '{re.escape(given)}'"):
        PolicyClient(given)


def test_requests_carry_increasing_ids_the_session_and_the_deadline() -> None:
    seen: list[dict[str, Any]] = []

    def answer(request: dict[str, Any], index: int) -> bytes:
        seen.append(request)
        result = {"actions": np.zeros((2, 7), np.float32), "timing": {"total_ms": 4}}
        return ok(request, result if request["endpoint"] == "infer" else {})

    with client_of(answer, session="arm-1", deadline_ms=250.0) as client:
        client.reset()
        started = time.perf_counter()
        client.infer({"state": np.zeros(8, np.float32)})
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        timing = client.last_timing
    assert [(r["endpoint"], r["id"], r["session"]) for r in seen] == [
        ("reset", 1, "arm-1"),
        ("infer", 2, "arm-1"),
    ]
    assert "deadline_ms" not in seen[0] and seen[1]["deadline_ms"] == 250.0
    assert timing is not None and timing["total_ms"] == 4.0 and timing["attempts"] == 1.0
    # Milliseconds: the round trip is most of the call, which contains all of it.
    assert elapsed_ms >= timing["client_total_ms"] >= timing["round_trip_ms"] > elapsed_ms / 100
    for stage in ("client_encode_ms", "client_decode_ms"):
        assert 0 < timing[stage] < timing["client_total_ms"]


def test_metadata_is_fetched_once_and_handed_out_as_a_copy() -> None:
    asked: list[int] = []

    def answer(request: dict[str, Any], index: int) -> bytes:
        asked.append(index)
        return ok(request, {"chunk": 8})

    with client_of(answer) as client:
        first = client.metadata()
        first["chunk"] = 0
        assert client.metadata() == {"chunk": 8}
    assert asked == [0]


def test_wait_ready_pings_until_the_model_is_loaded() -> None:
    states = ["loading", "loading", "ready"]
    with client_of(lambda request, index: ok(request, {"state": states[index]})) as client:
        assert client.wait_ready(timeout_s=10, poll_s=0.01) == {"state": "ready"}
    # A server that says nothing of its state is ready.
    with client_of(lambda request, index: ok(request, {"uptime_s": 1.0})) as client:
        assert client.wait_ready(timeout_s=0)["uptime_s"] == 1.0


def test_wait_ready_gives_up_on_a_server_still_loading() -> None:
    pings: list[int] = []

    def loading(request: dict[str, Any], index: int) -> bytes:
        pings.append(index)
        return ok(request, {"state": "loading"})

    with (
        client_of(loading) as client,
        pytest.raises(NotReady, match="still loading its model after 0.2 s") as info,
    ):
        client.wait_ready(timeout_s=0.2, poll_s=0.05)
    assert info.value.code == "loading"
    # One ping per poll interval, not a busy loop.
    assert 1 <= len(pings) <= 10


def test_robot_side_modules_do_not_import_torch() -> None:
    code = (
        "import sys; import deploy.client, deploy.chunker, deploy.robot_loop, deploy.protocol; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
