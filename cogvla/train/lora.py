"""LoRA fine-tuning from a pretrained checkpoint (``cogvla train --init-from DIR``).

As in the CogVLA recipe (reference section 6.2), the pretrained backbones get LoRA
adapters on every linear layer (both ViTs and the Llama decoder), while the modules
CogVLA adds are trained fully: FiLM, aggregation tokens, the EFA projectors and gate, the
LFP routers, the proprio projector and the action head. Backbone norms and embeddings stay
frozen. Trained parameters are float32 whatever the checkpoint's dtype. Saving merges the
adapters into plain weights, so a fine-tuned checkpoint loads like any other.
"""

from __future__ import annotations

import copy

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from cogvla.modeling import CogVLAModel

__all__ = ["BACKBONE_PREFIXES", "apply_lora", "is_backbone_parameter", "lora_target_modules", "merged_model"]

# Module-name prefixes of the pretrained backbones inside CogVLAModel.
BACKBONE_PREFIXES = ("dino.vit.", "siglip.vit.", "llm.")
# New modules that live inside a backbone's namespace (LFP routers sit in the decoder layers).
_NEW_INSIDE_BACKBONE = (".router.",)
_PEFT_PREFIX = "base_model.model."


def is_backbone_parameter(name: str) -> bool:
    """True for a (possibly peft-prefixed) parameter or module name of a pretrained backbone."""
    name = name.removeprefix(_PEFT_PREFIX)
    return name.startswith(BACKBONE_PREFIXES) and not any(marker in name for marker in _NEW_INSIDE_BACKBONE)


def lora_target_modules(model: nn.Module) -> list[str]:
    """Full names of the backbone linears that get adapters."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and is_backbone_parameter(name)
    ]


def apply_lora(model: CogVLAModel, rank: int, alpha: int) -> PeftModel:
    """Wrap ``model`` with LoRA (gaussian init, no dropout) and unfreeze the new modules, in float32."""
    targets = lora_target_modules(model)
    if not targets:
        raise ValueError(f"apply_lora: no linear layer under {BACKBONE_PREFIXES} to adapt")
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, init_lora_weights="gaussian"
    )
    wrapped = get_peft_model(model, config)
    for name, parameter in wrapped.named_parameters():
        if "lora_" not in name:
            parameter.requires_grad_(not is_backbone_parameter(name))
        if parameter.requires_grad:
            # AdamW's updates underflow and its second moments overflow in half precision (a
            # float16 checkpoint went NaN at step 2), so whatever is trained is float32.
            parameter.data = parameter.data.float()
    return wrapped


def merged_model(wrapped: PeftModel) -> CogVLAModel:
    """A plain ``CogVLAModel`` with the adapters folded into the weights; ``wrapped`` is left as it is."""
    return copy.deepcopy(wrapped).merge_and_unload()
