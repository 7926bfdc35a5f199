"""DDP on the CPU: 2 gloo processes train like one process on the same global batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from test_train import assert_same_training, small_model_config, small_train_config, write_demos

from cogvla.train.trainer import train

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, port: int, config, demos, run_dir, frame_cache) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    train(config, [demos], run_dir, model_config=small_model_config(), cache_root=frame_cache, progress=False)


def test_two_gloo_processes_match_one_process(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        demos = write_demos(tmp_path / "demos")
        config = small_train_config(steps=2, warmup_steps=0, save_every=1, global_batch=4)
        train(
            config,
            [demos],
            tmp_path / "single",
            model_config=small_model_config(),
            cache_root=tmp_path / "frames",
            progress=False,
        )
        mp.spawn(
            _worker,
            args=(_free_port(), config, demos, tmp_path / "ddp", tmp_path / "frames"),
            nprocs=WORLD_SIZE,
            join=True,
        )
    finally:
        torch.set_num_threads(threads)
    assert_same_training(tmp_path / "single", tmp_path / "ddp", config.lr)
