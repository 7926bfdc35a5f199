"""A preprocess / model / postprocess split for policies that do not time their own stages.

The serving core reads ``policy.last_timing`` (``preprocess_ms``, ``model_ms``,
``postprocess_ms``) after every ``infer_batch``. A policy that runs an ``nn.Module`` as
``policy.model`` but records no such split gets it here from forward hooks: everything
before the model's forward is preprocessing, everything after it postprocessing (the
device-to-host copy of the actions included, after a CUDA synchronize at the end of
the forward).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cogvla.policy_api import Policy

__all__ = ["StageSplitPolicy", "with_stage_split"]


class StageSplitPolicy(Policy):
    """Wraps a policy with a ``model`` module and leaves the split of each call in ``last_timing``."""

    def __init__(self, policy: Policy) -> None:
        model = getattr(policy, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError(f"policy.model: expected a torch.nn.Module, got {type(model).__name__}")
        self.policy = policy
        self.last_timing: dict[str, float] | None = None
        self._marks: list[float] = []
        self._cuda = any(p.is_cuda for p in model.parameters())
        model.register_forward_pre_hook(self._mark_start)
        model.register_forward_hook(self._mark_end)

    def _mark_start(self, _module: nn.Module, _args: Any) -> None:
        self._marks.append(time.perf_counter())

    def _mark_end(self, _module: nn.Module, _args: Any, _output: Any) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        self._marks.append(time.perf_counter())

    def infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        return self.infer_batch([obs])[0]

    def infer_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        self._marks.clear()
        start = time.perf_counter()
        outputs = self.policy.infer_batch(observations)
        end = time.perf_counter()
        if len(self._marks) >= 2:
            model_start, model_end = self._marks[0], self._marks[-1]
            self.last_timing = {
                "preprocess_ms": (model_start - start) * 1000.0,
                "model_ms": (model_end - model_start) * 1000.0,
                "postprocess_ms": (end - model_end) * 1000.0,
            }
        else:
            self.last_timing = None
        return outputs

    def reset(self) -> None:
        self.policy.reset()

    def metadata(self) -> dict[str, Any]:
        return self.policy.metadata()


def with_stage_split(policy: Policy) -> tuple[Policy, str]:
    """``policy`` itself if it reports ``last_timing``, else a ``StageSplitPolicy`` when it can.

    Returns the policy to serve and where its stage split comes from.
    """
    if hasattr(policy, "last_timing"):
        return policy, "policy.last_timing"
    if isinstance(getattr(policy, "model", None), nn.Module):
        return StageSplitPolicy(policy), "forward hooks on policy.model"
    return policy, "none (the whole infer_batch counts as model_ms)"
