"""Lazy, read-only views of the tensors in a released checkpoint's files.

A source exposes ``tensor_keys()``, ``info(key)`` (shape and dtype without reading the data)
and ``load(key)``; ``origin(key)`` names the file and original key(s) a tensor comes
from, so the import report and every error can point at the exact entry. Tensors are
read one at a time (safetensors slices, memory-mapped ``.pt``), which is what lets a
7B checkpoint be imported without holding two copies in memory.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open

from cogvla.convert.errors import CheckpointFileError, ShapeMismatchError, format_keys

__all__ = [
    "DDP_PREFIX",
    "LoRAMergedSource",
    "MemorySource",
    "ShardedSafetensors",
    "TensorInfo",
    "TensorSource",
    "TorchFile",
]

DDP_PREFIX = "module."

_SAFETENSORS_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n


class TensorSource(Protocol):
    """One namespace of source tensors (a set of shards, or one ``.pt`` file)."""

    name: str

    def tensor_keys(self) -> list[str]: ...

    def info(self, key: str) -> TensorInfo: ...

    def load(self, key: str) -> torch.Tensor: ...

    def origin(self, key: str) -> tuple[tuple[str, str], ...]: ...


def _strip_prefix(keys: Iterable[str], prefix: str, file_name: str) -> dict[str, str]:
    """Stripped key -> stored key; two stored keys that collide after stripping are an error."""
    mapping: dict[str, str] = {}
    for key in keys:
        short = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        if short in mapping:
            raise CheckpointFileError(
                f"{file_name}: keys {mapping[short]!r} and {key!r} are the same tensor once the "
                f"{prefix!r} prefix is stripped"
            )
        mapping[short] = key
    return mapping


class ShardedSafetensors:
    """The HF weights: ``model.safetensors.index.json`` + its shards, or one ``model.safetensors``.

    Every shard the index names must exist, and each shard must hold exactly the keys
    the index assigns to it; ``module.`` prefixes are stripped.
    """

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        index_path = directory / "model.safetensors.index.json"
        if index_path.is_file():
            weight_map = self._read_index(index_path)
            self.name = index_path.name
        elif (directory / "model.safetensors").is_file():
            weight_map = None
            self.name = "model.safetensors"
        else:
            raise CheckpointFileError(
                f"{directory}: no model.safetensors.index.json and no model.safetensors; "
                "the merged HF weights are missing"
            )
        shard_names = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
        missing = [name for name in shard_names if not (directory / name).is_file()]
        if missing:
            lost = [key for key, shard in (weight_map or {}).items() if shard in missing]
            raise CheckpointFileError(
                f"{index_path}: shard file(s) {', '.join(missing)} missing from {directory}; "
                f"they hold {len(lost)} tensor(s), e.g. {format_keys(lost, limit=5)}"
            )
        self._directory = directory
        infos: dict[str, TensorInfo] = {}
        stored_keys: dict[str, str] = {}
        for shard in shard_names:
            shard_keys = self._read_header(directory / shard, infos)
            if weight_map is not None:
                expected = {key for key, name in weight_map.items() if name == shard}
                extra, absent = set(shard_keys) - expected, expected - set(shard_keys)
                if extra or absent:
                    raise CheckpointFileError(
                        f"{shard}: does not match {index_path.name}: "
                        + (f"keys the index does not list: {format_keys(extra)}; " if extra else "")
                        + (
                            f"keys the index puts here but the file lacks: {format_keys(absent)}"
                            if absent
                            else ""
                        )
                    )
            stored_keys.update(dict.fromkeys(shard_keys, shard))
        self._stored = _strip_prefix(stored_keys, DDP_PREFIX, self.name)
        self._shard_of = {short: stored_keys[stored] for short, stored in self._stored.items()}
        self._infos = {short: infos[stored] for short, stored in self._stored.items()}

    @staticmethod
    def _read_header(path: Path, infos: dict[str, TensorInfo]) -> list[str]:
        """Keys of one shard; their shapes and dtypes go into ``infos``."""
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                keys = list(handle.keys())
                for key in keys:
                    sliced = handle.get_slice(key)
                    dtype_name = sliced.get_dtype()
                    if dtype_name not in _SAFETENSORS_DTYPES:
                        raise CheckpointFileError(f"{path.name}: {key}: unsupported dtype {dtype_name}")
                    infos[key] = TensorInfo(tuple(sliced.get_shape()), _SAFETENSORS_DTYPES[dtype_name])
        except CheckpointFileError:
            raise
        except Exception as exc:  # safetensors raises its own untyped errors for corrupt headers
            raise CheckpointFileError(f"{path}: not a readable safetensors file ({exc})") from exc
        return keys

    @staticmethod
    def _read_index(path: Path) -> dict[str, str]:
        try:
            index = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointFileError(f"{path}: not valid JSON ({exc})") from exc
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointFileError(f"{path}: weight_map: expected a non-empty object, got {weight_map!r}")
        return weight_map

    def tensor_keys(self) -> list[str]:
        return list(self._stored)

    def info(self, key: str) -> TensorInfo:
        return self._infos[key]

    def load(self, key: str) -> torch.Tensor:
        # One short-lived mapping per tensor: a shard kept open would keep every page read
        # so far resident, adding the whole checkpoint to the importer's RSS.
        with safe_open(str(self._directory / self._shard_of[key]), framework="pt", device="cpu") as handle:
            return handle.get_tensor(self._stored[key])

    def origin(self, key: str) -> tuple[tuple[str, str], ...]:
        return ((self._shard_of[key], self._stored[key]),)


class TorchFile:
    """A ``torch.save``d state dict read with ``weights_only=True`` (and memory-mapped).

    A file that only loads with ``weights_only=False`` is refused: unpickling arbitrary
    objects from a downloaded file can run arbitrary code.
    """

    def __init__(self, path: str | Path, strip_prefix: str = "") -> None:
        path = Path(path)
        self.name = path.name
        if not path.is_file():
            raise CheckpointFileError(f"{path}: missing")
        state = self._load(path)
        if not isinstance(state, dict):
            raise CheckpointFileError(
                f"{path}: expected a state dict (dict of tensors), got {type(state).__name__}"
            )
        not_tensors = [str(key) for key, value in state.items() if not isinstance(value, torch.Tensor)]
        if not_tensors:
            raise CheckpointFileError(
                f"{path}: expected only tensors in the state dict, these keys hold other objects: "
                f"{format_keys(not_tensors)}"
            )
        self._state = state
        self._stored = _strip_prefix(state, strip_prefix, self.name)

    @staticmethod
    def _load(path: Path) -> object:
        # mmap needs the zip format torch.save has written since 1.6; older files load eagerly.
        mmap = zipfile.is_zipfile(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            reason = str(exc).splitlines()
            detail = next(
                (line.strip() for line in reason if "GLOBAL" in line or "Unsupported" in line), reason[0]
            )
            raise CheckpointFileError(
                f"{path}: refusing to load: it needs torch.load(weights_only=False), i.e. it pickles "
                f"objects other than tensors ({detail}). Re-save it as a plain state dict of tensors."
            ) from exc
        except (RuntimeError, EOFError, OSError) as exc:
            raise CheckpointFileError(f"{path}: not a readable torch checkpoint ({exc})") from exc

    def tensor_keys(self) -> list[str]:
        return list(self._stored)

    def info(self, key: str) -> TensorInfo:
        tensor = self._state[self._stored[key]]
        return TensorInfo(tuple(tensor.shape), tensor.dtype)

    def load(self, key: str) -> torch.Tensor:
        return self._state[self._stored[key]]

    def origin(self, key: str) -> tuple[tuple[str, str], ...]:
        return ((self.name, self._stored[key]),)


class MemorySource:
    """Tensors already in memory (tests, and sources assembled by hand)."""

    def __init__(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        self.name = name
        self._tensors = tensors

    def tensor_keys(self) -> list[str]:
        return list(self._tensors)

    def info(self, key: str) -> TensorInfo:
        return TensorInfo(tuple(self._tensors[key].shape), self._tensors[key].dtype)

    def load(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def origin(self, key: str) -> tuple[tuple[str, str], ...]:
        return ((self.name, key),)


_LORA_PARTS = (".base_layer.weight", ".base_layer.bias", ".lora_A.", ".lora_B.")


class LoRAMergedSource:
    """A source in which every PEFT LoRA-wrapped Linear appears merged.

    ``X.base_layer.weight`` + ``X.lora_A.<adapter>.weight`` + ``X.lora_B.<adapter>.weight``
    become ``X.weight = base + scaling * B @ A`` (computed in float32), and
    ``X.base_layer.bias`` becomes ``X.bias``; all other keys pass through. A LoRA key
    without its partners, or a rank other than ``rank``, is an error naming the key.
    """

    def __init__(self, inner: TensorSource, *, rank: int, scaling: float, adapter: str = "default") -> None:
        self.name = inner.name
        self._inner = inner
        self._scaling = scaling
        self._groups: dict[str, dict[str, str]] = {}
        self._plain: dict[str, str] = {}
        self._merged: dict[str, str] = {}
        lora_a, lora_b = f".lora_A.{adapter}.weight", f".lora_B.{adapter}.weight"
        for key in inner.tensor_keys():
            for suffix, role in (
                (".base_layer.weight", "base"),
                (".base_layer.bias", "bias"),
                (lora_a, "a"),
                (lora_b, "b"),
            ):
                if key.endswith(suffix):
                    self._groups.setdefault(key[: -len(suffix)], {})[role] = key
                    break
            else:
                if any(part in key for part in _LORA_PARTS):
                    raise CheckpointFileError(
                        f"{self.name}: {key}: a LoRA tensor of an adapter other than {adapter!r} "
                        "(only the single 'default' adapter PEFT saves is supported)"
                    )
                self._add(key, key)
        for module, roles in self._groups.items():
            lacking = {"base", "a", "b"} - set(roles)
            if lacking:
                have = ", ".join(sorted(roles.values()))
                names = {"base": "base_layer.weight", "a": lora_a.lstrip("."), "b": lora_b.lstrip(".")}
                raise CheckpointFileError(
                    f"{self.name}: LoRA-wrapped {module}: has {have} but lacks "
                    + ", ".join(sorted(f"{module}.{names[role]}" for role in lacking))
                )
            self._check_rank(module, roles, rank)
            self._add(f"{module}.weight", roles["base"], merged_module=module)
            if "bias" in roles:
                self._add(f"{module}.bias", roles["bias"])

    def _add(self, key: str, stored: str, merged_module: str | None = None) -> None:
        if key in self._plain:
            raise CheckpointFileError(
                f"{self.name}: {key} is stored both plainly and as a LoRA-wrapped base_layer ({stored})"
            )
        self._plain[key] = stored
        if merged_module is not None:
            self._merged[key] = merged_module

    def _check_rank(self, module: str, roles: dict[str, str], rank: int) -> None:
        base = self._inner.info(roles["base"]).shape
        a, b = self._inner.info(roles["a"]).shape, self._inner.info(roles["b"]).shape
        if len(base) != 2 or a != (rank, base[1]) or b != (base[0], rank):
            raise ShapeMismatchError(
                f"{self.name}: LoRA-wrapped {module}: expected base (out, in), lora_A ({rank}, in), "
                f"lora_B (out, {rank}) with rank {rank} from adapter_config.json, got base {base}, "
                f"lora_A {a}, lora_B {b}"
            )

    @property
    def num_merged(self) -> int:
        return len(self._groups)

    def tensor_keys(self) -> list[str]:
        return list(self._plain)

    def info(self, key: str) -> TensorInfo:
        return self._inner.info(self._plain[key])

    def load(self, key: str) -> torch.Tensor:
        module = self._merged.get(key)
        if module is None:
            return self._inner.load(self._plain[key])
        roles = self._groups[module]
        base = self._inner.load(roles["base"]).float()
        a, b = self._inner.load(roles["a"]).float(), self._inner.load(roles["b"]).float()
        return torch.addmm(base, b, a, alpha=self._scaling)

    def origin(self, key: str) -> tuple[tuple[str, str], ...]:
        module = self._merged.get(key)
        if module is None:
            return self._inner.origin(self._plain[key])
        return tuple(o for role in ("base", "a", "b") for o in self._inner.origin(self._groups[module][role]))
