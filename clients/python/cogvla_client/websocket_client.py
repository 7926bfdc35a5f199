"""A ``Policy`` behind ``cogvla serve --websocket-port``, for robots that reach the server by WebSocket.

    from cogvla_client.websocket_client import WebSocketPolicyClient
    with WebSocketPolicyClient("ws://10.0.0.7:8000") as policy:
        chunk = policy.infer(obs)      # (chunk, 7) float32, robot units

It speaks the WebSocket front's openpi framing (docs/protocol.md section 10): the server
sends its metadata first, then answers each observation frame with one action frame, or
with a text frame ``"<code>: <message>"`` on a refusal. Needs the ``websocket`` extra
(``pip install "cogvla-client[websocket]"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cogvla_client.client import ClientError, decode_reply
from cogvla_client.policy_api import Policy, validate_action_chunk
from cogvla_client.protocol import encode

__all__ = ["WebSocketPolicyClient", "WebSocketRefusal"]


class WebSocketRefusal(ClientError):
    """The server refused an observation; ``code`` is the protocol's error code."""

    def __init__(self, text: str) -> None:
        self.code, _, self.message = text.partition(": ")
        super().__init__(text)


class WebSocketPolicyClient(Policy):
    """One WebSocket connection to a cogvla server; one request in flight at a time."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        from websockets.sync.client import connect

        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url: expected ws://HOST:PORT or wss://HOST:PORT, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self._connection = connect(url, compression=None, open_timeout=timeout_s)
        self._metadata = self._read()

    def metadata(self) -> dict[str, Any]:
        """The metadata the server sent on connect."""
        return dict(self._metadata)

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Send one observation (this protocol's keys); return the ``(chunk, 7)`` float32 actions."""
        self._connection.send(encode(dict(obs), array_format="openpi"))
        reply = self._read()
        return validate_action_chunk(np.array(reply["actions"], dtype=np.float32))

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> WebSocketPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        frame = self._connection.recv(timeout=self.timeout_s)
        if isinstance(frame, str):
            raise WebSocketRefusal(frame)
        return decode_reply(frame, f"frame from {self.url}")
