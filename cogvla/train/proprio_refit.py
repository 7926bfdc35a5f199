"""Re-fit a trained model's proprio normalization to new data without changing what it computes.

A model fine-tuned on one suite keeps the stats of everything it was trained on before, so
its proprio may use a small part of [-1, 1]: with stats from both LIBERO suites the hand's
height spans 0.02-1.25 m, and the libero_spatial scenes use only the top quarter of that.
Re-fitting the quantiles to the new data widens that part fourfold, and rescaling the
proprio projector's first layer by the same map keeps the model's output unchanged for
every proprio inside both ranges. The action stats stay as they are: the action head was
trained to predict in those units.
"""

from __future__ import annotations

import dataclasses

import torch

from cogvla.normalize import NormStats

__all__ = ["refit_proprio_stats"]


def refit_proprio_stats(projector_fc1: torch.nn.Linear, stats: NormStats, fitted: NormStats) -> NormStats:
    """``stats`` with ``fitted``'s proprio quantiles; rescales ``projector_fc1 (P -> D)`` in place.

    With ``u = a * u' + c`` taking a proprio normalized by ``fitted`` (``u'``) to the same
    proprio normalized by ``stats`` (``u``), ``W u + b = (W a) u' + (W c + b)``.
    """
    scale, shift = stats.proprio_map_from(fitted)
    if projector_fc1.in_features != len(scale):
        raise ValueError(
            f"proprio stats: {len(scale)} dims, but the projector takes {projector_fc1.in_features}"
        )
    with torch.no_grad():
        weight = projector_fc1.weight.double()
        projector_fc1.bias.add_((weight @ torch.from_numpy(shift)).to(projector_fc1.bias.dtype))
        projector_fc1.weight.copy_(weight * torch.from_numpy(scale))
    return dataclasses.replace(stats, proprio_q01=fitted.proprio_q01, proprio_q99=fitted.proprio_q99)
