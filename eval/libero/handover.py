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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cogvla.policy_api import Policy

__all__ = ["HandoverFactory", "HandoverPolicy", "handover_step"]


class HandoverPolicy(Policy):
    """``learner`` acts for the first ``hand_over_at(n)`` steps of each episode, ``expert`` after."""

    def __init__(self, learner: Policy, expert: Policy) -> None:
        self.learner = learner
        self.expert = expert
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
        self.learner.reset()
        self.expert.reset()

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The learner's chunk cut at the handover step, or the expert's chunk after it."""
        left = self._handover - self._issued
        chunk = self.learner.infer(obs)[:left] if left > 0 else self.expert.infer(obs)
        self._issued += len(chunk)
        return chunk


@dataclass(frozen=True)
class HandoverFactory:
    """Picklable policy factory for simulator workers: ``factory(expert_spec)`` is a
    ``HandoverPolicy`` of the learner ``learner_spec`` and that expert."""

    learner_spec: str
    load: Callable[[str], Policy]

    def __call__(self, expert_spec: str) -> HandoverPolicy:
        return HandoverPolicy(self.load(self.learner_spec), self.load(expert_spec))


def handover_step(seed: int, low: int, high: int) -> int:
    """The handover step of an attempt, uniform in ``[low, high]`` and fixed by its reset seed."""
    return int(np.random.default_rng([seed, 0x4A4D]).integers(low, high + 1))
