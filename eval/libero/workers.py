"""A supervised pool of simulator worker processes.

Each worker is a spawned process (EGL contexts do not survive ``fork``) that builds the
policy once, keeps one env (rebuilt when the task changes) and runs jobs one at a time.
The parent hands out jobs and watches every worker:

* a worker that exits, or stays silent for ``hang_timeout_s`` while running a job (it
  sends a heartbeat at least every second while stepping), is killed and replaced;
* a job whose worker crashed, hung or raised from the env is retried once on a fresh
  worker, then reported through ``on_error``;
* a worker that cannot build its policy stops the run (``WorkerStartupError``): that is
  a configuration error, and every episode would fail the same way;
* workers ignore SIGINT (a Ctrl-C reaches the whole process group; the parent decides what
  stops), are killed at once when the run ends with an exception, and exit quietly when
  the parent is gone.

The job itself is a picklable function ``job(env, policy, task, heartbeat) -> result``,
so evaluation and demo generation share this pool.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from eval.libero.episode import EnvSpec

__all__ = [
    "EnvCache",
    "Job",
    "WorkerPool",
    "WorkerSetup",
    "WorkerStartupError",
    "default_torch_threads",
    "set_torch_threads",
]

logger = logging.getLogger(__name__)

_HEARTBEAT_PERIOD_S = 1.0
# A worker that keeps dying before it finishes starting is not going to recover.
_MAX_STARTUP_CRASHES = 3


class WorkerStartupError(RuntimeError):
    """A worker could not build its policy; the run cannot go on."""


class Job(Protocol):
    """What the pool runs: anything with a unique ``key`` and the ``env_spec`` it needs."""

    key: str
    env_spec: EnvSpec


@dataclass(frozen=True)
class WorkerSetup:
    """How a worker builds its policy and envs and what it runs; must be picklable."""

    policy_spec: str
    policy_factory: Callable[[str], Any]
    env_factory: Callable[[EnvSpec], Any]
    job: Callable[[Any, Any, Any, Callable[[], None]], Any]
    # torch intra-op threads per worker, so that W workers do not oversubscribe the cores.
    torch_threads: int = 1


class EnvCache:
    """Holds one env at a time: simulators are ~1.5 GB each, and a worker runs one task mostly."""

    def __init__(self, factory: Callable[[EnvSpec], Any]) -> None:
        self.factory = factory
        self._spec: EnvSpec | None = None
        self._env: Any = None

    def get(self, spec: EnvSpec) -> Any:
        """The env for ``spec``, built (and the previous one closed) if needed."""
        if self._env is None or spec != self._spec:
            self.drop()
            self._env = self.factory(spec)
            self._spec = spec
        return self._env

    def drop(self) -> None:
        """Close and forget the current env (after it failed, or at shutdown)."""
        env, self._env, self._spec = self._env, None, None
        if env is not None:
            try:
                env.close()
            except Exception:  # a broken env may fail to close; it is discarded either way
                logger.debug("closing a failed env raised", exc_info=True)


def set_torch_threads(threads: int) -> None:
    """Limit torch's intra-op threads, if a policy has loaded torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _worker_main(conn: Connection, setup: WorkerSetup) -> None:
    """Body of a worker process: build the policy, then serve jobs until told to stop."""
    logging.basicConfig(level=logging.WARNING)
    try:
        _serve(conn, setup)
    # The parent is gone (killed while this worker was still starting, or between jobs):
    # nobody is left to report to.
    except (EOFError, OSError):
        pass


def _serve(conn: Connection, setup: WorkerSetup) -> None:
    """Build the policy, say ready, then run jobs until the parent says stop."""
    try:
        policy = setup.policy_factory(setup.policy_spec)
    except Exception:  # reported to the parent, which stops the run
        conn.send(("fatal", traceback.format_exc()))
        return
    set_torch_threads(setup.torch_threads)
    envs = EnvCache(setup.env_factory)
    conn.send(("ready", None))
    last_beat = [time.monotonic()]

    def heartbeat() -> None:
        now = time.monotonic()
        if now - last_beat[0] >= _HEARTBEAT_PERIOD_S:
            conn.send(("beat", None))
            last_beat[0] = now

    try:
        while True:
            kind, job = conn.recv()
            if kind == "stop":
                break
            try:
                result = setup.job(envs.get(job.env_spec), policy, job, heartbeat)
            except Exception:  # the env is suspect: drop it and let the parent retry the job
                envs.drop()
                conn.send(("failed", traceback.format_exc(limit=8)))
                continue
            conn.send(("done", result))
    finally:
        envs.drop()


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, ctx: Any, setup: WorkerSetup, index: int) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, setup), name=f"sim-worker-{index}", daemon=True
        )
        _start_ignoring_sigint(self.process)
        child.close()
        self.ready = False
        self.job: Any = None
        self.last_seen = time.monotonic()

    def send(self, message: tuple[str, Any]) -> None:
        try:
            self.conn.send(message)
        except OSError:
            logger.debug("worker %d is gone; its sentinel will report it", self.index)
        self.last_seen = time.monotonic()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(("stop", None))
        except (OSError, ValueError):
            pass
        self.process.join(timeout=30)
        self.kill()


class WorkerPool:
    """Runs jobs on ``num_workers`` supervised processes (see the module docstring)."""

    def __init__(
        self,
        setup: WorkerSetup,
        num_workers: int,
        *,
        hang_timeout_s: float = 600.0,
        startup_timeout_s: float = 1800.0,
        max_attempts: int = 2,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
        self.setup = setup
        self.num_workers = num_workers
        self.hang_timeout_s = hang_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.max_attempts = max_attempts
        self._ctx = mp.get_context("spawn")
        self._spawned = 0

    def run(
        self,
        jobs: Iterable[Job],
        on_done: Callable[[Any, Any], None],
        on_error: Callable[[Any, str], None],
        *,
        more_jobs: Callable[[], list[Job]] | None = None,
    ) -> None:
        """Run every job; report each through ``on_done(job, result)`` or ``on_error(job, message)``.

        ``more_jobs()``, if given, is asked for new jobs whenever the queue is empty (the
        demo generator tops up attempts this way); ``[]`` means none for now. The run ends
        when the queue is empty, no job is in flight and ``more_jobs()`` has nothing.
        """
        queue: deque[Any] = deque(jobs)
        attempts: Counter[str] = Counter()
        startup_crashes = 0
        count = self.num_workers if more_jobs is not None else min(self.num_workers, len(queue))
        workers = [self._spawn() for _ in range(count)]
        completed = False
        try:
            while True:
                if not queue and more_jobs is not None:
                    queue.extend(more_jobs())
                if not queue and all(w.job is None for w in workers):
                    completed = True
                    return
                for worker in workers:
                    if worker.ready and worker.job is None and queue:
                        worker.job = queue.popleft()
                        worker.send(("run", worker.job))
                wait([w.conn for w in workers] + [w.process.sentinel for w in workers], timeout=1.0)
                for position, worker in enumerate(workers):
                    failure, fatal = self._poll(worker, on_done)
                    if failure is None:
                        continue
                    job, worker.job = worker.job, None
                    if fatal:
                        if not worker.ready:
                            startup_crashes += 1
                            if startup_crashes >= _MAX_STARTUP_CRASHES:
                                raise WorkerStartupError(f"workers keep failing to start: {failure}")
                        worker.kill()
                        workers[position] = self._spawn()
                    if job is None:
                        continue
                    attempts[job.key] += 1
                    if attempts[job.key] < self.max_attempts:
                        logger.warning("retrying %s after: %s", job.key, failure.strip().splitlines()[-1])
                        queue.appendleft(job)
                    else:
                        on_error(job, f"{failure.strip()} (gave up after {attempts[job.key]} attempts)")
        finally:
            for worker in workers:
                if completed:
                    worker.stop()
                else:  # an exception or a signal: episodes in flight are dropped, resume runs them
                    worker.kill()

    def _spawn(self) -> _Worker:
        self._spawned += 1
        return _Worker(self._ctx, self.setup, self._spawned)

    def _poll(self, worker: _Worker, on_done: Callable[[Any, Any], None]) -> tuple[str | None, bool]:
        """Drain a worker's messages.

        Returns ``(failure, replace)``: a description of what went wrong with the current
        job (None if nothing did) and whether the worker process must be replaced.
        """
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                worker.last_seen = time.monotonic()
                if kind == "ready":
                    worker.ready = True
                elif kind == "fatal":
                    raise WorkerStartupError(f"a worker could not build the policy:\n{payload}")
                elif kind == "done":
                    job, worker.job = worker.job, None
                    on_done(job, payload)
                elif kind == "failed":
                    return f"env failure in worker {worker.index}:\n{payload}", False
        except (EOFError, OSError):
            pass
        if not worker.process.is_alive():
            return f"worker {worker.index} died (exit code {worker.process.exitcode})", True
        silent = time.monotonic() - worker.last_seen
        if worker.ready and worker.job is not None and silent > self.hang_timeout_s:
            return f"worker {worker.index} hung (no progress for {silent:.0f} s)", True
        if not worker.ready and silent > self.startup_timeout_s:
            return f"worker {worker.index} did not start within {self.startup_timeout_s:.0f} s", True
        return None, False


def _start_ignoring_sigint(process: Any) -> None:
    """Start ``process`` with SIGINT ignored from its first instruction: an ignored signal
    survives exec, while a Python handler would not, and Python then installs no
    KeyboardInterrupt handler of its own."""
    if threading.current_thread() is not threading.main_thread():
        process.start()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def default_torch_threads(num_workers: int) -> int:
    """Cores per worker, at least one."""
    return max(1, (os.cpu_count() or 1) // num_workers)
