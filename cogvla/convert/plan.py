"""A conversion plan: which source tensors become which target parameters, and how.

Each :class:`Conversion` consumes a few source keys (in one or more named sources) and
produces a few target keys through a :class:`Transform`. The plan is checked as a
whole before any tensor is read: every source key is consumed exactly once, every
target parameter is produced exactly once, and every produced shape equals the target
shape. Keys that are deliberately not loaded (e.g. SigLIP's unused attention-pool
head) are consumed by an explicit :class:`Discard` with a reason, so nothing is ever
skipped silently.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from cogvla.convert.errors import KeyMismatchError, ShapeMismatchError
from cogvla.convert.sources import TensorSource

__all__ = [
    "Conversion",
    "Copy",
    "Discard",
    "PadClassPosition",
    "Plan",
    "SourceRef",
    "SplitRows",
    "Squeeze0",
    "Transform",
    "VerifyEqual",
    "Zeros",
    "copy_tensor",
]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class SourceRef:
    """A key in a named source (``source`` is the plan's name for it, e.g. ``"weights"``)."""

    source: str
    key: str


class Transform:
    """Maps input tensors to output tensors; ``shapes`` predicts output shapes without data."""

    def shapes(self, inputs: Sequence[Shape], targets: Sequence[Shape]) -> list[Shape]:
        raise NotImplementedError

    def apply(self, inputs: list[torch.Tensor], targets: Sequence[Shape]) -> list[torch.Tensor]:
        raise NotImplementedError


class Copy(Transform):
    def shapes(self, inputs, targets):
        return [inputs[0]]

    def apply(self, inputs, targets):
        return [inputs[0]]


class Squeeze0(Transform):
    """``(1, N, D) -> (N, D)``: timm keeps a batch axis on SigLIP's ``pos_embed``, HF does not."""

    def shapes(self, inputs, targets):
        return [inputs[0][1:] if inputs[0][:1] == (1,) else inputs[0]]

    def apply(self, inputs, targets):
        return [inputs[0].squeeze(0)]


class PadClassPosition(Transform):
    """``(1, N, D) -> (1, 1 + N, D)`` with a zero first row.

    timm's DINOv2 folds the class position into ``cls_token`` and keeps patch
    positions only; HF adds row 0 to the class token, so row 0 must be zero.
    """

    def shapes(self, inputs, targets):
        shape = inputs[0]
        return [(shape[0], shape[1] + 1, *shape[2:])] if len(shape) == 3 else [shape]

    def apply(self, inputs, targets):
        table = inputs[0]
        return [torch.cat([table.new_zeros(table.shape[0], 1, table.shape[2]), table], dim=1)]


@dataclass(frozen=True)
class SplitRows(Transform):
    """Split dim 0 into ``parts`` equal pieces (fused ``qkv`` -> q, k, v in that order)."""

    parts: int = 3

    def shapes(self, inputs, targets):
        shape = inputs[0]
        if shape[0] % self.parts:
            return [shape] * self.parts
        return [(shape[0] // self.parts, *shape[1:])] * self.parts

    def apply(self, inputs, targets):
        return list(inputs[0].chunk(self.parts, dim=0))


class Zeros(Transform):
    """A target the release has no tensor for and the model never reads (DINOv2's mask token)."""

    def shapes(self, inputs, targets):
        return list(targets)

    def apply(self, inputs, targets):
        return [torch.zeros(shape) for shape in targets]


@dataclass(frozen=True)
class Discard(Transform):
    """Source tensors that are read by nobody, for the stated ``reason``."""

    reason: str

    def shapes(self, inputs, targets):
        return []

    def apply(self, inputs, targets):
        return []


class VerifyEqual(Transform):
    """Consumes a duplicate tensor after checking it equals its ``ref`` exactly."""

    def shapes(self, inputs, targets):
        return []

    def apply(self, inputs, targets):
        duplicate, reference = inputs
        if duplicate.shape != reference.shape or not torch.equal(duplicate, reference.to(duplicate.dtype)):
            raise ValueError("differs from the tensor it duplicates")
        return []


@dataclass(frozen=True)
class Conversion:
    """``outputs = transform(inputs + refs)``; ``inputs`` are consumed, ``refs`` only read."""

    inputs: tuple[SourceRef, ...]
    outputs: tuple[str, ...]
    transform: Transform = field(default_factory=Copy)
    refs: tuple[SourceRef, ...] = ()


def copy_tensor(source: str, key: str, target: str) -> Conversion:
    """The common case: one source tensor, unchanged, to one target key."""
    return Conversion((SourceRef(source, key),), (target,))


@dataclass
class Plan:
    """An ordered list of conversions over named sources, checked by :meth:`validate`."""

    conversions: list[Conversion] = field(default_factory=list)

    def add(self, conversion: Conversion) -> None:
        self.conversions.append(conversion)

    def extend(self, conversions: Sequence[Conversion]) -> None:
        self.conversions.extend(conversions)

    def validate(self, sources: Mapping[str, TensorSource], target_shapes: Mapping[str, Shape]) -> None:
        """Raise on any unconsumed, missing or doubly-used key and on any shape mismatch."""
        consumed: dict[str, Counter[str]] = defaultdict(Counter)
        for conversion in self.conversions:
            for ref in conversion.inputs:
                consumed[ref.source][ref.key] += 1
        twice = {name: [k for k, n in counts.items() if n > 1] for name, counts in consumed.items()}
        if any(twice.values()):
            raise KeyMismatchError("source keys consumed more than once", self._by_file(sources, twice))
        key_sets = {name: set(src.tensor_keys()) for name, src in sources.items()}
        missing: dict[str, list[str]] = defaultdict(list)
        for conversion in self.conversions:
            for ref in conversion.inputs + conversion.refs:
                if ref.key not in key_sets.get(ref.source, ()):
                    missing[self._file_label(sources, ref.source)].append(ref.key)
        if missing:
            raise KeyMismatchError(
                "missing keys: the layout requires these tensors but the checkpoint does not have them",
                dict(missing),
            )
        unknown = {
            name: [k for k in src.tensor_keys() if k not in consumed[name]] for name, src in sources.items()
        }
        if any(unknown.values()):
            raise KeyMismatchError(
                "unknown keys: the checkpoint has tensors this layout has no place for",
                self._by_file(sources, unknown),
            )
        produced = Counter(key for c in self.conversions for key in c.outputs)
        doubled = [k for k, n in produced.items() if n > 1]
        if doubled:
            raise KeyMismatchError("target keys produced more than once", {"target model": doubled})
        foreign = [k for k in produced if k not in target_shapes]
        if foreign:
            raise KeyMismatchError(
                "plan produces keys the target model does not have", {"target model": foreign}
            )
        uninitialized = [k for k in target_shapes if k not in produced]
        if uninitialized:
            raise KeyMismatchError(
                "target parameters no source tensor initializes", {"target model": uninitialized}
            )
        for conversion in self.conversions:
            self._check_shapes(conversion, sources, target_shapes)

    def _check_shapes(
        self, conversion: Conversion, sources: Mapping[str, TensorSource], target_shapes: Mapping[str, Shape]
    ) -> None:
        refs = conversion.inputs + conversion.refs
        in_shapes = [sources[r.source].info(r.key).shape for r in refs]
        targets = [tuple(target_shapes[k]) for k in conversion.outputs]
        if isinstance(conversion.transform, VerifyEqual) and in_shapes[0] != in_shapes[1]:
            raise ShapeMismatchError(
                f"{self._describe(sources, refs[0])} has shape {in_shapes[0]} but the tensor it duplicates, "
                f"{self._describe(sources, refs[1])}, has {in_shapes[1]}"
            )
        out_shapes = conversion.transform.shapes(in_shapes, targets)
        for out_key, got, want in zip(conversion.outputs, out_shapes, targets, strict=True):
            if tuple(got) != want:
                origin = ", ".join(
                    f"{self._describe(sources, r)} {s}" for r, s in zip(refs, in_shapes, strict=True)
                )
                raise ShapeMismatchError(
                    f"{origin}: becomes {out_key} with shape {tuple(got)}, but the target model expects {want}"
                )

    @staticmethod
    def _file_label(sources: Mapping[str, TensorSource], name: str) -> str:
        return sources[name].name if name in sources else name

    @staticmethod
    def _describe(sources: Mapping[str, TensorSource], ref: SourceRef) -> str:
        files = sorted({f"{file}:{key}" for file, key in sources[ref.source].origin(ref.key)})
        return " + ".join(files)

    @staticmethod
    def _by_file(sources: Mapping[str, TensorSource], keys: Mapping[str, list[str]]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = defaultdict(list)
        for name, names in keys.items():
            for key in names:
                for file, stored in sources[name].origin(key):
                    grouped[file].append(stored)
        return dict(grouped)
