"""Per-stage wall-clock time of a real forward pass, taken from forward hooks.

The model runs exactly as in production (no re-sequenced copy of its ``forward``): a
pre-hook and a post-hook on each stage's submodules mark when the stage starts and
ends, and the caller marks the whole call. Stages may own several submodules (the two
ViT streams form the vision stage); their intervals add up.

Clocks: on CPU ``time.perf_counter``; on CUDA one ``torch.cuda.Event`` per mark and a
single ``torch.cuda.synchronize()`` when the call's times are read, so the figures are
GPU execution times and the hooks never stall the launch queue (timing CUDA with a
host clock and no synchronization measures kernel launches, not work).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["TOTAL", "StageTimer"]

# name of the whole-call interval in ``StageTimer.read``
TOTAL = "total"


class _Clock:
    """Marks points in time on the host (CPU) or in the CUDA stream."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        if self.cuda:
            return float(start.elapsed_time(end))
        return (end - start) * 1000.0


class StageTimer:
    """Times named groups of submodules during forward passes.

    Usage::

        with StageTimer({"vision": [model.dino, model.siglip], "llm": [model.llm]}, device) as timer:
            timer.start()
            model(*inputs)
            timer.stop()
            times = timer.read()   # {"vision": ms, "llm": ms, "total": ms}

    A stage not entered during the call reads 0 ms. Stages must not be nested inside
    one another (their times would be counted twice).
    """

    def __init__(self, stages: Mapping[str, Sequence[nn.Module]], device: torch.device | str) -> None:
        if not stages:
            raise ValueError("stages: expected at least one named stage, got none")
        if TOTAL in stages:
            raise ValueError(f"stages: {TOTAL!r} is reserved for the whole call")
        self._clock = _Clock(torch.device(device))
        self._names = list(stages)
        self._intervals: dict[str, list[tuple[Any, Any]]] = {name: [] for name in self._names}
        self._open: dict[int, Any] = {}
        self._call: tuple[Any, Any] | None = None
        self._started: Any = None
        self._handles: list[Any] = []
        for name, modules in stages.items():
            if not modules:
                raise ValueError(f"stages[{name!r}]: expected at least one module, got none")
            for module in modules:
                self._handles.append(module.register_forward_pre_hook(self._enter_hook()))
                self._handles.append(module.register_forward_hook(self._exit_hook(name)))

    def _enter_hook(self) -> Any:
        def hook(module: nn.Module, _args: Any) -> None:
            self._open[id(module)] = self._clock.mark()

        return hook

    def _exit_hook(self, name: str) -> Any:
        def hook(module: nn.Module, _args: Any, _output: Any) -> None:
            self._intervals[name].append((self._open.pop(id(module)), self._clock.mark()))

        return hook

    def start(self) -> None:
        """Mark the start of a call and forget the previous call's stage intervals."""
        for intervals in self._intervals.values():
            intervals.clear()
        self._open.clear()
        self._call = None
        self._started = self._clock.mark()

    def stop(self) -> None:
        """Mark the end of the call started by ``start``."""
        if self._started is None:
            raise RuntimeError("StageTimer.stop() called without start()")
        self._call = (self._started, self._clock.mark())
        self._started = None

    def read(self) -> dict[str, float]:
        """Milliseconds per stage and for the whole call (``"total"``) of the last call."""
        if self._call is None:
            raise RuntimeError("StageTimer.read() called before a start()/stop() pair")
        self._clock.sync()
        times = {
            name: sum(self._clock.elapsed_ms(a, b) for a, b in self._intervals[name]) for name in self._names
        }
        times[TOTAL] = self._clock.elapsed_ms(*self._call)
        return times

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> StageTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
