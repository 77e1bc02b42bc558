"""The output folder: refusing to clobber it, recording the run, saving the final model (resume: checkpoints.py)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from importlib import metadata
from pathlib import Path

from tunesmith.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"  # transformers writes it last: a checkpoint without it is incomplete
SECRET_KEYS = ("hf_hub_token", "api_key", "hub_token")  # never written into a run folder
VERSIONED_PACKAGES = ("tunesmith", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuses a non-empty folder unless overwriting or resuming; changes nothing on disk."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file, not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not resuming and not overwrite:
        raise ConfigError(
            f"output_dir {output_dir} is not empty; set overwrite_output_dir: true to replace it, "
            "resume_from_checkpoint: true to continue it, or pick another output_dir"
        )


def prepare_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Creates output_dir; with overwrite (and not resuming) clears what a previous run left there."""
    check_output_dir(output_dir, overwrite, resuming)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not resuming:
        log.warning("overwrite_output_dir: clearing %s", output_dir)
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def record_run(output_dir: Path, config) -> None:
    """Writes the resolved config (tunesmith_config.yaml) and the package versions (versions.json)."""
    import yaml

    values = {key: (None if key in SECRET_KEYS else value) for key, value in config.flat().items()}
    text = yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
    (output_dir / "tunesmith_config.yaml").write_text(text, encoding="utf-8")
    (output_dir / "versions.json").write_text(json.dumps(package_versions(), indent=2) + "\n", encoding="utf-8")


def write_json(path: Path, data: dict) -> None:
    """Writes through a temporary file, flushed to disk, and a rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def save_final(trainer, tokenizer, output_dir: Path) -> None:
    """Saves the model/adapter and tokenizer into a staging folder, then moves the files into output_dir.

    all_results.json marks a finished run (run.py writes it last), so a previous one is removed first: a kill while
    the files move never leaves a folder that looks finished but holds half of the new save."""
    staging = output_dir / ".staging-final"
    if trainer.is_world_process_zero():
        (output_dir / "all_results.json").unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
    trainer.save_model(str(staging))  # every rank takes part (DeepSpeed ZeRO-3 gathers the weights); rank 0 writes
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(str(staging))
    for item in staging.iterdir():
        target = output_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    staging.rmdir()
