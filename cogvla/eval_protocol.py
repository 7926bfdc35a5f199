"""The evaluation protocol a checkpoint was trained for, carried from its demos onward.

A checkpoint folder may hold ``eval_protocol.json``: the LIBERO suites and tasks its demos
came from, the camera size they were rendered at, whether fast rendering was used and the
face cap of visual meshes (``envs.mesh_lod``; 0 or absent: meshes as modelled).
Training writes it into every checkpoint (read from the demo files' LIBERO attributes), so
``cogvla eval libero --policy RUN/checkpoints/step_X`` renders as the model was trained.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py

__all__ = [
    "EVAL_PROTOCOL_FILE",
    "protocol_of_demos",
    "read_eval_protocol",
    "render_of_demos",
    "write_eval_protocol",
]

logger = logging.getLogger(__name__)

EVAL_PROTOCOL_FILE = "eval_protocol.json"


def _file_protocol(path: Path) -> tuple[str, str, int, bool, int] | None:
    """(suite, task name, camera size, fast render, mesh faces) from one demo file, None if it
    does not say."""
    with h5py.File(path, "r") as handle:
        attrs = handle["data"].attrs if "data" in handle else {}
        bddl = attrs.get("bddl_file_name", "")
        env_args = json.loads(attrs.get("env_args", "{}"))
    bddl = Path(bddl.decode() if isinstance(bddl, bytes) else str(bddl))
    size = env_args.get("env_kwargs", {}).get("camera_heights")
    if not bddl.stem or not bddl.parent.name or size is None:
        return None
    # Demos without the project's generation record come from LIBERO's own, fully rendered runs.
    generation = env_args.get("generation", {})
    fast = bool(generation.get("fast_render", False))
    return bddl.parent.name, bddl.stem, int(size), fast, int(generation.get("mesh_faces", 0))


def render_of_demos(path: str | Path) -> dict[str, Any] | None:
    """How one demo file was rendered (``image_size``, ``fast_render``, ``mesh_faces``), None
    if it does not say."""
    protocol = _file_protocol(Path(path))
    if protocol is None:
        return None
    _, _, size, fast, faces = protocol
    return {"image_size": size, "fast_render": fast, "mesh_faces": faces}


def protocol_of_demos(files: Iterable[str | Path]) -> dict[str, Any] | None:
    """The protocol shared by ``files`` (LIBERO-schema HDF5), or None when they do not agree
    on one (mixed camera sizes or render modes, unknown suites or tasks)."""
    from envs.suites import SUITES, get_task, num_tasks

    found = set()
    renders: dict[tuple[Any, ...], Path] = {}
    for path in files:
        protocol = _file_protocol(Path(path))
        if protocol is None or protocol[0] not in SUITES:
            logger.warning(
                "%s: no LIBERO suite/camera record; checkpoints get no %s", path, EVAL_PROTOCOL_FILE
            )
            return None
        found.add(protocol)
        renders.setdefault(tuple(protocol[2:]), Path(path))
    if len(renders) > 1:
        logger.warning(
            "demos rendered differently (image_size, fast_render, mesh_faces): %s; checkpoints get no %s",
            "; ".join(f"{render} in {path}" for render, path in renders.items()),
            EVAL_PROTOCOL_FILE,
        )
        return None
    if not found:
        return None
    suites = sorted({suite for suite, *_ in found})
    task_ids = {suite: {get_task(suite, i).name: i for i in range(num_tasks(suite))} for suite in suites}
    tasks = set()
    for suite, name, *_ in found:
        if name not in task_ids[suite]:
            return None
        tasks.add(task_ids[suite][name])
    _, _, size, fast, faces = next(iter(found))
    # A task list applies to every suite evaluated, so it is only recorded for one suite.
    return {
        "suites": suites,
        "tasks": sorted(tasks) if len(suites) == 1 else None,
        "image_size": size,
        "fast_render": fast,
        "mesh_faces": faces,
    }


def read_eval_protocol(folder: str | Path) -> dict[str, Any] | None:
    """``folder/eval_protocol.json`` as a dict, or None when the folder has none (older checkpoints)."""
    path = Path(folder) / EVAL_PROTOCOL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_eval_protocol(folder: str | Path, protocol: dict[str, Any]) -> None:
    """Write ``protocol`` as ``folder/eval_protocol.json``."""
    (Path(folder) / EVAL_PROTOCOL_FILE).write_text(json.dumps(protocol, indent=2, sort_keys=True) + "\n")
