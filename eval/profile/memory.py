"""Peak memory of one call, on CUDA or on the CPU.

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: the
  caching allocator's peak of live tensors during the call, weights and inputs included.
- CPU: the growth of the process's resident set during the call, read from Linux's
  ``VmHWM`` (RSS high-water mark) after resetting it through ``/proc/self/clear_refs``
  (value 5). Freed heap memory is first handed back with glibc's ``malloc_trim(0)`` so
  the call cannot hide in memory an earlier call left resident. Weights are resident
  before the call, so this is activation and workspace memory only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["CPU_METHOD", "CUDA_METHOD", "MemoryProbeError", "peak_memory_mb"]

logger = logging.getLogger(__name__)

CUDA_METHOD = "cuda_max_memory_allocated (weights + activations)"
CPU_METHOD = "rss_high_water_mark_delta (VmHWM after clear_refs; activations and workspace, weights excluded)"

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_MB = 1024.0 * 1024.0


class MemoryProbeError(RuntimeError):
    """The platform does not offer the counters a peak-memory measurement needs."""


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise MemoryProbeError(f"{_STATUS}: no {field} line (not Linux?)")


def _trim_heap() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _cpu_peak_mb(call: Callable[[], Any]) -> float:
    try:
        _trim_heap()
        _CLEAR_REFS.write_text("5")
    except OSError as exc:
        raise MemoryProbeError(f"cannot reset the RSS high-water mark through {_CLEAR_REFS}: {exc}") from exc
    before = _status_kb("VmRSS")
    call()
    return max(_status_kb("VmHWM") - before, 0) * 1024 / _MB


def _cuda_peak_mb(call: Callable[[], Any], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / _MB


def peak_memory_mb(call: Callable[[], Any], device: torch.device | str) -> tuple[float, str]:
    """Run ``call`` once and return ``(peak MB, method)``; the method string says what was measured."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_peak_mb(call, device), CUDA_METHOD
    if device.type != "cpu":
        raise MemoryProbeError(f"device: expected 'cpu' or 'cuda', got {device.type!r}")
    return _cpu_peak_mb(call), CPU_METHOD
