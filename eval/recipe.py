"""The end-to-end recipe: oracle demos -> ``tiny`` policy -> LIBERO evaluation over ZeroMQ.

Usage::

    .venv/bin/python -m eval.recipe --background           # everything, detached; follow recipe.log
    .venv/bin/python -m eval.recipe --stage train --resume  # one stage, continuing earlier work
    .venv/bin/python -m eval.recipe --stage eval --resume --trials 5   # quick look at a checkpoint

Every stage is one ``cogvla`` command, each resumable, so re-running the recipe continues
where it stopped and a finished stage costs nothing:

1. ``demos``: ``cogvla demos`` with DART noise from randomized resets of one suite's tasks
   (default libero_spatial 0, 1, 2; ``--tasks all`` for the whole suite), until each task
   has ``--per-task`` successful demos;
2. ``train``: ``cogvla train --preset tiny`` on them, ``--resume``-ing its checkpoints,
   from scratch or (``--init-from``) continuing an earlier checkpoint such as the
   embedded default;
3. ``eval``: ``cogvla serve`` of the final checkpoint in the background and
   ``cogvla eval libero --policy tcp://...`` on the 50 fixed init states per task.

Everything lives under ``cogvla.paths.cache_dir("recipe", suite)`` (``$COGVLA_CACHE/recipe/<suite>``):
``demos/``, ``frames/`` (decoded training frames), ``run/``, ``eval/``, ``recipe.log``,
``serve.log`` and ``status.json`` (per-stage outcome and the settings it ran with). Delete that folder and the same command rebuilds it all.
Without ``--resume`` the recipe refuses to continue a folder that already holds results.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cogvla.paths import cache_dir
from envs.suites import SUITES, num_tasks

__all__ = ["RecipeConfig", "RecipeError", "main", "run_recipe"]

logger = logging.getLogger("eval.recipe")

STAGES = ("demos", "train", "eval")
_SERVER_READY_TIMEOUT_S = 300.0


class RecipeError(RuntimeError):
    """A stage's command failed or the recipe folder is not in the expected state."""


@dataclass(frozen=True)
class RecipeConfig:
    """Settings of one recipe run (recorded in status.json)."""

    # The LIBERO suite of demos and evaluation.
    suite: str = "libero_spatial"
    # Task indices within the suite; task 0 must be among them.
    tasks: tuple[int, ...] = (0, 1, 2)
    # Successful demos per task (>= 40; the learn probe suggests well over 100).
    per_task: int = 100
    # DART: std of the Gaussian noise on executed arm deltas while the oracle records clean actions.
    noise: float = 0.1
    # Base of the demos' reset seeds (a new base gives new demos for the same tasks).
    demo_seed: int = 0
    # Camera side of demos and evaluation (the tiny model's input size).
    image_size: int = 128
    # Simulator worker processes for demos and evaluation.
    workers: int = 2
    # A checkpoint to continue from (every weight trained, its stats kept), e.g. an earlier
    # default; None trains from scratch.
    init_from: str | None = None
    # Training steps of the tiny preset, its global batch and intra-op threads (training has
    # the machine to itself; 2 threads measured 18 samples/s against 16 for 2 DDP processes).
    steps: int = 4_000
    batch: int = 16
    train_threads: int = 2
    # Intra-op threads of every other process (simulator workers and the policy server share the cores).
    threads: int = 1
    # Fixed init states evaluated per task.
    trials: int = 50
    # Policy-server port; 0 picks a free one.
    port: int = 0

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"suite: expected one of {', '.join(SUITES)}, got {self.suite!r}")
        if 0 not in self.tasks:
            raise ValueError(f"tasks: expected task 0 among the tasks, got {self.tasks}")
        if self.per_task < 1 or self.steps < 1 or self.trials < 1 or self.workers < 1:
            raise ValueError(
                f"per_task, steps, trials and workers: expected >= 1, got {self.per_task}, {self.steps}, "
                f"{self.trials}, {self.workers}"
            )


class Recipe:
    """The folder layout and the three stages."""

    def __init__(self, config: RecipeConfig, root: Path) -> None:
        self.config = config
        self.root = root
        self.demos = root / "demos"
        self.run_dir = root / "run"
        self.eval_dir = root / "eval"
        self.status_path = root / "status.json"
        self.log_path = root / "recipe.log"

    @property
    def task_list(self) -> str:
        return ",".join(str(task) for task in self.config.tasks)

    def status(self) -> dict[str, Any]:
        return json.loads(self.status_path.read_text()) if self.status_path.is_file() else {}

    def record(self, stage: str, outcome: dict[str, Any]) -> None:
        """Make ``outcome`` the stage's latest result; every run of a stage stays in ``history``
        (a resumed stage that had nothing left to do must not hide what the first run cost)."""
        status = self.status()
        entry = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **outcome}
        status[stage] = entry
        status.setdefault("history", []).append({"stage": stage, "config": asdict(self.config), **entry})
        status["config"] = asdict(self.config)
        self.status_path.write_text(json.dumps(status, indent=2))

    def stage_demos(self) -> dict[str, Any]:
        c = self.config
        report = self._cogvla(
            "demos",
            "--suite",
            c.suite,
            "--tasks",
            self.task_list,
            "--per-task",
            str(c.per_task),
            "--noise",
            str(c.noise),
            "--seed",
            str(c.demo_seed),
            "--out",
            str(self.demos),
            "--workers",
            str(c.workers),
            "--image-size",
            str(c.image_size),
        )
        return {"report": report}

    def stage_train(self) -> dict[str, Any]:
        c = self.config
        if not any(self.demos.rglob("*.hdf5")):
            raise RecipeError(f"{self.demos}: no demos yet; run the demos stage first")
        result = self._cogvla(
            "train",
            "--preset",
            "tiny",
            "--data",
            str(self.demos),
            "--out",
            str(self.run_dir),
            "--resume",
            "--steps",
            str(c.steps),
            "--batch",
            str(c.batch),
            "--threads",
            str(c.train_threads),
            "--cache",
            str(self.root / "frames"),
            "--no-progress",
            *(("--init-from", c.init_from) if c.init_from else ()),
        )
        return {"result": result}

    def stage_eval(self) -> dict[str, Any]:
        from cogvla.train.checkpoint import latest_checkpoint

        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is None:
            raise RecipeError(f"{self.run_dir}: no checkpoint yet; run the train stage first")
        port = self.config.port or _free_port()
        endpoint = f"tcp://127.0.0.1:{port}"
        server_log = (self.root / "serve.log").open("a")
        server = subprocess.Popen(
            [*_cogvla_command(), "serve", "--checkpoint", str(checkpoint), "--port", str(port)],
            stdout=server_log,
            stderr=subprocess.STDOUT,
            env=_child_env(self.config.threads),
        )
        try:
            _wait_for_server(endpoint, server)
            c = self.config
            summary = self._cogvla(
                "eval",
                "libero",
                "--policy",
                endpoint,
                "--suite",
                c.suite,
                "--tasks",
                self.task_list,
                "--trials",
                str(c.trials),
                "--out",
                str(self.eval_dir),
                "--workers",
                str(c.workers),
                "--image-size",
                str(c.image_size),
                "--fast-render",
                "--resume",
            )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
            server_log.close()
        return {"checkpoint": str(checkpoint), "summary": summary}

    def _cogvla(self, *args: str) -> Any:
        """Run ``cogvla ARGS``, its logs going to recipe.log; returns its JSON stdout (or its text)."""
        command = [*_cogvla_command(), *args]
        logger.info("$ %s", " ".join(command))
        with self.log_path.open("a") as log:
            finished = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=_child_env(self.config.threads),
                check=False,
            )
        if finished.returncode != 0:
            raise RecipeError(f"`cogvla {args[0]}` exited with {finished.returncode}; see {self.log_path}")
        try:
            return json.loads(finished.stdout)
        except json.JSONDecodeError:
            return finished.stdout.strip()


def run_recipe(config: RecipeConfig, stages: tuple[str, ...], root: Path, *, resume: bool) -> dict[str, Any]:
    """Run ``stages`` in order and return status.json's content."""
    recipe = Recipe(config, root)
    with _only_instance(root):
        done = recipe.status()
        if done and not resume:
            raise RecipeError(
                f"{root} already holds recipe results ({sorted(done)}); pass --resume to continue"
            )
        for stage in stages:
            logger.info("stage %s: starting", stage)
            started = time.perf_counter()
            outcome = getattr(recipe, f"stage_{stage}")()
            recipe.record(stage, {"wall_s": round(time.perf_counter() - started, 1), **outcome})
            logger.info("stage %s: done in %.0f s", stage, time.perf_counter() - started)
        return recipe.status()


@contextmanager
def _only_instance(root: Path) -> Iterator[None]:
    """Hold ``recipe.lock``: two recipes in one folder would train into the same run."""
    with (root / "recipe.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise RecipeError(
                f"another recipe is running in {root} (pid {lock.read().strip() or '?'})"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cogvla_command() -> list[str]:
    return [sys.executable, "-m", "cogvla.cli"]


def _child_env(threads: int) -> dict[str, str]:
    # One intra-op thread per process by default: the machine's cores are shared by the
    # simulator workers, the server and the trainer, and oversubscribed torch threads stall.
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(endpoint: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + _SERVER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RecipeError(
                f"the policy server exited with {server.returncode} before answering; see serve.log"
            )
        ping = subprocess.run(
            [*_cogvla_command(), "ping", endpoint, "--timeout-ms", "2000"],
            capture_output=True,
            text=True,
            check=False,
        )
        if ping.returncode == 0:
            logger.info("policy server up at %s", endpoint)
            return
        time.sleep(2.0)
    raise RecipeError(
        f"the policy server at {endpoint} did not answer within {_SERVER_READY_TIMEOUT_S:.0f} s"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = RecipeConfig()
    parser = argparse.ArgumentParser(prog="python -m eval.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("all", *STAGES), default="all", help="which stage(s) to run")
    parser.add_argument(
        "--resume", action="store_true", help="continue the results already in the recipe folder"
    )
    parser.add_argument("--background", action="store_true", help="detach; output goes to recipe.log")
    parser.add_argument("--suite", choices=SUITES, default=defaults.suite, help="LIBERO suite")
    parser.add_argument(
        "--tasks",
        default=",".join(map(str, defaults.tasks)),
        help="task indices within the suite, e.g. 0,1,2, or 'all'",
    )
    parser.add_argument("--per-task", type=int, default=defaults.per_task, help="successful demos per task")
    parser.add_argument("--noise", type=float, default=defaults.noise, help="DART noise std on arm deltas")
    parser.add_argument(
        "--demo-seed", type=int, default=defaults.demo_seed, help="base of the demos' reset seeds"
    )
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="camera side in pixels")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="simulator worker processes")
    parser.add_argument(
        "--init-from",
        default=defaults.init_from,
        help="checkpoint to continue training from (default: scratch)",
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="training global batch")
    parser.add_argument(
        "--train-threads", type=int, default=defaults.train_threads, help="torch threads of the trainer"
    )
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="torch threads of the server and simulators"
    )
    parser.add_argument("--trials", type=int, default=defaults.trials, help="evaluation episodes per task")
    parser.add_argument("--port", type=int, default=defaults.port, help="policy-server port (0: a free one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m eval.recipe``."""
    args = _parse_args(argv)
    root = cache_dir("recipe", args.suite)
    tasks = (
        range(num_tasks(args.suite)) if args.tasks == "all" else (int(task) for task in args.tasks.split(","))
    )
    config = RecipeConfig(
        suite=args.suite,
        tasks=tuple(tasks),
        per_task=args.per_task,
        noise=args.noise,
        demo_seed=args.demo_seed,
        image_size=args.image_size,
        workers=args.workers,
        init_from=args.init_from,
        steps=args.steps,
        batch=args.batch,
        train_threads=args.train_threads,
        threads=args.threads,
        trials=args.trials,
        port=args.port,
    )
    if args.background:
        forwarded = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--background"]
        with (root / "recipe.log").open("a") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "eval.recipe", *forwarded],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (root / "recipe.pid").write_text(f"{child.pid}\n")
        print(
            json.dumps(
                {"pid": child.pid, "log": str(root / "recipe.log"), "status": str(root / "status.json")}
            )
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stages = STAGES if args.stage == "all" else (args.stage,)
    try:
        status = run_recipe(config, stages, root, resume=args.resume)
    except RecipeError as exc:
        logger.error("%s", exc)
        return 1
    print(json.dumps(status, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
