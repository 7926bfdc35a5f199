"""Stopping a run: SIGTERM/SIGINT write the summary, print one line and exit 143/130 with no
traceback; orphaned workers exit quietly; a resume refuses a policy whose content changed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_harness import REPO, SUITE, TESTS_DIR, _config, fake_env, fake_policy

from eval.libero.harness import ResumeMismatchError, run_eval


def _start_run(out: Path, stderr: Path) -> subprocess.Popen:
    """The CLI's evaluation of 18 slow fake episodes on 2 workers, in its own process group."""
    script = textwrap.dedent(
        f"""
        import sys
        from eval.cli import evaluate
        from eval.libero.config import EvalConfig
        from test_harness import slow_fake_env, fake_policy
        config = EvalConfig(out={str(out)!r}, policy="zero", suites=({SUITE!r},), tasks=(0, 1, 2), trials=6,
                            max_steps=20, num_wait_steps=2, image_size=8, workers=2)
        sys.exit(evaluate(config, env_factory=slow_fake_env, policy_factory=fake_policy))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO)]))
    with open(stderr, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
    log_path = out / "episodes.jsonl"
    deadline = time.monotonic() + 60
    while not log_path.exists() or len(log_path.read_text().splitlines()) < 2:
        assert proc.poll() is None, f"the run ended early:\n{stderr.read_text()}"
        assert time.monotonic() < deadline, "no episode finished within 60 s"
        time.sleep(0.05)
    return proc


def _group_is_gone(pgid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("signum, code, to_group", [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_a_signal_stops_the_run_with_a_summary_one_line_and_no_traceback(tmp_path, signum, code, to_group):
    out, stderr = tmp_path / "run", tmp_path / "stderr"
    proc = _start_run(out, stderr)
    # A terminal's Ctrl-C reaches the whole process group, workers included.
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr.read_text()
    assert _group_is_gone(proc.pid), "workers outlived the run"
    assert "Traceback" not in stderr.read_text()
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stopped by {signal.Signals(signum).name}: ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] and summary["stopped_by"] == signal.Signals(signum).name
    assert 2 <= summary["overall"]["episodes"] < 18


def test_workers_of_a_killed_parent_exit_without_a_traceback(tmp_path):
    stderr = tmp_path / "stderr"
    proc = _start_run(tmp_path / "run", stderr)
    proc.kill()
    proc.wait()
    assert _group_is_gone(proc.pid), "orphaned workers kept running"
    assert "Traceback" not in stderr.read_text()


def _fake_checkpoint(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"config": {"name": "tiny"}}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text("notes do not change the policy")
    return folder


def test_resume_compares_the_policys_content_not_its_path(tmp_path):
    checkpoint = _fake_checkpoint(tmp_path / "ckpt", b"weights v1")
    first = _config(tmp_path, policy=str(checkpoint), tasks=(0,), trials=1, workers=1)
    run_eval(first, env_factory=fake_env, policy_factory=fake_policy)
    (checkpoint / "README.md").write_text("edited notes")
    moved = shutil.copytree(checkpoint, tmp_path / "moved")
    more = _config(tmp_path, policy=str(moved), tasks=(0,), trials=2, workers=1, resume=True)
    assert run_eval(more, env_factory=fake_env, policy_factory=fake_policy)["overall"]["episodes"] == 2
    (checkpoint / "model.safetensors").write_bytes(b"weights v2")
    again = _config(tmp_path, policy=str(checkpoint), tasks=(0,), trials=3, workers=1, resume=True)
    with pytest.raises(
        ResumeMismatchError, match="policy: the run .* fingerprint .* weights or config changed"
    ):
        run_eval(again, env_factory=fake_env, policy_factory=fake_policy)


class _OrphanedPipe:
    """A worker's end of the pipe after its parent died: every send fails."""

    def send(self, message):
        raise BrokenPipeError(32, "Broken pipe")

    def recv(self):
        raise EOFError


def test_a_worker_whose_parent_died_before_it_was_ready_exits_quietly():
    from eval.libero.workers import WorkerSetup, _worker_main

    setup = WorkerSetup(policy_spec="zero", policy_factory=lambda spec: object(), env_factory=None, job=None)
    assert _worker_main(_OrphanedPipe(), setup) is None
