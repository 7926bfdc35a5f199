"""Health-check a policy server: print its metadata as JSON and exit 0, or exit non-zero.

    cogvla ping tcp://127.0.0.1:5555
    cogvla ping tcp://10.0.0.7:5555 --timeout-ms 500 \
        --server-key keys/server.key --client-key keys/client.key_secret

    cogvla ping tcp://127.0.0.1:5555 --wait 600   # wait up to 600 s for the model to load

Exit codes: 0 the server answered and is ready; 1 it answered with an error (e.g. a
protocol version mismatch); 2 no answer within ``--timeout-ms`` (down, unreachable, or our
key refused); 3 it answered but is still loading its model (the JSON's ``ping.state`` is
``"loading"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``cogvla ping``."""
    parser.add_argument("endpoint", help="server address, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--timeout-ms", type=int, default=2000, help="give up after this long")
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for a loading server"
    )
    parser.add_argument("--server-key", type=Path, default=None, help="server public key file (CURVE)")
    parser.add_argument(
        "--client-key", type=Path, default=None, help="this client's .key_secret file (CURVE)"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cogvla ping``."""
    from deploy.auth import CurveClientKeys
    from deploy.client import NotReady, PolicyClient, ServerError, ServerTimeout

    if (args.server_key is None) != (args.client_key is None):
        print("cogvla ping: --server-key and --client-key go together (CURVE needs both)", file=sys.stderr)
        return 1
    curve = CurveClientKeys.from_files(args.server_key, args.client_key) if args.server_key else None
    # The client's per-attempt warning would repeat the one line printed below.
    logging.getLogger("cogvla_client.client").setLevel(logging.ERROR)
    # One attempt per request: a health check should fail fast, not retry.
    client = PolicyClient(args.endpoint, timeout_ms=args.timeout_ms, retries=0, curve=curve)
    started = time.perf_counter()
    try:
        status = client.wait_ready(args.wait) if args.wait > 0 else client.ping()
        round_trip_ms = (time.perf_counter() - started) * 1000.0
        if status.get("state") == "loading":
            print(json.dumps({"ping": {"round_trip_ms": round_trip_ms, **status}}, indent=2))
            print(f"cogvla ping: {client.endpoint} is up but still loading its model", file=sys.stderr)
            return 3
        metadata = client.metadata()
    except NotReady as exc:
        print(f"cogvla ping: {exc.message}", file=sys.stderr)
        return 3
    except ServerTimeout:
        print(
            f"cogvla ping: no reply from {client.endpoint} within {args.timeout_ms} ms "
            "(server down, unreachable, or refusing this client's key)",
            file=sys.stderr,
        )
        return 2
    except ServerError as exc:
        print(f"cogvla ping: {client.endpoint} answered with an error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps({**metadata, "ping": {"round_trip_ms": round_trip_ms, **status}}, indent=2))
    return 0
