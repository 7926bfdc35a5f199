"""Run a validated :class:`~cogvla.convert.plan.Plan`: read, transform and place each tensor.

Tensors are read one conversion at a time and handed to a sink, so the peak memory
of an import is the target model plus the few source tensors of one conversion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from cogvla.convert.errors import ReleasedCheckpointError
from cogvla.convert.plan import Plan, VerifyEqual
from cogvla.convert.sources import TensorSource

__all__ = ["assign_tensor", "plan_to_state_dict", "run_plan"]

log = logging.getLogger(__name__)

Sink = Callable[[str, torch.Tensor], None]


def run_plan(
    plan: Plan,
    sources: Mapping[str, TensorSource],
    target_shapes: Mapping[str, tuple[int, ...]],
    sink: Sink,
    *,
    progress: bool = True,
) -> None:
    """Feed every produced ``(target_key, tensor)`` to ``sink``, in plan order."""
    for conversion in tqdm(plan.conversions, desc="import", unit="conv", disable=not progress, leave=False):
        refs = conversion.inputs + conversion.refs
        tensors = [sources[r.source].load(r.key) for r in refs]
        try:
            outputs = conversion.transform.apply(
                tensors, [tuple(target_shapes[k]) for k in conversion.outputs]
            )
        except ValueError as exc:
            if not isinstance(conversion.transform, VerifyEqual):
                raise
            where = [f"{file}:{key}" for r in refs for file, key in sources[r.source].origin(r.key)]
            raise ReleasedCheckpointError(f"{where[0]} {exc}: {where[1]}") from exc
        for key, tensor in zip(conversion.outputs, outputs, strict=True):
            sink(key, tensor)


def plan_to_state_dict(
    plan: Plan,
    sources: Mapping[str, TensorSource],
    target_shapes: Mapping[str, tuple[int, ...]],
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The converted tensors as a plain state dict (for small models and tests)."""
    state: dict[str, torch.Tensor] = {}

    def keep(key: str, tensor: torch.Tensor) -> None:
        state[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

    run_plan(plan, sources, target_shapes, keep, progress=False)
    return state


def assign_tensor(
    model: nn.Module, key: str, tensor: torch.Tensor, *, dtype: torch.dtype, device: torch.device | str
) -> None:
    """Replace parameter or buffer ``key`` of ``model`` (possibly on the meta device) by ``tensor``.

    Floating tensors are cast to ``dtype``; the new tensor always owns its memory, so
    nothing keeps a memory-mapped source file alive.
    """
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    current = module._parameters.get(name) if name in module._parameters else module._buffers.get(name)
    want_dtype = dtype if tensor.is_floating_point() else tensor.dtype
    value = tensor.to(device=device, dtype=want_dtype, copy=True)
    if name in module._parameters:
        requires_grad = current.requires_grad if current is not None else True
        module._parameters[name] = nn.Parameter(value, requires_grad=requires_grad)
    elif name in module._buffers:
        module._buffers[name] = value
    else:
        raise KeyError(f"{key}: the model has no such parameter or buffer")
