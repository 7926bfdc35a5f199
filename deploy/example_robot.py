"""Example robot: a 20 Hz control loop against a running policy server.

Start a server, then drive the simulated robot with it (replace ``SimulatedRobot`` by
your own ``deploy.robot_loop.Robot`` subclass on real hardware)::

    cogvla serve --port 5555 &
    python -m deploy.example_robot --endpoint tcp://127.0.0.1:5555 --hz 20 --steps 200 --prefetch

It prints the server metadata, then the loop's deadline statistics and the chunker's
stall count as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from deploy.chunker import ActionChunker, ChunkerConfig
from deploy.client import PolicyClient
from deploy.robot_loop import ControlLoop, LoopConfig, SimulatedRobot

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example loop; returns the process exit code."""
    parser = argparse.ArgumentParser(description="20 Hz control loop against a cogvla policy server")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="server address")
    parser.add_argument("--hz", type=float, default=20.0, help="control rate")
    parser.add_argument("--steps", type=int, default=200, help="ticks to run")
    parser.add_argument("--execute-steps", type=int, default=5, help="actions executed per chunk")
    parser.add_argument("--prefetch", action="store_true", help="request the next chunk in the background")
    parser.add_argument("--prefetch-margin", type=int, default=2, help="steps before the switch to prefetch")
    parser.add_argument(
        "--requery-before-grasp",
        action="store_true",
        help="query afresh instead of executing a stale chunk row that closes the gripper for the first time",
    )
    parser.add_argument("--timeout-ms", type=int, default=2000, help="per-request timeout")
    parser.add_argument("--prompt", default="put the bowl on the plate", help="task instruction")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        chunking = ChunkerConfig(
            execute_steps=args.execute_steps,
            prefetch=args.prefetch,
            prefetch_margin=args.prefetch_margin,
            requery_before_grasp=args.requery_before_grasp,
        )
    except ValueError as exc:
        parser.error(str(exc))
    client = PolicyClient(args.endpoint, timeout_ms=args.timeout_ms, retries=1)
    metadata = client.metadata()
    side = metadata.get("image_keys", {}).get("image", [224])[0]
    chunker = ActionChunker(client, chunking)
    robot = SimulatedRobot(prompt=args.prompt, image_size=int(side))
    chunker.reset()
    stats = ControlLoop(robot, chunker, LoopConfig(hz=args.hz, max_steps=args.steps)).run()
    chunker.close()
    client.close()
    report = {
        "server": {k: metadata.get(k) for k in ("name", "chunk_size", "protocol_version", "package_version")},
        "loop": stats.to_dict(),
        "chunker": vars(chunker.stats),
        "last_timing_ms": client.last_timing,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
