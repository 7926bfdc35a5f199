"""The serving core without a transport: one bad chunk fails its own job only, a short batch
fails them all, config limits at their edges, sessions, eviction, warm-up and the stage split."""

from __future__ import annotations

import argparse
import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from test_server import CHUNK, EchoPolicy, make_obs

import deploy.core
from deploy.core import BatchingConfig, InferenceCore, InferenceJob, InferenceOutcome
from deploy.protocol import ErrorCode, RequestError
from deploy.serve_cli import add_arguments
from deploy.server import ZmqServerConfig


class GatedPolicy(EchoPolicy):
    """Holds its first batch until ``release`` is set, so later jobs queue into one batch;
    a state of 5 gets a chunk of the wrong width, and ``short`` drops the last chunk."""

    def __init__(self, short: bool = False) -> None:
        super().__init__()
        self.short = short
        self.release = threading.Event()

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        if not self.batches:
            self.running.set()
            self.release.wait(5)
        chunks = super().infer_batch(observations)
        chunks = [
            c[:, :5] if obs["state"][0] == 5 else c for c, obs in zip(chunks, observations, strict=True)
        ]
        return chunks[:-1] if self.short and len(chunks) > 1 else chunks


@contextlib.contextmanager
def running(policy: EchoPolicy, **batching: Any) -> Iterator[InferenceCore]:
    """A started core around ``policy``; a gated policy is released before the core stops."""
    core = InferenceCore(policy, BatchingConfig(**batching)).start()
    try:
        yield core
    finally:
        if isinstance(policy, GatedPolicy):
            policy.release.set()
        core.stop()


class Jobs:
    """Submits jobs straight to a core and keeps each session's outcome."""

    def __init__(self, core: InferenceCore) -> None:
        self.core = core
        self.outcomes: dict[str, InferenceOutcome] = {}
        self._answered = threading.Condition()

    def submit(
        self,
        session: str,
        state: float = 0.0,
        *,
        deadline_ms: float | None = None,
        received: float | None = None,
    ) -> None:
        """Queue ``make_obs(state)`` for ``session``, read at ``received`` (default: now)."""
        obs = self.core.spec.validate(make_obs(state))
        read = time.perf_counter() if received is None else received
        self.core.submit(
            self.core.job(obs, session=session, received=read, deadline_ms=deadline_ms, on_done=self._done)
        )

    def _done(self, job: InferenceJob, outcome: InferenceOutcome) -> None:
        with self._answered:
            self.outcomes[job.session] = outcome
            self._answered.notify_all()

    def wait(self, *sessions: str) -> list[InferenceOutcome]:
        """The outcomes of ``sessions``, in that order, once all are answered."""
        with self._answered:
            assert self._answered.wait_for(lambda: set(sessions) <= set(self.outcomes), 5)
            return [self.outcomes[session] for session in sessions]


def held_then_queued(
    core: InferenceCore, policy: GatedPolicy, states: Sequence[float]
) -> list[InferenceOutcome]:
    """One job for ``states[0]`` held in the policy, the rest queued behind it, then released;
    the outcomes in submission order."""
    jobs = Jobs(core)
    sessions = [f"s{index}" for index in range(len(states))]
    jobs.submit(sessions[0], states[0])
    assert policy.running.wait(5)
    for session, state in zip(sessions[1:], states[1:], strict=True):
        jobs.submit(session, state)
    policy.release.set()
    return jobs.wait(*sessions)


def codes(outcomes: Sequence[InferenceOutcome]) -> list[str]:
    return ["ok" if o.error is None else o.error.code.value for o in outcomes]


def test_a_bad_chunk_fails_its_own_job_and_not_its_batch() -> None:
    policy = GatedPolicy()
    with running(policy, max_batch=4, max_wait_ms=0) as core:
        outcomes = held_then_queued(core, policy, [1, 2, 5, 3])
        stats = core.stats()
    assert policy.batches == [1, 3]
    assert codes(outcomes) == ["ok", "ok", "internal_error", "ok"]
    assert "policy returned an invalid action chunk" in outcomes[2].error.message
    assert [o.actions[0, 0] for i, o in enumerate(outcomes) if i != 2] == [1, 2, 3]
    assert outcomes[1].timing["batch_size"] == 3.0
    assert (stats["served"], stats["failed"], stats["batches"]) == (3, 1, 2)
    assert stats["batch_sizes"] == {"1": 1, "3": 1}


def test_a_policy_answering_too_few_chunks_fails_the_whole_batch() -> None:
    policy = GatedPolicy(short=True)
    with running(policy, max_batch=4, max_wait_ms=0) as core:
        outcomes = held_then_queued(core, policy, [1, 2, 3])
        stats = core.stats()
    assert codes(outcomes) == ["ok", "internal_error", "internal_error"]
    assert "expected 2 action chunks, got 1" in outcomes[1].error.message
    # A failed pass is not a batch, and its jobs count as failed.
    assert (stats["served"], stats["failed"], stats["batches"]) == (1, 2, 1)


@pytest.mark.parametrize(
    ("field", "refused", "accepted"),
    [
        ("max_batch", 0, 1),
        ("max_wait_ms", -0.001, 0.0),
        ("max_queue", 0, 1),
        ("default_deadline_ms", 0.0, 0.001),
        ("activity_window_s", 0.0, 0.001),
        ("inline_max_ms", -0.001, 0.0),
    ],
)
def test_batching_limits_hold_at_their_edges(field: str, refused: float, accepted: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: expected .*, got {refused}$"):
        BatchingConfig(**{field: refused})
    assert getattr(BatchingConfig(**{field: accepted}), field) == accepted


def test_sessions_count_answered_steps_until_reset() -> None:
    with running(EchoPolicy()) as core:
        for _ in range(3):
            assert core.infer(make_obs(1), session="arm").error is None
        state = core.session_state("arm")
        state.steps = 99
        assert core.session_state("arm").steps == 3 and core.session_state("arm").requests == 3
        assert core.reset_session("arm") == {"session": "arm", "episode": 1}
        assert core.reset_session("arm") == {"session": "arm", "episode": 2}
        assert core.session_state("arm").steps == 0
        assert core.session_state("other").episode == 0


def test_idle_sessions_are_forgotten_only_once_the_table_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy.core, "_MAX_SESSIONS", 3)
    policy = GatedPolicy()
    now = time.perf_counter()
    with running(policy) as core:
        jobs = Jobs(core)
        # The first job is held in the policy and the others queue, so none is answered (and
        # no session re-created) while the table is read.
        for name, received in (("old", now - 2 * deploy.core._SESSION_IDLE_S), ("recent", now), ("new", now)):
            jobs.submit(name, deadline_ms=1e9, received=received)
            assert policy.running.wait(5)
        assert core.stats()["sessions"] == 3
        core.reset_session("newest")
        assert core.stats()["sessions"] == 3
        assert core.session_state("recent").requests == 1
        assert core.session_state("old").requests == 0


class NoChunkSizePolicy(EchoPolicy):
    def metadata(self) -> dict[str, Any]:
        return {key: value for key, value in super().metadata().items() if key != "chunk_size"}


def test_warmup_announces_the_chunk_size_a_policy_does_not() -> None:
    core = InferenceCore(NoChunkSizePolicy())
    assert "chunk_size" not in core.metadata()
    outputs = core.warmup(passes=2)
    assert len(outputs) == 1 and outputs[0].shape == (CHUNK, 7)
    assert core.metadata()["chunk_size"] == CHUNK
    assert InferenceCore(NoChunkSizePolicy()).warmup(passes=0) == []


def test_metadata_adds_the_spec_and_the_batching_limits() -> None:
    meta = InferenceCore(
        EchoPolicy(), BatchingConfig(max_batch=3, max_queue=9, default_deadline_ms=50.0)
    ).metadata()
    assert (meta["max_batch"], meta["max_queue"], meta["default_deadline_ms"]) == (3, 9, 50.0)
    assert meta["name"] == "echo" and meta["state_dim"] == 8


class OverTimedPolicy(EchoPolicy):
    """Claims more pre- and postprocessing than the whole call took."""

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        self.last_timing = {"preprocess_ms": 1e6, "postprocess_ms": 2e6}
        return super().infer_batch(observations)


def reply_timing(policy: EchoPolicy) -> dict[str, float]:
    """The timing of one request answered by a core around ``policy``."""
    with running(policy) as core:
        return core.infer(make_obs(), session="arm").timing


def test_model_time_is_what_the_stages_leave_and_never_negative() -> None:
    timing = reply_timing(OverTimedPolicy())
    assert (timing["preprocess_ms"], timing["model_ms"], timing["postprocess_ms"]) == (1e6, 0.0, 2e6)


def test_cogvla_serve_starts_with_the_cores_defaults_which_the_protocol_documents() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    core = BatchingConfig()
    assert (args.max_batch, args.max_wait_ms, args.max_queue, args.deadline_ms) == (
        core.max_batch,
        core.max_wait_ms,
        core.max_queue,
        core.default_deadline_ms,
    )
    assert int(args.max_message_mb * 1024 * 1024) == ZmqServerConfig().max_message_bytes
    # docs/protocol.md: a queue of 64, a default deadline of 10 000 ms, messages up to 8 MiB.
    assert (core.max_batch, core.max_wait_ms, core.max_queue, core.default_deadline_ms) == (
        8,
        5.0,
        64,
        10_000.0,
    )
    assert (core.activity_window_s, core.inline_max_ms) == (2.0, 2.0)
    assert ZmqServerConfig().max_message_bytes == 8 << 20


def batcher_threads() -> int:
    return sum(thread.name == "cogvla-batcher" for thread in threading.enumerate())


def test_start_is_idempotent_and_stop_joins_the_worker() -> None:
    before = batcher_threads()
    InferenceCore(EchoPolicy()).stop()  # never started: nothing to join
    core = InferenceCore(EchoPolicy())
    assert core.start() is core and core.start() is core
    assert batcher_threads() == before + 1
    core.stop()
    assert batcher_threads() == before


def test_the_queue_refuses_exactly_at_its_limit() -> None:
    policy = GatedPolicy()
    with running(policy, max_queue=2) as core:
        jobs = Jobs(core)
        jobs.submit("running")
        assert policy.running.wait(5)
        jobs.submit("first")
        jobs.submit("second")
        with pytest.raises(RequestError) as refused:
            jobs.submit("third")
        assert refused.value.code is ErrorCode.OVERLOADED
        assert (refused.value.expected, refused.value.actual) == ("< 2 queued", "2")
        assert core.stats()["overloaded"] == 1


def test_a_policy_that_times_nothing_is_all_model_time() -> None:
    timing = reply_timing(EchoPolicy())
    assert (timing["preprocess_ms"], timing["postprocess_ms"]) == (0.0, 0.0)
    assert 0 < timing["model_ms"] <= timing["total_ms"]


class OneStagePolicy(EchoPolicy):
    """Times one stage alone (3 ms), as a policy without the other stage would."""

    def __init__(self, stage: str) -> None:
        super().__init__(delay_s=0.02)
        self.stage = stage

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        self.last_timing = {self.stage: 3.0}
        return super().infer_batch(observations)


@pytest.mark.parametrize("stage", ["preprocess_ms", "postprocess_ms"])
def test_a_stage_the_policy_does_not_time_counts_zero(stage: str) -> None:
    timing = reply_timing(OneStagePolicy(stage))
    assert {key: timing[key] for key in ("preprocess_ms", "postprocess_ms")} == {
        "preprocess_ms": 0.0,
        "postprocess_ms": 0.0,
        stage: 3.0,
    }
    # The 20 ms the policy slept, in milliseconds, less the 3 it said it spent elsewhere.
    assert 17.0 <= timing["model_ms"] <= timing["total_ms"]


def test_reply_timings_are_milliseconds_of_the_call() -> None:
    with running(EchoPolicy(delay_s=0.02)) as core:
        started = time.perf_counter()
        timing = core.infer(make_obs(), session="arm").timing
        elapsed_ms = (time.perf_counter() - started) * 1000.0
    assert 20.0 <= timing["model_ms"] <= timing["total_ms"] <= elapsed_ms
    assert 0.0 < timing["decode_ms"] < timing["total_ms"] and 0.0 <= timing["queue_ms"] < timing["total_ms"]


def test_a_deadline_is_milliseconds_after_arrival() -> None:
    policy = GatedPolicy()
    with running(policy, max_batch=4, max_wait_ms=0) as core:
        jobs = Jobs(core)
        jobs.submit("held", deadline_ms=60_000.0)
        assert policy.running.wait(5)
        jobs.submit("short", deadline_ms=50.0)
        jobs.submit("long", deadline_ms=60_000.0)
        time.sleep(0.2)
        policy.release.set()
        outcomes = dict(zip(("held", "short", "long"), jobs.wait("held", "short", "long"), strict=True))
    assert codes([outcomes[s] for s in ("held", "short", "long")]) == ["ok", "deadline_exceeded", "ok"]
    error = outcomes["short"].error
    late = float(re.search(r"past its deadline by ([\d.]+) ms", error.message).group(1))
    waited = float(re.fullmatch(r"([\d.]+) ms after arrival", error.actual).group(1))
    assert late >= 150.0 and waited >= 200.0 and waited - late == pytest.approx(50.0, abs=0.2)
    # Both waited in the queue for the held job, computed or not.
    for session in ("short", "long"):
        timing = outcomes[session].timing
        assert 150.0 <= timing["queue_ms"] <= timing["total_ms"]


def test_decode_time_runs_from_the_read_to_the_job() -> None:
    with running(EchoPolicy()) as core:
        jobs = Jobs(core)
        jobs.submit("arm", received=time.perf_counter() - 0.05)
        (outcome,) = jobs.wait("arm")
    assert 50.0 <= outcome.timing["decode_ms"] <= outcome.timing["total_ms"]
