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
from tunesmith.staging import publish_entries
from tunesmith.train import output_safety

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"  # transformers writes it last: a checkpoint without it is incomplete
VERSIONED_PACKAGES = ("tunesmith", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool, config) -> None:
    """Before any data or model load: refuses a non-empty folder unless overwriting (a previous run, nothing else)
    or resuming, and runs the preflight (writable, parent a folder, disk space); changes nothing on disk."""
    if output_dir.is_dir() and any(output_dir.iterdir()) and not resuming and not overwrite:
        raise ConfigError(
            f"output_dir {output_dir} is not empty; set overwrite_output_dir: true to replace it, "
            "resume_from_checkpoint: true to continue it, or pick another output_dir"
        )
    output_safety.preflight(output_dir, config, removing=_removing(output_dir, overwrite, resuming))


def _removing(output_dir: Path, overwrite: bool, resuming: bool) -> bool:
    return overwrite and not resuming and output_dir.is_dir() and any(output_dir.iterdir())


def prepare_output_dir(output_dir: Path, overwrite: bool, resuming: bool, config) -> None:
    """Creates output_dir; with overwrite (and not resuming) removes what a previous run left there, checked again."""
    check_output_dir(output_dir, overwrite, resuming, config)
    if _removing(output_dir, overwrite, resuming):
        log.warning("overwrite_output_dir: removing the previous run in %s", output_dir)
        output_safety.remove_run(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output_dir {output_dir} cannot be created: {exc.strerror}") from None


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

    values = {key: (None if output_safety.is_secret(key) else value) for key, value in config.flat().items()}
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
    publish_entries(staging, output_dir)
