"""CAtten: V-L-A coupled attention for parallel action decoding.

Sequence: ``[BOS][vision][proprio][prompt][actions x A][stop]``; the last ``A + 1``
positions form the action block. With CAtten the prefix is causal and never sees the
action block, while action-block queries see every key (prefix and block, i.e.
bidirectional inside the block). Without CAtten every query sees every key, as in
OpenVLA-OFT. Pad keys (left-padded prompts) are hidden from every query.

Two equivalent implementations (reference: CogVLA ``llama_sdpa_attention_forward``):

- ``"mask"``: one SDPA call with the explicit ``(B, 1, S, S)`` mask of ``build_attention_mask``.
- ``"split"``: a causal call over the prefix plus a call with the action rows as queries
  over all keys. This form needs no arbitrary mask, so flash-attn runs it when it is
  installed and the tensors are half precision on CUDA; SDPA is used otherwise.

Worked example, ``S = 5`` with 2 action-block positions, no pads (1 = may attend)::

    causal prefix     action rows see all
    1 0 0 . .
    1 1 0 . .
    1 1 1 . .
    1 1 1 1 1
    1 1 1 1 1
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

try:
    from flash_attn import flash_attn_func, flash_attn_varlen_func
except ImportError:
    flash_attn_func = flash_attn_varlen_func = None

__all__ = ["attend", "build_attention_mask", "flash_available"]


def build_attention_mask(valid: torch.Tensor, num_action: int, *, catten: bool) -> torch.Tensor:
    """Boolean mask ``(B, 1, S, S)``, True where a query (row) may attend a key (column).

    Args:
        valid: ``(B, S)`` bool, False at pad positions.
        num_action: size of the action block at the end of the sequence (actions + stop).
        catten: causal prefix + bidirectional action block if True, all-to-all otherwise.
    """
    batch, seq = valid.shape
    keys = valid[:, None, None, :]
    if not catten:
        return keys.expand(batch, 1, seq, seq)
    index = torch.arange(seq, device=valid.device)
    causal = index[None, :] <= index[:, None]
    action_rows = (index >= seq - num_action)[:, None]
    return (causal | action_rows)[None, None] & keys


def flash_available(query: torch.Tensor) -> bool:
    """True when flash-attn is importable and can run on ``query`` (CUDA, fp16/bf16)."""
    return flash_attn_func is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    valid: torch.Tensor,
    num_action: int,
    *,
    catten: bool,
    impl: Literal["split", "mask"] = "split",
    padded: bool | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention under the CAtten (or all-to-all) pattern.

    Shapes: ``query (B, H, S, d)``, ``key``/``value (B, H_kv, S, d)``, ``valid (B, S)`` bool
    -> ``(B, H, S, d)``.

    ``padded`` says whether ``valid`` has a False entry. False lets the kernels skip the
    key mask; True is always correct. None reads it from ``valid``, which costs a
    host-device sync, so the model decides it once per forward and passes it down.
    """
    all_valid = bool(valid.all()) if padded is None else not padded
    if flash_available(query) and impl == "split":
        return _flash_attend(query, key, value, valid, num_action, catten=catten, all_valid=all_valid)
    gqa = query.shape[1] != key.shape[1]
    key_mask = None if all_valid else valid[:, None, None, :]
    if not catten:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, enable_gqa=gqa)
    if impl == "mask":
        mask = build_attention_mask(valid, num_action, catten=True)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=gqa)
    prefix = query.shape[2] - num_action
    q_prefix, k_prefix, v_prefix = query[:, :, :prefix], key[:, :, :prefix], value[:, :, :prefix]
    if all_valid:
        out_prefix = F.scaled_dot_product_attention(
            q_prefix, k_prefix, v_prefix, is_causal=True, enable_gqa=gqa
        )
    else:
        prefix_mask = build_attention_mask(valid[:, :prefix], 0, catten=True)
        out_prefix = F.scaled_dot_product_attention(
            q_prefix, k_prefix, v_prefix, attn_mask=prefix_mask, enable_gqa=gqa
        )
    out_action = F.scaled_dot_product_attention(
        query[:, :, prefix:], key, value, attn_mask=key_mask, enable_gqa=gqa
    )
    return torch.cat([out_prefix, out_action], dim=2)


def _flash_attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    valid: torch.Tensor,
    num_action: int,
    *,
    catten: bool,
    all_valid: bool,
) -> torch.Tensor:
    # flash-attn wants (B, S, H, d); pads are packed away with the varlen kernels
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    batch, seq = valid.shape
    prefix = seq - num_action
    if all_valid:
        if not catten:
            out = flash_attn_func(q, k, v, causal=False)
        else:
            out_prefix = flash_attn_func(q[:, :prefix], k[:, :prefix], v[:, :prefix], causal=True)
            out_action = flash_attn_func(q[:, prefix:], k, v, causal=False)
            out = torch.cat([out_prefix, out_action], dim=1)
        return out.transpose(1, 2)
    out = torch.zeros_like(q)
    cu_all, max_all = _cu_seqlens(valid)
    if not catten:
        out[valid] = flash_attn_varlen_func(
            q[valid], k[valid], v[valid], cu_all, cu_all, max_all, max_all, causal=False
        )
        return out.transpose(1, 2)
    prefix_valid = valid[:, :prefix]
    cu_prefix, max_prefix = _cu_seqlens(prefix_valid)
    out_prefix = out[:, :prefix]
    out_prefix[prefix_valid] = flash_attn_varlen_func(
        q[:, :prefix][prefix_valid],
        k[:, :prefix][prefix_valid],
        v[:, :prefix][prefix_valid],
        cu_prefix,
        cu_prefix,
        max_prefix,
        max_prefix,
        causal=True,
    )
    cu_action = torch.arange(batch + 1, device=q.device, dtype=torch.int32) * num_action
    out_action = flash_attn_varlen_func(
        q[:, prefix:].flatten(0, 1), k[valid], v[valid], cu_action, cu_all, num_action, max_all, causal=False
    )
    out = torch.cat([out_prefix, out_action.view(batch, num_action, *q.shape[2:])], dim=1)
    return out.transpose(1, 2)


def _cu_seqlens(valid: torch.Tensor) -> tuple[torch.Tensor, int]:
    lengths = valid.sum(dim=1, dtype=torch.int32)
    return F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0)), int(lengths.max())
