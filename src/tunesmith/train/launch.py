"""Relaunches `tunesmith train` under torchrun when more than one process is asked for (or DeepSpeed is used), and
sets up the processes it starts on CPU (gloo) before their TrainingArguments exist."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tunesmith.errors import ConfigError, TunesmithError

log = logging.getLogger(__name__)


def under_launcher() -> bool:
    """True inside a process started by torchrun/deepspeed/accelerate (they set these)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def needs_launch(config) -> bool:
    launch = config.launch
    deepspeed = bool(config.training_kwargs().get("deepspeed"))
    return not under_launcher() and (launch.nproc_per_node > 1 or launch.nnodes > 1 or deepspeed)


ERROR_DIR_ENV = "TUNESMITH_ERROR_DIR"  # set by `launch` for its workers: each leaves its error message there


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


def report_worker_error(message: str) -> bool:
    """In a worker started by `launch`: leaves the message for the launcher to print once. False anywhere else."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder or not under_launcher() or not Path(folder).is_dir():
        return False
    Path(folder, f"rank-{os.environ.get('RANK', '0')}.txt").write_text(message, encoding="utf-8")
    return True


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


def worker_arguments(config, on_accelerator: bool) -> dict:
    """Extra TrainingArguments for a worker under a launcher on CPU: DDP over gloo, or DeepSpeed over gloo."""
    given = config.training_kwargs()
    if not under_launcher() or on_accelerator or "use_cpu" in given:
        return {}
    if not given.get("deepspeed"):
        return {"use_cpu": True, "ddp_backend": "gloo"}  # accelerate runs CPU workers as DDP only when told so
    deepspeed_state_on_cpu(given.get("ddp_timeout", 1800))
    accelerator_config = given.get("accelerator_config") or {}
    if isinstance(accelerator_config, str):  # a JSON file, as transformers accepts
        import json

        accelerator_config = json.loads(Path(accelerator_config).read_text())
    return {"accelerator_config": {**accelerator_config, "use_configured_state": True}}


def deepspeed_state_on_cpu(timeout_s: int) -> None:
    """Starts accelerate's process state for DeepSpeed on CPU with the gloo backend.

    accelerate (<= 1.15) picks a process-group backend only for an accelerator, or for cpu=True, which turns DeepSpeed
    off. For DeepSpeed without an accelerator it picks none, lets DeepSpeed start the group, and then counts 1
    process with rank 0 in every worker: the "auto" train_batch_size is sized for one process (DeepSpeed's batch check
    fails), every rank would think it is the main one and read the whole dataset. Given backend="gloo", the same
    PartialState counts the real world; TrainingArguments(accelerator_config={"use_configured_state": True}) reuses it.
    """
    import os
    from datetime import timedelta

    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    # load_config's check of the training arguments already built a state (1 process, no backend). transformers
    # clears it the same way at the start of every TrainingArguments, except with use_configured_state; there is no
    # public reset, so the internal one transformers uses is called here.
    AcceleratorState._reset_state(reset_partial_state=True)
    # PartialState takes DeepSpeed's path only under this flag; transformers sets it the same way for its own
    # PartialState, and the Accelerator sets it again once it gets the DeepSpeed plugin.
    before = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        state = PartialState(backend="gloo", timeout=timedelta(seconds=timeout_s))
    finally:
        if before is None:
            del os.environ["ACCELERATE_USE_DEEPSPEED"]
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = before
    log.info("DeepSpeed on CPU: process %d of %d (gloo)", state.process_index, state.num_processes)


if __name__ == "__main__":
    raise SystemExit(_torchrun(sys.argv[1:]))
