"""Resuming a run: which checkpoints are intact, which one to continue from, and whether the run already finished.

transformers (Trainer._save_checkpoint) writes a checkpoint in place, file by file: the weights (save_model),
optimizer.pt, scheduler.pt, scaler.pt, rng_state.pth, and trainer_state.json last. A kill leaves a folder without
trainer_state.json or with a half-written one; save_total_limit deleting an old checkpoint leaves one with files
missing; a disk that filled up leaves a truncated file anywhere. So a checkpoint is intact only when every file a
resume reads is there and parses, not merely when trainer_state.json exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import zipfile
from pathlib import Path

from tunesmith.config.load import RUN_CONFIG
from tunesmith.errors import ConfigError
from tunesmith.train.outputs import CHECKPOINT, STATE_FILE

log = logging.getLogger(__name__)

RESULTS_FILE = "all_results.json"  # run.py writes it last: a run folder without it did not finish
TORCH_FILES = ("optimizer.pt", "scheduler.pt")  # torch.save zip archives every resume loads


class RunFinished(Exception):
    """Raised at train begin when a resumed run has nothing left to train (not an error: run.py catches it)."""

    def __init__(self, complete: bool):
        super().__init__("complete" if complete else "final save missing")
        self.complete = complete  # True: the final save is there too, nothing to do; False: only it is missing


@dataclasses.dataclass(frozen=True)
class Resume:
    """What resume_from_checkpoint resolved to."""

    checkpoint: Path | None  # the intact checkpoint training continues from; None: only a finished final save
    step: int  # its global_step (0 without a checkpoint)
    finished_step: int | None  # global_step of a complete final save in output_dir (None: none, or not asked)
    damaged: tuple[Path, ...] = ()  # checkpoints skipped as damaged; removed once training continues

    @property
    def path(self) -> str | None:
        return str(self.checkpoint) if self.checkpoint else None

    @property
    def starts_over(self) -> bool:
        """The run was killed before its first intact checkpoint: it trains again from step 0."""
        return self.checkpoint is None and self.finished_step is None


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """Every checkpoint-N folder in output_dir, oldest (lowest N) first, intact or not."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def read_state(path: Path) -> tuple[dict | None, str]:
    """(trainer state, '') or (None, why it cannot be read)."""
    if not path.is_file():
        return None, f"{path.name} is missing (the save was cut short)"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{path.name} is not valid JSON ({error}; the file is truncated or corrupt)"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return None, f"{path.name} has no global_step"
    return state, ""


def weights_problem(folder: Path) -> str:
    """Why the model/adapter weights in folder cannot be loaded ('' when every file opens and its header parses)."""
    from safetensors import SafetensorError, safe_open

    for index in sorted(folder.glob("*.safetensors.index.json")):  # sharded: every shard it names must exist
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            return f"{index.name} cannot be read ({error})"
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            return f"{index.name} names shards that are missing: {', '.join(missing)}"
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        try:
            # opening checks the header and the file's size; numpy, as framework "pt" would import torch
            with safe_open(str(path), framework="numpy") as handle:
                handle.keys()
        except (OSError, SafetensorError) as error:
            return f"{path.name} cannot be opened ({error}; the file is truncated or corrupt)"
    has_bin = any(path.stat().st_size > 0 for path in folder.glob("*.bin") if path.name != "training_args.bin")
    elsewhere = (folder / "latest").is_file() or any(folder.glob("pytorch_model_fsdp*"))  # DeepSpeed's, FSDP's shards
    if not files and not has_bin and not elsewhere:
        return "it holds no model or adapter weights"
    return ""


def checkpoint_problem(folder: Path) -> str:
    """Why a checkpoint folder cannot be resumed exactly; '' when it is intact."""
    _, problem = read_state(folder / STATE_FILE)
    if problem:
        return problem
    problem = weights_problem(folder)
    if problem:
        return problem
    deepspeed = folder / "latest"
    if deepspeed.is_file():  # DeepSpeed keeps optimizer and scheduler in the tag folder `latest` names
        tag = deepspeed.read_text(encoding="utf-8").strip()
        if not tag or not (folder / tag).is_dir():
            return f"the DeepSpeed state folder {tag or '(empty latest)'} is missing"
    else:
        for name in TORCH_FILES:
            path = folder / name
            sharded = name == "optimizer.pt" and any(folder.glob("optimizer_*"))  # FSDP: one file or folder a rank
            if not sharded and not (path.is_file() and zipfile.is_zipfile(path)):
                state = "truncated" if path.is_file() else "missing"
                return f"{name} is {state} (a checkpoint saved with save_only_model cannot be resumed exactly)"
    rng = [path for path in folder.glob("rng_state*.pth") if zipfile.is_zipfile(path)]
    if not rng:
        return "rng_state.pth is missing or truncated"
    return ""


def finished_step(output_dir: Path) -> int | None:
    """The global_step of a complete final save in output_dir, or None when the run did not finish.

    Complete: all_results.json (written last) and trainer_state.json parse and the final weights open."""
    try:
        results = json.loads((output_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    state, problem = read_state(output_dir / STATE_FILE)
    if not isinstance(results, dict) or problem or weights_problem(output_dir):
        return None
    return state["global_step"]


def resolve_resume(output_dir: Path, value) -> Resume | None:
    """Turns `resume_from_checkpoint` (true, a path or None) into what the run continues from.

    true: the newest intact checkpoint in output_dir; damaged ones are skipped with a warning naming them."""
    if value in (None, False, "", "false", "False"):
        return None
    if value is True or str(value).lower() == "true":
        return _newest_intact(output_dir)
    path = Path(str(value))
    if not path.is_dir():
        raise ConfigError(f"resume_from_checkpoint: {path} does not exist")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"resume_from_checkpoint: {path} cannot be resumed: {problem}; pick another checkpoint, "
                          "or resume_from_checkpoint: true for the newest intact one")
    state, _ = read_state(path / STATE_FILE)
    return Resume(checkpoint=path, step=state["global_step"], finished_step=None)


def _newest_intact(output_dir: Path) -> Resume:
    finished = finished_step(output_dir)
    folders = checkpoint_folders(output_dir)
    problems = {folder: checkpoint_problem(folder) for folder in folders}
    intact = [folder for folder in folders if not problems[folder]]
    for folder in folders:
        if problems[folder]:
            log.warning("skipping damaged checkpoint %s: %s", folder, problems[folder])
    newest = intact[-1] if intact else None
    # Removed once training continues: the damaged ones after the resumed one, which training writes again, and
    # the half-written ones. An older one whose trainer_state.json is whole (save_only_model) stays.
    later = folders[folders.index(newest) + 1:] if newest else folders
    damaged = tuple(folder for folder in folders if problems[folder] and (
        folder in later or read_state(folder / STATE_FILE)[1]))
    if newest is not None:
        state, _ = read_state(newest / STATE_FILE)
        return Resume(checkpoint=newest, step=state["global_step"], finished_step=finished, damaged=damaged)
    if finished is not None:  # a finished run saved without checkpoints (save_strategy: no)
        return Resume(checkpoint=None, step=0, finished_step=finished)
    started = (output_dir / RUN_CONFIG).is_file()  # a tunesmith run began here (record_run writes it first)
    never_saved = all(read_state(folder / STATE_FILE)[1] for folder in folders)  # each cut short before its state
    if never_saved and (started or not output_dir.is_dir() or not any(output_dir.iterdir())):
        log.warning("resume_from_checkpoint: true, but %s holds no intact checkpoint yet: training from step 0",
                    output_dir)
        return Resume(checkpoint=None, step=0, finished_step=None, damaged=damaged)
    names = "".join(f"; {folder.name}: {problems[folder]}" for folder in folders)
    if folders:
        raise ConfigError(f"resume_from_checkpoint: true, but no checkpoint in {output_dir} can be resumed{names}; "
                          "remove resume_from_checkpoint (and set overwrite_output_dir: true) to start over")
    raise ConfigError(f"resume_from_checkpoint: true, but {output_dir} holds no checkpoint-N folder and no "
                      f"tunesmith run ({RUN_CONFIG}): pick the output_dir of the run to continue")


def check_resumed_state(resume: Resume | None, global_step: int, max_steps: int) -> None:
    """At train begin (state loaded, max_steps known): raises RunFinished when nothing is left to train.

    transformers' loop would otherwise train one step past max_steps (step 41 of 40) from a checkpoint at the end."""
    if resume is None:
        return
    if resume.finished_step is not None and resume.finished_step >= max_steps:
        raise RunFinished(complete=True)
    if resume.starts_over:
        return
    if resume.checkpoint is None:
        raise ConfigError(f"resume_from_checkpoint: true, but the finished run in the output_dir stopped at step "
                          f"{resume.finished_step} and left no checkpoint to continue it to step {max_steps}; "
                          "save checkpoints (save_strategy: steps) or start a new run")
    if global_step >= max_steps:
        log.info("%s is at the last step (%d of %d): no step left to train; saving the final model from it",
                 resume.checkpoint, global_step, max_steps)
        raise RunFinished(complete=False)
    log.info("resuming from %s (step %d of %d)", resume.checkpoint, global_step, max_steps)


def remove_damaged(resume: Resume) -> None:
    """Deletes the damaged checkpoints once training continues: training writes the newer ones again (writing into
    a half-written folder would mix its stale files into the new checkpoint); a half-written older one is of no use."""
    for folder in resume.damaged:
        log.warning("removing damaged checkpoint %s", folder)
        shutil.rmtree(folder, ignore_errors=True)


def finish_untrained(trainer) -> dict:
    """After RunFinished(complete=False): what train() would have done at its end, with no step left to train
    (load_best_model_at_end); returns the metrics train() would have started them with."""
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint is not None:
        trainer._load_best_model()  # what Trainer._finalize_training does
    return {"epoch": trainer.state.epoch}


def finished_results(output_dir: Path) -> dict:
    """The metrics of a run that was already complete when resumed; logs that nothing was trained or written."""
    results = json.loads((output_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    state, _ = read_state(output_dir / STATE_FILE)
    log.info("%s already holds the finished run (step %d): nothing to train, nothing written", output_dir,
             state["global_step"])
    return results


def resumed_metrics(log_history: list[dict], resume: Resume, global_step: int, metrics: dict) -> dict:
    """resumed_from_checkpoint, and train_loss over every step of the run.

    transformers' train_loss covers only the steps after the resume; this weights it with the losses logged before
    the checkpoint (exact when logging_steps divides save_steps, as then every step before it was logged)."""
    total, covered, last = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and last < entry.get("step", 0) <= resume.step:
            total += entry["loss"] * (entry["step"] - last)
            covered += entry["step"] - last
            last = entry["step"]
    trained = global_step - resume.step
    if trained > 0 and metrics.get("train_loss") is not None:
        total += metrics["train_loss"] * trained
        covered += trained
    extra = {"resumed_from_checkpoint": resume.checkpoint.name if resume.checkpoint else None}
    if covered:
        extra["train_loss"] = total / covered
    return extra
