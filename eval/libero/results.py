"""The run's record: an append-only JSONL of finished episodes, and the summary built from it.

Every line is flushed and fsynced as soon as its episode ends, so a killed run loses at
most the episodes in flight. A line cut short by the kill is dropped when the log is
reopened, and the summary keeps one record per episode key, so a resumed run summarizes
exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eval.stats import wilson_interval

__all__ = ["EpisodeLog", "episode_key", "rate_block", "summarize"]

logger = logging.getLogger(__name__)


def episode_key(suite: str, task_id: int, init_state_id: int | None) -> str:
    """The identity of an evaluation episode: suite, task and init state."""
    return f"{suite}/{task_id}/{init_state_id}"


class EpisodeLog:
    """``episodes.jsonl``: one JSON object per finished episode, keyed by ``record["key"]``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished records by key (the last one wins). Truncates a partial last line."""
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
        for number, line in enumerate(raw[:cut].decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping a line that is not JSON", self.path, number)
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
    """Success rate with its 95% Wilson interval; errors count as failures and separately."""
    records = list(records)
    successes = sum(1 for r in records if r["success"])
    errors = sum(1 for r in records if r.get("error"))
    low, high = wilson_interval(successes, len(records))
    return {
        "episodes": len(records),
        "successes": successes,
        "errors": errors,
        "success_rate": successes / len(records) if records else 0.0,
        "ci95": [round(low, 4), round(high, 4)],
    }


def summarize(planned_keys: Iterable[str], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per-task, per-suite and overall success of the planned episodes that finished.

    Returns a dict with ``overall``, ``per_suite`` (by suite name), ``per_task`` (a list),
    ``missing`` (planned but not finished) and step/latency totals.
    """
    planned = list(planned_keys)
    done = [records[key] for key in planned if key in records]
    by_suite: dict[str, list[Mapping[str, Any]]] = {}
    by_task: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for record in done:
        by_suite.setdefault(record["suite"], []).append(record)
        by_task.setdefault((record["suite"], record["task_id"]), []).append(record)
    per_task = []
    for (suite, task_id), items in sorted(by_task.items()):
        per_task.append(
            {"suite": suite, "task_id": task_id, "task_name": items[0]["task_name"], **rate_block(items)}
        )
    latencies = [r["latency_ms"]["mean"] for r in done if r.get("latency_ms", {}).get("mean") is not None]
    return {
        "overall": rate_block(done),
        "per_suite": {suite: rate_block(items) for suite, items in sorted(by_suite.items())},
        "per_task": per_task,
        "planned": len(planned),
        "missing": len(planned) - len(done),
        "env_steps": sum(int(r["steps"]) for r in done),
        "episode_wall_time_s": round(sum(float(r["wall_time_s"]) for r in done), 3),
        "mean_query_latency_ms": round(sum(latencies) / len(latencies), 3) if latencies else None,
    }
