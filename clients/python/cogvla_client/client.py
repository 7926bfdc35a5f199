"""Robot-side client: a ``Policy`` whose ``infer`` runs on a remote ``cogvla serve``.

    from cogvla_client import PolicyClient
    policy = PolicyClient("tcp://127.0.0.1:5555", timeout_ms=1000, retries=2)
    chunk = policy.infer(obs)          # (chunk, 7) float32, robot units
    print(policy.last_timing)          # server stages + client round trip, in ms

Timeouts are real: every request waits at most ``timeout_ms`` for its reply, then the
REQ socket is closed (linger 0) and re-created before the next attempt, at most
``retries`` times (the ZeroMQ Guide's "Lazy Pirate" pattern), so the worst case is about
``(retries + 1) * timeout_ms`` before ``ServerTimeout``. Server refusals raise typed
errors carrying the server's error code, field, expected and actual values.

Camera images go as attachment frames (docs/protocol.md): ZeroMQ copies them once, straight
from the caller's arrays, instead of msgpack copying them into a payload first.

Imports numpy, msgpack and pyzmq only (no torch), so it fits any robot computer.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from cogvla_client.curve import CurveClientKeys
from cogvla_client.policy_api import Policy, validate_action_chunk
from cogvla_client.protocol import (
    PROTOCOL_VERSION,
    Buffer,
    DecodeError,
    ErrorCode,
    decode,
    encode_frames,
    request,
)

__all__ = [
    "BadRequest",
    "ClientError",
    "DeadlineExceeded",
    "MalformedReply",
    "NotReady",
    "Overloaded",
    "PolicyClient",
    "ProtocolMismatch",
    "ServerError",
    "ServerTimeout",
    "UnknownEndpoint",
    "decode_reply",
]

logger = logging.getLogger(__name__)

_SNDMORE = int(zmq.SNDMORE)


class ClientError(Exception):
    """Base class of everything ``PolicyClient`` raises."""


class ServerTimeout(ClientError, TimeoutError):
    """No reply within the time budget (server down, unreachable, or refusing our key)."""


class MalformedReply(ClientError):
    """The reply could not be read as a protocol message."""


class ServerError(ClientError):
    """The server answered with an error; ``code`` is its ``error.code``."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        self.code = str(error.get("code"))
        self.message = str(error.get("message"))
        self.field = error.get("field")
        self.expected = error.get("expected")
        self.actual = error.get("actual")
        super().__init__(f"[{self.code}] {self.message}")


class BadRequest(ServerError, ValueError):
    """The server refused the request's content (``bad_request`` / ``decode_error``)."""


class UnknownEndpoint(ServerError):
    """The server does not offer the endpoint."""


class Overloaded(ServerError):
    """The server's queue is full; retry later or slow down."""


class DeadlineExceeded(ServerError):
    """The request waited past its deadline and was not computed."""


class ProtocolMismatch(ServerError):
    """Client and server speak different protocol versions."""


class NotReady(ServerError):
    """The server is up but still loading its model; ``wait_ready`` waits for it."""


_ERRORS: dict[str, type[ServerError]] = {
    ErrorCode.BAD_REQUEST.value: BadRequest,
    ErrorCode.DECODE_ERROR.value: BadRequest,
    ErrorCode.UNKNOWN_ENDPOINT.value: UnknownEndpoint,
    ErrorCode.OVERLOADED.value: Overloaded,
    ErrorCode.DEADLINE_EXCEEDED.value: DeadlineExceeded,
    ErrorCode.VERSION_MISMATCH.value: ProtocolMismatch,
    ErrorCode.LOADING.value: NotReady,
}


def decode_reply(data: bytes, what: str) -> dict[str, Any]:
    """``data`` decoded as a map, else ``MalformedReply`` naming ``what`` it was."""
    try:
        reply = decode(data)
    except DecodeError as exc:
        raise MalformedReply(f"undecodable {what}: {exc}") from exc
    if not isinstance(reply, dict):
        raise MalformedReply(f"{what} is a {type(reply).__name__}, expected a map")
    return reply


def _normalize_endpoint(endpoint: str) -> str:
    """``HOST:PORT`` or ``tcp://HOST:PORT`` as a ZeroMQ address; other transports pass as given."""
    address = endpoint if "://" in endpoint else f"tcp://{endpoint}"
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"endpoint: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555), got {endpoint!r}"
            )
    return address


class PolicyClient(Policy):
    """A remote policy behind ``cogvla serve``; thread-safe, one request in flight at a time."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_ms: int = 2000,
        retries: int = 2,
        deadline_ms: float | None = None,
        session: str | None = None,
        curve: CurveClientKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if timeout_ms <= 0:
            raise ValueError(f"timeout_ms: expected > 0, got {timeout_ms}")
        if retries < 0:
            raise ValueError(f"retries: expected >= 0, got {retries}")
        self.endpoint = _normalize_endpoint(endpoint)
        self.timeout_ms = int(timeout_ms)
        self.retries = int(retries)
        self.deadline_ms = deadline_ms
        # A stable session id survives socket re-creation, unlike the ZeroMQ routing id.
        self.session = session or uuid.uuid4().hex
        self.curve = curve
        self.last_timing: dict[str, float] | None = None
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None

    # -- Policy --------------------------------------------------------------------
    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Send one observation; return the server's ``(chunk, 7)`` float32 action chunk."""
        started = time.perf_counter()
        result, exchange = self._call("infer", obs=obs, deadline_ms=self.deadline_ms)
        actions = validate_action_chunk(np.array(result["actions"], dtype=np.float32))
        server_timing = result.get("timing") or {}
        self.last_timing = {
            **{k: float(v) for k, v in server_timing.items()},
            **exchange,
            "client_total_ms": (time.perf_counter() - started) * 1000.0,
        }
        return actions

    def reset(self) -> None:
        """Start a new episode for this client's session on the server."""
        self._call("reset")

    def metadata(self) -> dict[str, Any]:
        """The server's metadata (model, chunk size, observation spec, versions); fetched once."""
        if self._metadata is None:
            self._metadata, _ = self._call("metadata")
        return dict(self._metadata)

    def ping(self) -> dict[str, Any]:
        """Liveness plus queue statistics; ``state`` is ``"loading"`` until the model is ready."""
        result, _ = self._call("ping")
        return result

    def wait_ready(self, timeout_s: float, poll_s: float = 1.0) -> dict[str, Any]:
        """Ping until the server's state is ``ready``; returns that ping's result.

        Raises ``ServerTimeout`` if no server answers, ``NotReady`` if it is still loading
        after ``timeout_s``.
        """
        give_up = time.monotonic() + timeout_s
        while True:
            status = self.ping()
            if status.get("state", "ready") == "ready":
                return status
            if time.monotonic() >= give_up:
                raise NotReady(
                    {
                        "code": ErrorCode.LOADING.value,
                        "message": f"{self.endpoint} still loading its model after {timeout_s:g} s",
                    }
                )
            time.sleep(poll_s)

    def close(self) -> None:
        """Close the socket; the client reconnects if used again."""
        with self._lock:
            self._drop_socket()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------
    def _new_socket(self) -> zmq.Socket:
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, self.timeout_ms)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.endpoint)
        return sock

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _call(self, endpoint: str, **fields: Any) -> tuple[dict[str, Any], dict[str, float]]:
        """One request with timeout and retries; returns ``(result, client-side timing)``."""
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            encode_start = time.perf_counter()
            payload = encode_frames(request(endpoint, request_id=request_id, session=self.session, **fields))
            encode_ms = (time.perf_counter() - encode_start) * 1000.0
            for attempt in range(self.retries + 1):
                if self._socket is None:
                    self._socket = self._new_socket()
                sent = time.perf_counter()
                data = self._exchange(payload)
                if data is not None:
                    arrived = time.perf_counter()
                    reply = self._parse(data, endpoint, request_id)
                    exchange = {
                        "client_encode_ms": encode_ms,
                        "round_trip_ms": (arrived - sent) * 1000.0,
                        "client_decode_ms": (time.perf_counter() - arrived) * 1000.0,
                        "attempts": float(attempt + 1),
                    }
                    return reply, exchange
                logger.warning(
                    "no reply from %s to %s within %d ms (attempt %d/%d)",
                    self.endpoint,
                    endpoint,
                    self.timeout_ms,
                    attempt + 1,
                    self.retries + 1,
                )
                self._drop_socket()
        raise ServerTimeout(
            f"no reply from {self.endpoint} to {endpoint!r} within {self.timeout_ms} ms "
            f"({self.retries + 1} attempts); is the server running, reachable, "
            "and does it accept this client's key?"
        )

    def _exchange(self, payload: list[Buffer]) -> bytes | None:
        """Send the message and its attachments and wait at most ``timeout_ms`` for the reply;
        None on timeout."""
        sock = self._socket
        assert sock is not None
        try:
            # Frame by frame with int flags: pyzmq's send_multipart costs a few microseconds a
            # frame in flag enums. Images are copied into ZeroMQ messages at once: a memcpy
            # costs less than pyzmq's zero-copy bookkeeping (its release thread wakes up for
            # every frame).
            for frame in payload[:-1]:
                sock.send(frame, _SNDMORE)
            sock.send(payload[-1])
            # Replies are small: bytes cost less than a zmq.Frame.
            return sock.recv()
        except zmq.Again:
            return None

    @staticmethod
    def _parse(data: bytes, endpoint: str, request_id: int) -> dict[str, Any]:
        reply = decode_reply(data, f"reply to {endpoint!r}")
        if reply.get("v") != PROTOCOL_VERSION:
            raise ProtocolMismatch(
                {
                    "code": ErrorCode.VERSION_MISMATCH.value,
                    "message": f"server replied with protocol version {reply.get('v')!r}, "
                    f"this client speaks {PROTOCOL_VERSION}",
                    "field": "v",
                    "expected": str(PROTOCOL_VERSION),
                    "actual": repr(reply.get("v")),
                }
            )
        if reply.get("status") == "error":
            error = reply.get("error") or {}
            raise _ERRORS.get(str(error.get("code")), ServerError)(error)
        if reply.get("status") != "ok" or not isinstance(reply.get("result"), dict):
            raise MalformedReply(
                f"reply to {endpoint!r} has neither status 'ok' with a result map nor an error"
            )
        if reply.get("id") != request_id:
            raise MalformedReply(f"reply id {reply.get('id')!r} does not match request id {request_id}")
        return reply["result"]
