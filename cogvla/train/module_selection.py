"""Model modules named by dotted path (``"dino"``, ``"vision_projector.dino_proj"``): fresh
weights for some before a run, training for some only."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cogvla.modeling import CogVLAModel

__all__ = ["reinitialize", "train_only"]


def _submodules(model: nn.Module, paths: Sequence[str], field: str) -> list[nn.Module]:
    """The modules at ``paths``; an unknown path raises naming the field and the path."""
    modules = dict(model.named_modules())
    unknown = [path for path in paths if not path or path not in modules]
    if unknown:
        top = sorted(name for name in modules if name and "." not in name)
        raise ValueError(f"{field}: no module {unknown} in the model (top-level modules: {top})")
    return [modules[path] for path in paths]


def reinitialize(model: CogVLAModel, paths: Sequence[str], seed: int) -> None:
    """Give the modules at ``paths`` the weights a freshly built model of ``seed`` has there."""
    if not paths:
        return
    _submodules(model, paths, "reinit_modules")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = CogVLAModel(model.config).state_dict()
    prefixes = tuple(f"{path}." for path in paths)
    model.load_state_dict(
        {**model.state_dict(), **{k: v for k, v in fresh.items() if k.startswith(prefixes)}}
    )


def train_only(model: nn.Module, paths: Sequence[str]) -> None:
    """Freeze every parameter outside the modules at ``paths``."""
    kept = {id(p) for module in _submodules(model, paths, "trainable_modules") for p in module.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in kept)
