"""Output folder safety: what overwrite_output_dir may remove, the preflight before any load, and secrets."""

from __future__ import annotations

import copy
import copyreg
import os
import re
import shutil
from pathlib import Path

from tunesmith.errors import ConfigError

# Keys whose values are secrets: never written into a run folder (tunesmith_config.yaml, training_args.bin).
SECRET_KEYS = ("hf_hub_token", "api_key", "hub_token")
SECRET_SUFFIXES = ("_token", "_key", "_secret", "_password")  # e.g. a future ms_hub_token; not max_new_tokens

RUN_MARKER = "tunesmith_config.yaml"  # the first file a training run writes, and only tunesmith writes it
CHECKPOINT = re.compile(r"^checkpoint-\d+$")
# What a run writes at the top of output_dir (and in checkpoint-N): tunesmith's files, the Trainer's, the saved
# model or adapter with its tokenizer.
RUN_FILES = {
    RUN_MARKER, "versions.json", "trainer_log.jsonl", "all_results.json", "trainer_state.json", "training_args.bin",
    "training_loss.png", "eval_loss.png", "train_results.json", "eval_results.json", "README.md",
    "generated_predictions.jsonl", "predict_results.json",  # `tunesmith eval` predictions kept in a run folder
    "config.json", "generation_config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "processor_config.json",
    "preprocessor_config.json",
    "tunesmith_status.json",  # train/run_status.py: the training process and how it stopped
}
WEIGHTS = re.compile(r"^(model|pytorch_model|adapter_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?$")
CHECKPOINT_FILES = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|scheduler\.bin|latest|zero_to_(fp32|torch)\.py|"
                              r"rng_state(_\d+)?\.pth|random_states_\d+\.pkl|"
                              r"(optimizer|pytorch_model_fsdp)(_\d+)?(_rank\d+)?\.bin)$")  # + DeepSpeed, FSDP
# Folders a run writes, with the files each may hold (at any depth).
RUN_FOLDERS = {
    "runs": re.compile(r"^events\.out\.tfevents\..+$"),  # TensorBoard
    "pissa_init": None, ".staging-final": None, "ref": None, "additional_chat_templates": re.compile(r".+\.jinja$"),
}
CHECKPOINT_FOLDERS = re.compile(r"^(global_step\d+|pytorch_model_fsdp_\d+|optimizer_\d+)$")  # DeepSpeed, FSDP
SHARD_FILES = re.compile(r"^(.+\.pt|.+\.distcp|\.metadata)$")


def is_secret(key: str) -> bool:
    return key in SECRET_KEYS or key.endswith(SECRET_SUFFIXES)


# ---------------------------------------------------------------- what overwrite may remove


def _run_file(name: str) -> bool:
    name = name.removesuffix(".tmp")  # written through a temporary file and a rename
    return name in RUN_FILES or bool(WEIGHTS.match(name))


def _foreign_in(folder: Path, allowed, prefix: str) -> list[str]:
    """Files under folder (any depth) that `allowed` (a regex; None: a saved model or adapter) does not match."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        name = f"{prefix}{entry.name}"
        if entry.is_dir() and not entry.is_symlink():
            foreign += _foreign_in(entry, allowed, f"{name}/")
        elif not (allowed.match(entry.name) if allowed is not None else _run_file(entry.name)):
            foreign.append(name)
    return foreign


def _foreign_in_checkpoint(folder: Path) -> list[str]:
    foreign = []
    for entry in sorted(folder.iterdir()):
        name = f"{folder.name}/{entry.name}"
        if entry.is_dir() and not entry.is_symlink():
            if CHECKPOINT_FOLDERS.match(entry.name):
                foreign += _foreign_in(entry, SHARD_FILES, f"{name}/")
            elif entry.name in RUN_FOLDERS:
                foreign += _foreign_in(entry, RUN_FOLDERS[entry.name], f"{name}/")
            else:
                foreign.append(f"{name}/")
        elif not (_run_file(entry.name) or CHECKPOINT_FILES.match(entry.name)):
            foreign.append(name)
    return foreign


def foreign_files(output_dir: Path) -> list[str]:
    """Paths (relative to output_dir) of what a tunesmith training run never writes; empty for a previous run."""
    foreign = []
    for entry in sorted(output_dir.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if CHECKPOINT.match(entry.name):
                foreign += _foreign_in_checkpoint(entry)
            elif entry.name in RUN_FOLDERS:
                foreign += _foreign_in(entry, RUN_FOLDERS[entry.name], f"{entry.name}/")
            else:
                foreign.append(f"{entry.name}/")
        elif not _run_file(entry.name):
            foreign.append(entry.name)
    return foreign


def protected_paths(config) -> list[tuple[str, Path]]:
    """(what, path) of every folder or file overwrite must never remove: the working folder, $HOME and what the
    run itself reads (local model, adapters, data, config file, ...)."""
    model, method, data = config.model, config.method, config.data
    deepspeed = config.training_kwargs().get("deepspeed")
    named = [
        ("model_name_or_path", model.model_name_or_path), ("cache_dir", model.cache_dir),
        *(("adapter_name_or_path", path) for path in model.adapter_name_or_path or []),
        ("dataset_dir", data.dataset_dir), ("tokenized_path", data.tokenized_path),
        ("ref_model", method.ref_model), ("reward_model", method.reward_model),
        ("deepspeed", deepspeed if isinstance(deepspeed, str) else None),
        ("the config file", config.source if config.source != "<overrides>" else None),
    ]
    found = [(what, Path(value)) for what, value in named if value and Path(value).exists()]  # local ones only
    return found


def check_removable(output_dir: Path, protected: list[tuple[str, Path]]) -> None:
    """Refuses (ConfigError) to clear output_dir unless it holds a previous tunesmith run and nothing else, and
    neither is nor holds the working folder, $HOME, `/` or anything the run reads."""
    out = output_dir.resolve()
    fix = "pick an output_dir of its own (e.g. saves/my-run) or remove the folder yourself"
    if out == Path(out.anchor):
        raise ConfigError(f"overwrite_output_dir: refusing to clear output_dir {output_dir}: it is the root folder; "
                          f"{fix}")
    for what, path in [("the working folder", Path.cwd()), ("your home folder", Path.home())]:
        where = path.resolve()
        if where == out or where.is_relative_to(out):
            relation = "is" if where == out else "holds"
            raise ConfigError(f"overwrite_output_dir: refusing to clear output_dir {output_dir}: it {relation} "
                              f"{what} ({path}); {fix}")
    for what, path in protected:
        where = path.resolve()
        if where == out or where.is_relative_to(out) or out.is_relative_to(where):
            relation = "is" if where == out else "holds" if where.is_relative_to(out) else "is inside"
            raise ConfigError(f"overwrite_output_dir: refusing to clear output_dir {output_dir}: it {relation} "
                              f"{what} of this run ({path}); {fix}")
    if not (output_dir / RUN_MARKER).is_file():
        raise ConfigError(f"overwrite_output_dir: refusing to clear output_dir {output_dir}: it is not a tunesmith "
                          f"training run (no {RUN_MARKER}); overwrite only replaces a previous run: {fix}")
    foreign = foreign_files(output_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"overwrite_output_dir: refusing to clear output_dir {output_dir}: it holds files a "
                          f"tunesmith run does not write ({shown}); move them out, or {fix}")


def remove_run(output_dir: Path) -> None:
    """Removes what a previous run wrote in output_dir (check_removable said it is only that); keeps the folder."""
    for entry in sorted(output_dir.iterdir()):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()  # a link is removed, never followed
        except OSError as exc:
            raise ConfigError(f"overwrite_output_dir: could not remove {entry} of the previous run: {exc.strerror}; "
                              "make the folder writable or remove it yourself") from None


# ---------------------------------------------------------------- preflight


def _nearest_existing(path: Path) -> Path:
    """path itself or its closest ancestor that exists; a file or a broken link on the way is a ConfigError."""
    for folder in [path, *path.parents]:
        if os.path.lexists(folder):
            if not folder.exists():
                raise ConfigError(f"output_dir {path} cannot be created: {folder} is a broken link")
            if not folder.is_dir():
                what = "output_dir" if folder == path else f"output_dir {path} cannot be created:"
                raise ConfigError(f"{what} {folder} is a file, not a folder; pick another output_dir")
            return folder
    return Path(path.anchor or ".")


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _read_only(folder: Path, output_dir: Path, doing: str) -> ConfigError:
    return ConfigError(f"output_dir {output_dir}: cannot {doing}: {folder} is read-only (no write permission, or a "
                       "read-only disk); make it writable or pick another output_dir")


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(_size(child) for child in path.iterdir())


def checkpoint_estimate(config) -> int:
    """A lower bound of the bytes one save of this run writes: the local model folder's files (its weights only
    for full and freeze tuning, whose saves hold the whole model); 0 for a hub model."""
    name = config.model.model_name_or_path
    folder = Path(name) if name else None
    if folder is None or not folder.is_dir():
        return 0
    whole_model = config.method.finetuning_type in ("full", "freeze")
    total = 0
    for item in folder.iterdir():
        if item.is_file() and (whole_model or not item.name.endswith((".safetensors", ".bin", ".pt", ".pth"))):
            total += item.stat().st_size
    return total


def preflight(output_dir: Path, config, removing: bool) -> None:
    """Before any data or model is loaded: output_dir (or the folder that will hold it) is a writable folder, an
    overwrite can remove the previous run, and the disk has room for one save. Raises ConfigError."""
    existing = _nearest_existing(output_dir)
    if removing:
        check_removable(output_dir, protected_paths(config))
    clear = "clear the previous run (overwrite_output_dir)"
    if not _writable(existing):
        doing = "create it" if existing != output_dir else clear if removing else "write into it"
        raise _read_only(existing, output_dir, doing)
    freed = 0
    if removing:
        for entry in output_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                for folder in [entry, *(p for p in entry.rglob("*") if p.is_dir() and not p.is_symlink())]:
                    if not _writable(folder):
                        raise _read_only(folder, output_dir, clear)
        freed = _size(output_dir)
    needed = checkpoint_estimate(config)
    free = shutil.disk_usage(existing).free + freed
    if needed > free:
        gib = 1024**3
        raise ConfigError(f"output_dir {output_dir}: its disk has {free / gib:.2f} GiB free, but one save of this run "
                          f"needs about {needed / gib:.2f} GiB (the size of {config.model.model_name_or_path}); free "
                          "some space or pick an output_dir on another disk")


# ---------------------------------------------------------------- secrets


def _reduce_without_secrets(self, protocol):
    """Pickles (torch.save: training_args.bin) as the plain transformers/TRL class, every secret set to None."""
    public = type(self).__mro__[1]
    state = {key: (None if is_secret(key) else value) for key, value in vars(self).items()}
    return copyreg._reconstructor, (public, object, None), state  # what pickle itself uses before protocol 2


def _copy_with_secrets(self):
    copied = object.__new__(type(self))
    copied.__dict__.update(vars(self))
    return copied


def _deepcopy_with_secrets(self, memo):
    copied = object.__new__(type(self))
    memo[id(self)] = copied
    copied.__dict__.update(copy.deepcopy(vars(self), memo))
    return copied


def keep_secrets_out_of_pickles(args) -> None:
    """Makes the Trainer's torch.save(args) (training_args.bin in output_dir and every checkpoint) store no secret
    (hub_token, ...): in memory args keeps it, so push_to_hub still works; copies keep it too."""
    cls = type(args)
    if cls.__dict__.get("_secrets_stay_in_memory"):
        return
    args.__class__ = type(cls.__name__, (cls,), {
        "_secrets_stay_in_memory": True, "__reduce_ex__": _reduce_without_secrets, "__copy__": _copy_with_secrets,
        "__deepcopy__": _deepcopy_with_secrets, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
    })
