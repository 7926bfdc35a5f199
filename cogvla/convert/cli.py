"""Convert a released OpenVLA-OFT or CogVLA checkpoint into a cogvla checkpoint folder.

Usage::

    cogvla import ~/hf/openvla-7b-oft-finetuned-libero-spatial --out ckpt/oft-spatial --unnorm-key libero_spatial
    cogvla import ~/hf/cogvla-libero --out ckpt/cogvla-goal --unnorm-key libero_goal --dtype bf16

The output folder is what ``CogVLAModel.from_pretrained`` / ``cogvla serve --checkpoint``
/ ``cogvla eval libero --policy`` read. The full import report (every target tensor with
its dtype and source keys, every dropped key with the reason) is written to
``OUT/import_report.json``; a summary is printed as JSON. Every dataset's statistics are
kept in ``OUT/norm_stats_by_key.json``, so one import serves all four LIBERO suites. The
folder is written under a hidden name and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cogvla.config import IMAGE_PREPROCESSING
from cogvla.convert.errors import ImportOutputError
from cogvla.normalize import NORM_TABLE_FILE, save_norm_table

__all__ = ["REPORT_FILE", "add_arguments", "run", "staging_folder"]

REPORT_FILE = "import_report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", type=Path, help="released checkpoint folder (config.json, model-*.safetensors, ...)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output cogvla checkpoint folder")
    parser.add_argument(
        "--unnorm-key",
        default=None,
        help="default dataset key of dataset_statistics.json, e.g. libero_spatial; every key is kept, "
        "and evaluation picks each suite's own",
    )
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="dtype of the saved weights"
    )
    parser.add_argument("--device", default="cpu", help="where the model is assembled, e.g. cuda:0")
    parser.add_argument("--chunk-size", type=int, default=8, help="actions per chunk (LIBERO: 8)")
    parser.add_argument("--num-images", type=int, default=2, help="cameras per observation (LIBERO: 2)")
    parser.add_argument(
        "--image-preprocessing",
        choices=IMAGE_PREPROCESSING,
        default="openvla",
        help="how images are prepared, recorded in the checkpoint: openvla = the release's JPEG + "
        "lanczos3 front-end without TensorFlow (within 1 uint8 step), openvla-tf = exact (needs the "
        "openvla-tf extra), bicubic = this project's",
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="for an unmerged LoRA training folder: the model it was fine-tuned from (openvla-7b); "
        "its LLM adapter is merged with peft",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from cogvla.convert.load import DTYPES, import_released

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out
    if out.exists():
        raise ImportOutputError(f"--out: {out} already exists; pass a new folder")
    result = import_released(
        args.directory,
        unnorm_key=args.unnorm_key,
        dtype=DTYPES[args.dtype],
        device=args.device,
        chunk_size=args.chunk_size,
        num_images=args.num_images,
        progress=not args.no_progress,
        keep_all_stats=True,
        image_preprocessing=args.image_preprocessing,
        base=args.base,
    )
    with staging_folder(out) as staging:
        result.model.save_pretrained(
            staging, tokenizer=result.tokenizer, norm_stats=result.norm_stats, norm_key=result.norm_key
        )
        save_norm_table(staging / NORM_TABLE_FILE, result.norm_table)
        (staging / REPORT_FILE).write_text(json.dumps(result.report, indent=2))
    brief = {
        "out": str(out),
        "report": str(out / REPORT_FILE),
        "layout": result.report["layout"],
        "variant": result.report["variant"],
        "unnorm_key": result.norm_key,
        "unnorm_keys": sorted(result.norm_table),
        "source_keys": result.report["source_keys"],
        "weight_keys": result.report["weight_keys"],
        "total_params": result.report["target"]["total_params"],
        "dtypes": result.report["target"]["dtypes"],
        "import_seconds": result.report["import_seconds"],
    }
    print(json.dumps(brief, indent=2))
    return 0


@contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A hidden sibling of ``out`` that becomes ``out`` only once everything is written.

    A failure (a full disk, an interrupt) removes the sibling, so ``out`` is either
    complete or absent.
    """
    staging = out.with_name(f".{out.name}.importing-{os.getpid()}")
    staging.mkdir(parents=True)
    try:
        yield staging
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
