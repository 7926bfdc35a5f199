"""Turns action chunks into one action per control tick.

Three ways to consume a policy's ``(H, A)`` chunks, chosen by ``ChunkerConfig``:

- open loop (default): query the policy, execute ``execute_steps`` actions in order, query
  again (openpi's ``ActionChunkBroker``; openpi's LIBERO client re-plans every 5 steps);
- temporal ensembling (``ensemble_coeff``): every stored chunk that covers the current step
  votes, weighted ``exp(-coeff * i)`` with ``i = 0`` for the oldest prediction (ACT's rule;
  ACT uses coeff 0.01 and re-plans every step, i.e. ``execute_steps=1``);
- asynchronous prefetch (``prefetch=True``): the next chunk is requested from a background
  thread ``prefetch_margin`` steps before the switch, and the loop keeps executing the
  current chunk meanwhile. A late chunk is adopted when it lands, its first rows (steps
  already executed while it was computed) skipped; ``step`` only blocks if the current
  chunk runs out entirely, which ``stats.stalls`` counts.

Whatever the mode, ``gripper_close_delay`` holds the gripper open for that many ticks after
the chunks start commanding a close: an open-loop chunk that closes on the row its training
put the close on, before its slower-than-demonstrated descent has reached the object, then
closes a few ticks lower. Opening is never delayed.

In open loop, ``requery_before_grasp`` asks once more before the episode's first close: when
the row about to run, from a chunk asked some ticks earlier, would close the gripper, the rest
of that chunk is dropped and a fresh chunk, asked on the current observation, is executed
from its first row, closing wherever it says. It is asked once, not at every close it
postpones: a policy may keep predicting its close a few rows ahead of any state, and asking
again at each of those rows would never let the gripper close. The fresh chunk runs only
until the next query was due, so later queries keep their steps (a one-step shift of every
later query measurably changed how a blind replay placed its object), and later closes run as
planned.

Step ``t`` of an episode is the ``t``-th call to ``step``; a chunk computed from the
observation of step ``s`` holds the actions for steps ``s .. s + H - 1``.
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cogvla_client.policy_api import Policy, validate_action_chunk

__all__ = ["WHOLE_CHUNK", "ActionChunker", "ChunkerConfig", "ChunkerStats"]

# ``execute_steps`` that runs each chunk to its end before the next query.
WHOLE_CHUNK = sys.maxsize


@dataclass(frozen=True)
class ChunkerConfig:
    """How chunks are turned into per-tick actions."""

    # actions executed from each chunk before switching to the next one.
    execute_steps: int = 5
    # ACT temporal-ensembling coefficient (weights exp(-coeff * i), oldest first); None = off.
    ensemble_coeff: float | None = None
    # request the next chunk in the background instead of blocking the control loop.
    prefetch: bool = False
    # with prefetch: steps before the switch at which the next chunk is requested; set it to
    # at least the policy latency in ticks (e.g. 100 ms at 20 Hz -> 2); >= execute_steps
    # requests the next chunk right after each switch.
    prefetch_margin: int = 2
    # with prefetch: adopt the requested chunk exactly at the switch, waiting for it if needed,
    # so it always lands prefetch_margin steps after its observation. A simulator that does
    # not advance while the policy thinks uses this to model that latency deterministically.
    prefetch_lockstep: bool = False
    # length every action row must have.
    action_dim: int = 7
    # ticks the gripper (the last action dimension, > 0 = close) stays open after the
    # executed actions switch from open to close; the arm dimensions are executed as given.
    gripper_close_delay: int = 0
    # open loop only: re-query once instead of executing a stale row that closes the gripper
    # for the first time in the episode.
    requery_before_grasp: bool = False

    def __post_init__(self) -> None:
        if self.execute_steps < 1:
            raise ValueError(f"execute_steps: expected >= 1, got {self.execute_steps}")
        if self.ensemble_coeff is not None and self.ensemble_coeff < 0:
            raise ValueError(f"ensemble_coeff: expected >= 0 or None, got {self.ensemble_coeff}")
        if self.prefetch_margin < 0:
            raise ValueError(f"prefetch_margin: expected >= 0, got {self.prefetch_margin}")
        if self.gripper_close_delay < 0:
            raise ValueError(f"gripper_close_delay: expected >= 0, got {self.gripper_close_delay}")
        if self.requery_before_grasp and (self.prefetch or self.ensemble_coeff is not None):
            raise ValueError(
                "requery_before_grasp: expected open-loop execution (no prefetch, no ensemble_coeff)"
            )


@dataclass
class ChunkerStats:
    """What happened in the current episode."""

    steps: int = 0
    queries: int = 0
    # queries made because a stale row would have closed the gripper for the first time (0 or 1).
    grasp_requeries: int = 0
    # steps at which ``step`` had to wait for a chunk (the first step excluded).
    stalls: int = 0
    stall_ms: float = 0.0
    # latency of the last completed query, in ms.
    last_query_ms: float = 0.0


@dataclass
class _Chunk:
    start: int
    actions: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.actions)


class ActionChunker:
    """Serves one action per ``step(obs)`` from a chunking policy; call ``reset()`` per episode."""

    def __init__(self, policy: Policy, config: ChunkerConfig | None = None) -> None:
        self.policy = policy
        self.config = config or ChunkerConfig()
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cogvla-prefetch")
            if self.config.prefetch
            else None
        )
        self._pending: concurrent.futures.Future[_Chunk] | None = None
        self._chunks: list[_Chunk] = []
        self._switch_at = 0
        self._closing_ticks = 0
        self._grasped = False
        self.stats = ChunkerStats()

    def reset(self) -> None:
        """Drop every chunk (waiting for an in-flight query) and reset the policy."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending])
            self._pending = None
        self._chunks = []
        self._switch_at = 0
        self._closing_ticks = 0
        self._grasped = False
        self.stats = ChunkerStats()
        self.policy.reset()

    def close(self) -> None:
        """Stop the prefetch thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def step(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The action for this tick, shape ``(action_dim,)``; ``obs`` must not be mutated afterwards."""
        t = self.stats.steps
        if self.config.prefetch:
            self._step_async(t, obs)
        elif t >= self._switch_at or not self._covering(t):
            self._adopt(self._query(t, obs), t)
        elif self._stale_grasp(t):
            self.stats.grasp_requeries += 1
            self._adopt_until_next_query(self._query(t, obs), t)
        action = self._action(t)
        self._grasped = self._grasped or bool(action[-1] > 0)
        action = self._delay_close(action)
        self.stats.steps += 1
        return action

    # -- internals -----------------------------------------------------------------
    def _query(self, start: int, obs: Mapping[str, Any]) -> _Chunk:
        began = time.perf_counter()
        actions = validate_action_chunk(self.policy.infer(obs), self.config.action_dim)
        self.stats.last_query_ms = (time.perf_counter() - began) * 1000.0
        return _Chunk(start, actions)

    def _adopt(self, chunk: _Chunk, t: int) -> None:
        self.stats.queries += 1
        self._chunks.append(chunk)
        self._chunks = [c for c in self._chunks if c.end > t]
        self._switch_at = t + self.config.execute_steps

    def _adopt_until_next_query(self, chunk: _Chunk, t: int) -> None:
        """Adopt ``chunk`` in place of the current one up to the step the next query was due."""
        due = min(self._switch_at, self._covering(t)[-1].end)
        self.stats.queries += 1
        self._chunks = [_Chunk(chunk.start, chunk.actions[: due - t])]

    def _step_async(self, t: int, obs: Mapping[str, Any]) -> None:
        assert self._executor is not None
        # Asked before the adoption too, so that with a margin of 0 a lockstep chunk lands at the
        # switch, made from the switch's own observation.
        self._request_if_due(t, obs)
        pending = self._pending
        due = t >= self._switch_at or not self._covering(t)
        if pending is not None and due and (pending.done() or self.config.prefetch_lockstep):
            self._pending = None
            self._adopt(pending.result(), t)
        if not self._covering(t):
            if self._pending is None:
                self._pending = self._executor.submit(self._query, t, dict(obs))
            waited = time.perf_counter()
            chunk = self._pending.result()
            self._pending = None
            if t > 0:
                self.stats.stalls += 1
                self.stats.stall_ms += (time.perf_counter() - waited) * 1000.0
            self._adopt(chunk, t)
        self._request_if_due(t, obs)

    def _request_if_due(self, t: int, obs: Mapping[str, Any]) -> None:
        """Ask for the next chunk once step ``t`` is within ``prefetch_margin`` of the switch."""
        assert self._executor is not None
        if self._pending is None and t >= self._switch_at - self.config.prefetch_margin:
            self._pending = self._executor.submit(self._query, t, dict(obs))

    def _delay_close(self, action: np.ndarray) -> np.ndarray:
        """``action`` with the gripper held open (-1) for the first ``gripper_close_delay``
        ticks of each run of close commands."""
        if action[-1] <= 0:
            self._closing_ticks = 0
            return action
        self._closing_ticks += 1
        if self._closing_ticks <= self.config.gripper_close_delay:
            action[-1] = -1.0
        return action

    def _stale_grasp(self, t: int) -> bool:
        """Whether step ``t``'s row, from a chunk queried before ``t``, closes the gripper first,
        with no re-query made yet."""
        if not self.config.requery_before_grasp or self._grasped or self.stats.grasp_requeries:
            return False
        newest = self._covering(t)[-1]
        return newest.start < t and bool(newest.actions[t - newest.start, -1] > 0)

    def _covering(self, t: int) -> list[_Chunk]:
        return [c for c in self._chunks if c.start <= t < c.end]

    def _action(self, t: int) -> np.ndarray:
        covering = self._covering(t)
        coeff = self.config.ensemble_coeff
        if coeff is None or len(covering) == 1:
            newest = covering[-1]
            return newest.actions[t - newest.start].copy()
        rows = np.stack([c.actions[t - c.start] for c in covering])
        weights = np.exp(-coeff * np.arange(len(covering)))
        return np.average(rows, axis=0, weights=weights).astype(np.float32)
