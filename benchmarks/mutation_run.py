"""Mutation run of the model tests: each mutation of ``benchmarks/mutations.py`` is applied to
a fresh export of the last commit, and the model tests run against it; results as JSON.

Usage::

    nice -n 19 .venv/bin/python benchmarks/mutation_run.py
    nice -n 19 .venv/bin/python benchmarks/mutation_run.py --only lfp_score_is_class_0 --out run.json

The working tree is never touched: ``git archive HEAD`` is unpacked into a temporary
folder and mutated there, with bytecode caching off so that no stale ``.pyc`` of a
same-sized edit is run. A mutant is killed when the tests fail or time out, and
survives when they pass; a survivor must be marked equivalent in the list, with why.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutations import MUTATIONS, Mutation

from cogvla.paths import cache_dir

__all__ = ["main", "run_mutation"]

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
# every model test; the reference and property tests first (with -x a mutant usually dies
# within seconds), the overfitting run last (it is the slowest)
FIRST_TESTS = ("tests/test_model_reference.py", "tests/test_model_properties.py")
LAST_TESTS = ("tests/test_model_training.py",)


def model_tests(root: Path) -> list[str]:
    """``tests/test_model_*.py`` under ``root``, fastest-killing first."""
    found = sorted(str(path.relative_to(root)) for path in (root / "tests").glob("test_model_*.py"))
    middle = [name for name in found if name not in FIRST_TESTS + LAST_TESTS]
    return [name for name in FIRST_TESTS if name in found] + middle + [n for n in LAST_TESTS if n in found]


def export_head(destination: Path) -> str:
    """Unpack the files of the last commit into ``destination``; returns the commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    return commit


def _env(copy: Path) -> dict[str, str]:
    # no bytecode: a same-sized edit within one second could otherwise run a stale .pyc
    return dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(copy))


def _pytest(copy: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """Run the tests in ``copy``: (outcome 'passed' | 'failed' | 'timeout', seconds, first failure)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, check=False, cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    seconds = time.perf_counter() - start
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return ("passed" if done.returncode == 0 else "failed"), seconds, (failures[0] if failures else "")


def _check_imports_from(copy: Path) -> None:
    """Fail unless ``cogvla`` resolves to the copy (not an editable install of the working tree)."""
    found = subprocess.run(
        [sys.executable, "-c", "import cogvla; print(cogvla.__file__)"],
        cwd=copy,
        env=_env(copy),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"cogvla imports from {found}, not from the mutated copy {copy}")


def run_mutation(copy: Path, mutation: Mutation, tests: list[str], timeout: float) -> dict:
    """Apply one mutation in ``copy``, run the tests, restore the file; one result row."""
    path = copy / mutation.path
    original = path.read_text()
    row = {"name": mutation.name, "path": mutation.path, "equivalent": mutation.equivalent}
    occurrences = original.count(mutation.old)
    if occurrences != 1:
        return dict(row, status="not_applicable", detail=f"'old' occurs {occurrences} times, expected once")
    path.write_text(original.replace(mutation.old, mutation.new))
    try:
        outcome, seconds, failure = _pytest(copy, tests, timeout)
    finally:
        path.write_text(original)
    status = "survived" if outcome == "passed" else "killed"
    return dict(row, status=status, outcome=outcome, seconds=round(seconds, 1), killed_by=failure)


def summarize(rows: list[dict]) -> dict:
    """Counts: killed / equivalent survivors / non-equivalent survivors / not applicable."""
    applied = [row for row in rows if row["status"] != "not_applicable"]
    survivors = [row for row in applied if row["status"] == "survived"]
    return {
        "total": len(applied),
        "killed": sum(row["status"] == "killed" for row in applied),
        "equivalent": sum(row["equivalent"] is not None for row in survivors),
        "surviving_non_equivalent": [row["name"] for row in survivors if row["equivalent"] is None],
        "killed_though_marked_equivalent": [
            row["name"] for row in applied if row["status"] == "killed" and row["equivalent"] is not None
        ],
        "not_applicable": [row["name"] for row in rows if row["status"] == "not_applicable"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tests", nargs="+", help="test files, run in this order (default: every model test)"
    )
    parser.add_argument("--only", nargs="+", help="run just these mutation names")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run before a kill")
    parser.add_argument("--out", type=Path, default=cache_dir("mutation") / "mutation_run.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    mutations = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = sorted(set(args.only or ()) - {m.name for m in MUTATIONS})
    if unknown:
        parser.error(f"--only: unknown mutation names {unknown}")
    with tempfile.TemporaryDirectory(prefix="cogvla-mutation-") as folder:
        copy = Path(folder)
        commit = export_head(copy)
        tests = args.tests or model_tests(copy)
        _check_imports_from(copy)
        outcome, baseline_seconds, failure = _pytest(copy, tests, args.timeout)
        if outcome != "passed":
            raise SystemExit(f"the unmutated tests must pass first; got {outcome}: {failure}")
        logger.info("baseline passed in %.1f s at %s", baseline_seconds, commit[:10])
        rows = []
        for number, mutation in enumerate(mutations, 1):
            rows.append(run_mutation(copy, mutation, tests, args.timeout))
            row = rows[-1]
            logger.info(
                "%2d/%d %-45s %s %s",
                number,
                len(mutations),
                mutation.name,
                row["status"],
                row.get("killed_by", ""),
            )
    result = {
        "commit": commit,
        "tests": tests,
        "baseline_seconds": round(baseline_seconds, 1),
        "summary": summarize(rows),
        "mutations": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    return result


if __name__ == "__main__":
    main()
