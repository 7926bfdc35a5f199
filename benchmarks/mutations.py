"""Semantic mutations of the CogVLA stage code, for ``benchmarks/mutation_run.py``.

Each mutation is a one-place source edit that still runs and keeps every shape, of the
kind a refactor could slip in unnoticed: a stage in the wrong place, the wrong tokens
pooled or read, a branch swapped. ``equivalent`` gives the reason when a mutation
cannot change any output, so that surviving it is no defect of the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MUTATIONS", "Mutation"]


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    name: str
    path: str
    old: str
    new: str
    # why no output can change, for a mutation that is equivalent by construction
    equivalent: str | None = None


_VIT_BLOCK = """\
            x = x + self._attention_branch(block, x)
            if self.film is not None:
                # FiLM parameters are per sample; every camera image of a sample shares them
                gamma, beta = self.film[index].params(cond)
                x = x * (1 + gamma.repeat_interleave(n_images, 0)) + beta.repeat_interleave(n_images, 0)
            x = x + self._mlp_branch(block, x)
"""
_FILM = """\
            if self.film is not None:
                # FiLM parameters are per sample; every camera image of a sample shares them
                gamma, beta = self.film[index].params(cond)
                x = x * (1 + gamma.repeat_interleave(n_images, 0)) + beta.repeat_interleave(n_images, 0)
"""
_ATTN = "            x = x + self._attention_branch(block, x)\n"
_MLP = "            x = x + self._mlp_branch(block, x)\n"

_LLM_RESIDUALS = """\
        x = x + attn.o_proj(o.transpose(1, 2).flatten(2))
        m = self.mlp(self.post_attention_layernorm(x))
        if mlp_scale is not None:
            m = m * mlp_scale.unsqueeze(-1).to(m.dtype)
        return x + m
"""
_LLM_SCALED_ATTENTION = """\
        a = attn.o_proj(o.transpose(1, 2).flatten(2))
        if mlp_scale is not None:
            a = a * mlp_scale.unsqueeze(-1).to(a.dtype)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x))
"""

VISION, EFA, LFP, LLM = "cogvla/vision.py", "cogvla/efa.py", "cogvla/lfp.py", "cogvla/llm.py"
CATTEN, MODELING, HEAD = "cogvla/catten.py", "cogvla/modeling.py", "cogvla/action_head.py"

MUTATIONS: tuple[Mutation, ...] = (
    # ---- vision.py: where FiLM sits, which tokens are read, which block ----
    Mutation("vit_film_before_attention", VISION, _VIT_BLOCK, _FILM + _ATTN + _MLP),
    Mutation("vit_film_after_mlp", VISION, _VIT_BLOCK, _ATTN + _MLP + _FILM),
    Mutation(
        "vit_film_images_paired_with_wrong_sample",
        VISION,
        "x * (1 + gamma.repeat_interleave(n_images, 0)) + beta.repeat_interleave(n_images, 0)",
        "x * (1 + gamma.repeat(n_images, 1, 1)) + beta.repeat(n_images, 1, 1)",
    ),
    Mutation(
        "vit_film_scale_without_one",
        VISION,
        "x * (1 + gamma.repeat_interleave(n_images, 0))",
        "x * gamma.repeat_interleave(n_images, 0)",
    ),
    Mutation(
        "vit_film_of_another_block",
        VISION,
        "self.film[index].params(cond)",
        "self.film[-1 - index].params(cond)",
    ),
    Mutation(
        "vit_reads_first_tokens_not_aggregation",
        VISION,
        "tokens = x[:, -self.aggregation_tokens.shape[1] :]",
        "tokens = x[:, : self.aggregation_tokens.shape[1]]",
    ),
    Mutation(
        "vit_aggregation_tokens_prepended",
        VISION,
        "x = torch.cat([x, self.aggregation_tokens.expand(x.shape[0], -1, -1).to(x.dtype)], dim=1)",
        "x = torch.cat([self.aggregation_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)",
    ),
    Mutation(
        "vit_features_from_block_l_minus_3",
        VISION,
        "range(self.config.feature_layer + 1)",
        "range(self.config.feature_layer)",
    ),
    Mutation(
        "vit_features_from_last_block",
        VISION,
        "range(self.config.feature_layer + 1)",
        "range(self.config.feature_layer + 2)",
    ),
    Mutation(
        "vit_patch_readout_includes_prefix",
        VISION,
        "tokens = x[:, prefix : prefix + self.num_patches]",
        "tokens = x[:, : self.num_patches]",
    ),
    Mutation(
        "vit_patch_readout_from_the_end",
        VISION,
        "tokens = x[:, prefix : prefix + self.num_patches]",
        "tokens = x[:, -self.num_patches :]",
        equivalent="without aggregation tokens the patch tokens are exactly the last num_patches tokens",
    ),
    Mutation(
        "vit_no_pixel_normalization",
        VISION,
        "pixels = (images.flatten(0, 1) - mean) / std",
        "pixels = images.flatten(0, 1)",
    ),
    Mutation(
        "vit_dino_attention_without_layer_scale",
        VISION,
        "return block.layer_scale1(block.attention(block.norm1(x))[0])",
        "return block.attention(block.norm1(x))[0]",
    ),
    # ---- efa.py: the stream gate and projectors ----
    Mutation(
        "efa_gate_streams_swapped",
        EFA,
        "gate[:, 0, None, None] * v_dino + gate[:, 1, None, None] * v_siglip",
        "gate[:, 1, None, None] * v_dino + gate[:, 0, None, None] * v_siglip",
    ),
    Mutation(
        "efa_gate_softmax_over_batch",
        EFA,
        "torch.softmax(self.gate(instruction), dim=-1)",
        "torch.softmax(self.gate(instruction), dim=0)",
    ),
    Mutation(
        "efa_gate_sigmoid",
        EFA,
        "torch.softmax(self.gate(instruction), dim=-1)",
        "torch.sigmoid(self.gate(instruction))",
    ),
    Mutation(
        "efa_projector_without_gelu",
        EFA,
        "return self.fc2(self.act(self.fc1(x)))",
        "return self.fc2(self.fc1(x))",
    ),
    Mutation(
        "efa_dino_tokens_token_major",
        EFA,
        "v_dino = self.dino_proj(dino).flatten(1, 2)",
        "v_dino = self.dino_proj(dino).transpose(1, 2).flatten(1, 2)",
    ),
    Mutation(
        "fused_projector_siglip_channels_first",
        EFA,
        "torch.cat([dino, siglip], dim=-1)",
        "torch.cat([siglip, dino], dim=-1)",
    ),
    Mutation(
        "fused_projector_missing_gelu",
        EFA,
        "self.fc3(self.act(self.fc2(self.act(self.fc1(fused)))))",
        "self.fc3(self.fc2(self.act(self.fc1(fused))))",
    ),
    # ---- lfp.py: router FiLM, score, selection, pooling ----
    Mutation(
        "lfp_router_film_on_every_position",
        LFP,
        "scored = torch.cat([normed[:, : vision.start], modulated, normed[:, vision.stop :]], dim=1)",
        "scored = normed * (1 + gamma) + beta",
    ),
    Mutation(
        "lfp_router_without_film",
        LFP,
        "scored = torch.cat([normed[:, : vision.start], modulated, normed[:, vision.stop :]], dim=1)",
        "scored = normed",
    ),
    Mutation(
        "lfp_router_film_scale_without_one",
        LFP,
        "modulated = normed[:, vision] * (1 + gamma) + beta",
        "modulated = normed[:, vision] * gamma + beta",
    ),
    Mutation(
        "lfp_router_film_shift_negated",
        LFP,
        "modulated = normed[:, vision] * (1 + gamma) + beta",
        "modulated = normed[:, vision] * (1 + gamma) - beta",
    ),
    Mutation(
        "lfp_score_is_class_0",
        LFP,
        "torch.softmax(self.router(scored), dim=-1)[..., 1]",
        "torch.softmax(self.router(scored), dim=-1)[..., 0]",
    ),
    Mutation(
        "lfp_kept_tokens_unsorted",
        LFP,
        ".topk(keep, dim=1).indices.sort(dim=1).values + vision.start",
        ".topk(keep, dim=1).indices + vision.start",
    ),
    Mutation(
        "lfp_kept_indices_not_offset",
        LFP,
        ".indices.sort(dim=1).values + vision.start",
        ".indices.sort(dim=1).values",
    ),
    Mutation("lfp_keeps_lowest_scores", LFP, ".topk(keep, dim=1)", ".topk(keep, dim=1, largest=False)"),
    Mutation(
        "lfp_condition_mean_over_every_position",
        LFP,
        "return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)",
        "return x.mean(dim=1)",
    ),
    Mutation(
        "lfp_condition_mean_clamp_half",
        LFP,
        "weights.sum(dim=1).clamp(min=1.0)",
        "weights.sum(dim=1).clamp(min=0.5)",
        equivalent="the condition always holds the proprio token, so the count is >= 1 and the clamp never acts",
    ),
    # ---- llm.py: routed layer, positions, condition, norms ----
    Mutation(
        "llm_routed_positions_not_compacted",
        LLM,
        "rotary_cos_sin(positions_from_valid(valid), inputs.inv_freq, x.dtype)",
        "rotary_cos_sin(index, inputs.inv_freq, x.dtype)",
    ),
    Mutation(
        "llm_mlp_scaled_by_one_minus_p",
        LLM,
        "m = m * mlp_scale.unsqueeze(-1).to(m.dtype)",
        "m = m * (1 - mlp_scale).unsqueeze(-1).to(m.dtype)",
    ),
    Mutation("llm_router_probability_scales_attention", LLM, _LLM_RESIDUALS, _LLM_SCALED_ATTENTION),
    Mutation(
        "llm_router_probability_unused", LLM, "mlp_scale=torch.gather(probs, 1, index),", "mlp_scale=None,"
    ),
    Mutation(
        "llm_router_condition_before_norm",
        LLM,
        "cond = masked_mean(normed, inputs.cond_mask)",
        "cond = masked_mean(x, inputs.cond_mask)",
    ),
    Mutation(
        "llm_router_scores_before_norm",
        LLM,
        "probs = self.router(normed, cond, layout.vision)",
        "probs = self.router(x, cond, layout.vision)",
    ),
    Mutation(
        "llm_condition_runs_to_the_end",
        LLM,
        "cond_segment = (positions >= layout.cond_start) & (positions < layout.cond_end)",
        "cond_segment = positions >= layout.cond_start",
    ),
    Mutation(
        "llm_condition_includes_pads",
        LLM,
        "cond_mask=valid & cond_segment,",
        "cond_mask=cond_segment.expand_as(valid),",
    ),
    Mutation(
        "llm_keep_count_rounded",
        LLM,
        "int(layout.num_vision * self.keep_ratio)",
        "round(layout.num_vision * self.keep_ratio)",
    ),
    Mutation(
        "llm_rope_cos_sin_swapped",
        LLM,
        "*(table.to(q.dtype) for table in cos_sin)",
        "*(table.to(q.dtype) for table in reversed(cos_sin))",
    ),
    Mutation(
        "llm_positions_start_at_one",
        LLM,
        "return (valid.long().cumsum(dim=1) - 1).clamp(min=0)",
        "return valid.long().cumsum(dim=1)",
        equivalent="RoPE scores depend only on position differences and BOS is never a pad, so shifting "
        "every position by one changes no attention score (up to rounding of the float32 RoPE tables); "
        "only a test pinning the numbering convention can see it",
    ),
    Mutation("llm_no_final_norm", LLM, "return self.norm(x), kept", "return x, kept"),
    Mutation(
        "llm_rope_frequencies_halved_exponent",
        LLM,
        "exponent = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim",
        "exponent = torch.arange(0, dim, 2, dtype=torch.float32, device=device) / (2 * dim)",
    ),
    Mutation(
        "llm_pruned_tokens_zeroed",
        LLM,
        "return scatter_tokens(x, index, kept), index",
        "return scatter_tokens(torch.zeros_like(x), index, kept), index",
    ),
    # ---- catten.py: the attention pattern ----
    Mutation(
        "catten_mask_anti_causal",
        CATTEN,
        "causal = index[None, :] <= index[:, None]",
        "causal = index[:, None] <= index[None, :]",
    ),
    Mutation(
        "catten_action_block_one_short",
        CATTEN,
        "action_rows = (index >= seq - num_action)[:, None]",
        "action_rows = (index > seq - num_action)[:, None]",
    ),
    Mutation(
        "catten_prefix_sees_actions",
        CATTEN,
        "return (causal | action_rows)[None, None] & keys",
        "return (causal | action_rows | action_rows.T)[None, None] & keys",
    ),
    Mutation(
        "catten_mask_shows_pad_keys",
        CATTEN,
        "return (causal | action_rows)[None, None] & keys",
        "return (causal | action_rows)[None, None].expand(batch, 1, seq, seq)",
    ),
    Mutation(
        "catten_split_prefix_bidirectional",
        CATTEN,
        "q_prefix, k_prefix, v_prefix, is_causal=True, enable_gqa=gqa",
        "q_prefix, k_prefix, v_prefix, is_causal=False, enable_gqa=gqa",
    ),
    Mutation(
        "catten_split_action_rows_see_pads",
        CATTEN,
        "query[:, :, prefix:], key, value, attn_mask=key_mask, enable_gqa=gqa",
        "query[:, :, prefix:], key, value, attn_mask=None, enable_gqa=gqa",
    ),
    Mutation(
        "catten_split_boundary_off_by_one",
        CATTEN,
        "prefix = query.shape[2] - num_action\n    q_prefix",
        "prefix = query.shape[2] - num_action + 1\n    q_prefix",
    ),
    Mutation(
        "catten_dense_sees_pads",
        CATTEN,
        "return F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, enable_gqa=gqa)",
        "return F.scaled_dot_product_attention(query, key, value, enable_gqa=gqa)",
    ),
    Mutation(
        "catten_padded_flag_ignored",
        CATTEN,
        "all_valid = bool(valid.all()) if padded is None else not padded",
        "all_valid = bool(valid.all())",
    ),
    Mutation(
        "catten_mask_form_all_to_all",
        CATTEN,
        "mask = build_attention_mask(valid, num_action, catten=True)",
        "mask = build_attention_mask(valid, num_action, catten=False)",
    ),
    # ---- modeling.py: sequence assembly, pooling, the head's read window ----
    Mutation(
        "model_head_reads_unshifted_rows",
        MODELING,
        "hidden[:, seq - n_act - 2 : seq - 2]",
        "hidden[:, seq - n_act - 1 : seq - 1]",
    ),
    Mutation(
        "model_instruction_includes_pads",
        MODELING,
        "weights = text_valid.to(text.dtype).unsqueeze(-1)",
        "weights = torch.ones_like(text_valid, dtype=text.dtype).unsqueeze(-1)",
    ),
    Mutation(
        "model_instruction_without_bos_and_stop",
        MODELING,
        "return ((text * weights).sum(dim=1) + special.sum(dim=0)) / (weights.sum(dim=1) + 2)",
        "return (text * weights).sum(dim=1) / weights.sum(dim=1)",
    ),
    Mutation("model_condition_without_proprio", MODELING, "cond_start=1 + n_vis,", "cond_start=2 + n_vis,"),
    Mutation(
        "model_condition_over_action_slots",
        MODELING,
        "cond_end=2 + n_vis + prompt_len,",
        "cond_end=2 + n_vis + prompt_len + n_act,",
    ),
    Mutation(
        "model_action_slots_carry_stop_embedding",
        MODELING,
        "text.new_zeros(batch, n_act, text.shape[-1]),",
        "stop.unsqueeze(1).expand(-1, n_act, -1),",
    ),
    Mutation(
        "model_pads_marked_valid",
        MODELING,
        "[text_valid.new_ones(batch, n_vis + 2), text_valid, text_valid.new_ones(batch, n_act + 1)]",
        "[text_valid.new_ones(batch, n_vis + 2), torch.ones_like(text_valid), text_valid.new_ones(batch, n_act + 1)]",
    ),
    Mutation(
        "model_bos_and_stop_swapped",
        MODELING,
        "torch.tensor([llm.bos_token_id, llm.eos_token_id], device=device)",
        "torch.tensor([llm.eos_token_id, llm.bos_token_id], device=device)",
    ),
    Mutation(
        "model_streams_swapped_into_projector",
        MODELING,
        "self.dino(pixel_values, instruction), self.siglip(pixel_values, instruction), instruction",
        "self.siglip(pixel_values, instruction), self.dino(pixel_values, instruction), instruction",
    ),
    Mutation(
        "model_proprio_before_vision",
        MODELING,
        "vision.to(text.dtype),\n                proprio_token.unsqueeze(1),",
        "proprio_token.unsqueeze(1),\n                vision.to(text.dtype),",
    ),
    Mutation(
        "model_never_padded",
        MODELING,
        "padded = not _host_readable(attention_mask) or not bool(attention_mask.bool().all())",
        "padded = False",
    ),
    Mutation(
        "model_always_padded",
        MODELING,
        "padded = not _host_readable(attention_mask) or not bool(attention_mask.bool().all())",
        "padded = True",
        equivalent="padded=True only makes attention apply the key mask, which is all True without pads",
    ),
    Mutation(
        "model_stop_outside_action_block", MODELING, "num_action_block=n_act + 1,", "num_action_block=n_act,"
    ),
    # ---- action_head.py ----
    Mutation("head_block_without_residual", HEAD, "return x + self.ffn(x)", "return self.ffn(x)"),
    Mutation(
        "head_steps_grouped_by_dimension",
        HEAD,
        "self.model(hidden.reshape(batch, self.chunk_size, -1))",
        "self.model(hidden.transpose(1, 2).reshape(batch, self.chunk_size, -1))",
    ),
    Mutation("head_without_final_norm", HEAD, "return self.fc2(self.layer_norm2(x))", "return self.fc2(x)"),
    Mutation(
        "head_without_first_relu",
        HEAD,
        "x = self.relu(self.fc1(self.layer_norm1(x)))",
        "x = self.fc1(self.layer_norm1(x))",
    ),
    Mutation(
        "proprio_projector_without_gelu",
        HEAD,
        "return self.fc2(self.act_fn1(self.fc1(proprio)))",
        "return self.fc2(self.fc1(proprio))",
    ),
)
