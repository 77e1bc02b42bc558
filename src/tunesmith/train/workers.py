"""What a process started by a launcher (torchrun, DeepSpeed, accelerate, Ray) knows about itself, and the set-up of
such a process on CPU (gloo) before its TrainingArguments exist."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ERROR_DIR_ENV = "TUNESMITH_ERROR_DIR"  # set by `launch` for its workers: each leaves its error message there


def under_launcher() -> bool:
    """True inside a process started by torchrun/deepspeed/accelerate (they set these)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def report_worker_error(message: str) -> bool:
    """In a worker started by `launch`: leaves the message for the launcher to print once. False anywhere else."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not folder or not under_launcher() or not Path(folder).is_dir():
        return False
    Path(folder, f"rank-{os.environ.get('RANK', '0')}.txt").write_text(message, encoding="utf-8")
    return True


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
