"""Load a released OpenVLA-OFT or CogVLA checkpoint directory into a :class:`CogVLAModel`.

The model is built on the ``meta`` device (no memory), then every parameter is
created by the conversion plan one tensor at a time, already in the requested dtype
and on the requested device. Peak host memory is therefore about one copy of the
model in the target dtype when loading to CPU, and a few tensors when loading to a
GPU: a 7.5B model in bf16 fits a single 24 GB card.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cogvla.checkpoint import materialize_buffers
from cogvla.convert.adapter import AdapterMergedSource, has_unmerged_adapter
from cogvla.convert.errors import CheckpointFileError, ReleasedCheckpointError
from cogvla.convert.execute import assign_tensor, run_plan
from cogvla.convert.files import locate_files, read_lora_settings
from cogvla.convert.layout import read_released_config
from cogvla.convert.llama_tokenizer import load_released_tokenizer
from cogvla.convert.mapping import released_plan
from cogvla.convert.model_config import released_model_config
from cogvla.convert.processor import read_image_preprocessing
from cogvla.convert.report import build_report, summary
from cogvla.convert.sources import DDP_PREFIX, LoRAMergedSource, ShardedSafetensors, TensorSource, TorchFile
from cogvla.convert.stats import all_norm_stats, read_dataset_statistics, select_norm_stats
from cogvla.modeling import CogVLAModel
from cogvla.normalize import NormStats
from cogvla.tokenizer import PromptTokenizer

__all__ = ["ImportResult", "import_released", "is_released_checkpoint", "load_released"]

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ImportResult:
    """An imported model with its tokenizer and every dataset's stats.

    ``norm_key``/``norm_stats`` are the default dataset's; both are None when the release
    holds several and none was asked for (the key is then chosen per suite or request).
    """

    model: CogVLAModel
    tokenizer: PromptTokenizer
    norm_stats: NormStats | None
    norm_key: str | None
    norm_table: dict[str, NormStats]
    report: dict[str, Any]


def is_released_checkpoint(directory: str | Path) -> bool:
    """True for an OpenVLA-format folder (``config.json`` with ``model_type: openvla``)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("model_type") == "openvla"
    except (json.JSONDecodeError, AttributeError):
        return False


def _sources(
    directory: Path, released, files, base: Path | None
) -> tuple[dict[str, TensorSource], dict[str, Any]]:
    sources: dict[str, TensorSource] = {
        "action_head": TorchFile(files.action_head, strip_prefix=DDP_PREFIX),
        "proprio": TorchFile(files.proprio_projector, strip_prefix=DDP_PREFIX),
    }
    extras: dict[str, Any] = {"lora": None, "llm_lora": None}
    if has_unmerged_adapter(directory):
        if base is None:
            raise CheckpointFileError(
                f"{directory}: an unmerged LoRA training folder (lora_adapter/adapter_model.safetensors, "
                "no model-*.safetensors); pass --base with the model it was fine-tuned from (openvla-7b)"
            )
        trainables = TorchFile(files.non_lora_trainables) if files.non_lora_trainables is not None else None
        merged = AdapterMergedSource(
            ShardedSafetensors(base),
            directory / "lora_adapter",
            trainables=trainables,
            skip_wrapped_vision=released.use_film,
        )
        sources["weights"] = merged
        extras["llm_lora"] = {
            "base": str(base),
            "merged_modules": merged.num_merged,
            "skipped_adapter_keys": len(merged.skipped),
            "dropped_base_keys": merged.dropped,
        }
    else:
        sources["weights"] = ShardedSafetensors(directory)
    if files.vision_backbone is not None:
        lora = read_lora_settings(files.adapter_config)
        vision = LoRAMergedSource(TorchFile(files.vision_backbone), rank=lora.rank, scaling=lora.scaling)
        sources["vision"] = vision
        extras["lora"] = {
            "rank": lora.rank,
            "alpha": lora.alpha,
            "use_rslora": lora.use_rslora,
            "scaling": lora.scaling,
            "merged_modules": vision.num_merged,
        }
    if files.non_lora_trainables is not None and extras["llm_lora"] is None:
        # (an unmerged folder's trainables are already part of its merged weights source)
        sources["trainables"] = TorchFile(files.non_lora_trainables)
    return sources, extras


def import_released(
    directory: str | Path,
    *,
    unnorm_key: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    chunk_size: int = 8,
    num_images: int = 2,
    progress: bool = True,
    keep_all_stats: bool = False,
    image_preprocessing: str = "openvla",
    base: str | Path | None = None,
) -> ImportResult:
    """Convert a released checkpoint folder; see the module docstring for memory behaviour.

    Args:
        unnorm_key: default dataset key in ``dataset_statistics.json`` (``libero_spatial``
            also matches ``libero_spatial_no_noops``); optional when the file has one key.
        keep_all_stats: with several keys and no ``unnorm_key``, import with no default
            key instead of refusing; every key's stats are in ``norm_table`` either way.
        image_preprocessing: recorded in the model config, so serving, evaluation and
            training prepare images alike (see ``CogVLAConfig.image_preprocessing``).
        base: the model an unmerged LoRA training folder was fine-tuned from; its LLM
            adapter is merged into these weights (``cogvla.convert.adapter``).
        chunk_size, num_images: LIBERO protocol values no released file records.
    """
    start = time.perf_counter()
    directory = Path(directory)
    released = read_released_config(directory)
    files = locate_files(directory, released)
    sources, extras = _sources(directory, released, files, Path(base) if base is not None else None)
    preprocessing = read_image_preprocessing(directory, released.image_size)
    config = released_model_config(
        released,
        sources,
        preprocessing,
        chunk_size=chunk_size,
        num_images=num_images,
        image_preprocessing=image_preprocessing,
    )
    stats_all = read_dataset_statistics(directory)
    dims = {"action_dim": config.action_dim, "proprio_dim": config.proprio_dim}
    norm_table = all_norm_stats(stats_all, **dims)
    norm_key, norm_stats = (
        select_norm_stats(stats_all, unnorm_key, **dims)
        if unnorm_key is not None or len(stats_all) == 1 or not keep_all_stats
        else (None, None)
    )
    tokenizer = load_released_tokenizer(directory, pad_token_id=config.llm.pad_token_id)
    plan = released_plan(config, has_trainables="trainables" in sources)
    with torch.device("meta"):
        model = CogVLAModel(config)
    target_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    plan.validate(sources, target_shapes)

    def place(key: str, tensor: torch.Tensor) -> None:
        assign_tensor(model, key, tensor, dtype=dtype, device=device)

    run_plan(plan, sources, target_shapes, place, progress=progress)
    materialize_buffers(model, device)
    still_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise ReleasedCheckpointError(f"target tensors left uninitialized: {', '.join(still_meta)}")
    model.eval()
    model.tokenizer, model.norm_stats, model.norm_key = tokenizer, norm_stats, norm_key
    extras.update(
        unnorm_key=norm_key,
        available_unnorm_keys=sorted(stats_all),
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        protocol={
            "chunk_size": chunk_size,
            "num_images": num_images,
            "center_crop": config.center_crop,
            "image_preprocessing": config.image_preprocessing,
        },
        import_seconds=round(time.perf_counter() - start, 3),
    )
    report = build_report(
        directory=str(directory),
        released=released,
        config=config,
        plan=plan,
        sources=sources,
        model=model,
        extras=extras,
    )
    log.info("%s", summary(report))
    return ImportResult(model, tokenizer, norm_stats, norm_key, norm_table, report)


def load_released(directory: str | Path, **kwargs: Any) -> tuple[CogVLAModel, PromptTokenizer, NormStats]:
    """``(model, tokenizer, norm_stats)`` of a released checkpoint; keyword args as :func:`import_released`.

    The model also carries them as ``model.tokenizer``, ``model.norm_stats`` and ``model.norm_key``,
    like ``CogVLAModel.from_pretrained``.
    """
    if not is_released_checkpoint(directory):
        raise CheckpointFileError(f"{directory}: no config.json with model_type 'openvla'")
    result = import_released(directory, **kwargs)
    return result.model, result.tokenizer, result.norm_stats
