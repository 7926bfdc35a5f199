"""Paper-style efficiency table (CogVLA Table 3) from a ``cogvla profile model`` JSON.

    python -m eval.profile.efficiency_table runs/profile/model-medium.json
    cogvla profile table --json runs/profile/model-medium.json

Columns: median latency per forward (batch as profiled), throughput = batch x chunk /
latency (actions per second, as the paper computes it: 8 / 0.091 s = 87.9 Hz), analytic FLOPs
per query, parameters, and each variant's latency and FLOPs ratio to ``dense``. Every
latency carries its unit in the header (ms vs s mix-ups are a known source of bad
published figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ProfileResultError", "efficiency_rows", "format_table", "load_result", "main"]

BASELINE = "dense"
FOCUS = "cogvla"
_REQUIRED_VARIANT_KEYS = ("tflops", "total", "chunk_size", "params")


class ProfileResultError(ValueError):
    """A profile JSON lacks the fields the table needs."""


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a model-profile JSON and check it has what the table needs."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ProfileResultError(f"--json: no such file {path}") from exc
    except json.JSONDecodeError as exc:
        raise ProfileResultError(f"--json: {path} is not JSON ({exc})") from exc
    _check(result, str(path))
    return result


def _check(result: Any, where: str) -> None:
    if (
        not isinstance(result, Mapping)
        or not isinstance(result.get("variants"), Mapping)
        or not result["variants"]
    ):
        raise ProfileResultError(f"{where}: expected a model profile with a non-empty 'variants' map")
    for name, info in result["variants"].items():
        missing = [key for key in _REQUIRED_VARIANT_KEYS if key not in info]
        if missing:
            raise ProfileResultError(f"{where}: variants.{name} is missing {missing}")


def efficiency_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per variant: latency (ms, s), throughput (Hz), TFLOPs, parameters and ratios to dense."""
    _check(result, "result")
    variants = result["variants"]
    base = variants.get(BASELINE)
    batch = int(result.get("batch", 1))
    rows = []
    for name, info in variants.items():
        latency_ms = float(info["total"]["p50_ms"])
        row = {
            "variant": name,
            "latency_ms": latency_ms,
            "latency_p99_ms": float(info["total"]["p99_ms"]),
            "throughput_hz": batch * info["chunk_size"] * 1000.0 / latency_ms,
            "tflops": float(info["tflops"]),
            "params_m": info["params"] / 1e6,
            "latency_speedup": None,
            "flops_reduction": None,
        }
        if base is not None:
            row["latency_speedup"] = float(base["total"]["p50_ms"]) / latency_ms
            row["flops_reduction"] = float(base["tflops"]) / float(info["tflops"])
        rows.append(row)
    return rows


def _flops_text(tflops: float) -> str:
    return f"{tflops:.2f} T" if tflops >= 0.1 else f"{tflops * 1e3:.1f} G"


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(result: Mapping[str, Any]) -> str:
    """The Markdown table plus a line on the dense/cogvla latency-vs-FLOPs ratio."""
    rows = efficiency_rows(result)
    header = (
        "| Variant | Latency p50 (ms) | Latency p50 (s) | Latency p99 (ms) | Throughput (Hz) | FLOPs / query "
        "| Params (M) | Speed-up vs dense | FLOPs reduction vs dense |"
    )
    lines = [header, "|" + "---|" * 9]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['latency_ms']:.1f} | {row['latency_ms'] / 1000:.3f} | "
            f"{row['latency_p99_ms']:.1f} | {row['throughput_hz']:.1f} | {_flops_text(row['tflops'])} | "
            f"{row['params_m']:.1f} | {_ratio_text(row['latency_speedup'])} | {_ratio_text(row['flops_reduction'])} |"
        )
    context = (
        f"\npreset {result.get('preset')}, device {result.get('device')}, batch {result.get('batch')}, "
        f"threads {result.get('threads')}, {result.get('iters')} timed iterations, "
        f"load average before/after {result.get('loadavg', {}).get('before')} / {result.get('loadavg', {}).get('after')}"
    )
    lines.append(context)
    by_name = {row["variant"]: row for row in rows}
    if FOCUS in by_name and BASELINE in by_name:
        focus = by_name[FOCUS]
        share = focus["latency_speedup"] / focus["flops_reduction"]
        lines.append(
            f"{BASELINE}/{FOCUS}: latency ratio {focus['latency_speedup']:.2f}x for a FLOPs ratio of "
            f"{focus['flops_reduction']:.2f}x ({share:.0%} of the FLOPs saving shows up as latency)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of the JSON named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="output of `cogvla profile model --json`")
    args = parser.parse_args(argv)
    try:
        print(format_table(load_result(args.json)))
    except ProfileResultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
