"""An unmerged LoRA training folder, seen as the merged weights the reference's merge script writes.

With ``merge_lora_during_training False`` a training run saves no ``model-*.safetensors``:
the LLM's LoRA stays in ``lora_adapter/adapter_model.safetensors`` and its base weights in
the model it was fine-tuned from (openvla-7b). The reference then merges offline (build
the base model, load ``non_lora_trainables``, ``PeftModel.from_pretrained``,
``merge_and_unload``). ``AdapterMergedSource`` does the same one tensor at a time: each
adapted Linear is merged by peft's own LoRA layer, in float32, when the importer reads it.

As in the reference merge, adapter entries of CogVLA's wrapped vision tower
(``vision_backbone.vision_backbone.*``) match no base module and are skipped; that tower
comes merged from ``vision_backbone--*.pt``. The base model's fused ``projector`` is not
part of CogVLA and is left out; ``non_lora_trainables`` supplies the new modules.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from cogvla.convert.errors import CheckpointFileError, ShapeMismatchError, format_keys
from cogvla.convert.sources import ShardedSafetensors, TensorInfo, TensorSource

__all__ = ["ADAPTER_WEIGHTS", "AdapterMergedSource", "has_unmerged_adapter"]

ADAPTER_WEIGHTS = "lora_adapter/adapter_model.safetensors"
# PEFT's prefix of adapter keys: PeftModel.base_model (LoraModel).model
_PEFT_PREFIX = "base_model.model."
_LORA_A, _LORA_B = ".lora_A.weight", ".lora_B.weight"
# modules of the base model the reference merge leaves behind for CogVLA
_SKIPPED_ADAPTER_PREFIX = "vision_backbone.vision_backbone."
_DROPPED_BASE_PREFIX = "projector."


def has_unmerged_adapter(directory: str | Path) -> bool:
    """True for a training folder that has LoRA adapter weights but no merged HF weights."""
    directory = Path(directory)
    merged_files = ("model.safetensors.index.json", "model.safetensors")
    merged = any((directory / name).is_file() for name in merged_files)
    return not merged and (directory / ADAPTER_WEIGHTS).is_file()


class AdapterMergedSource:
    """Base shards + LoRA adapter (+ the run's own trainables) as one merged ``weights`` source.

    Args:
        base: the shards of the model the run started from.
        adapter_dir: the run's ``lora_adapter/`` (``adapter_config.json`` + weights).
        trainables: the run's ``non_lora_trainables`` (CogVLA), overriding base keys.
        skip_wrapped_vision: skip CogVLA's vision adapter entries, as the reference merge does.
    """

    def __init__(
        self,
        base: ShardedSafetensors,
        adapter_dir: Path,
        *,
        trainables: TensorSource | None = None,
        skip_wrapped_vision: bool = False,
    ) -> None:
        from peft import LoraConfig

        self.name = f"{base.name} + {ADAPTER_WEIGHTS}"
        self._base = base
        self._adapter = _SafetensorsFile(adapter_dir / "adapter_model.safetensors")
        self._config = LoraConfig.from_pretrained(str(adapter_dir))
        self._trainables = trainables
        self.skipped: list[str] = []
        self.dropped = [key for key in base.tensor_keys() if key.startswith(_DROPPED_BASE_PREFIX)]
        base_keys = set(base.tensor_keys())
        self._pairs: dict[str, tuple[str, str]] = {}
        unmatched = []
        for key in self._adapter.tensor_keys():
            if not key.endswith(_LORA_A):
                continue
            module = key.removeprefix(_PEFT_PREFIX).removesuffix(_LORA_A)
            if skip_wrapped_vision and module.startswith(_SKIPPED_ADAPTER_PREFIX):
                self.skipped += [key, key.replace(_LORA_A, _LORA_B)]
                continue
            if f"{module}.weight" not in base_keys:
                unmatched.append(key)
                continue
            self._pairs[f"{module}.weight"] = (key, key.replace(_LORA_A, _LORA_B))
        if unmatched:
            raise CheckpointFileError(
                f"{ADAPTER_WEIGHTS}: adapter entries for modules the base model lacks: "
                f"{format_keys(unmatched)}"
            )
        own = set(trainables.tensor_keys()) if trainables is not None else set()
        self._keys = sorted((base_keys - set(self.dropped)) | own)

    @property
    def num_merged(self) -> int:
        return len(self._pairs)

    def tensor_keys(self) -> list[str]:
        return list(self._keys)

    def info(self, key: str) -> TensorInfo:
        if self._trainables is not None and key in self._trainables.tensor_keys():
            return self._trainables.info(key)
        return self._base.info(key)

    def load(self, key: str) -> torch.Tensor:
        if self._trainables is not None and key in self._trainables.tensor_keys():
            return self._trainables.load(key)
        if key not in self._pairs:
            return self._base.load(key)
        return self._merge(key)

    def origin(self, key: str) -> tuple[tuple[str, str], ...]:
        if self._trainables is not None and key in self._trainables.tensor_keys():
            return self._trainables.origin(key)
        pair = self._pairs.get(key, ())
        return (*self._base.origin(key), *((ADAPTER_WEIGHTS, name) for name in pair))

    def _merge(self, key: str) -> torch.Tensor:
        from peft.tuners.lora.layer import Linear

        weight = self._base.load(key).float()
        lora_a, lora_b = (self._adapter.load(name).float() for name in self._pairs[key])
        rank = lora_a.shape[0]
        if lora_a.shape != (rank, weight.shape[1]) or lora_b.shape != (weight.shape[0], rank):
            raise ShapeMismatchError(
                f"{ADAPTER_WEIGHTS}: {self._pairs[key][0]}: expected lora_A (r, {weight.shape[1]}) and "
                f"lora_B ({weight.shape[0]}, r), got {tuple(lora_a.shape)} and {tuple(lora_b.shape)}"
            )
        base_layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        base_layer.weight.data = weight
        config = self._config
        layer = Linear(
            base_layer,
            "default",
            config=config,
            r=rank,
            lora_alpha=config.lora_alpha,
            use_rslora=config.use_rslora,
        )
        layer.lora_A["default"].weight.data = lora_a
        layer.lora_B["default"].weight.data = lora_b
        layer.merge()
        return layer.base_layer.weight.data


class _SafetensorsFile:
    """The tensors of one safetensors file, read one at a time."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointFileError(f"{path}: missing")
        self._path = path
        with safe_open(str(path), framework="pt") as handle:
            self._keys = list(handle.keys())

    def tensor_keys(self) -> list[str]:
        return self._keys

    def load(self, key: str) -> torch.Tensor:
        with safe_open(str(self._path), framework="pt") as handle:
            return handle.get_tensor(key)
