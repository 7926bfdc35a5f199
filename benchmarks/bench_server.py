"""Policy-server benchmark: loopback overhead against two baselines, and batching throughput.

    .venv/bin/python benchmarks/bench_server.py --out bench_server.json

Part 1 (latency). One LIBERO observation (two 224x224x3 uint8 images, 8-D state, a prompt;
~300 KB) goes through these paths, each server in its own process, timed in alternating
blocks so that load from other processes hits every path alike (each block opens with
untimed calls, ``--block-warmup``, so that no path is timed on caches the others took):

- ``in_process``: ``policy.infer(obs)`` in the benchmark process (the floor);
- ``msgpack_pack_unpack``: encoding plus decoding the request, no transport;
- ``zmq_echo``: a bare ZeroMQ REQ/REP server with the same msgpack codec that decodes the
  observation and answers with a (chunk, 7) action array, no validation, no queue, called
  with a bare REQ socket and the whole observation in one frame;
  ``zmq_echo_attachments`` sends the images as attachment frames, as ``PolicyClient``
  does, and ``zmq_echo_policy_client`` calls the echo with ``PolicyClient`` itself;
- ``openpi_websocket``: openpi-client's ``WebsocketClientPolicy`` against a ``websockets``
  server doing what openpi's server does (metadata frame on connect, msgpack_numpy, infer,
  ``server_timing``), with openpi's observation keys;
- ``cogvla_server``: ``PolicyClient`` against the real server stack (ROUTER front,
  validation, batching core with ``max_batch=8``), so batching is on with one client;
  ``cogvla_server_no_inline`` is the same with ``inline_max_ms=0`` (every request crosses
  to the batching worker thread and back).

The policy is trivial, so the figures are pure serving overhead.

Part 2 (throughput). Eight concurrent clients against a policy whose ``infer_batch`` costs
a fixed 20 ms whatever the batch size, served with ``max_batch=8`` and ``max_batch=1``.

Prints one JSON document (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import multiprocessing as mp
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

__all__ = ["main"]

logger = logging.getLogger("bench_server")

CHUNK = 8
FIXED_COST_S = 0.020
PROMPT = "put both the alphabet soup and the tomato sauce in the basket"


def libero_observation(seed: int = 0) -> dict[str, Any]:
    """A LIBERO-sized observation in the project schema (~300 KB)."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "state": rng.standard_normal(8).astype(np.float32),
        "prompt": PROMPT,
    }


def _policy(kind: str) -> Any:
    from cogvla.policy_api import Policy

    class TrivialPolicy(Policy):
        """Returns a constant chunk: the serving path is all that is measured."""

        def __init__(self) -> None:
            self.chunk = np.zeros((CHUNK, 7), np.float32)

        def infer(self, obs: Any) -> np.ndarray:
            return self.chunk

        def metadata(self) -> dict[str, Any]:
            return {"name": "trivial", "chunk_size": CHUNK, "action_dim": 7, "state_dim": 8}

    class FixedCostPolicy(TrivialPolicy):
        """One forward pass costs FIXED_COST_S whatever the batch size (an accelerator's regime)."""

        def infer_batch(self, observations: Sequence[Any]) -> list[np.ndarray]:
            time.sleep(FIXED_COST_S)
            return [self.chunk for _ in observations]

    return {"trivial": TrivialPolicy, "fixed_cost": FixedCostPolicy}[kind]()


# -- server processes ----------------------------------------------------------------
def _stop_on_sigterm(stop: Callable[[], None]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop())


def _serve_cogvla(port: int, kind: str, max_batch: int, inline_max_ms: float, ready: Any) -> None:
    from deploy.core import BatchingConfig, InferenceCore
    from deploy.handler import RequestHandler
    from deploy.heap import retain_freed_memory
    from deploy.server import ZmqPolicyServer, ZmqServerConfig

    retain_freed_memory()  # process set-up as in `cogvla serve`
    config = BatchingConfig(max_batch=max_batch, max_queue=256, inline_max_ms=inline_max_ms)
    core = InferenceCore(_policy(kind), config)
    core.warmup()
    gc.collect()
    gc.freeze()
    core.start()
    server = ZmqPolicyServer(RequestHandler(core), ZmqServerConfig(port=port))
    _stop_on_sigterm(server.stop)
    ready.set()
    server.serve_forever()
    core.stop()


def _serve_echo(port: int, ready: Any) -> None:
    import zmq

    from deploy.protocol import decode, encode

    chunk = np.zeros((CHUNK, 7), np.float32)
    sock = zmq.Context.instance().socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    _stop_on_sigterm(lambda: os._exit(0))
    ready.set()
    while True:
        frames = sock.recv_multipart(copy=False)
        message = decode(frames[0].buffer, [frame.buffer for frame in frames[1:]])
        reply = {"v": message["v"], "id": message.get("id"), "status": "ok", "result": {"actions": chunk}}
        sock.send(encode(reply), copy=False)


def _serve_openpi_websocket(port: int, ready: Any) -> None:
    from openpi_client import msgpack_numpy
    from websockets.asyncio.server import serve

    policy = _policy("trivial")
    packer = msgpack_numpy.Packer()

    async def handler(websocket: Any) -> None:
        await websocket.send(packer.pack(policy.metadata()))
        prev_total_ms = None
        async for message in websocket:
            start = time.monotonic()
            obs = msgpack_numpy.unpackb(message)
            infer_start = time.monotonic()
            result = {"actions": policy.infer(obs)}
            result["server_timing"] = {"infer_ms": (time.monotonic() - infer_start) * 1000.0}
            if prev_total_ms is not None:
                result["server_timing"]["prev_total_ms"] = prev_total_ms
            await websocket.send(packer.pack(result))
            prev_total_ms = (time.monotonic() - start) * 1000.0

    async def run() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, max_size=None):
            ready.set()
            await asyncio.Future()

    _stop_on_sigterm(lambda: os._exit(0))
    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ServerProcess:
    """A server in a spawned process, stopped with SIGTERM on exit."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.port = _free_port()
        ready = ctx.Event()
        self.process = ctx.Process(target=target, args=(self.port, *args, ready), daemon=True)
        self.process.start()
        if not ready.wait(60):
            raise RuntimeError(f"{target.__name__} did not start within 60 s")

    def __enter__(self) -> _ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(10)


# -- measurement ---------------------------------------------------------------------
def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/max of a list of milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def time_interleaved(
    paths: dict[str, Callable[[], Any]],
    n: int,
    warmup: int,
    block: int = 50,
    after: dict[str, Callable[[], None]] | None = None,
    block_warmup: int = 2,
) -> dict[str, list[float]]:
    """Wall time (ms) of ``n`` calls per path, run in alternating blocks of ``block`` calls.

    Alternating means load from other processes on a shared machine hits every path
    alike, so the comparison stays fair even when the absolute figures move. Each block
    starts with ``block_warmup`` untimed calls: the first call after a switch finds the
    server's caches taken by the other paths' processes, a cost of the benchmark's
    alternation (1 call in ``block``, which would otherwise be the p99) that steady traffic
    does not pay. ``after[name]`` runs after each timed call of that path, outside the timed
    span (bookkeeping).
    """
    after = after or {}
    for call in paths.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    rounds = -(-n // block)
    for _ in tqdm(range(rounds), desc="latency rounds"):
        for name, call in paths.items():
            record = after.get(name)
            for _ in range(block_warmup):
                call()
            for _ in range(block):
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) * 1000.0)
                if record is not None:
                    record()
    return samples


def bench_latency(n: int, warmup: int, block: int = 50, block_warmup: int = 2) -> dict[str, Any]:
    """Round trips of one LIBERO observation along every path."""
    import zmq
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    from deploy.client import PolicyClient
    from deploy.protocol import decode, encode, encode_frames

    obs = libero_observation()
    openpi_obs = {
        "observation/image": obs["image"],
        "observation/wrist_image": obs["wrist_image"],
        "observation/state": obs["state"],
        "prompt": obs["prompt"],
    }
    policy = _policy("trivial")
    with (
        _ServerProcess(_serve_echo) as echo,
        _ServerProcess(_serve_openpi_websocket) as ws,
        _ServerProcess(_serve_cogvla, "trivial", 8, 2.0) as cogvla,
        _ServerProcess(_serve_cogvla, "trivial", 8, 0.0) as threaded,
    ):
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.connect(f"tcp://127.0.0.1:{echo.port}")

        def echo_call() -> Any:
            sock.send(encode({"v": 1, "endpoint": "infer", "obs": obs}), copy=False)
            return decode(sock.recv(copy=False).buffer)

        def echo_frames_call() -> Any:
            sock.send_multipart(encode_frames({"v": 1, "endpoint": "infer", "obs": obs}), copy=True)
            return decode(sock.recv(copy=False).buffer)

        # PolicyClient against the bare echo: splits our overhead into client and server parts.
        echo_client = PolicyClient(f"tcp://127.0.0.1:{echo.port}", timeout_ms=5000, retries=0)
        ws_client = WebsocketClientPolicy("127.0.0.1", ws.port)
        client = PolicyClient(f"tcp://127.0.0.1:{cogvla.port}", timeout_ms=5000, retries=0)
        threaded_client = PolicyClient(f"tcp://127.0.0.1:{threaded.port}", timeout_ms=5000, retries=0)
        stages: dict[str, list[float]] = {}

        def record_stages() -> None:
            for key, value in (client.last_timing or {}).items():
                stages.setdefault(key, []).append(value)

        samples = time_interleaved(
            {
                "in_process": lambda: policy.infer(obs),
                "msgpack_pack_unpack": lambda: decode(encode({"v": 1, "endpoint": "infer", "obs": obs})),
                "zmq_echo": echo_call,
                "zmq_echo_attachments": echo_frames_call,
                "zmq_echo_policy_client": lambda: echo_client.infer(obs),
                "openpi_websocket": lambda: ws_client.infer(openpi_obs),
                "cogvla_server": lambda: client.infer(obs),
                "cogvla_server_no_inline": lambda: threaded_client.infer(obs),
            },
            n,
            warmup,
            block=block,
            after={"cogvla_server": record_stages},
            block_warmup=block_warmup,
        )
        results: dict[str, Any] = {name: summarize(values) for name, values in samples.items()}
        keep = (
            "decode_ms",
            "queue_ms",
            "model_ms",
            "total_ms",
            "round_trip_ms",
            "client_encode_ms",
            "client_decode_ms",
        )
        results["cogvla_server_stages_p50_ms"] = {k: float(np.median(stages[k][-n:])) for k in keep}
        results["cogvla_server_batch_sizes"] = client.ping()["batch_sizes"]
        sock.close(linger=0)
        ws_client._ws.close()
        client.close()
        threaded_client.close()
        echo_client.close()

    inproc = results["in_process"]
    server, echo_s, ws_s = results["cogvla_server"], results["zmq_echo"], results["openpi_websocket"]
    echo_a = results["zmq_echo_attachments"]
    overhead = {q: server[q] - inproc[q] for q in ("p50_ms", "p99_ms")}
    results["server_overhead_ms"] = overhead
    results["ratios"] = {
        "server_over_echo_p50": server["p50_ms"] / echo_s["p50_ms"],
        "server_over_echo_p99": server["p99_ms"] / echo_s["p99_ms"],
        "server_over_attachment_echo_p50": server["p50_ms"] / echo_a["p50_ms"],
        "websocket_over_server_p50": ws_s["p50_ms"] / server["p50_ms"],
        "websocket_over_server_p99": ws_s["p99_ms"] / server["p99_ms"],
    }
    results["targets"] = {
        "overhead_p50_le_0.4ms": overhead["p50_ms"] <= 0.4,
        "overhead_p99_le_1ms": overhead["p99_ms"] <= 1.0,
        "within_1.5x_of_echo_p50": results["ratios"]["server_over_echo_p50"] <= 1.5,
        "within_1.5x_of_attachment_echo_p50": results["ratios"]["server_over_attachment_echo_p50"] <= 1.5,
        "websocket_2.5x_slower_p50": results["ratios"]["websocket_over_server_p50"] >= 2.5,
    }
    return results


def _throughput(max_batch: int, clients: int, requests: int) -> dict[str, Any]:
    from deploy.client import PolicyClient

    obs = libero_observation()
    with _ServerProcess(_serve_cogvla, "fixed_cost", max_batch, 2.0) as server:
        endpoint = f"tcp://127.0.0.1:{server.port}"
        pool = [PolicyClient(endpoint, timeout_ms=30_000, retries=0) for _ in range(clients)]
        for client in pool:
            client.infer(obs)
        barrier = threading.Barrier(clients + 1)
        errors: list[BaseException] = []

        def run(client: Any) -> None:
            barrier.wait()
            try:
                for _ in range(requests):
                    client.infer(obs)
            except BaseException as exc:  # reported in the JSON, not swallowed
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(client,)) for client in pool]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        sizes = pool[0].ping()["batch_sizes"]
        for client in pool:
            client.close()
    total = clients * requests
    return {
        "max_batch": max_batch,
        "clients": clients,
        "requests": total,
        "errors": [repr(e) for e in errors],
        "seconds": elapsed,
        "requests_per_s": total / elapsed,
        "batch_sizes": sizes,
    }


def bench_throughput(clients: int, requests: int) -> dict[str, Any]:
    """Batched vs unbatched serving of ``clients`` concurrent robots on a fixed-cost policy."""
    batched = _throughput(8, clients, requests)
    unbatched = _throughput(1, clients, requests)
    speedup = batched["requests_per_s"] / unbatched["requests_per_s"]
    return {
        "policy_cost_ms": FIXED_COST_S * 1000.0,
        "batched": batched,
        "unbatched": unbatched,
        "speedup": speedup,
        "target_speedup_ge_3x": speedup >= 3.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="timed round trips per latency path")
    parser.add_argument("--warmup", type=int, default=200, help="untimed round trips before each path")
    parser.add_argument("--block", type=int, default=50, help="timed round trips per path before switching")
    parser.add_argument(
        "--block-warmup", type=int, default=2, help="untimed round trips at the start of every block"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the throughput part")
    parser.add_argument("--requests", type=int, default=40, help="requests per client in the throughput part")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--parts", default="latency,throughput", help="comma-separated subset of latency,throughput"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "observation_bytes": int(
            sum(v.nbytes for v in libero_observation().values() if isinstance(v, np.ndarray))
        ),
    }
    parts = set(args.parts.split(","))
    if "latency" in parts:
        report["latency"] = bench_latency(args.n, args.warmup, args.block, args.block_warmup)
        report["latency"]["settings"] = {"n": args.n, "block": args.block, "block_warmup": args.block_warmup}
    if "throughput" in parts:
        report["throughput"] = bench_throughput(args.clients, args.requests)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
