"""Serve a policy over ZeroMQ (protocol: docs/protocol.md).

    cogvla serve --checkpoint runs/ckpt --host 127.0.0.1 --port 5555
    cogvla serve                                  # embedded default, else a random-weight tiny model
    cogvla serve --suite libero_object            # the embedded default of that suite
    cogvla serve --record runs/requests           # keep every request/reply for deploy.recorder.replay
    cogvla serve --gen-keys keys/                 # CURVE key pairs; then serve only allow-listed robots:
    cogvla serve --curve-dir keys/ --host 0.0.0.0
    cogvla serve --websocket-port 8000            # also answer openpi-client on ws://127.0.0.1:8000

The port is bound before the model loads, so a port in use fails at once; until the model
is ready, ``cogvla ping`` reports ``"state": "loading"`` (``cogvla ping --wait 600`` waits
for ``ready``). Stops cleanly on SIGINT/SIGTERM: the running batch finishes, queued requests
are answered ``shutting_down``, sockets close. With ``--curve-dir``, SIGHUP re-reads the
allow-list (``kill -HUP PID`` after adding a client key) without a restart.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "check_checkpoint_arg", "embedded_default", "load_policy", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cogvla serve``."""
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (default: embedded)")
    parser.add_argument(
        "--suite",
        default=None,
        help="without --checkpoint: serve the embedded default of this LIBERO suite "
        "(default: the first they cover, libero_spatial)",
    )
    parser.add_argument("--device", default="cpu", help="torch device of the model")
    parser.add_argument(
        "--unnorm-key",
        default=None,
        help="dataset stats to serve with when the checkpoint holds several, e.g. libero_goal",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes the server)")
    parser.add_argument("--port", type=int, default=5555, help="TCP port of the ZeroMQ ROUTER socket")
    parser.add_argument("--max-batch", type=int, default=8, help="most requests per forward pass")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for batch companions")
    parser.add_argument("--max-queue", type=int, default=64, help="queued requests before 'overloaded'")
    parser.add_argument(
        "--deadline-ms", type=float, default=10_000.0, help="deadline of requests without one"
    )
    parser.add_argument(
        "--max-message-mb", type=float, default=8.0, help="larger messages disconnect the sender"
    )
    parser.add_argument("--record", type=Path, default=None, help="save requests and replies in this folder")
    parser.add_argument("--curve-dir", type=Path, default=None, help="CURVE keys folder (see --gen-keys)")
    parser.add_argument(
        "--gen-keys", type=Path, default=None, help="write CURVE key pairs to this folder and exit"
    )
    parser.add_argument(
        "--websocket-port", type=int, default=None, help="also serve openpi-client on this port"
    )


def check_checkpoint_arg(checkpoint: Path | None) -> None:
    """Refuse a ``--checkpoint`` that is not a folder, before anything slow happens."""
    if checkpoint is not None and not checkpoint.is_dir():
        raise FileNotFoundError(f"--checkpoint: expected a checkpoint folder, got {checkpoint}")


def embedded_default(suite: str | None) -> Path | None:
    """The embedded default to serve: ``suite``'s (ValueError if none covers it), else the
    first covered suite's, else None."""
    from cogvla.paths import default_checkpoint_dir, defaults_for

    return default_checkpoint_dir() if suite is None else next(iter(defaults_for((suite,))))


def load_policy(checkpoint: Path | None, device: str = "cpu", suite: str | None = None) -> tuple[Any, str]:
    """The policy to serve and a label saying where its weights come from.

    ``checkpoint`` if given; else the embedded default (of ``suite``, if named); else, until
    one is shipped, a random-weight ``tiny`` model, labelled as such everywhere.
    """
    check_checkpoint_arg(checkpoint)
    from cogvla.policy import CogVLAPolicy

    if checkpoint is not None:
        return CogVLAPolicy.from_pretrained(checkpoint, device=device), f"checkpoint {checkpoint}"
    default = embedded_default(suite)
    if default is not None:
        return CogVLAPolicy.from_pretrained(default, device=device), f"embedded default {default.name}"
    logger.warning(
        "no checkpoint given and none embedded: serving a RANDOM-WEIGHT tiny model (smoke tests only)"
    )
    return CogVLAPolicy.random(
        "tiny", device=device
    ), "random weights (untrained tiny model, smoke tests only)"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cogvla serve``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cogvla.cli import check_device
    from deploy.auth import CurveServerKeys, generate_keys

    if args.gen_keys is not None:
        print(json.dumps(generate_keys(args.gen_keys), indent=2))
        return 0

    from deploy.core import BatchingConfig, InferenceCore
    from deploy.handler import RequestHandler
    from deploy.heap import retain_freed_memory
    from deploy.recorder import Recorder
    from deploy.server import ZmqPolicyServer, ZmqServerConfig

    check_checkpoint_arg(args.checkpoint)
    if args.checkpoint is None:
        embedded_default(args.suite)
    curve = CurveServerKeys.from_dir(args.curve_dir) if args.curve_dir is not None else None
    batching = BatchingConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        default_deadline_ms=args.deadline_ms,
    )
    zmq_config = ZmqServerConfig(
        host=args.host, port=args.port, max_message_bytes=int(args.max_message_mb * 1024 * 1024), curve=curve
    )
    recorder = Recorder(args.record) if args.record is not None else None
    # Bound before the model loads: a port in use fails now, not after a long load, and
    # `cogvla ping` answers state "loading" meanwhile.
    handler = RequestHandler(None, recorder=recorder)
    server = ZmqPolicyServer(handler, zmq_config).start()
    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    def reload_keys(_signum: int, _frame: Any) -> None:
        logger.info("SIGHUP: allow-list reloaded, %d client keys", server.reload_allow_list())

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and curve is not None:
        signal.signal(signal.SIGHUP, reload_keys)
    logger.info("listening on %s; loading the model", server.endpoint)
    core = front = None
    try:
        check_device(args.device)
        # Decoded arrays are read-only views on the message; the model only reads them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        retain_freed_memory()
        policy, weights = load_policy(args.checkpoint, args.device, args.suite)
        if args.unnorm_key is not None:
            policy.use_norm_key(args.unnorm_key)
        core = InferenceCore(policy, batching)
        core.warmup()
        # Everything alive now (torch, the model) lives as long as the process; frozen objects
        # are skipped by later full collections, whose pauses would land on request latencies.
        gc.collect()
        gc.freeze()
        core.start()
        # Until here an interrupt aborts the load; from now on it stops the server cleanly,
        # and the handler is in place before any client can see "ready".
        if in_main_thread:
            signal.signal(signal.SIGINT, request_stop)
            signal.signal(signal.SIGTERM, request_stop)
        handler.ready(core, {"weights": weights})
        if args.websocket_port is not None:
            from deploy.websocket_front import WebSocketFront

            front = WebSocketFront(core, args.host, args.websocket_port, zmq_config.max_message_bytes).start()
        meta = handler.metadata()
        logger.info(
            "ready: policy %s (%s), chunk %s, serving on %s",
            meta.get("name"),
            weights,
            meta.get("chunk_size"),
            server.endpoint,
        )
        # A timed wait: a signal handler runs between the waits, never inside a blocked one.
        while not stopping.wait(0.5) and server.running():
            pass
    finally:
        server.stop()
        if front is not None:
            front.stop()
        if core is not None:
            core.stop()
        if recorder is not None:
            recorder.close()
            logger.info("recorded %d messages to %s", recorder.written, recorder.path)
    logger.info("stopped: %s", json.dumps(core.stats()))
    return 0
