"""The worker pool on a Ray cluster: same jobs, same retry rules, same callbacks as
``eval.libero.workers.WorkerPool``.

One actor per worker (1 CPU each) holds a policy and one env. Ray gives no heartbeat
from inside a running method without threading the simulator, and EGL contexts are
bound to the thread that made them, so a hang here is a job running longer than
``episode_timeout_s``. The job's outputs (videos) are written by the actor, so on a
multi-node cluster the output folder must be on a shared filesystem.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from eval.libero.workers import EnvCache, Job, WorkerSetup, WorkerStartupError, set_torch_threads

__all__ = ["RayPool"]

logger = logging.getLogger(__name__)

_MAX_STARTUP_CRASHES = 3


class _SimActor:
    """Runs jobs in a Ray worker process; returns ``("done", result)`` or ``("failed", traceback)``."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.policy = setup.policy_factory(setup.policy_spec)
        set_torch_threads(setup.torch_threads)
        self.envs = EnvCache(setup.env_factory)

    def ready(self) -> bool:
        return True

    def run(self, job: Any) -> tuple[str, Any]:
        try:
            return "done", self.setup.job(self.envs.get(job.env_spec), self.policy, job, lambda: None)
        except Exception:  # the env is suspect: drop it and let the driver retry the job
            self.envs.drop()
            return "failed", traceback.format_exc(limit=8)


class _Slot:
    """The driver's handle on one actor."""

    def __init__(self, actor_cls: Any, setup: WorkerSetup, index: int) -> None:
        self.index = index
        self.actor = actor_cls.remote(setup)
        self.ready_ref: Any = self.actor.ready.remote()
        self.job: Any = None
        self.ref: Any = None
        self.started = 0.0


class RayPool:
    """Runs jobs on ``num_workers`` Ray actors; see ``WorkerPool.run`` for the contract."""

    def __init__(
        self,
        setup: WorkerSetup,
        num_workers: int,
        *,
        episode_timeout_s: float = 3600.0,
        max_attempts: int = 2,
        address: str | None = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
        self.setup = setup
        self.num_workers = num_workers
        self.episode_timeout_s = episode_timeout_s
        self.max_attempts = max_attempts
        self.address = address
        self._spawned = 0

    def run(
        self,
        jobs: Iterable[Job],
        on_done: Callable[[Any, Any], None],
        on_error: Callable[[Any, str], None],
        *,
        more_jobs: Callable[[], list[Job]] | None = None,
    ) -> None:
        """Run every job; report each through ``on_done(job, result)`` or ``on_error(job, message)``."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_SimActor)
        queue: deque[Any] = deque(jobs)
        attempts: Counter[str] = Counter()
        startup_crashes = 0
        count = self.num_workers if more_jobs is not None else min(self.num_workers, len(queue))
        slots = [self._spawn(actor_cls) for _ in range(count)]
        try:
            while True:
                if not queue and more_jobs is not None:
                    queue.extend(more_jobs())
                if not queue and all(s.job is None for s in slots):
                    return
                for slot in slots:
                    if slot.ready_ref is None and slot.job is None and queue:
                        slot.job = queue.popleft()
                        slot.ref = slot.actor.run.remote(slot.job)
                        slot.started = time.monotonic()
                pending = [s.ready_ref for s in slots if s.ready_ref is not None]
                pending += [s.ref for s in slots if s.ref is not None]
                ray.wait(pending, num_returns=1, timeout=1.0)
                for position, slot in enumerate(slots):
                    failure = self._poll(ray, slot, on_done)
                    if failure is None:
                        continue
                    failure, replace = failure
                    job, slot.job, slot.ref = slot.job, None, None
                    if replace:
                        if slot.ready_ref is not None:
                            startup_crashes += 1
                            if startup_crashes >= _MAX_STARTUP_CRASHES:
                                raise WorkerStartupError(f"Ray actors keep failing to start: {failure}")
                        ray.kill(slot.actor, no_restart=True)
                        slots[position] = self._spawn(actor_cls)
                    if job is None:
                        continue
                    attempts[job.key] += 1
                    if attempts[job.key] < self.max_attempts:
                        logger.warning("retrying %s after: %s", job.key, failure.strip().splitlines()[-1])
                        queue.appendleft(job)
                    else:
                        on_error(job, f"{failure.strip()} (gave up after {attempts[job.key]} attempts)")
        finally:
            for slot in slots:
                ray.kill(slot.actor, no_restart=True)

    def _spawn(self, actor_cls: Any) -> _Slot:
        self._spawned += 1
        return _Slot(actor_cls, self.setup, self._spawned)

    def _poll(self, ray: Any, slot: _Slot, on_done: Callable[[Any, Any], None]) -> tuple[str, bool] | None:
        """Collect a finished call; return ``(failure, replace_actor)`` if something went wrong."""
        if slot.ready_ref is not None:
            done, _ = ray.wait([slot.ready_ref], timeout=0)
            if not done:
                return None
            try:
                ray.get(slot.ready_ref)
            except ray.exceptions.RayError as exc:
                return f"Ray actor {slot.index} failed to start: {exc}", True
            slot.ready_ref = None
            return None
        if slot.ref is None:
            return None
        done, _ = ray.wait([slot.ref], timeout=0)
        if not done:
            running = time.monotonic() - slot.started
            if running > self.episode_timeout_s:
                return f"Ray actor {slot.index} hung (job running for {running:.0f} s)", True
            return None
        try:
            kind, payload = ray.get(slot.ref)
        except ray.exceptions.RayError as exc:
            return f"Ray actor {slot.index} died: {type(exc).__name__}: {exc}", True
        if kind == "failed":
            return f"env failure in Ray actor {slot.index}:\n{payload}", False
        job, slot.job, slot.ref = slot.job, None, None
        on_done(job, payload)
        return None
