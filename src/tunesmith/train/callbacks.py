"""Trainer callbacks: the machine-readable progress log (trainer_log.jsonl) that the web UI follows."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

LOG_NAME = "trainer_log.jsonl"


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
