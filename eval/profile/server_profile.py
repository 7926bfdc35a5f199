"""Where a ZeroMQ round trip's time goes, seen from the client (``cogvla profile server``).

A policy server runs in a child process on ``127.0.0.1`` with a free port (same
policy loading as ``cogvla serve``); ``N`` client threads in this process, each with its
own ``deploy.client.PolicyClient``, send a bounded number of ``infer`` requests back to
back. Every reply's timing fields (docs/protocol.md) split the client's latency into:

- ``serialization``: client encode + client decode + the server's decode and validation;
- ``transport``: round trip minus the server's ``total_ms`` (both socket hops, the
  server's I/O thread, and encoding the small reply);
- ``queueing``: validated request -> its batch started (waiting for companions included);
- ``preprocessing``, ``model``, ``postprocessing``: the policy's own split;
- ``other``: what remains of the client's ``infer`` (action-chunk validation, server
  bookkeeping between stages).

The components add up exactly to ``total`` (the client-observed latency per request).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eval.profile.latency import summarize
from eval.profile.model_profile import load_average

__all__ = [
    "COMPONENTS",
    "ServerProfileConfig",
    "ServerStartError",
    "format_server_table",
    "profile_server",
    "split_timing",
]

logger = logging.getLogger(__name__)

COMPONENTS = ("serialization", "transport", "queueing", "preprocessing", "model", "postprocessing", "other")
TOTAL = "total"
# longest wait for the child process to load the policy and bind its socket
_START_TIMEOUT_S = 600.0


class ServerStartError(RuntimeError):
    """The profiled server process did not come up."""


@dataclass(frozen=True)
class ServerProfileConfig:
    """What ``profile_server`` measures."""

    checkpoint: Path | None = None
    # one run per entry, in this order, against the same server
    clients: tuple[int, ...] = (1, 8)
    # timed requests per client and run
    requests: int = 30
    # untimed requests per client before each run
    warmup: int = 3
    device: str = "cpu"
    max_batch: int = 8
    max_wait_ms: float = 5.0
    # side of the square camera images sent; None = what the policy's metadata asks for
    image_size: int | None = None
    timeout_ms: int = 60_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.clients or any(not isinstance(n, int) or n < 1 for n in self.clients):
            raise ValueError(f"clients: expected positive client counts, got {list(self.clients)}")
        for name, minimum in (("requests", 1), ("warmup", 0), ("max_batch", 1), ("timeout_ms", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size: expected None or >= 8, got {self.image_size}")
        if self.checkpoint is not None and not Path(self.checkpoint).is_dir():
            raise ValueError(f"checkpoint: expected a checkpoint folder, got {self.checkpoint}")


def _serve_process(
    checkpoint: str | None, device: str, max_batch: int, max_wait_ms: float, conn: Any
) -> None:
    """Child process: load the policy as ``cogvla serve`` does, serve until the parent says stop."""
    try:
        from deploy.core import BatchingConfig, InferenceCore
        from deploy.handler import RequestHandler
        from deploy.serve_cli import load_policy
        from deploy.server import ZmqPolicyServer, ZmqServerConfig
        from eval.profile.policy_timing import with_stage_split

        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        policy, weights = load_policy(Path(checkpoint) if checkpoint else None, device)
        policy, split_source = with_stage_split(policy)
        core = InferenceCore(policy, BatchingConfig(max_batch=max_batch, max_wait_ms=max_wait_ms))
        core.warmup()
        core.start()
        server = ZmqPolicyServer(
            RequestHandler(core, info={"weights": weights}), ZmqServerConfig(port=0)
        ).start()
    except Exception as exc:  # reported to the parent, which raises ServerStartError
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(
        ("ready", {"endpoint": server.endpoint, "weights": weights, "stage_split_source": split_source})
    )
    try:
        conn.recv()
    except EOFError:
        pass
    server.stop()
    core.stop()


class _ServerProcess:
    """The child process serving the policy; a context manager that always stops it."""

    def __init__(self, config: ServerProfileConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve_process,
            args=(
                str(config.checkpoint) if config.checkpoint else None,
                config.device,
                config.max_batch,
                config.max_wait_ms,
                child_conn,
            ),
            name="cogvla-profile-server",
            daemon=True,
        )
        self.info: dict[str, Any] = {}

    def __enter__(self) -> _ServerProcess:
        self._process.start()
        if not self._conn.poll(_START_TIMEOUT_S):
            self._stop()
            raise ServerStartError(f"the server process did not report ready within {_START_TIMEOUT_S:.0f} s")
        status, payload = self._conn.recv()
        if status != "ready":
            self._stop()
            raise ServerStartError(f"the server process failed to start: {payload}")
        self.info = payload
        return self

    def _stop(self) -> None:
        try:
            self._conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self._process.join(30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def __exit__(self, *exc: object) -> None:
        self._stop()


def split_timing(timing: dict[str, float]) -> dict[str, float]:
    """One request's components (ms) from ``PolicyClient.last_timing``; they sum to ``total``."""
    parts = {
        "serialization": timing["client_encode_ms"] + timing["client_decode_ms"] + timing["decode_ms"],
        "transport": timing["round_trip_ms"] - timing["total_ms"],
        "queueing": timing["queue_ms"],
        "preprocessing": timing["preprocess_ms"],
        "model": timing["model_ms"],
        "postprocessing": timing["postprocess_ms"],
    }
    parts["other"] = timing["client_total_ms"] - sum(parts.values())
    parts[TOTAL] = timing["client_total_ms"]
    return parts


def _observation(metadata: dict[str, Any], image_size: int | None, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    obs: dict[str, Any] = {}
    for key, shape in metadata["image_keys"].items():
        side_h, side_w = (image_size, image_size) if image_size else (shape[0], shape[1])
        obs[key] = rng.integers(0, 256, (side_h, side_w, 3), dtype=np.uint8)
    obs["state"] = rng.uniform(-0.5, 0.5, int(metadata["state_dim"])).astype(np.float32)
    obs["prompt"] = "pick up the black bowl between the plate and the ramekin and place it on the plate"
    return obs


def _client_worker(
    endpoint: str,
    config: ServerProfileConfig,
    metadata: dict[str, Any],
    index: int,
    barrier: threading.Barrier,
    sink: list[dict[str, float]],
    errors: list[str],
    bar: tqdm,
) -> None:
    from deploy.client import PolicyClient

    obs = _observation(metadata, config.image_size, config.seed + index)
    try:
        with PolicyClient(endpoint, timeout_ms=config.timeout_ms, retries=0) as client:
            for _ in range(config.warmup):
                client.infer(obs)
            barrier.wait()
            for _ in range(config.requests):
                client.infer(obs)
                sink.append({**client.last_timing})
                bar.update(1)
    except Exception as exc:  # a failed client must not hang the others at the barrier
        errors.append(f"client {index}: {type(exc).__name__}: {exc}")
        barrier.abort()


def _run_clients(
    endpoint: str, config: ServerProfileConfig, metadata: dict[str, Any], clients: int
) -> dict[str, Any]:
    barrier = threading.Barrier(clients + 1)
    records: list[dict[str, float]] = []
    errors: list[str] = []
    with tqdm(total=clients * config.requests, desc=f"{clients} client(s)", unit="req", leave=False) as bar:
        threads = [
            threading.Thread(
                target=_client_worker,
                args=(endpoint, config, metadata, index, barrier, records, errors, bar),
                name=f"profile-client-{index}",
            )
            for index in range(clients)
        ]
        for thread in threads:
            thread.start()
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        wall_s = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    parts = [split_timing(record) for record in records]
    columns = {name: [part[name] for part in parts] for name in (*COMPONENTS, TOTAL)}
    batch_sizes = [int(record.get("batch_size", 1)) for record in records]
    return {
        "clients": clients,
        "requests": len(records),
        "wall_s": wall_s,
        "throughput_rps": len(records) / wall_s,
        TOTAL: summarize(columns[TOTAL], TOTAL),
        "components": {name: summarize(columns[name], name) for name in COMPONENTS},
        "batch_size": {
            "mean": float(np.mean(batch_sizes)),
            "counts": {str(size): batch_sizes.count(size) for size in sorted(set(batch_sizes))},
        },
        "retries": int(sum(record.get("attempts", 1.0) - 1 for record in records)),
        "samples_ms": columns[TOTAL],
    }


def profile_server(config: ServerProfileConfig, out_png: Path | None = None) -> dict[str, Any]:
    """Start the server, run every client count of ``config`` against it, return the JSON-able result."""
    from deploy.client import PolicyClient
    from deploy.core import BatchingConfig

    # the batching core may wait for a session until this long after its last answer
    quiet_s = BatchingConfig().activity_window_s + 0.5
    loadavg_before = load_average()
    runs: dict[str, Any] = {}
    with _ServerProcess(config) as server:
        endpoint = server.info["endpoint"]
        with PolicyClient(endpoint, timeout_ms=config.timeout_ms, retries=0) as probe:
            metadata = probe.metadata()
        for position, clients in enumerate(config.clients):
            if position:
                time.sleep(quiet_s)
            runs[str(clients)] = _run_clients(endpoint, config, metadata, clients)
    result = {
        "checkpoint": str(config.checkpoint) if config.checkpoint else None,
        "weights": server.info["weights"],
        "policy": metadata.get("name"),
        "stage_split_source": server.info["stage_split_source"],
        "device": config.device,
        "requests_per_client": config.requests,
        "warmup_per_client": config.warmup,
        "max_batch": config.max_batch,
        "max_wait_ms": config.max_wait_ms,
        "image_keys": metadata.get("image_keys"),
        "loadavg": {"before": loadavg_before, "after": load_average()},
        "runs": runs,
    }
    if out_png is not None:
        from eval.profile.plots import plot_server_histogram

        series = {f"{n} client(s)": run["samples_ms"] for n, run in runs.items()}
        plot_server_histogram(series, out_png, f"{metadata.get('name')}: client-observed latency")
    return result


def format_server_table(result: dict[str, Any]) -> str:
    """Markdown: one row per component, p50 and p99 per client count, plus throughput and batch sizes."""
    runs = result["runs"]
    names = list(runs)
    header = "| component (ms) | " + " | ".join(f"{n} client(s) p50 | p99" for n in names) + " |"
    lines = [header, "|---|" + "---|---|" * len(names)]
    for component in (*COMPONENTS, TOTAL):
        cells = []
        for name in names:
            summary = runs[name][TOTAL] if component == TOTAL else runs[name]["components"][component]
            cells.append(f"{summary['p50_ms']:.2f} | {summary['p99_ms']:.2f}")
        lines.append(f"| {component} | " + " | ".join(cells) + " |")
    lines.append(
        "| throughput (req/s) | " + " | ".join(f"{runs[n]['throughput_rps']:.1f} | " for n in names) + " |"
    )
    lines.append(
        "| mean batch size | " + " | ".join(f"{runs[n]['batch_size']['mean']:.2f} | " for n in names) + " |"
    )
    lines.append(
        f"\npolicy {result['policy']} ({result['weights']}), stage split from {result['stage_split_source']}, "
        f"load average before/after {result['loadavg']['before']} / {result['loadavg']['after']}"
    )
    return "\n".join(lines)
