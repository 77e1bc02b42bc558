"""Where `tunesmith train` runs: eval for a predict-only YAML, Ray Train, torchrun (several processes or DeepSpeed:
the same command line relaunched in each worker), or this process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.train.workers import ERROR_DIR_ENV, under_launcher


def needs_launch(config) -> bool:
    launch = config.launch
    deepspeed = bool(config.training_kwargs().get("deepspeed"))
    return not under_launcher() and (launch.nproc_per_node > 1 or launch.nnodes > 1 or deepspeed)


def run_train(config_path: str | None, overrides: list[str], config, verbose: bool = False) -> int:
    """Where `tunesmith train` runs: LLaMA-Factory's predict-only YAML goes to eval; a training run is checked against
    its stage's limits, then trains on Ray, under torchrun (several processes, DeepSpeed) or in this process."""
    given = config.training_kwargs()
    if given.get("do_predict") and not given.get("do_train"):
        from tunesmith.evaluate.run import run_eval

        return run_eval(config)
    from tunesmith.train.stages import check_stage

    check_stage(config)  # before any process is launched and before any data or model loads
    from tunesmith.train import ray_launch

    if ray_launch.wants_ray(config):
        return ray_launch.run_on_ray(config)
    if needs_launch(config):
        return launch(config_path, overrides, config, verbose=verbose)
    from tunesmith.train.run import run_training

    check_one_process(config)
    run_training(config)
    return 0


def torchrun_command(config_path: str | None, overrides: list[str], launch, verbose: bool = False) -> list[str]:
    """torchrun's command line (through this module, which drops torchrun's failure banner) for `tunesmith train`."""
    return [sys.executable, "-m", "tunesmith.train.launch", f"--nproc-per-node={launch.nproc_per_node}",
            f"--nnodes={launch.nnodes}", f"--node-rank={launch.node_rank}", f"--master-addr={launch.master_addr}",
            f"--master-port={launch.master_port}", "-m", "tunesmith", *(["--verbose"] if verbose else []), "train",
            *([config_path] if config_path else []), *overrides]


def launch(config_path: str | None, overrides: list[str], config, verbose: bool = False) -> int:
    """Runs the same command line in torchrun's workers and returns their exit code; a user mistake found by the
    workers is raised here once (each worker would print it), without torchrun's banner."""
    command = torchrun_command(config_path, overrides, config.launch, verbose)
    print(f"tunesmith: launching {config.launch.nproc_per_node} process(es) x {config.launch.nnodes} node(s) with "
          f"torchrun", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tunesmith-launch-") as errors:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), ERROR_DIR_ENV: errors}
        code = subprocess.call(command, env=env)
        messages = [path.read_text(encoding="utf-8") for path in sorted(Path(errors).glob("rank-*.txt"))]
    if messages:
        raise LaunchError("\n".join(dict.fromkeys(messages)))
    if code:
        print(f"tunesmith: a worker process failed (exit code {code}); its output is above", file=sys.stderr)
    return code


def check_one_process(config) -> None:
    """Refuses what needs several processes when `tunesmith train` is about to train in this one."""
    if config.training_kwargs().get("fsdp") and not under_launcher():
        raise ConfigError(f"{config.source}: `fsdp` shards the model over several processes: add --nproc-per-node N "
                          "(or nproc_per_node: N in the YAML), one process per GPU")


class LaunchError(TunesmithError):
    """What the workers of a launch refused (their TunesmithError messages, each shown once)."""


def _torchrun(argv: list[str]) -> int:
    """torchrun, returning the workers' exit code instead of raising its ChildFailedError banner."""
    import logging as logs

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logs.getLogger("torch.distributed.elastic").setLevel(logs.CRITICAL)  # "failed (exitcode: 2)": said by us
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_torchrun(sys.argv[1:]))
