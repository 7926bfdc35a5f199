"""The run's record: an append-only JSONL of episodes, and the summary built from it.

Every line is flushed and fsynced as soon as its episode ends, so a killed run loses at
most the episodes in flight. A line cut short by the kill is dropped when the log is
reopened, a line that is not a record (``{}``, ``null``, undecodable bytes) is skipped with
a warning, and the summary keeps one record per episode key, so a resumed run summarizes
exactly like an uninterrupted one.

Each record has an ``outcome``: ``success`` or ``failure`` for an episode that finished
(a policy's malformed output or crash is its failure, with ``policy_failure`` saying why),
or ``error`` for an infrastructure fault (a dead or hung worker, an env crash, an
unreachable policy server), with ``error`` saying why. Errors are not scored: success rates
are over finished episodes, and a resumed run runs errored episodes again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eval.libero.failure_modes import count_failure_modes
from eval.stats import wilson_interval

__all__ = ["EpisodeLog", "episode_key", "is_finished", "rate_block", "reset_key", "summarize"]

logger = logging.getLogger(__name__)


def episode_key(suite: str, task_id: int, init_state_id: int | None) -> str:
    """The identity of an evaluation episode: suite, task and init state."""
    return f"{suite}/{task_id}/{init_state_id}"


def reset_key(suite: str, task_id: int, index: int) -> str:
    """The identity of a validation episode on randomized reset ``index`` of a task."""
    return f"{suite}/{task_id}/reset{index}"


def is_finished(record: Mapping[str, Any]) -> bool:
    """Whether an episode ran to its end (success or policy failure), not into an infrastructure fault."""
    return record.get("outcome") in ("success", "failure")


def _upgrade(record: Any) -> Any:
    """A line written before records carried ``outcome`` (demo ledgers of earlier runs)."""
    if isinstance(record, dict) and "outcome" not in record and isinstance(record.get("success"), bool):
        outcome = "success" if record["success"] else "error" if record.get("error") else "failure"
        return {**record, "outcome": outcome}
    return record


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if not isinstance(record.get("key"), str):
        return "expected a string 'key'"
    if record.get("outcome") not in ("success", "failure", "error"):
        return f"expected 'outcome' success, failure or error, got {record.get('outcome')!r}"
    return None


class EpisodeLog:
    """``episodes.jsonl``: one JSON object per episode, keyed by ``record["key"]``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, dict[str, Any]]:
        """Records by key (the last one wins). Truncates a partial last line, skips corrupt ones."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        cut = raw.rfind(b"\n") + 1
        if cut < len(raw):
            logger.warning(
                "%s: dropping a partial last line (%d bytes) left by a killed run", self.path, len(raw) - cut
            )
            with open(self.path, "r+b") as handle:
                handle.truncate(cut)
        records: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(raw[:cut].split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = _upgrade(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                problem: str | None = f"not UTF-8 JSON ({type(exc).__name__})"
            else:
                problem = _record_problem(record)
            if problem is not None:
                logger.warning(
                    "%s:%d: skipping a corrupt line (%s); its episode runs again", self.path, number, problem
                )
                continue
            records[record["key"]] = record
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record and make it durable before returning."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def rate_block(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Success rate over the finished episodes, with its 95% Wilson interval, errors counted
    apart, and the failures by mode (``eval.libero.failure_modes``; episodes run without one
    are left out of those counts)."""
    records = list(records)
    finished = [r for r in records if is_finished(r)]
    successes = sum(1 for r in finished if r["outcome"] == "success")
    low, high = wilson_interval(successes, len(finished))
    return {
        "episodes": len(finished),
        "successes": successes,
        "policy_failures": sum(1 for r in finished if r.get("policy_failure")),
        "errors": len(records) - len(finished),
        "success_rate": successes / len(finished) if finished else 0.0,
        "ci95": [round(low, 4), round(high, 4)],
        "failure_modes": count_failure_modes(finished),
    }


def summarize(planned_keys: Iterable[str], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per-task, per-suite and overall success of the planned episodes that finished.

    Returns a dict with ``overall``, ``per_suite`` (by suite name), ``per_task`` (a list),
    ``planned``, ``missing`` (planned but not finished: never run, or ended in an error),
    ``partial`` (whether any are missing), ``mean_task_success_rate`` (the unweighted mean of
    the per-task rates, beside the pooled ``overall`` rate) and step/latency totals.
    """
    planned = list(planned_keys)
    logged = [records[key] for key in planned if key in records]
    by_suite: dict[str, list[Mapping[str, Any]]] = {}
    by_task: dict[tuple[str, int, str], list[Mapping[str, Any]]] = {}
    for record in logged:
        by_suite.setdefault(record["suite"], []).append(record)
        # A LIBERO-PRO variant of a task is rated apart from the nominal task ("" sorts first).
        kind = (record.get("perturbation") or {}).get("kind", "")
        by_task.setdefault((record["suite"], record["task_id"], kind), []).append(record)
    per_task = []
    for (suite, task_id, kind), items in sorted(by_task.items()):
        task = {"suite": suite, "task_id": task_id, "task_name": items[0]["task_name"]}
        per_task.append({**task, **({"perturbation": kind} if kind else {}), **rate_block(items)})
    done = [r for r in logged if is_finished(r)]
    task_rates = [t["success_rate"] for t in per_task if t["episodes"]]
    latencies = [r["latency_ms"]["mean"] for r in done if r.get("latency_ms", {}).get("mean") is not None]
    missing = len(planned) - len(done)
    return {
        "overall": rate_block(logged),
        "per_suite": {suite: rate_block(items) for suite, items in sorted(by_suite.items())},
        "per_task": per_task,
        "mean_task_success_rate": round(sum(task_rates) / len(task_rates), 4) if task_rates else None,
        "planned": len(planned),
        "missing": missing,
        "partial": missing > 0,
        "env_steps": sum(int(r["steps"]) for r in done),
        "episode_wall_time_s": round(sum(float(r["wall_time_s"]) for r in done), 3),
        "mean_query_latency_ms": round(sum(latencies) / len(latencies), 3) if latencies else None,
    }
