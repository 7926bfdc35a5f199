"""The transport-independent serving core: a bounded queue, dynamic batching, deadlines.

Fronts (the ZeroMQ server, the WebSocket front) decode and validate a request, then
``submit`` an ``InferenceJob``; one worker thread groups queued jobs into a batch and runs
``policy.infer_batch`` once for the whole batch, then calls each job's ``on_done``.
``submit_or_run`` skips the worker for a lone client of a fast policy (see
``BatchingConfig.inline_max_ms``).

Batching never makes a lone client wait: the worker waits (at most ``max_wait_ms``) for
more requests only from sessions whose next request is *due* within that wait: each
session's think time (from its last answer to the request that followed, kept while it
asks again within ``activity_window_s``) says when that is. With one robot connected
every request runs as soon as it arrives; robots that ask again as soon as they are
answered converge on full batches; robots that ask at a low rate, whose next request is
far off, are not waited for.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cogvla.policy_api import (
    ACTION_DIM,
    OBS_PROMPT,
    OBS_STATE,
    Policy,
    PolicyOutputError,
    validate_action_chunk,
)
from deploy.protocol import ErrorCode, RequestError
from deploy.validation import ObservationSpec

__all__ = ["BatchingConfig", "InferenceCore", "InferenceJob", "InferenceOutcome", "SessionState"]

logger = logging.getLogger(__name__)

# Session bookkeeping is dropped after an hour of silence once this many sessions exist.
_MAX_SESSIONS = 4096
_SESSION_IDLE_S = 3600.0


@dataclass(frozen=True)
class BatchingConfig:
    """How the core groups requests and when it refuses them."""

    # most observations run in one forward pass.
    max_batch: int = 8
    # longest a queued request waits for companions (only when other clients are active).
    max_wait_ms: float = 5.0
    # queued (not yet running) requests beyond this are answered `overloaded` at once.
    max_queue: int = 64
    # deadline for requests that do not carry one: generous, so only requests stuck behind a
    # badly overloaded server expire (clients that need less send their own deadline_ms).
    default_deadline_ms: float = 10_000.0
    # a session's think time is kept while it asks again within this long of an answer.
    activity_window_s: float = 2.0
    # a request nothing could join runs on the front's own thread while forward passes take
    # less than this (two thread hand-offs saved: 0.1-0.15 ms per request measured on a 2-core VM); 0
    # disables. Slower models always go through the worker, so a front never stops reading
    # for long.
    inline_max_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch: expected >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: expected >= 0, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue: expected >= 1, got {self.max_queue}")
        if self.default_deadline_ms <= 0:
            raise ValueError(f"default_deadline_ms: expected > 0, got {self.default_deadline_ms}")
        if self.activity_window_s <= 0:
            raise ValueError(f"activity_window_s: expected > 0, got {self.activity_window_s}")
        if self.inline_max_ms < 0:
            raise ValueError(f"inline_max_ms: expected >= 0, got {self.inline_max_ms}")


@dataclass
class InferenceOutcome:
    """What a job ends with: an action chunk or an error, plus per-stage timing in ms."""

    actions: np.ndarray | None
    error: RequestError | None
    timing: dict[str, float]


@dataclass
class InferenceJob:
    """One validated observation waiting for an action chunk.

    Times are ``time.perf_counter()`` seconds: ``received`` when the front read the bytes,
    ``decoded`` when decoding and validation finished, ``deadline`` when the answer stops
    being useful. ``on_done`` is called exactly once: from the worker thread, from the
    thread that called ``submit_or_run`` (inline run) or from ``stop``'s caller.
    """

    obs: Mapping[str, Any]
    session: str
    received: float
    decoded: float
    deadline: float
    on_done: Callable[[InferenceJob, InferenceOutcome], None]


@dataclass
class SessionState:
    """Per-client bookkeeping; ``reset`` starts a new episode."""

    episode: int = 0
    steps: int = 0
    requests: int = 0
    last_infer: float = 0.0
    # when its last infer request was answered (perf_counter s); 0 before the first.
    answered: float = 0.0
    # time from its last answer to the infer request that followed (s); None until it asked
    # again within activity_window_s of an answer. The latest gap, not an average: after a
    # change of pace (a fleet starting together) the next batch already waits right.
    think: float | None = None


@dataclass
class _Counters:
    batches: int = 0
    served: int = 0
    expired: int = 0
    overloaded: int = 0
    failed: int = 0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)


class InferenceCore:
    """Owns the policy, the bounded queue and the batching worker thread."""

    def __init__(
        self, policy: Policy, config: BatchingConfig | None = None, spec: ObservationSpec | None = None
    ) -> None:
        self.policy = policy
        self.config = config or BatchingConfig()
        self._policy_metadata = dict(policy.metadata())
        self.spec = spec or ObservationSpec.from_metadata(self._policy_metadata)
        self.action_dim = int(self._policy_metadata.get("action_dim", ACTION_DIM))
        self._queue: collections.deque[InferenceJob] = collections.deque()
        # Sections take the lock itself (Condition.__enter__ is Python code); the condition
        # on it is for the worker's waits. A plain lock: nothing here re-enters it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sessions: dict[str, SessionState] = {}
        self._running = False
        # True while a batch runs (worker or inline): one forward pass at a time.
        self._busy = False
        # moving average of forward-pass time; None until one pass was timed.
        self._pass_ms: float | None = None
        self._worker: threading.Thread | None = None
        self._counters = _Counters()

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> InferenceCore:
        """Start the worker thread (idempotent); returns self."""
        with self._lock:
            if self._running:
                return self
            self._running = True
        self._worker = threading.Thread(target=self._work, name="cogvla-batcher", daemon=True)
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the running batch, answer queued jobs `shutting_down`, join the worker."""
        with self._lock:
            self._running = False
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            self._finish(job, RequestError(ErrorCode.SHUTTING_DOWN, "server is shutting down"))
        if self._worker is not None:
            self._worker.join(timeout)

    # -- requests ------------------------------------------------------------------
    def submit(self, job: InferenceJob) -> None:
        """Queue a job; raises ``RequestError`` (`overloaded`/`shutting_down`) instead of queueing."""
        with self._lock:
            self._admit(job)
            self._queue.append(job)
            self._cond.notify()

    def submit_or_run(self, job: InferenceJob) -> None:
        """Like ``submit``, but runs the job right here when nothing could be batched with it.

        That is when the core is idle, no other session's request is due (see the module
        docstring) and forward passes are fast (``inline_max_ms``); the caller's thread is
        then held for one short pass.
        """
        with self._lock:
            self._admit(job)
            inline = (
                not self._queue
                and not self._busy
                and self._pass_ms is not None
                and self._pass_ms <= self.config.inline_max_ms
                and self._due_sessions(job.received, (job.session,)) == 0
            )
            if not inline:
                self._queue.append(job)
                self._cond.notify()
                return
            self._busy = True
        self._run_batch([job])

    def _admit(self, job: InferenceJob) -> None:
        """Refuse the job when stopping or full; else count it for its session (lock held)."""
        if not self._running:
            raise RequestError(ErrorCode.SHUTTING_DOWN, "server is shutting down")
        if len(self._queue) >= self.config.max_queue:
            self._counters.overloaded += 1
            raise RequestError(
                ErrorCode.OVERLOADED,
                f"request queue is full ({self.config.max_queue} waiting); retry later",
                expected=f"< {self.config.max_queue} queued",
                actual=str(len(self._queue)),
            )
        session = self._session(job.session)
        session.requests += 1
        # Think time, not the request interval: the interval also holds the batching waits
        # and passes of this server, which vary by more than a wait lasts.
        gap = max(job.received - session.answered, 0.0)
        active = session.answered > 0.0 and gap <= self.config.activity_window_s
        session.think = gap if active else None
        session.last_infer = job.received

    def infer(
        self, obs: Mapping[str, Any], *, session: str, deadline_ms: float | None = None
    ) -> InferenceOutcome:
        """Validate, queue and wait for one observation (for thread-per-connection fronts)."""
        received = time.perf_counter()
        clean = self.spec.validate(obs)
        done = threading.Event()
        box: list[InferenceOutcome] = []

        def on_done(_job: InferenceJob, outcome: InferenceOutcome) -> None:
            box.append(outcome)
            done.set()

        self.submit_or_run(
            self.job(clean, session=session, received=received, deadline_ms=deadline_ms, on_done=on_done)
        )
        done.wait()
        return box[0]

    def job(
        self,
        obs: Mapping[str, Any],
        *,
        session: str,
        received: float,
        deadline_ms: float | None,
        on_done: Callable[[InferenceJob, InferenceOutcome], None],
    ) -> InferenceJob:
        """Build a job whose deadline is ``deadline_ms`` (or the server default) after ``received``."""
        budget = self.config.default_deadline_ms if deadline_ms is None else deadline_ms
        return InferenceJob(
            obs=obs,
            session=session,
            received=received,
            decoded=time.perf_counter(),
            deadline=received + budget / 1000.0,
            on_done=on_done,
        )

    def warmup(self, passes: int = 2) -> list[np.ndarray]:
        """Run ``passes`` forward passes on a blank observation (first calls pay lazy init).

        Call before ``start``; returns the last pass's action chunks and times the pass so
        the inline decision starts from a realistic figure.
        """
        blank = {key: np.zeros(shape, np.uint8) for key, shape in self.spec.image_shapes.items()}
        blank[OBS_STATE] = np.zeros(self.spec.state_dim, np.float32)
        blank[OBS_PROMPT] = "warm up"
        outputs: list[np.ndarray] = []
        for _ in range(passes):
            start = time.perf_counter()
            outputs = self.policy.infer_batch([blank])
            self._pass_ms = (time.perf_counter() - start) * 1000.0
        if outputs:
            chunk = validate_action_chunk(outputs[0], self.action_dim)
            self._policy_metadata.setdefault("chunk_size", int(chunk.shape[0]))
        return outputs

    def reset_session(self, session: str) -> dict[str, Any]:
        """Start a new episode for ``session``; the shared policy itself is not reset."""
        with self._lock:
            state = self._session(session)
            state.episode += 1
            state.steps = 0
            return {"session": session, "episode": state.episode}

    def session_state(self, session: str) -> SessionState:
        """A copy of the bookkeeping for ``session``."""
        with self._lock:
            state = self._session(session)
            return dataclasses.replace(state)

    def metadata(self) -> dict[str, Any]:
        """The policy's metadata completed with the observation spec and batching limits."""
        meta = dict(self._policy_metadata)
        meta.update(self.spec.to_wire())
        meta["max_batch"] = self.config.max_batch
        meta["max_queue"] = self.config.max_queue
        meta["default_deadline_ms"] = self.config.default_deadline_ms
        return meta

    def stats(self) -> dict[str, Any]:
        """Queue depth and counters (for `ping` and logs)."""
        with self._lock:
            c = self._counters
            return {
                "queue_depth": len(self._queue),
                "sessions": len(self._sessions),
                "batches": c.batches,
                "served": c.served,
                "expired": c.expired,
                "overloaded": c.overloaded,
                "failed": c.failed,
                "batch_sizes": {str(k): v for k, v in sorted(c.batch_sizes.items())},
            }

    # -- worker --------------------------------------------------------------------
    def _session(self, session: str) -> SessionState:
        state = self._sessions.get(session)
        if state is None:
            if len(self._sessions) >= _MAX_SESSIONS:
                horizon = time.perf_counter() - _SESSION_IDLE_S
                self._sessions = {k: v for k, v in self._sessions.items() if v.last_infer >= horizon}
            state = self._sessions[session] = SessionState()
        return state

    def _due_sessions(self, now: float, exclude: Collection[str]) -> int:
        """Sessions not in ``exclude`` whose next request is due before a batch wait started
        ``now`` would end (lock held)."""
        deadline = now + self.config.max_wait_ms / 1000.0
        # A session answered longer than the activity window ago has stopped, and one whose
        # request is still unanswered is already queued or in hand.
        silent = now - self.config.activity_window_s
        return sum(
            1
            for key, s in self._sessions.items()
            if s.think is not None
            and max(silent, s.last_infer) <= s.answered <= deadline - s.think
            and key not in exclude
        )

    def _take_batch(self) -> list[InferenceJob] | None:
        """Block for the next batch and mark the core busy; None once stopped and drained."""
        cfg = self.config
        with self._lock:
            while not self._queue or self._busy:
                if not self._running and not self._queue:
                    return None
                self._cond.wait()
            self._busy = True
            batch = [self._queue.popleft() for _ in range(min(cfg.max_batch, len(self._queue)))]
            in_hand = {job.session for job in batch}
            target = min(cfg.max_batch, len(batch) + self._due_sessions(time.perf_counter(), in_hand))
            # Counted from now, not from the oldest arrival: requests that queued during the
            # previous pass would otherwise never wait, and the clients would stay split in
            # two alternating half batches instead of converging on full ones.
            give_up = time.perf_counter() + cfg.max_wait_ms / 1000.0
            while len(batch) < target and self._running:
                remaining = give_up - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                while self._queue and len(batch) < cfg.max_batch:
                    batch.append(self._queue.popleft())
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _run_batch(self, batch: Sequence[InferenceJob]) -> None:
        """Run one forward pass over ``batch`` (the caller marked the core busy), free the core
        for the next pass, then answer every job."""
        start = time.perf_counter()
        results: list[tuple[InferenceJob, np.ndarray | None, RequestError | None, dict[str, float]]] = []

        def waited(job: InferenceJob) -> dict[str, float]:
            """Timing of a job answered without a forward pass."""
            return {"queue_ms": (start - job.decoded) * 1000.0}

        live = []
        for job in batch:
            if job.deadline > start:
                live.append(job)
                continue
            error = RequestError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"request waited past its deadline by {(start - job.deadline) * 1000.0:.1f} ms; not computed",
                expected="start before the deadline",
                actual=f"{(start - job.received) * 1000.0:.1f} ms after arrival",
            )
            results.append((job, None, error, waited(job)))
        pass_ms = None
        if live:
            try:
                results += self._forward(live, start)
                pass_ms = (time.perf_counter() - start) * 1000.0
            except Exception as exc:  # the server must outlive any policy failure
                logger.exception("policy.infer_batch failed on a batch of %d", len(live))
                error = RequestError(ErrorCode.INTERNAL_ERROR, f"policy failed: {type(exc).__name__}: {exc}")
                results += [(job, None, error, waited(job)) for job in live]
        with self._lock:
            self._busy = False
            if pass_ms is not None:
                self._pass_ms = pass_ms if self._pass_ms is None else 0.8 * self._pass_ms + 0.2 * pass_ms
                self._counters.batches += 1
                self._counters.batch_sizes[len(live)] += 1
            for job, _, error, _ in results:
                self._count(job, error)
            # Only the worker waits on the condition; waking it for nothing costs a thread switch.
            if self._queue:
                self._cond.notify()
        for job, actions, error, timing in results:
            self._deliver(job, actions, error, timing)

    def _forward(
        self, live: Sequence[InferenceJob], start: float
    ) -> list[tuple[InferenceJob, np.ndarray | None, RequestError | None, dict[str, float]]]:
        outputs = self.policy.infer_batch([job.obs for job in live])
        if len(outputs) != len(live):
            raise PolicyOutputError(f"infer_batch: expected {len(live)} action chunks, got {len(outputs)}")
        stages = _stage_split(self.policy, (time.perf_counter() - start) * 1000.0)
        stages["batch_size"] = float(len(live))
        results = []
        for job, raw in zip(live, outputs, strict=True):
            actions, error = _checked(raw, self.action_dim)
            timing = {
                "decode_ms": (job.decoded - job.received) * 1000.0,
                "queue_ms": (start - job.decoded) * 1000.0,
                **stages,
            }
            results.append((job, actions, error, timing))
        return results

    def _count(self, job: InferenceJob, error: RequestError | None) -> None:
        """Book one answered job (lock held)."""
        counters = self._counters
        session = self._session(job.session)
        session.answered = time.perf_counter()
        if error is None:
            counters.served += 1
            session.steps += 1
        elif error.code is ErrorCode.DEADLINE_EXCEEDED:
            counters.expired += 1
        else:
            counters.failed += 1

    def _finish(self, job: InferenceJob, error: RequestError) -> None:
        """Answer one job that never reached a forward pass."""
        with self._lock:
            self._count(job, error)
        self._deliver(job, None, error, {})

    def _deliver(
        self,
        job: InferenceJob,
        actions: np.ndarray | None,
        error: RequestError | None,
        timing: dict[str, float],
    ) -> None:
        timing["total_ms"] = (time.perf_counter() - job.received) * 1000.0
        try:
            job.on_done(job, InferenceOutcome(actions, error, timing))
        except Exception:  # a broken front callback must not kill the worker
            logger.exception("on_done callback failed for session %s", job.session)


def _checked(raw: Any, action_dim: int) -> tuple[np.ndarray | None, RequestError | None]:
    try:
        return validate_action_chunk(raw, action_dim), None
    except PolicyOutputError as exc:
        return None, RequestError(ErrorCode.INTERNAL_ERROR, f"policy returned an invalid action chunk: {exc}")


def _stage_split(policy: Policy, elapsed_ms: float) -> dict[str, float]:
    """Preprocess/model/postprocess split of one ``infer_batch`` call.

    Policies that time their own stages leave them in ``policy.last_timing`` (ms); the
    rest of the call is counted as model time. Others get the whole call as ``model_ms``.
    """
    reported = getattr(policy, "last_timing", None)
    split = {"preprocess_ms": 0.0, "model_ms": elapsed_ms, "postprocess_ms": 0.0}
    if isinstance(reported, Mapping):
        pre = float(reported.get("preprocess_ms", 0.0))
        post = float(reported.get("postprocess_ms", 0.0))
        split = {"preprocess_ms": pre, "model_ms": max(elapsed_ms - pre - post, 0.0), "postprocess_ms": post}
    return split
