"""The output folder: refusing to clobber it, finding a complete checkpoint to resume, recording the run."""

from __future__ import annotations

import json
import logging
import re
import shutil
from importlib import metadata
from pathlib import Path

from tunesmith.errors import ConfigError
from tunesmith.train import output_safety

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"  # transformers writes it last: a checkpoint without it is incomplete
VERSIONED_PACKAGES = ("tunesmith", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders that were fully written, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def resolve_resume(output_dir: Path, resume) -> str | None:
    """Turns `resume_from_checkpoint` (true, a path or None) into the checkpoint folder to load."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() == "true":
        checkpoints = complete_checkpoints(output_dir)
        if not checkpoints:
            raise ConfigError(f"resume_from_checkpoint: true, but {output_dir} holds no complete checkpoint-N folder")
        return str(checkpoints[-1])
    path = Path(str(resume))
    if not path.is_dir():
        raise ConfigError(f"resume_from_checkpoint: {path} does not exist")
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"resume_from_checkpoint: {path} is incomplete (no {STATE_FILE}); pick an earlier one")
    return str(path)


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
    """Writes through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def save_final(trainer, tokenizer, output_dir: Path) -> None:
    """Saves the model/adapter and tokenizer into a staging folder, then moves the files into output_dir."""
    staging = output_dir / ".staging-final"
    if trainer.is_world_process_zero() and staging.exists():
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
