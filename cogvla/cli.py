"""The one command line: ``cogvla <verb> [...]``.

Each verb lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the verb being run is imported, so
``cogvla ping`` does not pay for importing torch and transformers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["VERBS", "main"]

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "flops": ("cogvla.flops_cli", "analytic FLOPs and parameters of a preset and variant"),
    "train": ("cogvla.train.cli", "train a policy on LIBERO-format HDF5 demos"),
    "import": ("cogvla.convert.cli", "convert a released OpenVLA-OFT / CogVLA checkpoint"),
    "demos": ("eval.libero.demos_cli", "generate scripted-oracle demos in LIBERO's HDF5 schema"),
    "eval": ("eval.cli", "evaluate a policy (oracle, checkpoint or server) in simulation"),
    "serve": ("deploy.serve_cli", "serve a policy over ZeroMQ"),
    "ping": ("deploy.ping_cli", "health-check a policy server and print its metadata"),
    "profile": ("eval.profile.cli", "latency profiling of the model, the server or the simulator"),
}


def build_parser(verb: str | None) -> argparse.ArgumentParser:
    """The top-level parser; only ``verb`` (if given) gets its full arguments."""
    parser = argparse.ArgumentParser(prog="cogvla", description="CogVLA policy runtime.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (module_name, help_text) in VERBS.items():
        verb_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            module = importlib.import_module(module_name)
            module.add_arguments(verb_parser)
            verb_parser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cogvla`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in VERBS else None
    args = build_parser(verb).parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
