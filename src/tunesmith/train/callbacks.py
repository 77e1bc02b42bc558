"""Trainer callbacks: the machine-readable progress log (trainer_log.jsonl) that the web UI follows, the checks a
resumed run makes once transformers has loaded its checkpoint, and the ones config keys ask for (early stopping)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from tunesmith.train import run_status

LOG_NAME = "trainer_log.jsonl"


def from_config(config) -> list:
    """The callbacks config keys ask for: LLaMA-Factory's early_stopping_steps is transformers' EarlyStoppingCallback
    with that patience (evaluations without improvement of metric_for_best_model); use_swanlab is SwanLab's own
    transformers callback with the swanlab_* keys, as LLaMA-Factory builds it."""
    callbacks = []
    if config.report.early_stopping_steps:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.report.early_stopping_steps))
    if config.report.use_swanlab:
        callbacks.append(swanlab_callback(config.report))
    return callbacks


def swanlab_callback(report):
    """SwanLab's TrainerCallback for use_swanlab (the config checked the mode and key: nothing prompts for a login)."""
    from tunesmith.errors import ConfigError

    try:
        import swanlab
        from swanlab.integration.transformers import SwanLabCallback
    except ImportError:
        raise ConfigError("use_swanlab needs the swanlab package: pip install 'tunesmith[loggers]'") from None
    if report.swanlab_api_key:
        swanlab.login(api_key=report.swanlab_api_key)
    mode = "online" if report.swanlab_mode == "cloud" else report.swanlab_mode
    return SwanLabCallback(
        project=report.swanlab_project,
        workspace=report.swanlab_workspace,
        experiment_name=report.swanlab_run_name,
        mode=mode,
        logdir=report.swanlab_logdir,
    )


def trim_log(output_dir: str | Path, step: int) -> None:
    """Drops what a killed run logged after `step` (and a half-written last line): training from the checkpoint at
    `step` logs those steps again, and each step must be in the log once."""
    path = Path(output_dir) / LOG_NAME
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    if kept == lines and (not text or text.endswith("\n")):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


class ResumeCallback(TrainerCallback):
    """At train begin of a resumed run: stops it if nothing is left to train (tunesmith.train.checkpoints), else
    trims the log to the checkpoint's step and removes the damaged checkpoints that were skipped."""

    def __init__(self, resume, output_dir: str | Path):
        self.resume = resume
        self.output_dir = Path(output_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        from tunesmith.train.checkpoints import RunFinished, check_resumed_state, remove_damaged

        if self.resume is None:
            return
        finished = None
        try:
            check_resumed_state(self.resume, state.global_step, state.max_steps)
        except RunFinished as error:
            if error.complete:
                raise  # before anything is written: a finished run resumed stays as it was
            finished = error  # the checkpoint is at the last step: run.py writes the final save from it
        if state.is_world_process_zero:
            trim_log(self.output_dir, state.global_step)
            remove_damaged(self.resume)
        if finished is not None:
            raise finished


class JsonlLogCallback(TrainerCallback):
    """Appends one JSON line per logging step: step, total_steps, loss, lr, epoch, elapsed and remaining seconds."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOG_NAME
        self.start = None
        self.start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.start = time.monotonic()
        self.start_step = state.global_step  # > 0 when resuming
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if state.global_step == 0 and self.path.exists():
            self.path.unlink()
        run_status.started(self.path.parent)  # tunesmith_status.json: this process trains here

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss"} & logs.keys()):
            return  # the end-of-training summary goes to all_results.json instead
        elapsed = time.monotonic() - (self.start or time.monotonic())
        done = state.global_step - self.start_step
        total = state.max_steps
        remaining = elapsed / done * (total - state.global_step) if done > 0 else None
        record = {
            "step": state.global_step,
            "total_steps": total,
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "epoch": round(state.epoch, 4) if state.epoch is not None else None,
            "percentage": round(100 * state.global_step / total, 2) if total else None,
            "elapsed": round(elapsed, 3),
            "remaining": round(remaining, 3) if remaining is not None else None,
        }
        extra = {k: v for k, v in logs.items() if k not in ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")}
        record.update({k: v for k, v in extra.items() if isinstance(v, (int, float)) and k not in record})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({k: v for k, v in record.items() if v is not None}) + "\n")
