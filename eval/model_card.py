"""The embedded default's model card, read from the recipes, the run and its evaluation.

Figures come from files only: each recipe's ``status.json`` (demos per suite, stage wall
times), the JSON report ``cogvla demos`` prints for a demo set made outside the recipes, the
run's ``log.jsonl`` and trainer state, and an evaluation's ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cogvla.modeling import CogVLAModel
from cogvla.train.checkpoint import TRAINER_STATE, load_trainer_state
from cogvla.train.run_log import read_log
from eval.recipe import STAGES

__all__ = [
    "ShipError",
    "load_demos_report",
    "load_recipe",
    "read_json",
    "render_card",
    "with_measured_section",
]

_TASK_KEYS = ("task_id", "task_name", "demos", "attempts", "oracle_success_rate")


class ShipError(ValueError):
    """An input of the ship (checkpoint, recipe, eval folder) is missing or not as expected."""


def load_recipe(path: Path) -> dict[str, Any]:
    """A recipe's ``status.json``, checked for what the card reads; raises ``ShipError`` naming it."""
    try:
        status = json.loads(path.read_text())
    except OSError as exc:
        raise ShipError(
            f"recipe {path}: cannot read it ({exc.strerror}); expected a recipe's status.json"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ShipError(f"recipe {path}: not valid JSON ({exc}); expected a recipe's status.json") from exc
    if not isinstance(status, dict) or not any(isinstance(status.get(stage), dict) for stage in STAGES):
        raise ShipError(
            f"recipe {path}: expected a JSON object with at least one of the stages {', '.join(STAGES)}, "
            f"got {str(status)[:80]}"
        )
    for stage in STAGES:
        entry = status.get(stage)
        if entry is not None and not isinstance(_stage_seconds(entry), (int, float)):
            raise ShipError(f"recipe {path}: {stage}: expected a number in wall_s_total or wall_s")
    reports = _reports_of(status)
    if not isinstance(reports, dict):
        raise ShipError(f"recipe {path}: demos: expected reports to map suite names to demos reports")
    for suite, report in reports.items():
        _check_report(f"recipe {path}: demos report of {suite}", report)
    return status


def load_demos_report(path: Path) -> dict[str, Any]:
    """The JSON report ``cogvla demos`` printed for one demo set; raises ``ShipError`` naming it."""
    report = read_json(path, "demos report")
    if not isinstance(report, dict) or not isinstance(report.get("suite"), str):
        raise ShipError(f"demos report {path}: expected a JSON object with the suite's name in suite")
    if not isinstance(report.get("wall_time_s"), (int, float)):
        raise ShipError(f"demos report {path}: expected a number in wall_time_s")
    _check_report(f"demos report {path}", report)
    return report


def _check_report(name: str, report: Any) -> None:
    tasks = report.get("tasks") if isinstance(report, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise ShipError(f"{name}: expected a non-empty list in tasks")
    for task in tasks:
        missing = [key for key in _TASK_KEYS if key not in task]
        if missing:
            raise ShipError(f"{name}: task {task.get('task_id', '?')}: missing {', '.join(missing)}")


def render_card(
    model: CogVLAModel,
    size: int,
    protocol: dict[str, Any],
    checkpoint: Path,
    train_log: Path,
    recipes: dict[Path, dict[str, Any]],
    eval_dir: Path | None,
    fingerprint: str,
    history: str = "",
    demo_sets: dict[Path, dict[str, Any]] | None = None,
) -> str:
    """The model card of ``model`` (``size`` bytes on disk, files hashing to ``fingerprint``).

    ``demo_sets`` maps each ``cogvla demos`` report file to its report (see
    :func:`load_demos_report`): demos the run trained on beyond the recipes' own.

    Raises ``ShipError`` when ``eval_dir`` is partial or measured other files.
    """
    success = _success_section(eval_dir, protocol, fingerprint)
    demo_sets = demo_sets or {}
    reports = _demo_reports(recipes, demo_sets)
    card = "\n".join(
        (
            _header(model, size, protocol, reports),
            _data_section(protocol, reports),
            _training_section(checkpoint, train_log),
            _wall_time_section(recipes, demo_sets),
            success,
        )
    )
    if history:
        card += f"\n## Training history\n{history.strip()}\n"
    return card


def with_measured_section(
    card: str, eval_dir: Path | None, protocol: dict[str, Any], fingerprint: str
) -> str:
    """``card`` with its "Measured success" section written anew from ``eval_dir`` (None: not
    evaluated under ``protocol``); the other sections stay as they are."""
    heading = "## Measured success\n"
    start = card.find(heading)
    if start < 0:
        raise ShipError(f"card: expected a {heading.strip()!r} section to replace")
    end = card.find("\n## ", start + len(heading))
    return card[:start] + _success_section(eval_dir, protocol, fingerprint) + (card[end:] if end >= 0 else "")


def _stage_seconds(entry: Any) -> Any:
    # wall_s is the stage's last run only; a resumed stage adds its earlier runs in wall_s_total.
    return entry.get("wall_s_total", entry.get("wall_s")) if isinstance(entry, dict) else None


def _reports_of(status: dict[str, Any]) -> dict[str, Any]:
    """The demos stage's report per suite: ``reports`` by suite, or (older recipes) one ``report``."""
    demos = status.get("demos") or {}
    if "reports" in demos:
        return demos["reports"]
    report = demos.get("report")
    return {report.get("suite", "?"): report} if isinstance(report, dict) else {}


def _demo_reports(
    recipes: dict[Path, dict[str, Any]], demo_sets: dict[Path, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """One report per suite with a row per task.

    A report counts every demo and attempt in a task's folder, and a multi-suite recipe tops up
    the single-suite one's folders, so each folder counts once, from its newest report (a demo
    set named on its own counts as newer than any recipe). Folders of the same task (demo sets
    from another reset-seed base) add up.
    """
    newest: dict[tuple[str, int, str | None], tuple[str, dict[str, Any]]] = {}
    for status in recipes.values():
        finished = status["demos"].get("finished_at", "") if "demos" in status else ""
        for suite, report in _reports_of(status).items():
            for task in report["tasks"]:
                key = (suite, task["task_id"], task.get("file"))
                if key not in newest or finished >= newest[key][0]:
                    newest[key] = (finished, task)
    for report in demo_sets.values():
        recovery = bool(report.get("rollin_policy"))
        for task in report["tasks"]:
            # A set whose every attempt the roll-in policy solved has no oracle rate (None).
            rate = task["oracle_success_rate"] or 0.0
            row = {**task, "oracle_success_rate": rate, "recovery_demos": task["demos"] if recovery else 0}
            newest[(report["suite"], task["task_id"], task.get("file"))] = ("", row)
    if not newest:
        raise ShipError(
            f"demos: none of the recipes ({', '.join(map(str, recipes)) or 'none given'}) has a demos "
            "report; expected a recipe with a demos stage (run its demos stage) or a --demos-report"
        )
    rows: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for (suite, task_id, _), (_, task) in newest.items():
        rows.setdefault(suite, {}).setdefault(task_id, []).append(task)
    return {
        suite: {"suite": suite, "tasks": [_merged(tasks[task_id]) for task_id in sorted(tasks)]}
        for suite, tasks in rows.items()
    }


def _merged(folders: list[dict[str, Any]]) -> dict[str, Any]:
    """One task's row over its demo folders: demos and attempts added, oracle success and the
    time per new demo weighted by the attempts the oracle acted in and by new demos."""
    if len(folders) == 1:
        return folders[0]
    acted = [folder["attempts"] - folder.get("solved_before_handover", 0) for folder in folders]
    successes = sum(folder["oracle_success_rate"] * n for folder, n in zip(folders, acted, strict=True))
    timed = [
        folder
        for folder in folders
        if folder.get("mean_seconds_per_new_demo") is not None and folder.get("new_demos")
    ]
    new_demos = sum(folder["new_demos"] for folder in timed)
    return {
        **folders[0],
        "demos": sum(folder["demos"] for folder in folders),
        "recovery_demos": sum(folder.get("recovery_demos", 0) for folder in folders),
        "attempts": sum(folder["attempts"] for folder in folders),
        "oracle_success_rate": successes / sum(acted) if sum(acted) else 0.0,
        "mean_seconds_per_new_demo": (
            sum(folder["mean_seconds_per_new_demo"] * folder["new_demos"] for folder in timed) / new_demos
            if timed
            else None
        ),
    }


def read_json(path: Path, field: str) -> dict[str, Any]:
    """The JSON object at ``path``; raises ``ShipError`` naming ``field`` and the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ShipError(f"{field} {path}: expected a readable JSON file ({exc})") from exc


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _tasks_text(tasks: list[int] | None) -> str:
    return "every task of each suite" if tasks is None else f"tasks {', '.join(map(str, tasks))}"


def _protocol_text(protocol: dict[str, Any]) -> str:
    """Suites, tasks and rendering of an eval protocol or config, and its chunk-execution departures."""
    text = (
        f"suites {', '.join(protocol['suites'])}, {_tasks_text(protocol['tasks'])}, "
        f"{protocol['image_size']} px, fast_render={protocol['fast_render']}, "
        f"mesh_faces={protocol.get('mesh_faces', 0)}"
    )
    delay = protocol.get("gripper_close_delay", 0)
    text += f", gripper_close_delay={delay}" if delay else ""
    return text + (", requery_before_grasp=True" if protocol.get("requery_before_grasp") else "")


def _header(
    model: CogVLAModel, size: int, protocol: dict[str, Any], reports: dict[str, dict[str, Any]]
) -> str:
    params = sum(p.numel() for p in model.parameters())
    covered = ", ".join(f"`{suite}`" for suite in protocol["suites"])
    return f"""# Embedded default policy of {covered}: CogVLA `{model.config.name}` ({model.config.variant})

A {params / 1e6:.1f} M-parameter CogVLA model (EFA-Routing, LFP-Routing, CAtten) trained on this
project's scripted-oracle demos of {", ".join(f"`{suite}`" for suite in reports)}. Weights are
stored in float16 ({size / 1e6:.1f} MB on disk) and run in float32 on the CPU.
"""


def _data_section(protocol: dict[str, Any], reports: dict[str, dict[str, Any]]) -> str:
    render = "fast rendering" if protocol["fast_render"] else "full rendering"
    if protocol.get("mesh_faces"):
        render += f" and visual meshes capped at {protocol['mesh_faces']} faces"
    total = sum(task["demos"] for report in reports.values() for task in report["tasks"])
    tasks = sum(len(report["tasks"]) for report in reports.values())
    lines = [
        "## Data",
        f"This run trained on {total} demos of {tasks} tasks from the scripted Markovian oracle with",
        "DART noise, from randomized resets (the benchmark's 50 fixed init states were never used for",
        f"training), cameras at {protocol['image_size']} px with {render}. Recovery demos start where an",
        "earlier policy left off: it acted first, then the oracle took over, and only the oracle's steps",
        "were recorded. Oracle success is over the attempts the oracle acted in.",
    ]
    for suite, report in reports.items():
        lines += [
            "",
            f"### {suite}",
            "| task | name | demos | of which recovery | attempts | oracle success | s per new demo |",
            "|---|---|---|---|---|---|---|",
        ]
        for task in report["tasks"]:
            seconds = task.get("mean_seconds_per_new_demo")
            lines.append(
                f"| {task['task_id']} | {task['task_name']} | {task['demos']} "
                f"| {task.get('recovery_demos', 0)} | {task['attempts']} "
                f"| {task['oracle_success_rate']:.2f} | {'-' if seconds is None else f'{seconds:.1f}'} |"
            )
    return "\n".join(lines) + "\n"


def _training_section(checkpoint: Path, train_log: Path) -> str:
    records = read_log(train_log)
    last = records[-1] if records else {}
    state = load_trainer_state(checkpoint) if (checkpoint / TRAINER_STATE).is_file() else {}
    batch = last.get("batch", state.get("config", {}).get("global_batch"))
    text = (
        f"`cogvla train` (AdamW, warm-up + cosine, L1): {last.get('step', state.get('step', '?'))} optimizer steps"
        f"{f' of batch {batch}' if batch is not None else ''} at about "
        f"{last.get('samples_per_s', float('nan')):.0f} samples/s; last logged L1 loss "
        f"{last.get('loss', float('nan')):.4f}."
    )
    if "init_from" in state:
        init_from = state["init_from"]
        config = state.get("config", {})
        # The folder's name only: the card ships, the machine's paths do not.
        stats = (
            "its normalization stats recomputed from these demos"
            if config.get("keep_stats") is False
            else "its normalization stats kept"
        )
        text += (
            f"\nStarted from the checkpoint `{Path(init_from).name}` (init_mode={config.get('init_mode', '?')}, {stats})."
            if init_from
            else "\nTrained from scratch (random initialization)."
        )
    return f"## Training\n{text}\n"


def _recipe_suites(status: dict[str, Any]) -> list[str]:
    config = status.get("config") or {}
    return config.get("suites") or ([config["suite"]] if "suite" in config else list(_reports_of(status)))


def _set_name(report_path: Path) -> str:
    """A demo set's name: its folder, and the report's name when a folder holds several."""
    return (
        report_path.parent.name
        if report_path.stem == "report"
        else f"{report_path.parent.name}/{report_path.stem}"
    )


def _wall_time_section(recipes: dict[Path, dict[str, Any]], demo_sets: dict[Path, dict[str, Any]]) -> str:
    rows = [
        f"| {stage} | `{path.parent.name}` ({', '.join(_recipe_suites(status))}) "
        f"| {_hm(_stage_seconds(status[stage]))} |"
        for path, status in recipes.items()
        for stage in STAGES
        if stage in status
    ]
    rows += [
        f"| demos | `{_set_name(path)}` ({report['suite']}{', recovery' if report.get('rollin_policy') else ''}) "
        f"| {_hm(report['wall_time_s'])} |"
        for path, report in demo_sets.items()
    ]
    parts = ["per recipe stage, summed over its resumed runs"] if recipes else []
    parts += ["per extra demo set (its last run)"] if demo_sets else []
    intro = " and ".join(parts).capitalize() + ":"
    return (
        "\n".join(
            [
                "## Wall time",
                intro,
                "",
                "| stage | recipe (suites) | wall time |",
                "|---|---|---|",
                *rows,
            ]
        )
        + "\n"
    )


def _success_section(eval_dir: Path | None, protocol: dict[str, Any], fingerprint: str) -> str:
    if eval_dir is None:
        return (
            "## Measured success\nNot evaluated yet. `cogvla eval libero` runs this default's protocol: "
            f"{_protocol_text(protocol)}.\n"
        )
    config = read_json(eval_dir / "config.json", "eval")
    summary = read_json(eval_dir / "summary.json", "eval")
    if summary.get("partial") or not summary.get("per_task"):
        raise ShipError(
            f"eval {eval_dir}: summary.json is partial ({summary.get('missing', '?')} episodes missing); "
            "finish it with `cogvla eval libero --resume --out` first"
        )
    if config.get("resets", "fixed") != "fixed":
        raise ShipError(
            f"eval {eval_dir}: resets: a card's figures come from the benchmark's fixed init states; "
            f"expected 'fixed', got {config['resets']!r}"
        )
    evaluated = summary.get("policy_fingerprint", "")
    if evaluated.startswith("sha256:") and evaluated != fingerprint:
        raise ShipError(
            f"eval {eval_dir}: policy_fingerprint {evaluated[:19]}... is not the shipped files' "
            f"{fingerprint[:19]}...; evaluate the shipped default and ship again"
        )
    lines = ["## Measured success", _eval_sentence(config, summary, protocol)]
    if evaluated != fingerprint:
        lines.append(
            f"The evaluated policy was `{summary.get('policy', '?')}`, not checked against these files."
        )
    for suite in dict.fromkeys(task["suite"] for task in summary["per_task"]):
        tasks = [task for task in summary["per_task"] if task["suite"] == suite]
        lowest = min(tasks, key=lambda task: task["success_rate"])
        # Runs older than the failure modes have no such column.
        modes = all("failure_modes" in task for task in tasks)
        lines += [
            "",
            f"### {suite}",
            "| task | successes/episodes | rate | 95% Wilson |" + (" failures by mode |" if modes else ""),
            "|---|---|---|---|" + ("---|" if modes else ""),
            *(
                f"| {task['task_id']} | {task['successes']}/{task['episodes']} | {task['success_rate']:.2f} "
                f"| [{task['ci95'][0]:.2f}, {task['ci95'][1]:.2f}] |"
                + (f" {_modes_text(task['failure_modes'])} |" if modes else "")
                for task in tasks
            ),
            "",
            (
                f"Mean of the per-task rates {_mean_rate(tasks):.2f}; lowest: task {lowest['task_id']} "
                f"({lowest['success_rate']:.2f})."
            ),
        ]
    overall = summary["overall"]
    errors = f"; {overall['errors']} episodes ended in an error" if overall.get("errors") else ""
    lines += [
        "",
        (
            f"Overall: {overall['successes']}/{overall['episodes']} = {overall['success_rate']:.2f} "
            f"(95% Wilson [{overall['ci95'][0]:.2f}, {overall['ci95'][1]:.2f}]); mean of the per-task "
            f"rates {_mean_rate(summary['per_task']):.2f}{errors}."
        ),
    ]
    return "\n".join(lines) + "\n"


def _modes_text(counts: dict[str, int]) -> str:
    """``missed_grasp 9, dropped 2``, most frequent first (``eval.libero.failure_modes``)."""
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return ", ".join(f"{mode} {count}" for mode, count in ranked) or "-"


def _mean_rate(tasks: list[dict[str, Any]]) -> float:
    return sum(task["success_rate"] for task in tasks) / len(tasks)


def _eval_sentence(config: dict[str, Any], summary: dict[str, Any], protocol: dict[str, Any]) -> str:
    """The command that produced the figures, what it ran, and how long it took."""
    # Without --policy, --suite picks the embedded default of each suite and its shipped
    # protocol; only departures from that protocol need saying.
    flags = [f"--suite {','.join(config['suites'])}", f"--trials {config['trials']}"]
    if config["tasks"] != protocol["tasks"]:
        flags.append(f"--tasks {','.join(map(str, config['tasks']))}")
    if config["image_size"] != protocol["image_size"]:
        flags.append(f"--image-size {config['image_size']}")
    if config["fast_render"] != protocol["fast_render"]:
        flags.append("--fast-render" if config["fast_render"] else "--no-fast-render")
    if config.get("mesh_faces", 0) != protocol.get("mesh_faces", 0):
        flags.append(f"--mesh-faces {config.get('mesh_faces', 0)}")
    if config.get("gripper_close_delay", 0) != protocol.get("gripper_close_delay", 0):
        flags.append(f"--gripper-close-delay {config.get('gripper_close_delay', 0)}")
    requery = bool(config.get("requery_before_grasp"))
    if requery != bool(protocol.get("requery_before_grasp")):
        flags.append("--requery-before-grasp" if requery else "--no-requery-before-grasp")
    text = (
        f"`MUJOCO_GL=egl cogvla eval libero {' '.join(flags)}` on the fixed init states "
        f"({_protocol_text(config)}): {summary['overall']['episodes']} episodes"
    )
    if "run_wall_time_s" in summary:
        # The harness times one invocation; a --resume run's earlier invocations are not in it.
        resumed = ", its last invocation" if config.get("resume") else ""
        text += (
            f" in {_hm(summary['run_wall_time_s'])}{resumed} with "
            f"{config.get('workers', '?')} simulator workers"
        )
    return text + "."
