"""The import report: where every source tensor went and what the model ended up with.

It proves the two import invariants from the data rather than from the plan alone:
every key of every source file is consumed exactly once (loaded, verified as a
duplicate, or dropped with a stated reason), and every target tensor was produced.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from torch import nn

from cogvla.config import CogVLAConfig
from cogvla.convert.errors import KeyMismatchError
from cogvla.convert.layout import ReleasedConfig
from cogvla.convert.plan import Discard, Plan, VerifyEqual
from cogvla.convert.sources import TensorSource

__all__ = ["RELEASE_WEIGHT_KEYS", "build_report", "expected_weight_keys", "summary"]

# merged safetensors key counts of the 7B releases (reference section 6)
RELEASE_WEIGHT_KEYS = {"oft": 982, "cogvla": 1228}


def expected_weight_keys(released: ReleasedConfig, config: CogVLAConfig) -> int:
    """Keys the merged safetensors must hold at these depths (982 / 1228 at 24/27/32 layers)."""
    dino = 7 + 14 * config.dino.num_layers
    siglip = 5 + 13 + 12 * config.siglip.num_layers
    llm = 3 + 9 * config.llm.num_layers
    if released.kind == "oft":
        return dino + siglip + llm + 6
    return dino + siglip + llm + 12 + 10 * len(released.lfp_layers)


def _file_keys(sources: Mapping[str, TensorSource]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = defaultdict(set)
    for source in sources.values():
        for key in source.tensor_keys():
            for file, stored in source.origin(key):
                keys[file].add(stored)
    return keys


def _usage(plan: Plan, sources: Mapping[str, TensorSource]) -> tuple[Counter, dict[str, str]]:
    uses: Counter = Counter()
    fate: dict[str, str] = {}
    for conversion in plan.conversions:
        kind = (
            "discarded"
            if isinstance(conversion.transform, Discard)
            else "verified_duplicate"
            if isinstance(conversion.transform, VerifyEqual)
            else "loaded"
        )
        for ref in conversion.inputs:
            for origin in sources[ref.source].origin(ref.key):
                uses[origin] += 1
                fate[f"{origin[0]}:{origin[1]}"] = kind
    return uses, fate


def build_report(
    *,
    directory: str,
    released: ReleasedConfig,
    config: CogVLAConfig,
    plan: Plan,
    sources: Mapping[str, TensorSource],
    model: nn.Module,
    extras: dict[str, Any],
) -> dict[str, Any]:
    """A JSON-able report; raises ``KeyMismatchError`` if any file key is unused or used twice."""
    file_keys = _file_keys(sources)
    uses, fate = _usage(plan, sources)
    unused = {file: [k for k in keys if uses[(file, k)] == 0] for file, keys in file_keys.items()}
    twice = {file: [k for k in keys if uses[(file, k)] > 1] for file, keys in file_keys.items()}
    if any(unused.values()):
        raise KeyMismatchError("source keys not used by the import", unused)
    if any(twice.values()):
        raise KeyMismatchError("source keys used more than once by the import", twice)
    files = []
    for name, source in sources.items():
        infos = [source.info(key) for key in source.tensor_keys()]
        files.append(
            {
                "source": name,
                "file": source.name,
                "stored_keys": len(_stored(source)),
                "numel": sum(info.numel for info in infos),
                "dtypes": dict(Counter(str(info.dtype).removeprefix("torch.") for info in infos)),
            }
        )
    discarded = [
        {"reason": c.transform.reason, "keys": len(c.inputs), "first": c.inputs[0].key}
        for c in plan.conversions
        if isinstance(c.transform, Discard)
    ]
    origin_of: dict[str, list[str]] = {}
    for c in plan.conversions:
        froms = [f"{f}:{k}" for r in c.inputs for f, k in sources[r.source].origin(r.key)]
        for out in c.outputs:
            origin_of[out] = froms
    tensors = {
        name: {
            "shape": list(value.shape),
            "dtype": str(value.dtype).removeprefix("torch."),
            "from": origin_of.get(name, []),
        }
        for name, value in model.state_dict().items()
    }
    dtype_counts = Counter(t["dtype"] for t in tensors.values())
    by_module: Counter = Counter()
    for name, param in model.named_parameters():
        by_module[name.split(".", 1)[0]] += param.numel()
    fates = Counter(fate.values())
    weight_keys = len(sources["weights"].tensor_keys())
    return {
        "source_dir": directory,
        "layout": released.kind,
        "variant": config.variant,
        "model_config": config.to_dict(),
        "files": files,
        "source_keys": {
            "total": sum(len(keys) for keys in file_keys.values()),
            "loaded": fates["loaded"],
            "verified_duplicate": fates["verified_duplicate"],
            "discarded": fates["discarded"],
            "each_used_exactly_once": True,
        },
        "weight_keys": {
            "found": weight_keys,
            "expected_at_these_depths": expected_weight_keys(released, config),
            "expected_in_7b_release": RELEASE_WEIGHT_KEYS[released.kind],
        },
        "discarded": discarded,
        "target": {
            "tensors": len(tensors),
            "uninitialized": [name for name, value in model.state_dict().items() if value.is_meta],
            "total_params": sum(p.numel() for p in model.parameters()),
            "params_by_module": dict(by_module),
            "dtypes": dict(dtype_counts),
            "listing": tensors,
        },
        **extras,
    }


def _stored(source: TensorSource) -> set[tuple[str, str]]:
    return {origin for key in source.tensor_keys() for origin in source.origin(key)}


def summary(report: dict[str, Any]) -> str:
    """A few human-readable lines for logs and the CLI."""
    keys, target, weights = report["source_keys"], report["target"], report["weight_keys"]
    lines = [
        f"imported {report['layout']} checkpoint as variant '{report['variant']}' from {report['source_dir']}",
        (
            f"source keys: {keys['total']} in {len(report['files'])} sources, each used once "
            f"({keys['loaded']} loaded, {keys['verified_duplicate']} verified duplicates, "
            f"{keys['discarded']} discarded)"
        ),
        (
            f"safetensors keys: {weights['found']} (expected {weights['expected_at_these_depths']} at these "
            f"depths; the 7B release has {weights['expected_in_7b_release']})"
        ),
        (
            f"target: {target['tensors']} tensors, {target['total_params']:,} parameters, "
            f"dtypes {target['dtypes']}, none uninitialized"
        ),
    ]
    lines += [f"discarded {d['keys']} key(s) (e.g. {d['first']}): {d['reason']}" for d in report["discarded"]]
    return "\n".join(lines)
