"""ZeroMQ server: typed errors, robustness, routing under concurrency, batching, CURVE, recording."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from cogvla.policy_api import Policy
from deploy.auth import CurveClientKeys, CurveServerKeys, generate_keys
from deploy.client import PolicyClient, ServerTimeout
from deploy.core import BatchingConfig, InferenceCore, InferenceJob, InferenceOutcome
from deploy.handler import RequestHandler
from deploy.protocol import decode, encode, encode_frames
from deploy.recorder import Recorder, iter_records, replay
from deploy.server import ZmqPolicyServer, ZmqServerConfig

SIDE = 16
CHUNK = 4


class EchoPolicy(Policy):
    """Row 0 of the chunk repeats the state, so each reply shows which request caused it."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.running = threading.Event()

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        self.batches.append(len(observations))
        self.running.set()
        if self.delay_s:
            time.sleep(self.delay_s)
        chunks = []
        for obs in observations:
            if obs["prompt"] == "boom":
                raise RuntimeError("the model exploded")
            chunk = np.zeros((CHUNK, 7), np.float32)
            chunk[0] = obs["state"][:7]
            if obs["prompt"] == "nan":
                chunk[1, 1] = np.nan
            chunks.append(chunk)
        return chunks

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        return self.infer_batch([obs])[0]

    def metadata(self) -> dict[str, Any]:
        shape = [SIDE, SIDE, 3]
        return {
            "name": "echo",
            "chunk_size": CHUNK,
            "action_dim": 7,
            "state_dim": 8,
            "image_keys": {"image": shape, "wrist_image": shape},
        }


def make_obs(*values: float, prompt: str = "put the bowl on the plate") -> dict[str, Any]:
    state = np.zeros(8, np.float32)
    state[: len(values)] = values
    image = np.full((SIDE, SIDE, 3), 7, np.uint8)
    return {"image": image, "wrist_image": image.copy(), "state": state, "prompt": prompt}


@contextlib.contextmanager
def serving(
    policy: Policy,
    *,
    recorder: Recorder | None = None,
    curve: CurveServerKeys | None = None,
    max_message_bytes: int = 8 << 20,
    **batching: Any,
) -> Iterator[tuple[ZmqPolicyServer, InferenceCore]]:
    core = InferenceCore(policy, BatchingConfig(**batching)).start()
    config = ZmqServerConfig(port=0, max_message_bytes=max_message_bytes, curve=curve)
    server = ZmqPolicyServer(RequestHandler(core, recorder=recorder), config).start()
    try:
        yield server, core
    finally:
        server.stop()
        core.stop()


def raw_call(
    endpoint: str,
    payload: bytes | list[bytes],
    timeout_ms: int = 2000,
    decoder: Callable[[bytes], Any] = decode,
) -> dict[str, Any] | None:
    """Send raw bytes (or frames) on a fresh REQ socket; the reply read by ``decoder``, or None on
    timeout."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(payload if isinstance(payload, list) else [payload])
        if not sock.poll(timeout_ms):
            return None
        return decoder(sock.recv())
    finally:
        sock.close()


def infer_payload(obs: Any, **extra: Any) -> bytes:
    return encode({"v": 1, "endpoint": "infer", "id": 1, "obs": obs, **extra})


BAD_REQUESTS = {
    "truncated_msgpack": (infer_payload(make_obs())[:-20], "decode_error", "payload", None),
    "not_a_map": (encode([1, 2]), "decode_error", "payload", None),
    "wrong_dtype": (
        infer_payload({**make_obs(), "image": np.zeros((SIDE, SIDE, 3), np.float32)}),
        "bad_request",
        "obs.image",
        "float32",
    ),
    "wrong_image_shape": (
        infer_payload({**make_obs(), "image": np.zeros((SIDE, SIDE, 4), np.uint8)}),
        "bad_request",
        "obs.image",
        "(16, 16, 4)",
    ),
    "missing_key": (
        infer_payload({k: v for k, v in make_obs().items() if k != "wrist_image"}),
        "bad_request",
        "obs.wrist_image",
        "missing",
    ),
    "unknown_obs_key": (infer_payload({**make_obs(), "depth": 1}), "bad_request", "obs.depth", "'depth'"),
    "unknown_endpoint": (encode({"v": 1, "endpoint": "act"}), "unknown_endpoint", "endpoint", "'act'"),
    "nan_state": (infer_payload(make_obs(np.nan, 1.0)), "bad_request", "obs.state", "1 NaN/inf"),
    "state_shape": (
        infer_payload({**make_obs(), "state": np.zeros(3, np.float32)}),
        "bad_request",
        "obs.state",
        "(3,)",
    ),
    "empty_prompt": (infer_payload(make_obs(prompt=" ")), "bad_request", "obs.prompt", "1 chars"),
    "missing_obs": (encode({"v": 1, "endpoint": "infer"}), "bad_request", "obs", "missing"),
    "bad_deadline": (infer_payload(make_obs(), deadline_ms=-5), "bad_request", "deadline_ms", "-5"),
    "bad_session": (encode({"v": 1, "endpoint": "ping", "session": 3}), "bad_request", "session", "3"),
    "version_mismatch": (encode({"v": 2, "endpoint": "ping"}), "version_mismatch", "v", "2"),
    "missing_version": (encode({"endpoint": "ping"}), "version_mismatch", "v", "None"),
    "bad_id": (encode({"v": 1, "endpoint": "ping", "id": [1]}), "bad_request", "id", "list"),
    "attachment_out_of_range": (
        [
            encode_frames({"v": 1, "endpoint": "infer", "obs": make_obs()}, min_bytes=0)[0],
            b"\0" * (SIDE * SIDE * 3),
        ],
        "decode_error",
        "obs.wrist_image.attachment",
        "1",
    ),
    "attachment_too_short": (
        [*encode_frames({"v": 1, "endpoint": "infer", "obs": make_obs()}, min_bytes=0)[:3], b"\0" * 16],
        "decode_error",
        "obs.state.data",
        "16 bytes",
    ),
    "unnamed_attachment": ([infer_payload(make_obs()), b"extra"], "decode_error", "frames", "0 named"),
    "big_endian_array": (
        encode(
            {
                "v": 1,
                "endpoint": "infer",
                "obs": {"state": {"__ndarray__": True, "dtype": ">f4", "shape": [8], "data": b"\0" * 32}},
            }
        ),
        "decode_error",
        "obs.state.dtype",
        "'>f4'",
    ),
    "false_array_marker": (
        infer_payload(
            {**make_obs(), "state": {"__ndarray__": False, "dtype": "<f4", "shape": [8], "data": b"\0" * 32}}
        ),
        "decode_error",
        "obs.state.__ndarray__",
        "False",
    ),
}


@pytest.fixture(scope="module")
def echo_server() -> Iterator[tuple[ZmqPolicyServer, InferenceCore]]:
    with serving(EchoPolicy()) as served:
        yield served


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_typed_error_then_good_request_works(echo_server: Any, case: str) -> None:
    server, _ = echo_server
    payload, code, field, actual = BAD_REQUESTS[case]
    reply = raw_call(server.endpoint, payload)
    assert reply is not None and reply["status"] == "error" and reply["v"] == 1
    assert reply["error"]["code"] == code
    assert reply["error"]["field"] == field
    if actual is not None:
        assert actual in reply["error"]["actual"]
    assert reply["error"]["message"]
    # The reply names the endpoint whenever the request's envelope could be read.
    try:
        sent = msgpack.unpackb(payload[0] if isinstance(payload, list) else payload)
    except (ValueError, msgpack.UnpackException):
        sent = None
    assert reply["endpoint"] == (sent.get("endpoint") if isinstance(sent, dict) else None)
    with PolicyClient(server.endpoint, timeout_ms=2000) as client:
        np.testing.assert_array_equal(client.infer(make_obs(3.0, 4.0))[0, :2], [3.0, 4.0])


def test_large_images_travel_as_attachments_to_the_right_arrays(echo_server: Any) -> None:
    server, _ = echo_server
    obs = make_obs(1.0, 2.0)
    obs["image"] = np.zeros((128, 128, 3), np.uint8)
    obs["wrist_image"] = np.ones((96, 96, 3), np.uint8)
    frames = encode_frames({"v": 1, "endpoint": "infer", "id": 9, "obs": obs})
    assert len(frames) == 3, "both cameras are attachments"
    reply = raw_call(server.endpoint, [bytes(frame) for frame in frames])
    assert reply is not None and reply["status"] == "ok" and reply["id"] == 9
    np.testing.assert_array_equal(reply["result"]["actions"][0, :2], [1.0, 2.0])
    # The wrist image is the second attachment: swapping the frames swaps the shapes the server sees.
    swapped = [bytes(frames[0]), bytes(frames[2]), bytes(frames[1])]
    assert raw_call(server.endpoint, swapped)["error"]["field"] == "obs.image.data"
    with PolicyClient(server.endpoint, timeout_ms=2000) as client:
        np.testing.assert_array_equal(client.infer(obs)[0, :2], [1.0, 2.0])


def test_dealer_frames_with_and_without_delimiter(echo_server: Any) -> None:
    server, _ = echo_server
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        sock.send_multipart([b"", encode({"v": 1, "endpoint": "ping", "id": "a"})])
        assert sock.poll(2000)
        frames = sock.recv_multipart()
        assert frames[0] == b"" and decode(frames[1])["id"] == "a"
        sock.send_multipart([encode({"v": 1, "endpoint": "ping", "id": "b"})])
        assert sock.poll(2000)
        assert decode(sock.recv_multipart()[0])["id"] == "b"
        for frames in ([b"", b"x", b"y"], [b""]):  # a stray frame; a delimiter and nothing after it
            sock.send_multipart(frames)
            assert sock.poll(2000)
            error = decode(sock.recv_multipart()[1])["error"]
            assert error["code"] == "decode_error" and error["field"] == "frames"
    finally:
        sock.close()


def test_oversized_message_is_refused_without_harm() -> None:
    with serving(EchoPolicy(), max_message_bytes=64 * 1024) as (server, _):
        big = {**make_obs(), "image": np.zeros((200, 200, 3), np.uint8)}
        with PolicyClient(server.endpoint, timeout_ms=2000) as other:
            assert raw_call(server.endpoint, infer_payload(big), timeout_ms=300) is None
            np.testing.assert_array_equal(other.infer(make_obs(5.0))[0, 0], 5.0)
        with PolicyClient(server.endpoint, timeout_ms=2000) as again:
            np.testing.assert_array_equal(again.infer(make_obs(6.0))[0, 0], 6.0)


def test_client_vanishing_mid_request_costs_nothing() -> None:
    policy = EchoPolicy(delay_s=0.1)
    with serving(policy) as (server, core):
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.connect(server.endpoint)
        sock.send(infer_payload(make_obs(1.0)))
        assert policy.running.wait(5)  # the request is being computed...
        sock.close(linger=0)  # ...when its client goes away
        with PolicyClient(server.endpoint, timeout_ms=3000) as client:
            np.testing.assert_array_equal(client.infer(make_obs(2.0))[0, 0], 2.0)
            assert client.ping()["protocol_version"] == 1
        stats = core.stats()
        assert (stats["served"], stats["failed"]) == (2, 0)


def test_eight_clients_200_requests_each_reach_the_right_client() -> None:
    clients, requests = 8, 200
    with serving(EchoPolicy(), max_batch=8) as (server, core):
        errors: list[str] = []
        counts = [0] * clients

        def robot(index: int) -> None:
            with PolicyClient(server.endpoint, timeout_ms=5000, retries=0) as client:
                for seq in range(requests):
                    row = client.infer(make_obs(float(index), float(seq)))[0]
                    if (row[0], row[1]) != (index, seq):
                        errors.append(f"client {index} request {seq} got {row[:2]}")
                    counts[index] += 1

        threads = [threading.Thread(target=robot, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert counts == [requests] * clients
        assert core.stats()["served"] == clients * requests


def test_full_queue_answers_overloaded_at_once() -> None:
    with serving(EchoPolicy(delay_s=0.3), max_batch=1, max_queue=2) as (server, core):
        context = zmq.Context.instance()
        socks = [context.socket(zmq.DEALER) for _ in range(6)]
        try:
            for sock in socks:  # connect everyone first so that the six requests arrive together
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(server.endpoint)
                sock.send_multipart([b"", encode({"v": 1, "endpoint": "ping"})])
            for sock in socks:
                assert sock.poll(5000)
                sock.recv_multipart()
            for i, sock in enumerate(socks):
                sock.send_multipart([b"", infer_payload(make_obs(float(i)), session=f"s{i}")])
            codes = []
            for sock in socks:
                assert sock.poll(5000)
                reply = decode(sock.recv_multipart()[1])
                codes.append(reply["error"]["code"] if reply["status"] == "error" else "ok")
        finally:
            for sock in socks:
                sock.close()
        assert "overloaded" in codes and "ok" in codes
        assert set(codes) == {"ok", "overloaded"}
        assert core.stats()["overloaded"] == codes.count("overloaded")


def test_expired_request_gets_deadline_exceeded_and_is_not_computed() -> None:
    policy = EchoPolicy(delay_s=0.3)
    with serving(policy, max_batch=1) as (server, core):
        with (
            PolicyClient(server.endpoint, timeout_ms=3000) as busy,
            PolicyClient(server.endpoint, timeout_ms=3000, deadline_ms=50) as hurried,
        ):
            blocker = threading.Thread(target=busy.infer, args=(make_obs(1.0),))
            blocker.start()
            assert policy.running.wait(5)
            with pytest.raises(Exception, match=r"\[deadline_exceeded\]") as info:
                hurried.infer(make_obs(2.0))
            assert info.value.code == "deadline_exceeded"
            blocker.join()
        assert core.stats()["expired"] == 1
        assert policy.batches == [1]


def test_policy_failure_is_internal_error_and_server_survives(echo_server: Any) -> None:
    server, _ = echo_server
    with PolicyClient(server.endpoint, timeout_ms=2000) as client:
        with pytest.raises(Exception, match=r"internal_error.*the model exploded"):
            client.infer(make_obs(prompt="boom"))
        with pytest.raises(Exception, match=r"internal_error.*invalid action chunk"):
            client.infer(make_obs(prompt="nan"))
        np.testing.assert_array_equal(client.infer(make_obs(9.0))[0, 0], 9.0)


def test_concurrent_clients_share_forward_passes() -> None:
    policy = EchoPolicy(delay_s=0.05)
    with serving(policy, max_batch=8, max_wait_ms=20) as (server, _):

        def robot(index: int) -> None:
            with PolicyClient(server.endpoint, timeout_ms=5000) as client:
                for seq in range(5):
                    client.infer(make_obs(float(index), float(seq)))

        threads = [threading.Thread(target=robot, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sum(policy.batches) == 20
    assert max(policy.batches) > 1


def test_lone_client_never_waits_for_batch_companions() -> None:
    # With a 60 s batching window, any wait for companions would blow the 2 s client timeout.
    with serving(EchoPolicy(), max_batch=8, max_wait_ms=60_000) as (server, _):
        with PolicyClient(server.endpoint, timeout_ms=2000, retries=0) as client:
            for seq in range(5):
                assert client.infer(make_obs(float(seq)))[0, 0] == seq
            assert client.last_timing is not None and client.last_timing["batch_size"] == 1


def test_a_client_whose_next_request_is_far_off_is_not_waited_for() -> None:
    # Robot A asks once a second; B's requests come just after one of A's, so A's next is
    # due long after any batching wait would end and B must never sit out the window.
    with serving(EchoPolicy(), max_batch=8, max_wait_ms=300, activity_window_s=10.0) as (server, _):
        with (
            PolicyClient(server.endpoint, timeout_ms=2000) as a,
            PolicyClient(server.endpoint, timeout_ms=2000) as b,
        ):
            a.infer(make_obs(1.0))
            time.sleep(1.0)
            a.infer(make_obs(2.0))
            for seq in range(5):
                assert b.infer(make_obs(float(seq)))[0, 0] == seq
                assert b.last_timing is not None and b.last_timing["queue_ms"] < 150.0


def test_a_client_whose_next_request_is_due_is_batched_with() -> None:
    # A asks every 100 ms; B asks 50 ms before A's next request is due and waits for it.
    policy = EchoPolicy()
    with serving(policy, max_batch=8, max_wait_ms=300, activity_window_s=10.0) as (server, _):
        with (
            PolicyClient(server.endpoint, timeout_ms=2000) as a,
            PolicyClient(server.endpoint, timeout_ms=2000) as b,
        ):
            start = time.monotonic()

            def at(t: float) -> None:
                time.sleep(max(t - (time.monotonic() - start), 0.0))

            def robot_b() -> None:
                at(0.25)
                b.infer(make_obs(9.0))

            late = threading.Thread(target=robot_b)
            late.start()
            for seq in range(4):
                at(0.1 * seq)
                a.infer(make_obs(float(seq)))
            late.join(5)
        assert b.last_timing is not None and b.last_timing["batch_size"] == 2
        assert policy.batches[-1] == 2


def test_replies_from_the_batching_worker_do_not_wait_for_the_idle_timeout(monkeypatch: Any) -> None:
    # The I/O loop may block in recv only while the worker owes nothing: with a 1.5 s idle
    # wait, a worker-path reply that waited for it would miss the 1 s client timeout.
    monkeypatch.setattr("deploy.server._IDLE_WAIT_MS", 1500)
    with serving(EchoPolicy(delay_s=0.05), inline_max_ms=0.0) as (server, _):
        with PolicyClient(server.endpoint, timeout_ms=1000, retries=0) as client:
            for seq in range(3):
                assert client.infer(make_obs(float(seq)))[0, 0] == seq
                assert client.ping()["served"] == seq + 1


def test_reset_starts_a_new_episode_for_the_session(echo_server: Any) -> None:
    server, core = echo_server
    with PolicyClient(server.endpoint, timeout_ms=2000, session="robot-7") as client:
        client.infer(make_obs())
        client.reset()
        client.reset()
        client.infer(make_obs())
    state = core.session_state("robot-7")
    assert (state.episode, state.steps) == (2, 1)


def test_metadata_announces_spec_and_versions(echo_server: Any) -> None:
    server, _ = echo_server
    with PolicyClient(server.endpoint, timeout_ms=2000) as client:
        meta = client.metadata()
    assert meta["name"] == "echo" and meta["chunk_size"] == CHUNK and meta["action_dim"] == 7
    assert meta["image_keys"] == {"image": [SIDE, SIDE, 3], "wrist_image": [SIDE, SIDE, 3]}
    assert meta["state_dim"] == 8 and meta["protocol_version"] == 1 and "package_version" in meta


def test_curve_unknown_key_gets_nothing_and_listed_key_works(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path, clients=("robot",))
    listed = CurveClientKeys.from_files(paths["server_public"], paths["robot_secret"])
    public, secret = zmq.curve_keypair()
    stranger = CurveClientKeys(server_public=listed.server_public, public=public, secret=secret)
    with serving(EchoPolicy(), curve=CurveServerKeys.from_dir(tmp_path)) as (server, _):
        with PolicyClient(server.endpoint, timeout_ms=300, retries=0, curve=stranger) as client:
            with pytest.raises(ServerTimeout, match="no reply"):
                client.ping()
        with PolicyClient(server.endpoint, timeout_ms=300, retries=0) as plain:
            with pytest.raises(ServerTimeout):
                plain.ping()
        with PolicyClient(server.endpoint, timeout_ms=3000, curve=listed) as client:
            assert client.infer(make_obs(4.0))[0, 0] == 4.0


def test_record_then_replay_reproduces_the_actions(tmp_path: Path) -> None:
    policy = EchoPolicy()
    recorder = Recorder(tmp_path)
    with serving(policy, recorder=recorder) as (server, _):
        with PolicyClient(server.endpoint, timeout_ms=2000) as client:
            client.reset()
            for i in range(3):
                client.infer(make_obs(float(i)))
        assert raw_call(server.endpoint, b"\xc1") is not None
        assert raw_call(server.endpoint, b"\xc1" * 5000) is not None
    recorder.close()
    entries = list(iter_records(recorder.path))
    assert [e["request"].get("endpoint") for e in entries] == ["reset", "infer", "infer", "infer", None, None]
    assert entries[-2]["reply"]["error"]["code"] == "decode_error"
    # Undecodable requests are kept as their first 4 KiB.
    assert [e["request"]["raw"] for e in entries[-2:]] == [b"\xc1", b"\xc1" * 4096]
    summary = replay(recorder.path, policy)
    assert summary == {"records": 6, "replayed": 3, "mismatches": 0, "max_abs_diff": 0.0}


def test_stopping_core_answers_queued_jobs_shutting_down() -> None:
    core = InferenceCore(EchoPolicy(delay_s=0.2), BatchingConfig(max_batch=1)).start()
    outcomes: list[InferenceOutcome] = []
    done = threading.Event()

    def on_done(_job: InferenceJob, outcome: InferenceOutcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 3:
            done.set()

    obs = core.spec.validate(make_obs())
    for i in range(3):
        core.submit(
            core.job(obs, session=f"s{i}", received=time.perf_counter(), deadline_ms=None, on_done=on_done)
        )
    time.sleep(0.05)
    core.stop()
    assert done.wait(5)
    codes = sorted("ok" if o.error is None else o.error.code.value for o in outcomes)
    assert codes == ["ok", "shutting_down", "shutting_down"]
    with pytest.raises(ValueError, match="shutting down"):
        core.submit(
            core.job(obs, session="late", received=time.perf_counter(), deadline_ms=None, on_done=on_done)
        )


def test_batching_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_batch: expected >= 1, got 0"):
        BatchingConfig(max_batch=0)
    with pytest.raises(ValueError, match="max_queue"):
        BatchingConfig(max_queue=0)


class TimedPolicy(EchoPolicy):
    """Reports its own stage split the way the core reads it (``last_timing``, ms)."""

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        chunks = super().infer_batch(observations)
        self.last_timing = {"preprocess_ms": 0.25, "postprocess_ms": 0.125}
        return chunks


def test_reply_timing_uses_the_policy_stage_split() -> None:
    with serving(TimedPolicy(delay_s=0.01)) as (server, _):
        with PolicyClient(server.endpoint, timeout_ms=2000) as client:
            client.infer(make_obs())
            timing = client.last_timing
    assert timing is not None
    assert (timing["preprocess_ms"], timing["postprocess_ms"]) == (0.25, 0.125)
    assert timing["model_ms"] > 0 and timing["total_ms"] >= timing["model_ms"]
    assert timing["round_trip_ms"] >= timing["total_ms"]
    assert {"decode_ms", "queue_ms", "batch_size", "server_recv_time", "server_send_time"} <= set(timing)


def test_server_survives_random_garbage(echo_server: Any) -> None:
    server, _ = echo_server
    rng = np.random.default_rng(1234)
    valid = infer_payload(make_obs(1.0))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        for i in range(150):
            if i % 3 == 0:  # flip bytes of a valid request
                payload = bytearray(valid)
                for pos in rng.integers(0, len(payload), size=8):
                    payload[pos] = int(rng.integers(0, 256))
            elif i % 3 == 1:  # cut a valid request anywhere
                payload = bytearray(valid[: int(rng.integers(0, len(valid)))])
            else:  # pure noise
                payload = bytearray(
                    rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
                )
            sock.send_multipart([b"", bytes(payload)])
            assert sock.poll(2000), f"no answer to garbage #{i}"
            reply = decode(sock.recv_multipart()[-1])
            assert reply["v"] == 1 and reply["status"] in ("ok", "error")
    finally:
        sock.close()
    with PolicyClient(server.endpoint, timeout_ms=2000) as client:
        assert client.infer(make_obs(8.0))[0, 0] == 8.0


def test_allow_list_reload_admits_a_new_client_without_a_restart(tmp_path: Path) -> None:
    paths = generate_keys(tmp_path, clients=("robot",))
    later = generate_keys(tmp_path / "later", clients=("arm",))
    arm = CurveClientKeys.from_files(paths["server_public"], later["arm_secret"])
    with serving(EchoPolicy(), curve=CurveServerKeys.from_dir(tmp_path)) as (server, _):
        with PolicyClient(server.endpoint, timeout_ms=300, retries=0, curve=arm) as client:
            with pytest.raises(ServerTimeout):
                client.ping()
        Path(later["arm_public"]).rename(tmp_path / "authorized_clients" / "arm.key")
        assert server.reload_allow_list() == 2
        with PolicyClient(server.endpoint, timeout_ms=3000, curve=arm) as client:
            assert client.infer(make_obs(5.0))[0, 0] == 5.0


def test_dealer_replies_can_overtake_and_are_matched_by_id() -> None:
    policy = EchoPolicy(delay_s=0.3)
    with serving(policy) as (server, _):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.endpoint)
        try:
            sock.send_multipart([b"", infer_payload(make_obs(6.0))])
            assert policy.running.wait(5)
            sock.send_multipart([b"", encode({"v": 1, "endpoint": "ping", "id": 2})])
            replies = []
            for _ in range(2):
                assert sock.poll(5000)
                replies.append(decode(sock.recv_multipart()[1]))
        finally:
            sock.close()
    assert [reply["id"] for reply in replies] == [2, 1], "the ping overtakes the infer in flight"
    assert replies[1]["result"]["actions"][0, 0] == 6.0


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (infer_payload(make_obs(prompt="x" * 2049)), "bad_request", "obs.prompt"),
        (infer_payload(make_obs(prompt=" \t\n")), "bad_request", "obs.prompt"),
        (
            infer_payload(
                {
                    **make_obs(),
                    "state": {"__ndarray__": True, "dtype": "<f4", "shape": [1] * 33, "data": b"\0" * 4},
                }
            ),
            "decode_error",
            "obs.state.shape",
        ),
    ],
    ids=["long-prompt", "blank-prompt", "33-dims"],
)
def test_documented_limits_are_enforced(echo_server: Any, payload: bytes, code: str, field: str) -> None:
    server, _ = echo_server
    reply = raw_call(server.endpoint, payload)
    assert reply is not None and reply["error"]["code"] == code and reply["error"]["field"] == field
    assert raw_call(server.endpoint, infer_payload(make_obs(prompt="x" * 2048)))["status"] == "ok"


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"deadline_ms": 3_600_000}, None),
        ({"deadline_ms": 3_600_000.5}, "deadline_ms"),
        ({"deadline_ms": 0}, "deadline_ms"),
        ({"deadline_ms": True}, "deadline_ms"),
        ({"session": "s"}, None),
        ({"session": ""}, "session"),
        ({"session": "s" * 256}, None),
        ({"session": "s" * 257}, "session"),
        ({"id": "i" * 256}, None),
        ({"id": "i" * 257}, "id"),
    ],
    ids=[
        "deadline-max",
        "deadline-over",
        "deadline-zero",
        "deadline-bool",
        "session-one",
        "session-empty",
        "session-max",
        "session-over",
        "id-max",
        "id-over",
    ],
)
def test_envelope_limits_hold_at_their_edges(
    echo_server: Any, extra: dict[str, Any], refused: str | None
) -> None:
    server, _ = echo_server
    reply = raw_call(server.endpoint, infer_payload(make_obs(), **extra))
    if refused is None:
        assert reply["status"] == "ok" and reply["id"] == extra.get("id", 1)
    else:
        assert reply["error"]["code"] == "bad_request" and reply["error"]["field"] == refused


def test_a_deadline_under_a_millisecond_is_valid_and_may_expire(echo_server: Any) -> None:
    server, _ = echo_server
    reply = raw_call(server.endpoint, infer_payload(make_obs(), deadline_ms=0.5))
    assert reply["status"] == "ok" or reply["error"]["code"] == "deadline_exceeded"


def test_an_unknown_endpoint_is_echoed_up_to_64_characters(echo_server: Any) -> None:
    server, _ = echo_server
    for name, echoed in (("e" * 64, "e" * 64), ("e" * 65, None)):
        reply = raw_call(server.endpoint, encode({"v": 1, "endpoint": name, "id": 3}))
        assert (
            reply["error"]["code"] == "unknown_endpoint" and reply["endpoint"] == echoed and reply["id"] == 3
        )


def test_replies_write_this_protocols_arrays_unless_asked_otherwise(echo_server: Any) -> None:
    server, _ = echo_server
    plain = raw_call(server.endpoint, infer_payload(make_obs()), decoder=msgpack.unpackb)
    actions = plain["result"]["actions"]
    assert actions["__ndarray__"] is True and actions["dtype"] == "<f4" and actions["shape"] == [CHUNK, 7]


def test_ping_reports_the_uptime_since_the_server_started() -> None:
    began = time.monotonic()
    with serving(EchoPolicy()) as (server, _):
        time.sleep(0.2)
        uptime = raw_call(server.endpoint, encode({"v": 1, "endpoint": "ping"}))["result"]["uptime_s"]
        assert 0.2 <= uptime <= time.monotonic() - began


def test_the_reply_stamps_when_the_server_read_and_answered(echo_server: Any) -> None:
    server, _ = echo_server
    before = time.time()
    reply = raw_call(server.endpoint, infer_payload(make_obs()))
    after = time.time()
    timing = reply["result"]["timing"]
    assert before <= timing["server_recv_time"] <= timing["server_send_time"] <= after


def test_openpi_msgpack_numpy_requests_and_replies_over_zeromq(echo_server: Any) -> None:
    from openpi_client import msgpack_numpy

    server, _ = echo_server
    obs = {**make_obs(2.0, 3.0), "state": np.array([2.0, 3.0, 0, 0, 0, 0, 0, 0], np.float32)}
    # openpi's codec writes arrays with byte keys; the server reads them like its own.
    reply = raw_call(server.endpoint, msgpack_numpy.packb({"v": 1, "endpoint": "infer", "id": 3, "obs": obs}))
    assert reply is not None and reply["status"] == "ok", reply
    np.testing.assert_array_equal(reply["result"]["actions"][0, :2], [2.0, 3.0])
    # Asked for, the reply's arrays are written so that openpi's own unpackb reads them.
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        sock.send(
            msgpack_numpy.packb({"v": 1, "endpoint": "infer", "id": 4, "obs": obs, "array_format": "openpi"})
        )
        assert sock.poll(5000)
        answer = msgpack_numpy.unpackb(sock.recv())
    finally:
        sock.close()
    actions = answer["result"]["actions"]
    assert isinstance(actions, np.ndarray) and actions.dtype == np.float32 and actions.shape == (CHUNK, 7)
    np.testing.assert_array_equal(actions[0, :2], [2.0, 3.0])
    refused = raw_call(server.endpoint, infer_payload(obs, array_format="pickle"))
    assert refused["error"]["field"] == "array_format" and refused["error"]["code"] == "bad_request"
