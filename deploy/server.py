"""The ZeroMQ front: a ROUTER socket in front of the shared ``RequestHandler``.

One I/O thread owns the socket. It reads one request at a time, lets the handler answer
or queue it, and sends the replies: its own at once, the batching worker's when the worker
wakes it through a pipe. While the worker owes nothing the thread blocks in recv as a REP
socket would; else it polls the socket and the pipe together. Any number of clients (REQ
or DEALER) may be connected; replies go to the right one through the ROUTER routing id.

Frame layout (docs/protocol.md): ``[routing id][empty delimiter][msgpack payload]
[attachments...]`` as seen by the ROUTER; a REQ client sends the delimiter itself, a
DEALER client should add it (without one, the reply comes without one).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import zmq

from deploy.auth import CurveServerKeys, load_allow_list, start_authenticator
from deploy.handler import RequestHandler
from deploy.protocol import DecodeError, encode, error_reply

__all__ = ["ZmqPolicyServer", "ZmqServerConfig"]

logger = logging.getLogger(__name__)

# Longest wait of the I/O loop for a request: how fast stop() is noticed when idle.
_IDLE_WAIT_MS = 20
# Plain ints: pyzmq's flag enums cost a Python-level conversion on every use.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)


@dataclass(frozen=True)
class ZmqServerConfig:
    """Where and how the ROUTER socket listens."""

    # loopback by default: exposing a policy to the network is an explicit decision.
    host: str = "127.0.0.1"
    # 0 picks a free port (tests); the bound address is ZmqPolicyServer.endpoint.
    port: int = 5555
    # larger frames disconnect the sender (ZMQ_MAXMSGSIZE); a LIBERO observation is ~0.3 MB.
    max_message_bytes: int = 8 * 1024 * 1024
    # replies queued for one slow client before ZeroMQ drops further replies to it.
    send_hwm: int = 1000
    # CURVE key pair + allow-list; None = plain TCP.
    curve: CurveServerKeys | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: expected 0..65535, got {self.port}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes: expected >= 1024, got {self.max_message_bytes}")


def _recv_message(sock: zmq.Socket, flags: int) -> tuple[bytes, list[zmq.Frame]]:
    """The routing id and the other frames of the next message (``flags`` apply to the wait
    for its first frame); the payload and attachments stay zero-copy.

    Reads the more-flag off each frame instead of asking the socket for ZMQ_RCVMORE, as
    pyzmq's ``recv_multipart`` does at several microseconds a frame. The routing id is
    always followed by at least one frame, and a message's frames arrive together.
    """
    routing_id = sock.recv(flags)
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame)
    return routing_id, frames


class ZmqPolicyServer:
    """Serves ``handler`` on a ROUTER socket until ``stop()``."""

    def __init__(
        self,
        handler: RequestHandler,
        config: ZmqServerConfig | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config or ZmqServerConfig()
        self.set_handler(handler)
        self._context = context or zmq.Context.instance()
        self._auth = start_authenticator(self._context, self.config.curve) if self.config.curve else None
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        self._socket.setsockopt(zmq.SNDHWM, self.config.send_hwm)
        self._socket.setsockopt(zmq.LINGER, 500)
        self._socket.setsockopt(zmq.RCVTIMEO, _IDLE_WAIT_MS)
        if self.config.curve is not None:
            self.config.curve.apply(self._socket)
        self._socket.bind(f"tcp://{self.config.host}:{self.config.port}")
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        # (envelope, reply, whether another thread sent it), flushed by the I/O thread.
        self._outbox: collections.deque[tuple[list[bytes], bytes, bool]] = collections.deque()
        # replies that other threads (the batching worker) still owe; only the I/O thread
        # reads or writes it.
        self._owed = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        self._closed = False
        self._io_thread_id: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_handler(self, handler: RequestHandler) -> None:
        """Answer requests with ``handler`` from the next one on (e.g. once a model has loaded)."""
        handler.announce({"max_message_bytes": self.config.max_message_bytes})
        self.handler = handler

    def reload_allow_list(self) -> int:
        """Re-read the CURVE allow-list folder without a restart; returns the number of client keys."""
        if self._auth is None or self.config.curve is None:
            raise ValueError("reload_allow_list: this server does not use CURVE (start it with --curve-dir)")
        return load_allow_list(self._auth, self.config.curve)

    # -- lifecycle -----------------------------------------------------------------
    def serve_forever(self) -> None:
        """Run the I/O loop in the calling thread until ``stop()``; closes the socket on exit."""
        self._io_thread_id = threading.get_ident()
        logger.info("serving on %s%s", self.endpoint, " (CURVE)" if self.config.curve else "")
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                # One message per turn, replies flushed between any two reads. Only while
                # the worker owes replies must the loop also watch its wake-up pipe; else it
                # blocks in recv, as a REP socket would, which costs less than zmq_poll.
                if self._owed:
                    self._poll(poller)
                else:
                    self._receive(0)
                self._flush()
            self._flush()
        finally:
            self._close()

    def start(self) -> ZmqPolicyServer:
        """Run ``serve_forever`` in a background thread (tests, embedding); returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="cogvla-zmq-io", daemon=True)
        self._thread.start()
        return self

    def running(self) -> bool:
        """Whether the I/O loop started by ``start`` is still running."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the I/O loop to exit and wait for it (if it runs in a thread started by ``start``)."""
        self._stop.set()
        # From the I/O thread itself (a signal handler) the loop notices within one poll;
        # taking the wake lock there could deadlock against _close.
        if threading.get_ident() != self._io_thread_id:
            self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- I/O -----------------------------------------------------------------------
    def _poll(self, poller: zmq.Poller) -> None:
        for ready, _ in poller.poll(_IDLE_WAIT_MS):
            if ready is self._socket:
                # zmq_poll reports the socket again while more messages are queued, which is
                # cheaper than asking ZMQ_EVENTS after each one.
                self._receive(_NOBLOCK)
            else:
                self._drain_wake()

    def _receive(self, flags: int) -> None:
        try:
            routing_id, frames = _recv_message(self._socket, flags)
        except zmq.Again:  # nothing within the idle wait, or a spurious wake-up
            return
        self._dispatch(routing_id, frames, time.perf_counter())

    def _dispatch(self, routing_id: bytes, frames: list[zmq.Frame], received: float) -> None:
        # REQ clients put an empty delimiter before the payload, DEALER clients may.
        delimited = len(frames[0]) == 0
        envelope = [routing_id, b""] if delimited else [routing_id]
        body = frames[1:] if delimited else frames

        answered_here = False

        def reply(data: bytes) -> None:
            nonlocal answered_here
            if threading.get_ident() == self._io_thread_id:
                answered_here = True
                self._outbox.append((envelope, data, False))
            else:
                self._outbox.append((envelope, data, True))
                self._wake()

        if not body:
            error = DecodeError(
                "expected a payload frame after the envelope",
                field="frames",
                expected="[empty delimiter, payload, attachments...]",
                actual="no frame after the delimiter",
            )
            reply(encode(error_reply(None, None, error)))
            return
        # Attachments stay zero-copy: decoded arrays are views on these frames.
        attachments = [frame.buffer for frame in body[1:]]
        self.handler.handle(
            body[0].buffer, attachments=attachments, peer=routing_id.hex(), received=received, reply=reply
        )
        if not answered_here:
            self._owed += 1

    def _flush(self) -> None:
        outbox, sock = self._outbox, self._socket
        while outbox:
            envelope, data, from_worker = outbox.popleft()
            self._owed -= from_worker
            try:
                for frame in envelope:
                    sock.send(frame, _NOBLOCK | _SNDMORE)
                sock.send(data, _NOBLOCK)
            except zmq.Again:
                logger.warning("dropped a reply: the client's send queue is full")
            except zmq.ZMQError as exc:
                logger.warning("dropped a reply: %s", exc)

    def _wake(self) -> None:
        with self._wake_lock:
            if self._closed:
                return
            # A full pipe already means the loop will wake up.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _close(self) -> None:
        self._socket.close()
        if self._auth is not None:
            self._auth.stop()
        with self._wake_lock:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)
