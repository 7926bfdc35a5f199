"""One-folder checkpoints: config, safetensors weights, tokenizer and normalization stats.

Layout of a checkpoint folder, as a Hugging Face model repository has it::

    config.json          {"model_type": "cogvla", "format_version": 2, "norm_key": str | null,
                          "name": ..., "variant": ..., "llm": {...}, ...}  (the CogVLAConfig fields)
    model.safetensors    the model's state dict (HF key names inside the ViT streams and LLM)
    norm_stats.json      cogvla.normalize.NormStats (optional)
    tokenizer.json, tokenizer_config.json, prompt_tokenizer.json
                         cogvla.tokenizer.PromptTokenizer files (optional)

Folders of format version 1 (``{"format": "cogvla", "config": {...}}`` and the tokenizer in
``tokenizer/``), such as the embedded default, load as before. A folder can also be named
by a Hugging Face Hub repo id (``owner/name``), resolved through ``huggingface_hub``'s cache
(``HF_HUB_OFFLINE=1`` works with a populated cache); ``push_to_hub`` uploads a folder.

Loading is strict: a missing, unexpected or mis-shaped weight raises ``CheckpointError``
naming the keys and shapes, instead of silently leaving random weights in place.

Loading is also memory-lean: the model is built on the ``meta`` device (no storage, no
random init), the stored shapes are checked from the safetensors header, and then one
tensor at a time is read, cast and moved to the target device. Peak memory is about one
copy of the model in the target dtype, not a random-init copy plus the whole file.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from cogvla.config import CogVLAConfig, ConfigError
from cogvla.normalize import NormStats

if TYPE_CHECKING:
    from cogvla.modeling import CogVLAModel
    from cogvla.tokenizer import PromptTokenizer

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "MODEL_TYPE",
    "NORM_STATS_FILE",
    "TOKENIZER_DIR",
    "TOKENIZER_MARKER",
    "WEIGHTS_FILE",
    "CheckpointError",
    "check_state_dict",
    "load_checkpoint",
    "materialize_buffers",
    "push_to_hub",
    "read_config",
    "resolve_pretrained",
    "save_checkpoint",
    "tokenizer_dir",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORM_STATS_FILE = "norm_stats.json"
# format version 1 kept the tokenizer in this subfolder; version 2 keeps it at the root
TOKENIZER_DIR = "tokenizer"
# the file PromptTokenizer.save writes beside the Hugging Face tokenizer files
TOKENIZER_MARKER = "prompt_tokenizer.json"
MODEL_TYPE = "cogvla"
FORMAT_VERSION = 2
_LEGACY_FORMAT_VERSION = 1
# config.json keys besides the CogVLAConfig fields
_HEADER_KEYS = ("model_type", "format_version", "norm_key")
_LIST_LIMIT = 10


class CheckpointError(ValueError):
    """A checkpoint folder is missing files or its contents do not match the model."""


def save_checkpoint(
    model: CogVLAModel,
    directory: str | Path,
    *,
    tokenizer: PromptTokenizer | None = None,
    norm_stats: NormStats | None = None,
    norm_key: str | None = None,
) -> Path:
    """Write ``model`` (and optionally its tokenizer and stats) into ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and tokenizer.vocab_size > model.config.llm.vocab_size:
        raise CheckpointError(
            f"tokenizer: expected at most {model.config.llm.vocab_size} tokens (llm.vocab_size), "
            f"got {tokenizer.vocab_size}"
        )
    fields = model.config.to_dict()
    clash = sorted(set(fields) & set(_HEADER_KEYS))
    if clash:
        raise CheckpointError(f"config: fields {clash} would overwrite the config.json header keys")
    header = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, "norm_key": norm_key, **fields}
    (directory / CONFIG_FILE).write_text(json.dumps(header, indent=2))
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    if norm_stats is not None:
        norm_stats.save(directory / NORM_STATS_FILE)
    if tokenizer is not None:
        tokenizer.save(directory)
    logger.info("saved checkpoint to %s", directory)
    return directory


def read_config(directory: str | Path) -> tuple[CogVLAConfig, str | None]:
    """The model config and normalization key stored in a checkpoint folder."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {directory} a cogvla checkpoint folder?")
    try:
        header = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(
            f'{path}: expected a map with "model_type": "{MODEL_TYPE}", got {str(header)[:80]}'
        )
    if header.get("model_type") == MODEL_TYPE:
        version, fields = FORMAT_VERSION, {k: v for k, v in header.items() if k not in _HEADER_KEYS}
    elif header.get("format") == MODEL_TYPE:
        version, fields = _LEGACY_FORMAT_VERSION, header.get("config")
    else:
        raise CheckpointError(
            f'{path}: expected a cogvla config ("model_type": "{MODEL_TYPE}"), got {str(header)[:80]}'
        )
    if header.get("format_version") != version:
        raise CheckpointError(
            f"{path}: expected format_version {version}, got {header.get('format_version')!r}"
        )
    try:
        return CogVLAConfig.from_dict(fields), header.get("norm_key")
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc


def tokenizer_dir(directory: str | Path) -> Path | None:
    """Where a checkpoint folder keeps its tokenizer (its root, or ``tokenizer/`` in version 1)."""
    directory = Path(directory)
    if (directory / TOKENIZER_MARKER).is_file():
        return directory
    legacy = directory / TOKENIZER_DIR
    return legacy if legacy.is_dir() else None


def resolve_pretrained(name_or_path: str | Path, *, revision: str | None = None) -> Path:
    """A checkpoint folder: ``name_or_path`` itself if it is a folder, else a Hub repo id
    (``owner/name``) fetched into, or found in, the Hugging Face cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    repo_id = str(name_or_path)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise CheckpointError(f"checkpoint: expected a folder or a Hub repo id owner/name, got {repo_id!r}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(
            f"checkpoint: {repo_id!r} is neither a folder nor a Hub repo found online or in the "
            f"Hugging Face cache ({type(exc).__name__})"
        ) from exc


def push_to_hub(
    directory: str | Path, repo_id: str, *, private: bool = True, commit_message: str | None = None
) -> str:
    """Upload a checkpoint folder to the Hub repo ``repo_id`` (created if needed); returns the commit URL."""
    from huggingface_hub import HfApi

    read_config(directory)
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(directory),
        commit_message=commit_message or "Upload cogvla checkpoint",
    )
    return str(info)


def check_state_dict(
    expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]], source: str
) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys (key -> shape maps)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{key}: expected {tuple(expected[key])}, got {tuple(found[key])}"
        for key in sorted(set(expected) & set(found))
        if tuple(expected[key]) != tuple(found[key])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys {_abbreviate(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys {_abbreviate(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches {_abbreviate(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the config: " + "; ".join(problems))


def materialize_buffers(model: nn.Module, device: str | torch.device) -> None:
    """Rebuild the non-persistent buffers (in no state dict) that a meta-device build left empty."""
    for name, buffer in list(model.named_buffers()):
        if not buffer.is_meta:
            continue
        module_name, _, attr = name.rpartition(".")
        if attr != "position_ids":
            raise CheckpointError(f"{name}: buffer has no stored value and no rebuild rule")
        # SigLIP's (1, num_positions) arange of position indices
        value = torch.arange(buffer.shape[-1], device=device).expand(buffer.shape)
        model.get_submodule(module_name)._buffers[attr] = value


def load_checkpoint(
    directory: str | Path,
    *,
    device: str | torch.device = "cpu",
    unnorm_key: str | None = None,
    dtype: torch.dtype | None = None,
) -> CogVLAModel:
    """Build the model from ``config.json``, load its weights strictly, attach tokenizer and stats.

    A released OpenVLA-OFT / CogVLA folder (``config.json`` with ``model_type: openvla``) is
    imported with ``cogvla.convert.load_released`` instead; ``unnorm_key`` picks its dataset
    statistics (needed when it holds several). For a cogvla folder ``unnorm_key``, when given,
    must name the stored ``norm_key``.

    ``dtype`` casts the floating weights; None keeps the stored dtype of a cogvla folder and
    the importer's float32 for a released one (whose files mix bf16 and fp32 tensors).

    The returned model is in eval mode; ``model.tokenizer``, ``model.norm_stats`` and
    ``model.norm_key`` are None when the checkpoint has none.
    """
    from cogvla.convert import is_released_checkpoint, load_released
    from cogvla.modeling import CogVLAModel
    from cogvla.tokenizer import PromptTokenizer

    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
    directory = resolve_pretrained(directory)
    if is_released_checkpoint(directory):
        options = {} if dtype is None else {"dtype": dtype}
        return load_released(directory, device=device, unnorm_key=unnorm_key, **options)[0]
    config, norm_key = read_config(directory)
    if unnorm_key is not None and norm_key not in (unnorm_key, f"{unnorm_key}_no_noops"):
        raise CheckpointError(
            f"{directory / CONFIG_FILE}: unnorm_key {unnorm_key!r} requested, but the checkpoint's "
            f"normalization stats are for norm_key {norm_key!r}"
        )
    with torch.device("meta"):
        model = CogVLAModel(config)
    _stream_weights(model, directory / WEIGHTS_FILE, device=device, dtype=dtype)
    materialize_buffers(model, device)
    model.eval()
    stats_path = directory / NORM_STATS_FILE
    if stats_path.is_file():
        try:
            model.norm_stats = NormStats.load(stats_path)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{stats_path}: invalid normalization stats: {exc}") from exc
    tokenizer_path = tokenizer_dir(directory)
    if tokenizer_path is not None:
        _register_auto_config()
        model.tokenizer = PromptTokenizer.load(tokenizer_path)
    model.norm_key = norm_key
    return model


def _stream_weights(
    model: nn.Module, path: Path, *, device: str | torch.device, dtype: torch.dtype | None
) -> None:
    """Check every stored shape against ``model`` (on meta), then assign tensor by tensor."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        weights = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot be read as safetensors ({exc})") from exc
    with weights:
        names = weights.keys()  # a safe_open is not iterable
        stored = {key: weights.get_slice(key).get_shape() for key in names}
        expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        check_state_dict(expected, stored, str(path))
        for key in tqdm(sorted(stored), desc="load weights", unit="tensor", leave=False, disable=None):
            tensor = weights.get_tensor(key)
            cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
            # get_tensor returns an unaligned view into the file's memory map, on which CPU
            # kernels round differently from the saved model: copy into memory of our own
            value = tensor.to(device, cast, copy=True)
            module_name, _, name = key.rpartition(".")
            # loading into the owning submodule keeps this O(1) per key; assign=True puts the
            # tensor in place of the meta one, keeping requires_grad
            model.get_submodule(module_name).load_state_dict({name: value}, strict=False, assign=True)


@functools.cache
def _register_auto_config() -> None:
    """Let ``transformers`` read our ``config.json`` as a known ``model_type``.

    ``AutoTokenizer`` reads the config.json beside the tokenizer files; an unknown model type
    makes it warn that the checkpoint may not match the model, which here is wrong.
    """
    from transformers import AutoConfig, PretrainedConfig

    class CogVLAHubConfig(PretrainedConfig):
        model_type = MODEL_TYPE

    AutoConfig.register(MODEL_TYPE, CogVLAHubConfig)


def _abbreviate(items: list[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:_LIST_LIMIT])
    return f"[{shown}{', ...' if len(items) > _LIST_LIMIT else ''}]"
