"""Analytic FLOPs and parameters of a preset and variant.

Usage::

    cogvla flops --preset cogvla-7b --variant cogvla --json
    cogvla flops --preset cogvla-7b --variant dense --prompt-tokens 25
    cogvla flops --preset tiny --variant no-lfp --batch-size 4 --json
"""

from __future__ import annotations

import argparse
import json

from cogvla.config import PRESETS, VARIANTS, get_preset
from cogvla.flops import DEFAULT_PROMPT_TOKENS, count_flops, count_params

__all__ = ["add_arguments", "run"]

# Table 3 of the paper (reference section 7.3), TFLOPs per LIBERO query of the 7B model
PAPER_TFLOPS = {"cogvla": 2.72, "dense": 8.45, "no-efa": 5.38, "no-lfp": 3.52}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cogvla-7b")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="cogvla")
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=DEFAULT_PROMPT_TOKENS,
        help="prompt length in tokens (template included)",
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    config = get_preset(args.preset, args.variant)
    report = count_flops(config, prompt_tokens=args.prompt_tokens, batch_size=args.batch_size)
    params = count_params(config)
    result = report.to_dict()
    result["params_b"] = params["total"] / 1e9
    result["params"] = params
    if args.preset == "cogvla-7b" and args.batch_size == 1:
        paper = PAPER_TFLOPS[args.variant]
        result["paper_tflops"] = paper
        result["relative_to_paper"] = report.total / 1e12 / paper - 1
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{config.name} / {config.variant}: {result['tflops']:.3f} TFLOPs, {result['params_b']:.3f} B params"
    )
    print(f"sequence {report.seq_len} tokens, {report.vision_tokens_in_llm} vision tokens into the LLM")
    print(f"vision tokens per LLM layer: {report.kept_per_layer}")
    for name, tflops in result["stages"].items():
        print(f"  {name:<16} {tflops:8.4f} T")
    if "paper_tflops" in result:
        print(f"paper (Table 3): {result['paper_tflops']} T ({result['relative_to_paper']:+.1%})")
    return 0
