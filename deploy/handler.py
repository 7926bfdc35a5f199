"""Turns one request payload into one reply payload, whatever the transport.

The ZeroMQ server hands every received payload to ``RequestHandler.handle`` together
with a ``reply`` callable; ``metadata``, ``ping`` and ``reset`` are answered before
``handle`` returns, ``infer`` is answered later from the batching worker thread. Nothing a
client sends can raise out of ``handle``: every failure becomes a typed error reply.

A handler made without a core answers ``ping`` with ``state: "loading"`` and every other
endpoint with a ``loading`` error, so a server can listen while its model loads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deploy.core import InferenceCore, InferenceJob, InferenceOutcome
from deploy.protocol import (
    ARRAY_FORMATS,
    ENDPOINTS,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Buffer,
    DecodeError,
    ErrorCode,
    RequestError,
    decode,
    encode,
    error_reply,
    ok_reply,
)
from deploy.recorder import Recorder
from deploy.validation import bad_request

__all__ = ["MAX_DEADLINE_MS", "RequestHandler", "server_info"]

logger = logging.getLogger(__name__)

ReplyFn = Callable[[bytes], None]

MAX_DEADLINE_MS = 3_600_000.0
_MAX_SESSION_CHARS = 256
_MAX_ID_CHARS = 256
# An unknown endpoint name is echoed in the error reply up to this length.
_MAX_ENDPOINT_CHARS = 64
# Undecodable requests are recorded as their first bytes only.
_RAW_RECORD_BYTES = 4096


def server_info() -> dict[str, Any]:
    """Protocol and package versions announced by the ``metadata`` endpoint."""
    from importlib import metadata as importlib_metadata

    try:
        package_version = importlib_metadata.version("cogvla")
    except importlib_metadata.PackageNotFoundError:
        package_version = "unknown"
    return {
        "protocol_version": PROTOCOL_VERSION,
        "supported_versions": list(SUPPORTED_VERSIONS),
        "package_version": package_version,
        "endpoints": list(ENDPOINTS),
    }


class RequestHandler:
    """Protocol logic shared by every front that speaks docs/protocol.md."""

    def __init__(
        self,
        core: InferenceCore | None,
        *,
        info: Mapping[str, Any] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.core = core
        self.recorder = recorder
        self._info = {**server_info(), **(info or {})}
        self._started = time.monotonic()

    def announce(self, info: Mapping[str, Any]) -> None:
        """Add ``info`` (e.g. the transport's limits) to the ``metadata`` result."""
        self._info = {**self._info, **info}

    def ready(self, core: InferenceCore, info: Mapping[str, Any] | None = None) -> None:
        """Start serving ``core``: requests other than ``ping`` are answered from now on."""
        self.announce(info or {})
        self.core = core

    def metadata(self) -> dict[str, Any]:
        """The ``metadata`` endpoint's result (only once a core is attached)."""
        assert self.core is not None
        return {**self.core.metadata(), **self._info}

    def handle(
        self,
        payload: Buffer,
        *,
        peer: str,
        received: float,
        reply: ReplyFn,
        attachments: Sequence[Buffer] = (),
    ) -> None:
        """Answer one request (``payload`` plus the ``attachments`` frames its arrays may name);
        ``received`` is the ``time.perf_counter()`` when it was read."""
        endpoint: str | None = None
        request_id: Any = None
        message: Any = None
        session = f"peer-{peer}"
        try:
            message = decode(payload, attachments)
            request_id = _echoable_id(message)
            endpoint = _readable_endpoint(message)
            session = self._envelope(message, request_id, session)
            if self.core is None and endpoint != "ping":
                raise RequestError(
                    ErrorCode.LOADING,
                    "the server is still loading its model; retry once ping's state is 'ready'",
                    field="endpoint",
                    expected="ping while loading",
                    actual=repr(endpoint),
                )
            if endpoint == "infer":
                self._submit(message, request_id, session, received, reply)
                return
            result = self._answer_now(endpoint, session)
            self._send(reply, ok_reply(endpoint, request_id, result), message, payload, session)
        except DecodeError as err:
            # An array was malformed but the envelope may still be readable.
            readable = err.request
            reply_to = (_readable_endpoint(readable), _echoable_id(readable))
            self._send(reply, error_reply(*reply_to, err), message, payload, session)
        except RequestError as err:
            self._send(reply, error_reply(endpoint, request_id, err), message, payload, session)
        except Exception as exc:  # a server bug must still produce an answer, not a dead socket
            logger.exception("unexpected failure while handling a request from %s", peer)
            err = RequestError(ErrorCode.INTERNAL_ERROR, f"server error: {type(exc).__name__}: {exc}")
            self._send(reply, error_reply(endpoint, request_id, err), message, payload, session)

    def _envelope(self, message: Any, request_id: Any, default_session: str) -> str:
        """Check the envelope (``request_id``: its echoable id, from ``_echoable_id``); returns
        the session."""
        if not isinstance(message, dict):
            raise DecodeError(
                "a request must be a msgpack map",
                field="payload",
                expected="map",
                actual=type(message).__name__,
            )
        version = message.get("v")
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            supported = ", ".join(map(str, SUPPORTED_VERSIONS))
            raise RequestError(
                ErrorCode.VERSION_MISMATCH,
                f"protocol version {version!r} is not supported by this server (it speaks {supported}); "
                "use a client and server of matching protocol versions",
                field="v",
                expected=supported,
                actual=repr(version),
            )
        sent_id = message.get("id")
        if request_id is None and sent_id is not None:
            actual = type(sent_id).__name__ if not isinstance(sent_id, str) else f"{len(sent_id)} chars"
            raise bad_request(
                "id",
                "request id must be an int or a short string",
                f"int or str <= {_MAX_ID_CHARS} chars",
                actual,
            )
        endpoint = message.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise RequestError(
                ErrorCode.UNKNOWN_ENDPOINT,
                f"unknown endpoint {endpoint!r}",
                field="endpoint",
                expected=f"one of {', '.join(ENDPOINTS)}",
                actual=repr(endpoint)[:80],
            )
        array_format = message.get("array_format", ARRAY_FORMATS[0])
        if array_format not in ARRAY_FORMATS:
            raise bad_request(
                "array_format",
                "unknown array format for the reply",
                f"one of {', '.join(ARRAY_FORMATS)}",
                repr(array_format)[:40],
            )
        session = message.get("session", default_session)
        if not isinstance(session, str) or not 0 < len(session) <= _MAX_SESSION_CHARS:
            raise bad_request(
                "session",
                "session must be a short string",
                f"1..{_MAX_SESSION_CHARS} chars",
                repr(session)[:80],
            )
        return session

    def _answer_now(self, endpoint: str, session: str) -> dict[str, Any]:
        if endpoint == "metadata":
            return self.metadata()
        if endpoint == "reset":
            return self.core.reset_session(session)
        return {
            "state": "loading" if self.core is None else "ready",
            "server_time": time.time(),
            "uptime_s": time.monotonic() - self._started,
            "protocol_version": PROTOCOL_VERSION,
            **(self.core.stats() if self.core is not None else {}),
        }

    def _submit(
        self, message: dict[str, Any], request_id: Any, session: str, received: float, reply: ReplyFn
    ) -> None:
        deadline_ms = message.get("deadline_ms")
        valid = isinstance(deadline_ms, (int, float)) and not isinstance(deadline_ms, bool)
        if deadline_ms is not None and not (valid and 0 < deadline_ms <= MAX_DEADLINE_MS):
            raise bad_request(
                "deadline_ms",
                "deadline must be a positive number of ms",
                f"0 < x <= {MAX_DEADLINE_MS:.0f}",
                repr(deadline_ms)[:40],
            )
        if "obs" not in message:
            raise bad_request("obs", "infer needs an observation", "map", "missing")
        obs = self.core.spec.validate(message["obs"])
        recv_wall = time.time() - (time.perf_counter() - received)

        def on_done(_job: InferenceJob, outcome: InferenceOutcome) -> None:
            if outcome.error is not None:
                answer = error_reply("infer", request_id, outcome.error)
            else:
                timing = outcome.timing
                timing["server_recv_time"] = recv_wall
                timing["server_send_time"] = time.time()
                answer = ok_reply("infer", request_id, {"actions": outcome.actions, "timing": timing})
            self._send(reply, answer, message, None, session)

        job = self.core.job(obs, session=session, received=received, deadline_ms=deadline_ms, on_done=on_done)
        self.core.submit_or_run(job)

    def _send(
        self,
        reply: ReplyFn,
        answer: dict[str, Any],
        message: Any,
        payload: bytes | memoryview | None,
        session: str,
    ) -> None:
        try:
            data = encode(answer, _reply_format(message))
        except TypeError:
            logger.exception("could not encode a reply to %s", session)
            err = RequestError(ErrorCode.INTERNAL_ERROR, "server produced a reply it cannot encode")
            answer = error_reply(answer.get("endpoint"), answer.get("id"), err)
            data = encode(answer)
        reply(data)
        if self.recorder is not None:
            request = (
                message if isinstance(message, dict) else {"raw": bytes(payload or b"")[:_RAW_RECORD_BYTES]}
            )
            self.recorder.record(
                {"time": time.time(), "session": session, "request": request, "reply": answer}
            )


def _reply_format(message: Any) -> str:
    """How the reply writes arrays: the request's valid ``array_format``, else this protocol's."""
    array_format = message.get("array_format") if isinstance(message, dict) else None
    return array_format if array_format in ARRAY_FORMATS else ARRAY_FORMATS[0]


def _readable_endpoint(message: Any) -> str | None:
    """The request's ``endpoint`` if it is a string short enough to echo, else None."""
    endpoint = message.get("endpoint") if isinstance(message, dict) else None
    return endpoint if isinstance(endpoint, str) and len(endpoint) <= _MAX_ENDPOINT_CHARS else None


def _echoable_id(message: Any) -> Any:
    """The request's ``id`` if it is one the reply may echo, else None."""
    request_id = message.get("id") if isinstance(message, dict) else None
    if _is_int(request_id) or (isinstance(request_id, str) and len(request_id) <= _MAX_ID_CHARS):
        return request_id
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
