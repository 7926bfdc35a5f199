"""The one command line: ``cogvla <verb> [...]``.

Each verb lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the verb being run is imported, so
``cogvla ping`` does not pay for importing torch and transformers.

Mistakes a user can make (a missing checkpoint, an existing output folder, a bad device or
address, ...) end in one line on stderr and exit code 1; ``--debug`` or ``COGVLA_DEBUG=1``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["DEBUG_ENV", "VERBS", "check_device", "main"]

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "flops": ("cogvla.flops_cli", "analytic FLOPs and parameters of a preset and variant"),
    "train": ("cogvla.train.cli", "train a policy on LIBERO-format HDF5 demos"),
    "import": ("cogvla.convert.cli", "convert a released OpenVLA-OFT / CogVLA checkpoint"),
    "average": ("cogvla.average_cli", "interpolate the weights of checkpoints of one model"),
    "demos": ("eval.libero.demos_cli", "generate scripted-oracle demos in LIBERO's HDF5 schema"),
    "eval": ("eval.cli", "evaluate a policy (oracle, checkpoint or server) in simulation"),
    "serve": ("deploy.serve_cli", "serve a policy over ZeroMQ"),
    "ping": ("deploy.ping_cli", "health-check a policy server and print its metadata"),
    "profile": ("eval.profile.cli", "latency profiling of the model, the server or the simulator"),
}

DEBUG_ENV = "COGVLA_DEBUG"
_EXIT_ERROR = 1
_EXIT_INTERRUPTED = 130
# Packages whose exceptions describe the user's input or environment, not a bug of ours.
_PROJECT_PACKAGES = frozenset({"cogvla", "deploy", "envs", "eval", "zmq"})


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, as every other error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(verb: str | None) -> argparse.ArgumentParser:
    """The top-level parser; only ``verb`` (if given) gets its full arguments."""
    parser = _Parser(prog="cogvla", description="CogVLA policy runtime.")
    debug_help = f"show the full traceback of an error (or set {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_Parser)
    for name, (module_name, help_text) in VERBS.items():
        verb_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            module = importlib.import_module(module_name)
            module.add_arguments(verb_parser)
            # SUPPRESS: an absent flag must not reset the top-level one (`cogvla --debug VERB`).
            verb_parser.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help
            )
            verb_parser.set_defaults(run=module.run)
    return parser


def check_device(name: str) -> str:
    """``name`` if it is a torch device this machine has, else ValueError naming ``--device``."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or mps, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {name!r} asks for CUDA but this machine has no CUDA device (use cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device: {name!r}, but this machine has {torch.cuda.device_count()} CUDA devices")
    return name


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports a mistake in the input or the environment (one line is enough)."""
    if isinstance(exc, (ValueError, OSError, LookupError, ImportError)):
        return True
    return type(exc).__module__.partition(".")[0] in _PROJECT_PACKAGES


def describe(exc: BaseException) -> str:
    """One line for ``exc``: its message, prefixed by its type for anything unexpected."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if is_user_error(exc) else f"{type(exc).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cogvla`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(verb if verb in VERBS else None).parse_args(argv)
    if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return int(args.run(args) or 0)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"cogvla {args.verb}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (every failure ends in one line; --debug re-raises)
        hint = "" if is_user_error(exc) else f" (a bug? --debug or {DEBUG_ENV}=1 shows the traceback)"
        print(f"cogvla {args.verb}: error: {describe(exc)}{hint}", file=sys.stderr)
        return _EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
