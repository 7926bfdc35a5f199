"""``cogvla serve --record DIR``: keep every request and reply for offline replay.

Each server run appends to ``DIR/record-<time>-<pid>.msgpack``, a stream of msgpack maps
``{"time", "peer", "session", "request", "reply"}`` in the wire format of
docs/protocol.md (arrays included), written by a background thread so that disk latency
stays off the request path. ``replay`` feeds the recorded observations to a policy in
process and compares its actions with the ones that were sent, which turns a field
report ("the robot did something odd at 14:02") into a reproducible test case::

    from deploy.recorder import replay
    from cogvla.policy import CogVLAPolicy
    print(replay("runs/rec/record-20260101-120000-42.msgpack", CogVLAPolicy.from_pretrained("ckpt")))
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cogvla.policy_api import Policy
from deploy.protocol import decode_stream, encode

__all__ = ["Recorder", "iter_records", "replay"]

logger = logging.getLogger(__name__)

# About 75 MB of LIBERO observations in flight before the server waits for the disk.
_QUEUE_SIZE = 256
_STOP = object()


class Recorder:
    """Appends records to one file from a writer thread; ``record`` is thread-safe."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"record-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.msgpack"
        self._file = self.path.open("ab")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_SIZE)
        self.written = 0
        self._thread = threading.Thread(target=self._write, name="cogvla-recorder", daemon=True)
        self._thread.start()

    def record(self, entry: Mapping[str, Any]) -> None:
        """Queue one record (blocks only if the disk is far behind)."""
        self._queue.put(entry)

    def close(self) -> None:
        """Write what is queued and close the file."""
        self._queue.put(_STOP)
        self._thread.join()
        self._file.close()

    def _write(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                self._file.flush()
                return
            try:
                self._file.write(encode(entry))
                self.written += 1
            except (OSError, TypeError):
                logger.exception("could not record an entry to %s", self.path)


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of one ``--record`` file, in arrival order."""
    with Path(path).open("rb") as stream:
        yield from decode_stream(stream)


def replay(path: str | os.PathLike[str], policy: Policy, *, atol: float = 1e-5) -> dict[str, Any]:
    """Re-run every recorded successful ``infer`` on ``policy``; summary of the differences.

    Returns ``{"records", "replayed", "mismatches", "max_abs_diff"}``; a mismatch is a
    chunk of another shape or with any entry further than ``atol`` from the recorded one.
    """
    records = replayed = mismatches = 0
    max_diff = 0.0
    for entry in iter_records(path):
        records += 1
        request, reply = entry.get("request") or {}, entry.get("reply") or {}
        if request.get("endpoint") != "infer" or reply.get("status") != "ok":
            continue
        sent = np.asarray(reply["result"]["actions"], dtype=np.float32)
        # Writable copies: offline, so there is no reason to hand the policy read-only views.
        obs = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in request["obs"].items()}
        again = np.asarray(policy.infer(obs), dtype=np.float32)
        replayed += 1
        if again.shape != sent.shape:
            mismatches += 1
            continue
        diff = float(np.max(np.abs(again - sent))) if sent.size else 0.0
        max_diff = max(max_diff, diff)
        mismatches += int(diff > atol)
    return {"records": records, "replayed": replayed, "mismatches": mismatches, "max_abs_diff": max_diff}
