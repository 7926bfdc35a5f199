"""The CogVLA policy model: two FiLM'd ViT streams with EFA-Routing, a Llama decoder with
LFP-Routing and CAtten, and an L1-regression action head, in one parallel-decoding pass.

Paper: "CogVLA: Cognition-Aligned Vision-Language-Action Model(s) via Instruction-Driven
Routing & Sparsification" (arXiv 2508.21046). Reference code: github.com/JiuTian-VL/CogVLA
(on top of github.com/moojink/openvla-oft).

LLM input sequence (``N_vis`` vision tokens, ``T`` prompt tokens, ``A = chunk * action_dim``)::

    [BOS] [vision x N_vis] [proprio] [pads.. prompt x T] [zero action slots x A] [stop]

Prompts are left-padded so that every sample's action block sits at the same positions.

Deviation from the reference: the instruction vector (mean input embedding over BOS,
prompt and stop) and the LFP condition (mean over proprio and prompt) exclude pad
tokens; the reference includes right-padding tokens in training batches, which makes a
sample's conditioning depend on the longest prompt in its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cogvla.action_head import L1RegressionHead, ProprioProjector
from cogvla.config import CogVLAConfig
from cogvla.efa import AggregationRouter, FusedPatchProjector
from cogvla.llm import LlamaBackbone, SequenceLayout
from cogvla.vision import ViTStream

__all__ = ["CogVLAModel", "CogVLAOutput", "InputDtypeError", "InputShapeError"]


class InputShapeError(ValueError):
    """A model input has the wrong shape or invalid values."""


class InputDtypeError(TypeError):
    """A model input has the wrong dtype."""


@dataclass
class CogVLAOutput:
    """What one forward pass returns.

    Attributes:
        actions: ``(B, chunk, action_dim)`` in normalized model units.
        kept_per_layer: vision tokens processed by each LLM layer.
        gate: ``(B, 2)`` EFA stream weights [DINOv2, SigLIP], or None without EFA.
        vision_tokens: ``(B, N_vis, D)`` vision tokens as they enter the LLM.
        kept_indices: per LLM layer, the ``(B, K)`` sequence indices a routed layer processed
            (None on dense layers).
        action_hidden: ``(B, chunk * action_dim, D)`` the LLM states the action head read.
    """

    actions: torch.Tensor
    kept_per_layer: list[int]
    gate: torch.Tensor | None
    vision_tokens: torch.Tensor
    kept_indices: list[torch.Tensor | None]
    action_hidden: torch.Tensor


class CogVLAModel(nn.Module):
    """CogVLA (or one of its ablations, by ``config``'s ``efa``/``lfp``/``catten`` switches).

    Inputs of ``forward``:
        pixel_values: ``(B, n_images, 3, H, W)`` float in [0, 1], cameras [agentview, wrist].
        input_ids: ``(B, T)`` long, the tokenized prompt only (the model adds BOS, the
            action slots and the stop token), left-padded.
        attention_mask: ``(B, T)``, 1 = token, 0 = pad.
        proprio: ``(B, proprio_dim)`` float, normalized to [-1, 1].

    After ``from_pretrained`` the checkpoint's tokenizer, normalization stats and
    normalization key are available as ``model.tokenizer``, ``model.norm_stats`` and
    ``model.norm_key`` (None when the checkpoint has none).
    """

    def __init__(self, config: CogVLAConfig) -> None:
        super().__init__()
        self.config = config
        llm_dim = config.llm.hidden_size
        cond_dim = llm_dim if config.efa else None
        n_agg = config.num_aggregation_tokens if config.efa else None
        self.dino = ViTStream(config.dino, config.image_size, cond_dim=cond_dim, num_aggregation_tokens=n_agg)
        self.siglip = ViTStream(
            config.siglip, config.image_size, cond_dim=cond_dim, num_aggregation_tokens=n_agg
        )
        dino_dim, siglip_dim = config.dino.hidden_size, config.siglip.hidden_size
        self.vision_projector: nn.Module = (
            AggregationRouter(dino_dim, siglip_dim, llm_dim)
            if config.efa
            else FusedPatchProjector(dino_dim, siglip_dim, llm_dim)
        )
        self.proprio_projector = ProprioProjector(config.proprio_dim, llm_dim)
        self.llm = LlamaBackbone(
            config.llm,
            config.keep_ratios(),
            router_film_hidden=config.router_film_hidden,
            catten=config.catten,
            attention_impl=config.attention_impl,
        )
        self.action_head = L1RegressionHead(
            llm_dim, config.head_hidden, config.chunk_size, config.action_dim, config.action_head_blocks
        )
        self.tokenizer: Any = None
        self.norm_stats: Any = None
        self.norm_key: str | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        # HF initializes its ViTs itself; everything else gets the HF/reference init for
        # new modules, N(0, 0.02) weights and zero biases, so the EFA gate starts near 0.5/0.5.
        pretrained = {id(m) for stream in (self.dino, self.siglip) for m in stream.vit.modules()}
        std = self.config.init_std
        for module in self.modules():
            if id(module) in pretrained:
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    nn.init.zeros_(module.weight[module.padding_idx])

    @staticmethod
    def _instruction_vector(
        text: torch.Tensor, text_valid: torch.Tensor, special: torch.Tensor
    ) -> torch.Tensor:
        """Mean input embedding over BOS, the real prompt tokens and stop: ``(B, T, D)`` -> ``(B, D)``."""
        weights = text_valid.to(text.dtype).unsqueeze(-1)
        return ((text * weights).sum(dim=1) + special.sum(dim=0)) / (weights.sum(dim=1) + 2)

    def encode_images(
        self, pixel_values: torch.Tensor, instruction: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vision tokens ``(B, N_vis, D)`` for the LLM and the EFA gate ``(B, 2)`` (None without EFA)."""
        if self.config.efa:
            return self.vision_projector(
                self.dino(pixel_values, instruction), self.siglip(pixel_values, instruction), instruction
            )
        return self.vision_projector(self.dino(pixel_values), self.siglip(pixel_values)), None

    def _special_ids(self, device: torch.device) -> torch.Tensor:
        llm = self.config.llm
        return torch.tensor([llm.bos_token_id, llm.eos_token_id], device=device)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor,
        *,
        padded: bool | None = None,
    ) -> CogVLAOutput:
        """One parallel-decoding pass.

        ``padded`` says whether ``attention_mask`` has a 0. Callers that built the mask on
        the host pass it so that no layer reads the mask back from the device; None reads
        a CPU mask directly and assumes pads for a device mask (always correct).
        """
        self._check_inputs(pixel_values, input_ids, attention_mask, proprio)
        if padded is None:
            padded = not _host_readable(attention_mask) or not bool(attention_mask.bool().all())
        config = self.config
        batch, prompt_len = input_ids.shape
        text_valid = attention_mask.bool()
        embed = self.llm.embed_tokens
        text = embed(input_ids)  # (B, T, D)
        special = embed(self._special_ids(input_ids.device))  # (2, D): BOS, stop
        bos, stop = special.unsqueeze(1).expand(-1, batch, -1).unbind(0)
        instruction = self._instruction_vector(text, text_valid, special)
        vision, gate = self.encode_images(pixel_values, instruction)  # (B, N_vis, D)
        proprio_token = self.proprio_projector(proprio.to(text.dtype))
        n_vis, n_act = vision.shape[1], config.num_action_tokens
        embeds = torch.cat(
            [
                bos.unsqueeze(1),
                vision.to(text.dtype),
                proprio_token.unsqueeze(1),
                text,
                text.new_zeros(batch, n_act, text.shape[-1]),  # action slots carry only their position
                stop.unsqueeze(1),
            ],
            dim=1,
        )
        valid = torch.cat(
            [text_valid.new_ones(batch, n_vis + 2), text_valid, text_valid.new_ones(batch, n_act + 1)], dim=1
        )
        layout = SequenceLayout(
            num_vision=n_vis,
            cond_start=1 + n_vis,
            cond_end=2 + n_vis + prompt_len,
            num_action_block=n_act + 1,
            padded=padded,
        )
        hidden, kept_indices = self.llm(embeds, valid, layout)
        seq = embeds.shape[1]
        # positions shifted one left: the last prompt token and action slots 0..A-2
        # (the reference's index arithmetic)
        action_hidden = hidden[:, seq - n_act - 2 : seq - 2]
        kept = [n_vis if index is None else index.shape[1] - (seq - n_vis) for index in kept_indices]
        return CogVLAOutput(
            actions=self.action_head(action_hidden),
            kept_per_layer=kept,
            gate=gate,
            vision_tokens=vision,
            kept_indices=kept_indices,
            action_hidden=action_hidden,
        )

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean L1 between predicted and target chunks, plus float metrics for logging.

        ``batch`` holds the ``forward`` inputs by name and ``actions (B, chunk, action_dim)``
        in normalized model units, and optionally ``weight (B,)``, each sample's share of the loss.
        """
        required = ("pixel_values", "input_ids", "attention_mask", "proprio", "actions")
        missing = [key for key in required if key not in batch]
        if missing:
            raise InputShapeError(f"batch: expected keys {list(required)}, missing {missing}")
        out = self(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch["proprio"])
        return self.action_loss(out, batch["actions"], batch.get("weight"))

    @staticmethod
    def action_loss(
        out: CogVLAOutput, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 of ``out``'s chunk against ``target (B, chunk, action_dim)``, plus metrics.

        With ``weight (B,)`` the loss is the weighted mean over samples; the logged ``l1``
        stays the plain mean, so runs with and without weights compare.
        """
        if tuple(target.shape) != tuple(out.actions.shape):
            raise InputShapeError(
                f"actions: expected shape {tuple(out.actions.shape)} (B, chunk, action_dim), "
                f"got {tuple(target.shape)}"
            )
        error = (out.actions - target.to(out.actions.dtype)).abs()
        loss = error.mean()
        if weight is not None:
            if tuple(weight.shape) != (len(error),):
                raise InputShapeError(
                    f"weight: expected shape ({len(error)},) (B,), got {tuple(weight.shape)}"
                )
            weight = weight.to(error.dtype)
            loss = (error.mean(dim=(1, 2)) * weight).sum() / weight.sum()
        metrics = {
            "l1": error.mean().item(),
            "l1_first_step": error[:, 0].mean().item(),
            "vision_tokens_per_layer": sum(out.kept_per_layer) / len(out.kept_per_layer),
        }
        if error.shape[1] > 1:
            metrics["l1_later_steps"] = error[:, 1:].mean().item()
        if out.gate is not None:
            metrics["gate_dino"] = out.gate[:, 0].mean().item()
        return loss, metrics

    def _check_inputs(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor,
    ) -> None:
        config = self.config
        named = {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "proprio": proprio,
        }
        for name, value in named.items():
            if not isinstance(value, torch.Tensor):
                raise InputDtypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if not pixel_values.is_floating_point():
            raise InputDtypeError(
                f"pixel_values: expected a float tensor in [0, 1], got {pixel_values.dtype}"
            )
        if not proprio.is_floating_point():
            raise InputDtypeError(f"proprio: expected a float tensor, got {proprio.dtype}")
        if input_ids.dtype != torch.long:
            raise InputDtypeError(f"input_ids: expected torch.int64 (long), got {input_ids.dtype}")
        if attention_mask.dtype != torch.bool and attention_mask.is_floating_point():
            raise InputDtypeError(
                f"attention_mask: expected an integer or bool tensor, got {attention_mask.dtype}"
            )
        batch = pixel_values.shape[0] if pixel_values.dim() > 0 else -1
        side = config.image_size
        expected = {
            "pixel_values": ((batch, config.num_images, 3, side, side), "(B, n_images, 3, H, W)"),
            "input_ids": ((batch, input_ids.shape[-1] if input_ids.dim() else -1), "(B, T)"),
            "attention_mask": (
                (batch, input_ids.shape[-1] if input_ids.dim() else -1),
                "(B, T) like input_ids",
            ),
            "proprio": ((batch, config.proprio_dim), "(B, proprio_dim)"),
        }
        for name, (shape, legend) in expected.items():
            if tuple(named[name].shape) != shape:
                raise InputShapeError(
                    f"{name}: expected shape {shape} {legend}, got {tuple(named[name].shape)}"
                )
        if input_ids.shape[1] == 0:
            raise InputShapeError("input_ids: expected at least one prompt token, got T=0")
        if not (_host_readable(input_ids) and _host_readable(attention_mask)):
            return
        if bool((input_ids < 0).any()) or bool((input_ids >= config.llm.vocab_size).any()):
            raise InputShapeError(
                f"input_ids: expected ids in [0, {config.llm.vocab_size}), got min {int(input_ids.min())} "
                f"max {int(input_ids.max())}"
            )
        if not bool(attention_mask.bool()[:, -1].all()):
            raise InputShapeError(
                "attention_mask: expected LEFT-padded prompts (last column all 1) so the action block "
                "follows the prompt directly; got a pad in the last column"
            )

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        tokenizer: Any = None,
        norm_stats: Any = None,
        norm_key: str | None = None,
    ) -> Path:
        """Write config, weights, tokenizer and stats to ``directory`` (layout: ``cogvla.checkpoint``)."""
        from cogvla.checkpoint import save_checkpoint

        return save_checkpoint(
            self,
            directory,
            tokenizer=tokenizer if tokenizer is not None else self.tokenizer,
            norm_stats=norm_stats if norm_stats is not None else self.norm_stats,
            norm_key=norm_key if norm_key is not None else self.norm_key,
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device = "cpu",
        unnorm_key: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> CogVLAModel:
        """Load a ``save_pretrained`` folder or a released OpenVLA-OFT / CogVLA folder.

        Sets ``tokenizer``, ``norm_stats`` and ``norm_key``; ``unnorm_key`` and ``dtype`` as
        in :func:`cogvla.checkpoint.load_checkpoint`.
        """
        from cogvla.checkpoint import load_checkpoint

        return load_checkpoint(directory, device=device, unnorm_key=unnorm_key, dtype=dtype)


def _host_readable(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s values can be read without a device sync or a graph break.

    Value checks of inputs on an accelerator would stall its stream every forward, and
    under ``torch.compile`` they would split the graph; there they are skipped (the policy
    builds its inputs on the host from checked observations).
    """
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()
