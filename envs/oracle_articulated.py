"""Scripted skills for articulated fixtures: drawers, doors and stove knobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envs.oracle_decision import Decision
from envs.oracle_plan import SubGoal

__all__ = ["ArticulationConfig", "articulate"]


@dataclass(frozen=True)
class ArticulationConfig:
    """Geometric thresholds (metres, radians) of the articulation skills."""


def articulate(priv: Mapping[str, Any], subgoal: SubGoal, config: ArticulationConfig) -> Decision:
    """The next hand pose towards ``subgoal`` (open/close/turnon/turnoff of ``subgoal.joints``)."""
    raise NotImplementedError(f"articulation skill for {subgoal.kind!r}")
