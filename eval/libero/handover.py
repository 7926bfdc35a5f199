"""Recovery demos: a learned policy drives the start of an episode, the oracle the rest.

A policy trained on oracle demos only ever sees the states the oracle visits; once its own
small errors take it elsewhere (a grasp that closed beside the bowl, a carry that started
empty), it has no data on how to recover. Letting the learner act for the first ``n`` steps
and then handing control to the Markovian oracle, which acts from whatever state it finds,
produces demos that start in the learner's own states, mistakes included (DAgger's idea,
with one switch per episode so every recorded label is an executed oracle trajectory and a
valid action chunk).

``HandoverPolicy`` is an ordinary ``Policy``: the learner's chunks are cut at the handover
step so the switch lands exactly there, and from then on the expert answers every query.
Given the learner's own chunk execution (``learner_chunking``: the re-query before the grasp,
a gripper close delay, as its evaluation runs it), the learner acts one step at a time
through that chunker instead, so the roll-in reaches the states its evaluation reaches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cogvla.policy_api import Policy
from deploy.chunker import ActionChunker, ChunkerConfig

__all__ = ["HandoverFactory", "HandoverPolicy", "handover_step"]


class HandoverPolicy(Policy):
    """``learner`` acts for the first ``hand_over_at(n)`` steps of each episode, ``expert`` after.

    With ``learner_chunking``, the learner's steps come one per ``infer`` from an
    ``ActionChunker`` that executes its chunks that way; without it, its chunks are returned
    whole (cut at the handover) for the caller to execute.
    """

    def __init__(
        self, learner: Policy, expert: Policy, learner_chunking: ChunkerConfig | None = None
    ) -> None:
        self.learner = learner
        self.expert = expert
        self._learner_steps = None if learner_chunking is None else ActionChunker(learner, learner_chunking)
        self._handover = 0
        self._issued = 0

    def hand_over_at(self, step: int) -> None:
        """Set the handover step of the next episodes (0: the expert acts from the start)."""
        if step < 0:
            raise ValueError(f"handover step: expected >= 0, got {step}")
        self._handover = step

    def reset(self) -> None:
        """Start an episode: the learner is in control again until the handover step."""
        self._issued = 0
        if self._learner_steps is not None:
            self._learner_steps.reset()
        else:
            self.learner.reset()
        self.expert.reset()

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The learner's chunk cut at the handover step (or its next step), the expert's after it."""
        left = self._handover - self._issued
        if left <= 0:
            chunk = self.expert.infer(obs)
        elif self._learner_steps is not None:
            chunk = self._learner_steps.step(obs)[None]
        else:
            chunk = self.learner.infer(obs)[:left]
        self._issued += len(chunk)
        return chunk


@dataclass(frozen=True)
class HandoverFactory:
    """Picklable policy factory for simulator workers: ``factory(expert_spec)`` is a
    ``HandoverPolicy`` of the learner ``learner_spec`` and that expert."""

    learner_spec: str
    load: Callable[[str], Policy]
    learner_chunking: ChunkerConfig | None = None

    def __call__(self, expert_spec: str) -> HandoverPolicy:
        return HandoverPolicy(self.load(self.learner_spec), self.load(expert_spec), self.learner_chunking)


def handover_step(seed: int, low: int, high: int) -> int:
    """The handover step of an attempt, uniform in ``[low, high]`` and fixed by its reset seed."""
    return int(np.random.default_rng([seed, 0x4A4D]).integers(low, high + 1))
