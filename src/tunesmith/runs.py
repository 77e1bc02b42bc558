"""`tunesmith runs`: every training run under a folder (status, steps, losses, time, size), read from its files."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

from tunesmith.errors import ConfigError

RUN_CONFIG = "tunesmith_config.yaml"  # what marks a tunesmith run folder (train/output_safety.RUN_MARKER)
LOG_NAME = "trainer_log.jsonl"
RESULTS_FILE = "all_results.json"
STATUSES = ("running", "finished", "failed", "interrupted")
MAX_DEPTH = 4  # how deep below the root run folders are looked for
RECENT_S = 600  # a run of another machine counts as running while its files changed this recently
SKIPPED = {"node_modules", "__pycache__", "site-packages"}


@dataclasses.dataclass(frozen=True)
class Run:
    """One run folder, as its files describe it."""

    path: Path
    name: str  # the folder, relative to the scanned root
    stage: str
    method: str  # finetuning_type
    model: str
    status: str  # running, finished, failed or interrupted
    step: int
    total_steps: int
    last_loss: float | None
    best_loss: float | None
    duration: float | None  # seconds of training, summed over resumes
    size: int  # bytes on disk
    checkpoint: str | None  # the newest intact checkpoint-N: what a resume continues from
    error: str  # why a failed run stopped
    updated: float  # newest modification time of its top-level files

    @property
    def resumable(self) -> bool:
        """Interrupted, or failed (a full disk, a lost GPU) and worth another try: continues from its checkpoint."""
        return self.status in ("interrupted", "failed")


@dataclasses.dataclass(frozen=True)
class RunDetail:
    """What the runs view shows of one run."""

    run: Run
    losses: list[tuple[int, float]]  # (step, training loss) from trainer_log.jsonl
    eval_losses: list[tuple[int, float]]
    config: str  # tunesmith_config.yaml as written
    log: str  # the tail of the run's console log (when known) or of trainer_log.jsonl
    results: dict | None  # all_results.json


# ---------------------------------------------------------------- reading one run


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_log(folder: Path) -> list[dict]:
    """trainer_log.jsonl's records (a half-written last line is skipped)."""
    path = Path(folder) / LOG_NAME
    records = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def losses(folder: Path, key: str = "loss") -> list[tuple[int, float]]:
    """(step, loss) of every logged step; key "eval_loss" for the evaluation loss."""
    return [(r["step"], _number(r[key])) for r in read_log(folder) if _number(r.get(key)) is not None]


def _duration(records: list[dict], results: dict | None) -> float | None:
    """Training seconds: each resume restarts `elapsed`, so the last value of every stretch is added up."""
    total, previous = 0.0, None
    for record in records:
        elapsed = _number(record.get("elapsed"))
        if elapsed is None:
            continue
        if previous is not None and elapsed < previous:
            total += previous
        previous = elapsed
    if previous is not None:
        return total + previous
    return _number((results or {}).get("train_runtime"))


def folder_size(folder: Path) -> int:
    total = 0
    for parent, _, names in os.walk(folder):  # links are counted, never followed
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                continue
    return total


def _read_config(folder: Path) -> dict:
    import yaml

    try:
        values = yaml.safe_load((folder / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def newest_intact_checkpoint(folder: Path) -> Path | None:
    """The checkpoint `resume_from_checkpoint: true` continues from (train/checkpoints.py decides what is intact)."""
    from tunesmith.train.checkpoints import checkpoint_folders, checkpoint_problem

    for checkpoint in reversed(checkpoint_folders(folder)):
        if not checkpoint_problem(checkpoint):
            return checkpoint
    return None


def _status(folder: Path, finished: bool, updated: float) -> tuple[str, str]:
    """(status, error) from all_results.json and tunesmith_status.json (train/run_status.py)."""
    import socket

    from tunesmith.train import run_status

    if finished:
        return "finished", ""
    record = run_status.read(folder) or {}
    state = record.get("status")
    if state == "running" and run_status.alive(record):
        same_host = record.get("host") == socket.gethostname()
        if same_host or time.time() - updated < RECENT_S:
            return "running", ""
    if state == "failed":
        return "failed", str(record.get("error") or "")
    return "interrupted", ""  # killed, stopped, or a run older than tunesmith_status.json


def read_run(folder: str | Path, root: str | Path | None = None) -> Run:
    """The Run of a folder holding tunesmith_config.yaml; its name is relative to root (default: its parent)."""
    from tunesmith.train.checkpoints import finished_step, read_state

    folder = Path(folder)
    config = _read_config(folder)
    records = read_log(folder)
    results = _json(folder / RESULTS_FILE)
    results = results if isinstance(results, dict) else None
    finished = results is not None and finished_step(folder) is not None
    state, _ = read_state(folder / "trainer_state.json")
    step = records[-1]["step"] if records else 0
    total = next((r["total_steps"] for r in reversed(records) if isinstance(r.get("total_steps"), int)), 0)
    if finished and state:
        step, total = state["global_step"], state.get("max_steps") or total
    logged = [loss for _, loss in losses(folder)]
    try:
        updated = max(entry.stat().st_mtime for entry in folder.iterdir())
    except (OSError, ValueError):
        updated = 0.0
    status, error = _status(folder, finished, updated)
    checkpoint = None if finished else newest_intact_checkpoint(folder)
    try:
        name = str(folder.resolve().relative_to(Path(root).resolve())) if root is not None else folder.name
    except ValueError:
        name = str(folder)
    return Run(
        path=folder,
        name=name if name != "." else folder.resolve().name,
        stage=str(config.get("stage") or "sft"),
        method=str(config.get("finetuning_type") or "lora"),
        model=str(config.get("model_name_or_path") or ""),
        status=status,
        step=step,
        total_steps=total,
        last_loss=logged[-1] if logged else None,
        best_loss=min(logged) if logged else None,
        duration=_duration(records, results),
        size=folder_size(folder),
        checkpoint=checkpoint.name if checkpoint else None,
        error=error,
        updated=updated,
    )


def _log_tail(folder: Path, lines: int, allowed=None) -> str:
    """The console log the run wrote to (tunesmith_status.json's `log`) when it is still there and `allowed(path)`
    says it may be read, else trainer_log.jsonl's last records as lines; a failed run's error comes last."""
    from tunesmith.train import run_status

    record = run_status.read(folder) or {}
    text = ""
    log = record.get("log")
    if isinstance(log, str) and Path(log).is_file() and (allowed is None or allowed(Path(log))):
        raw = Path(log).read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
        text = "\n".join([line for line in raw.splitlines() if line.strip()][-lines:])
    if not text:
        rows = []
        for entry in read_log(folder)[-lines:]:
            parts = [f"step {entry['step']}/{entry.get('total_steps', '?')}"]
            parts += [
                f"{key} {entry[key]:.4g}"
                for key in ("loss", "eval_loss", "lr", "grad_norm")
                if isinstance(entry.get(key), (int, float))
            ]
            rows.append("  ".join(parts))
        text = "\n".join(rows)
    if record.get("status") == "failed" and record.get("error") and record["error"] not in text:
        text += ("\n" if text else "") + str(record["error"])
    return text


def run_detail(folder: str | Path, root: str | Path | None = None, lines: int = 40, allowed=None) -> RunDetail:
    folder = Path(folder)
    try:
        config = (folder / RUN_CONFIG).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        config = ""
    results = _json(folder / RESULTS_FILE)
    return RunDetail(
        run=read_run(folder, root),
        losses=losses(folder),
        eval_losses=losses(folder, "eval_loss"),
        config=config,
        log=_log_tail(folder, lines, allowed),
        results=results if isinstance(results, dict) else None,
    )


# ---------------------------------------------------------------- finding runs


def find_runs(root: str | Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every run folder (holding tunesmith_config.yaml) under root, root included, at most max_depth below it;
    hidden folders, links and checkpoint-N folders are not entered, nor is a run folder."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder; give the folder that holds your runs (e.g. saves)")
    found, todo = [], [(root, 0)]
    while todo:
        folder, depth = todo.pop()
        if (folder / RUN_CONFIG).is_file():
            found.append(folder)
            continue
        if depth >= max_depth:
            continue
        try:
            children = sorted(folder.iterdir(), reverse=True)
        except OSError:
            continue
        for child in children:
            skip = child.name.startswith(".") or child.name in SKIPPED or child.name.startswith("checkpoint-")
            if not skip and child.is_dir() and not child.is_symlink():
                todo.append((child, depth + 1))
    return sorted(found)


def scan(root: str | Path, max_depth: int = MAX_DEPTH) -> list[Run]:
    """The runs under root, newest first."""
    runs = [read_run(folder, root) for folder in find_runs(root, max_depth)]
    return sorted(runs, key=lambda run: run.updated, reverse=True)


# ---------------------------------------------------------------- what to do with a run


def resume_values(folder: str | Path) -> dict:
    """The config that continues an interrupted run from its newest intact checkpoint: its recorded config, with
    resume_from_checkpoint: true and output_dir the run folder."""
    folder = Path(folder)
    values = _read_config(folder)
    if not values:
        raise ConfigError(f"{folder / RUN_CONFIG} cannot be read; it is not a tunesmith run to resume")
    values = {key: value for key, value in values.items() if value is not None}  # secrets are null there
    values.update(output_dir=str(folder.resolve()), resume_from_checkpoint=True)
    values.pop("overwrite_output_dir", None)
    return values


def model_values(folder: str | Path) -> dict:
    """The config that loads a finished run's model (base + its adapter, or its full model) for chat or export."""
    from tunesmith.config.load import run_values

    values = run_values(Path(folder).resolve())
    return {key: value for key, value in values.items() if value is not None}


# ---------------------------------------------------------------- printing


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    value = round(value)
    return f"{value // 3600}:{value % 3600 // 60:02d}:{value % 60:02d}"


def format_size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def short_model(model: str) -> str:
    """A local model folder by its name; a hub id as it is."""
    return Path(model).name if os.path.isabs(model) else model


def row(run: Run) -> list[str]:
    """One run as the table's cells."""
    loss = lambda value: "-" if value is None else f"{value:.4f}"
    steps = f"{run.step}/{run.total_steps}" if run.total_steps else str(run.step)
    return [
        run.name,
        run.stage,
        run.method,
        short_model(run.model),
        run.status,
        steps,
        loss(run.last_loss),
        loss(run.best_loss),
        format_seconds(run.duration),
        format_size(run.size),
    ]


HEADERS = ["run", "stage", "method", "model", "status", "steps", "last loss", "best loss", "time", "size"]


def format_table(runs: list[Run]) -> str:
    rows = [HEADERS, *(row(run) for run in runs)]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in rows]
    notes = [f"  {run.name}: {run.error}" for run in runs if run.error]
    resumable = [
        f"  {run.name}: resume from {run.checkpoint or 'step 0'} with `tunesmith train "
        f"{run.path / RUN_CONFIG} resume_from_checkpoint=true output_dir={run.path}`"
        for run in runs
        if run.resumable
    ]
    return "\n".join(
        lines + (["", "failed:", *notes] if notes else []) + (["", "to resume:", *resumable] if resumable else [])
    )


def run_runs(root: str | Path = ".") -> int:
    """`tunesmith runs [ROOT]`: prints the table of every run under ROOT."""
    runs = scan(root)
    if not runs:
        print(f"no tunesmith runs under {root} (a run folder holds {RUN_CONFIG})")
        return 0
    print(format_table(runs))
    return 0
