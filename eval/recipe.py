"""The end-to-end recipe: oracle demos -> ``tiny`` policy -> LIBERO evaluation over ZeroMQ.

Usage::

    .venv/bin/python -m eval.recipe --background           # everything, detached; follow recipe.log
    .venv/bin/python -m eval.recipe --stage train --resume  # one stage, continuing earlier work
    .venv/bin/python -m eval.recipe --stage eval --resume --trials 5   # quick look at a checkpoint
    .venv/bin/python -m eval.recipe --suite libero_spatial,libero_object --tasks all --resume  # one model

Every stage is one ``cogvla`` command (the demos stage one per suite), each resumable, so
re-running the recipe continues where it stopped and a finished stage costs nothing:

1. ``demos``: ``cogvla demos`` with DART noise from randomized resets of each suite's tasks
   (default libero_spatial 0, 1, 2; ``--tasks all`` for every task of each suite), until each
   task has ``--per-task`` successful demos;
2. ``train``: ``cogvla train --preset tiny`` on the demos of all the suites, ``--resume``-ing
   its checkpoints, from scratch or (``--init-from``) continuing an earlier checkpoint such
   as the embedded default;
3. ``eval``: ``cogvla serve`` of the final checkpoint in the background and
   ``cogvla eval libero --policy tcp://...`` on the 50 fixed init states per task of every suite.

A recipe lives under ``cogvla.paths.cache_dir("recipe", name)`` (``$COGVLA_CACHE/recipe/<name>``),
its name the suite, or the suites joined by ``+`` (``recipe/libero_spatial+libero_object``):
``frames/`` (decoded training frames), ``run/``, ``eval/``, ``recipe.log``, ``serve.log`` and
``status.json`` (per-stage outcome, the settings it ran with, and its wall time in this run and
over all runs). Demos belong to their suite, in ``recipe/<suite>/demos/<suite>/``, so every recipe
with that suite shares them: a multi-suite recipe reuses (and tops up) the single-suite ones.
Delete a recipe's folder and the same command rebuilds it all.
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
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cogvla.paths import cache_dir
from envs.mesh_lod import DEFAULT_MESH_FACES, check_mesh_faces
from envs.suites import SUITES, num_tasks

__all__ = ["RecipeConfig", "RecipeError", "main", "recipe_root", "run_recipe"]

logger = logging.getLogger("eval.recipe")

STAGES = ("demos", "train", "eval")
_SERVER_READY_TIMEOUT_S = 300.0


class RecipeError(RuntimeError):
    """A stage's command failed or the recipe folder is not in the expected state."""


@dataclass(frozen=True)
class RecipeConfig:
    """Settings of one recipe run (recorded in status.json)."""

    # The LIBERO suites of demos and evaluation; one model trains on all of them.
    suites: tuple[str, ...] = ("libero_spatial",)
    # Task indices, the same within every suite; task 0 must be among them. None: every task
    # of each suite (suites differ in their number of tasks).
    tasks: tuple[int, ...] | None = (0, 1, 2)
    # Successful demos per task (>= 40; the learn probe suggests well over 100).
    per_task: int = 100
    # DART: std of the Gaussian noise on executed arm deltas while the oracle records clean actions.
    noise: float = 0.1
    # Base of the demos' reset seeds (a new base gives new demos for the same tasks).
    demo_seed: int = 0
    # Camera side of demos and evaluation (the tiny model's input size).
    image_size: int = 128
    # Face cap of visual-only meshes in demos and evaluation (envs.mesh_lod); 0 = as modelled.
    mesh_faces: int = DEFAULT_MESH_FACES
    # Simulator worker processes for demos and evaluation.
    workers: int = 2
    # A checkpoint to continue from (every weight trained, its stats kept), e.g. an earlier
    # default; None trains from scratch.
    init_from: str | None = None
    # With init_from: compute normalization stats from the demos instead of keeping the
    # checkpoint's (needed when the demos add scenes, e.g. another suite's table height).
    new_stats: bool = False
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
        _check_suites(self.suites)
        if self.tasks is not None:
            _check_tasks(self.tasks, self.suites)
        if self.per_task < 1 or self.steps < 1 or self.trials < 1 or self.workers < 1:
            raise ValueError(
                f"per_task, steps, trials and workers: expected >= 1, got {self.per_task}, {self.steps}, "
                f"{self.trials}, {self.workers}"
            )
        check_mesh_faces(self.mesh_faces)


def _check_suites(suites: tuple[str, ...]) -> None:
    """Known suites, each once (a repeat would train and evaluate on it twice)."""
    if not suites:
        raise ValueError("suites: expected at least one suite, got none")
    unknown = [suite for suite in suites if suite not in SUITES]
    if unknown:
        raise ValueError(
            f"suites: expected names from {', '.join(SUITES)}, got {', '.join(map(repr, unknown))}"
        )
    repeated = _repeated(suites)
    if repeated:
        raise ValueError(f"suites: expected each suite once, got {', '.join(repeated)} more than once")


def _check_tasks(tasks: tuple[int, ...], suites: tuple[str, ...]) -> None:
    """Task 0 among ``tasks``, each once, and every one a task of every suite."""
    if 0 not in tasks:
        raise ValueError(f"tasks: expected task 0 among the tasks, got {tasks}")
    repeated = _repeated(tasks)
    if repeated:
        raise ValueError(
            f"tasks: expected each task once, got {', '.join(map(str, repeated))} more than once"
        )
    for suite in suites:
        count = num_tasks(suite)
        outside = [task for task in tasks if not 0 <= task < count]
        if outside:
            raise ValueError(
                f"tasks: expected indices from 0 to {count - 1} (the tasks apply to every suite), "
                f"got {', '.join(map(str, outside))}, which {suite} does not have"
            )


def _repeated(values: tuple[Any, ...]) -> list[Any]:
    return sorted({value for value in values if values.count(value) > 1})


def recipe_root(suites: tuple[str, ...]) -> Path:
    """A recipe's folder: ``recipe/<suite>``, or ``recipe/<a>+<b>`` for several suites."""
    return cache_dir("recipe", "+".join(suites))


class Recipe:
    """The folder layout and the three stages."""

    def __init__(self, config: RecipeConfig, root: Path) -> None:
        self.config = config
        self.root = root
        # Demos belong to their suite's own recipe folder, so that every recipe with the suite
        # shares them; a single-suite recipe is that folder, wherever it runs.
        self.demo_homes = {
            suite: root if config.suites == (suite,) else recipe_root((suite,)) for suite in config.suites
        }
        self.run_dir = root / "run"
        self.eval_dir = root / "eval"
        self.status_path = root / "status.json"
        self.log_path = root / "recipe.log"

    def demos_out(self, suite: str) -> Path:
        """The ``--out`` of the suite's ``cogvla demos``, which writes into ``<out>/<suite>/``."""
        return self.demo_homes[suite] / "demos"

    def task_list(self, suite: str) -> str:
        """The suite's task indices as ``cogvla`` takes them, e.g. "0,1,2"."""
        tasks = range(num_tasks(suite)) if self.config.tasks is None else self.config.tasks
        return ",".join(str(task) for task in tasks)

    def status(self) -> dict[str, Any]:
        return json.loads(self.status_path.read_text()) if self.status_path.is_file() else {}

    def record(self, stage: str, wall_s: float, outcome: dict[str, Any]) -> None:
        """Make ``outcome`` the stage's latest result, with this run's ``wall_s`` and ``wall_s_total``
        over all its runs; every run of a stage stays in ``history`` (a resumed stage that had
        nothing left to do must not hide what the first run cost)."""
        status = self.status()
        previous = status.get(stage, {})
        # Entries written before wall_s_total existed know only their own run's time.
        total = previous.get("wall_s_total", previous.get("wall_s", 0.0)) + wall_s
        entry = {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "wall_s": wall_s,
            "wall_s_total": round(total, 1),
            **outcome,
        }
        status[stage] = entry
        status.setdefault("history", []).append({"stage": stage, "config": asdict(self.config), **entry})
        status["config"] = asdict(self.config)
        self.status_path.write_text(json.dumps(status, indent=2))

    def stage_demos(self) -> dict[str, Any]:
        """One ``cogvla demos`` per suite, into the suite's shared demos folder."""
        c = self.config
        reports = {}
        with ExitStack() as borrowed:
            # A single-suite recipe may be writing the same demos in its folder right now.
            for home in [home for home in self.demo_homes.values() if home != self.root]:
                borrowed.enter_context(_only_instance(home))
            for suite in c.suites:
                reports[suite] = self._cogvla(
                    "demos",
                    "--suite",
                    suite,
                    "--tasks",
                    self.task_list(suite),
                    "--per-task",
                    str(c.per_task),
                    "--noise",
                    str(c.noise),
                    "--seed",
                    str(c.demo_seed),
                    "--out",
                    str(self.demos_out(suite)),
                    "--workers",
                    str(c.workers),
                    "--image-size",
                    str(c.image_size),
                    "--mesh-faces",
                    str(c.mesh_faces),
                )
        return {"reports": reports}

    def stage_train(self) -> dict[str, Any]:
        """``cogvla train`` on every suite's demos."""
        c = self.config
        # Each suite's own folder rather than its demos root: `cogvla demos` writes there only,
        # so nothing else that lands in a shared demos root joins the training set.
        folders = [self.demos_out(suite) / suite for suite in c.suites]
        missing = [str(folder) for folder in folders if not any(folder.rglob("*.hdf5"))]
        if missing:
            raise RecipeError(f"{', '.join(missing)}: no demos yet; run the demos stage first")
        result = self._cogvla(
            "train",
            "--preset",
            "tiny",
            "--data",
            *map(str, folders),
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
            *(("--new-stats",) if c.new_stats else ()),
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
                ",".join(c.suites),
                # Without --tasks, every task of each suite (a tcp:// policy brings no defaults).
                *(("--tasks", ",".join(map(str, c.tasks))) if c.tasks is not None else ()),
                "--trials",
                str(c.trials),
                "--out",
                str(self.eval_dir),
                "--workers",
                str(c.workers),
                "--image-size",
                str(c.image_size),
                "--mesh-faces",
                str(c.mesh_faces),
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
            recipe.record(stage, round(time.perf_counter() - started, 1), outcome)
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


def _suite_list(text: str) -> tuple[str, ...]:
    """Parse "libero_spatial,libero_object" for argparse; RecipeConfig checks the names."""
    return tuple(item.strip() for item in text.split(","))


def _task_list(text: str) -> tuple[int, ...] | None:
    """Parse "0,1,2" for argparse; "all" is None, every task of each suite."""
    if text.strip() == "all":
        return None
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or comma-separated task indices like 0,1,2, got {text!r}"
        ) from None


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, RecipeConfig]:
    """The command line's options and the recipe settings they give."""
    defaults = RecipeConfig()
    parser = argparse.ArgumentParser(prog="python -m eval.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("all", *STAGES), default="all", help="which stage(s) to run")
    parser.add_argument(
        "--resume", action="store_true", help="continue the results already in the recipe folder"
    )
    parser.add_argument("--background", action="store_true", help="detach; output goes to recipe.log")
    parser.add_argument(
        "--suite",
        type=_suite_list,
        default=defaults.suites,
        help="LIBERO suite, or several comma-separated to train one model on all of them, e.g. "
        "libero_spatial,libero_object (folder recipe/<a>+<b>; demos stay shared per suite); "
        f"from {','.join(SUITES)}",
    )
    parser.add_argument(
        "--tasks",
        type=_task_list,
        default=defaults.tasks,
        help="task indices within every suite, e.g. 0,1,2, or 'all' (every task of each suite)",
    )
    parser.add_argument("--per-task", type=int, default=defaults.per_task, help="successful demos per task")
    parser.add_argument("--noise", type=float, default=defaults.noise, help="DART noise std on arm deltas")
    parser.add_argument(
        "--demo-seed", type=int, default=defaults.demo_seed, help="base of the demos' reset seeds"
    )
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="camera side in pixels")
    parser.add_argument(
        "--mesh-faces",
        type=int,
        default=defaults.mesh_faces,
        help=f"cap visual-only meshes at N faces in demos and evaluation (default {defaults.mesh_faces}; "
        "0 = as modelled)",
    )
    parser.add_argument("--workers", type=int, default=defaults.workers, help="simulator worker processes")
    parser.add_argument(
        "--init-from",
        default=defaults.init_from,
        help="checkpoint to continue training from (default: scratch)",
    )
    parser.add_argument(
        "--new-stats",
        action="store_true",
        help="with --init-from: normalization stats from the demos, not the checkpoint's",
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
    args = parser.parse_args(argv)
    try:
        config = RecipeConfig(
            suites=args.suite,
            tasks=args.tasks,
            per_task=args.per_task,
            noise=args.noise,
            demo_seed=args.demo_seed,
            image_size=args.image_size,
            mesh_faces=args.mesh_faces,
            workers=args.workers,
            init_from=args.init_from,
            new_stats=args.new_stats,
            steps=args.steps,
            batch=args.batch,
            train_threads=args.train_threads,
            threads=args.threads,
            trials=args.trials,
            port=args.port,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return args, config


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m eval.recipe``."""
    args, config = _parse_args(argv)
    # Only now: cache_dir creates the folder, which a mistyped suite must not leave behind.
    root = recipe_root(config.suites)
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
