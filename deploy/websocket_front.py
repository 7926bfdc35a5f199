"""An openpi-compatible WebSocket front on the same policy and batching core.

Robots already running openpi's published client can use a cogvla server unchanged::

    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    policy = WebsocketClientPolicy("127.0.0.1", 8000)
    actions = policy.infer({"observation/image": img, "observation/wrist_image": wrist,
                            "observation/state": state, "prompt": "put the bowl on the plate"})["actions"]

Framing follows openpi's server: on connect the server sends the policy metadata as one
binary frame; then every binary frame from the client is one observation and is answered
by one binary frame ``{"actions", "server_timing", "policy_timing"}``. Arrays use
openpi-client's msgpack layout (byte-string keys ``__ndarray__``, ``data``, ``dtype``,
``shape``), read and written by the ZeroMQ protocol's codec with its checks, so an
``object`` array from the wire is refused rather than materialised. Errors are sent as a
text frame, which openpi-client raises as ``RuntimeError``; unlike openpi the connection
stays open. ``GET /healthz`` answers 200. Needs the ``websocket`` extra (``websockets``).
"""

from __future__ import annotations

import http
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from deploy.core import InferenceCore
from deploy.protocol import DecodeError, RequestError, decode, encode

__all__ = ["OPENPI_KEYS", "WebSocketFront", "openpi_packb", "openpi_unpackb"]

logger = logging.getLogger(__name__)

# openpi's LIBERO client keys -> the project's observation keys.
OPENPI_KEYS = {
    "observation/image": "image",
    "observation/wrist_image": "wrist_image",
    "observation/state": "state",
    "prompt": "prompt",
}


def openpi_packb(obj: Any) -> bytes:
    """Pack like openpi-client's ``msgpack_numpy.packb`` (arrays as byte-key maps)."""
    return encode(obj, array_format="openpi")


def openpi_unpackb(data: bytes) -> Any:
    """Unpack openpi-client's format with the ZeroMQ protocol's checks (``DecodeError``, a ValueError)."""
    return decode(data)


def _to_project_keys(obs: Mapping[str, Any]) -> dict[str, Any]:
    return {OPENPI_KEYS.get(key, key): value for key, value in obs.items()}


class WebSocketFront:
    """Serves ``core`` to openpi-client over WebSocket; one thread per connection."""

    def __init__(
        self, core: InferenceCore, host: str = "127.0.0.1", port: int = 8000, max_message_bytes: int = 8 << 20
    ) -> None:
        from websockets.sync.server import serve

        self.core = core
        self._ids = itertools.count(1)
        self._server = serve(
            self._handle,
            host,
            port,
            compression=None,
            max_size=max_message_bytes,
            process_request=self._health,
        )
        self.port: int = self._server.socket.getsockname()[1]
        self.endpoint = f"ws://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> WebSocketFront:
        """Accept connections in a background thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="cogvla-ws", daemon=True)
        self._thread.start()
        logger.info("openpi-compatible WebSocket front on %s", self.endpoint)
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection."""
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5.0)

    @staticmethod
    def _health(connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    def _handle(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        session = f"ws-{next(self._ids)}"
        try:
            connection.send(openpi_packb(self.core.metadata()))
            prev_total_ms: float | None = None
            for message in connection:
                start = time.perf_counter()
                reply = self._answer(message, session, prev_total_ms)
                connection.send(reply)
                prev_total_ms = (time.perf_counter() - start) * 1000.0
        except ConnectionClosed:
            pass

    def _answer(self, message: Any, session: str, prev_total_ms: float | None) -> bytes | str:
        if not isinstance(message, bytes):
            return "decode_error: expected a binary msgpack frame, got a text frame"
        try:
            obs = openpi_unpackb(message)
        except DecodeError as exc:
            return f"decode_error: {exc}"
        if not isinstance(obs, Mapping):
            return f"decode_error: expected a map of observations, got {type(obs).__name__}"
        try:
            outcome = self.core.infer(_to_project_keys(obs), session=session)
        except RequestError as err:
            return f"{err.code.value}: {err.message}"
        if outcome.error is not None:
            return f"{outcome.error.code.value}: {outcome.error.message}"
        timing = outcome.timing
        server_timing = {"infer_ms": timing.get("model_ms", 0.0), "total_ms": timing["total_ms"]}
        if prev_total_ms is not None:
            server_timing["prev_total_ms"] = prev_total_ms
        return openpi_packb(
            {"actions": outcome.actions, "server_timing": server_timing, "policy_timing": dict(timing)}
        )
