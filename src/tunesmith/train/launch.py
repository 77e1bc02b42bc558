"""Relaunches `tunesmith train` under torchrun when more than one process is asked for (or DeepSpeed is used)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)


def under_launcher() -> bool:
    """True inside a process started by torchrun/deepspeed/accelerate (they set these)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def needs_launch(config) -> bool:
    launch = config.launch
    deepspeed = bool(config.training_kwargs().get("deepspeed"))
    return not under_launcher() and (launch.nproc_per_node > 1 or launch.nnodes > 1 or deepspeed)


def torchrun_command(config_path: str | None, overrides: list[str], launch) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={launch.nproc_per_node}",
            f"--nnodes={launch.nnodes}", f"--node-rank={launch.node_rank}", f"--master-addr={launch.master_addr}",
            f"--master-port={launch.master_port}", "-m", "tunesmith", "train",
            *([config_path] if config_path else []), *overrides]


def launch(config_path: str | None, overrides: list[str], config) -> int:
    """Runs the same command line in torchrun's workers and returns their exit code."""
    command = torchrun_command(config_path, overrides, config.launch)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"tunesmith: launching {config.launch.nproc_per_node} process(es) x {config.launch.nnodes} node(s) with "
          f"torchrun", file=sys.stderr)
    return subprocess.call(command, env=env)

