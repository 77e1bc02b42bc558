"""The dataset registry: LLaMA-Factory's dataset_info.json schema, read strictly, plus plain file paths."""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

from tunesmith.errors import DataError

REGISTRY_FILE = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
               "audios", "chosen", "rejected", "kto_tag")
TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
SOURCE_KEYS = ("file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
ENTRY_KEYS = (*SOURCE_KEYS, "formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags",
              "load_from", "file_sha1", "stage")
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "chosen": "chosen",
                  "rejected": "rejected"}
SHAREGPT_COLUMNS = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it comes from and how its columns map onto the canonical record."""

    name: str
    source: str  # "file" or "hub"
    location: str  # a local path (file or folder) or a hub id
    formatting: str = "alpaca"
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    columns: dict = dataclasses.field(default_factory=dict)
    tags: dict = dataclasses.field(default_factory=dict)
    registry: str | None = None  # the dataset_info.json it came from

    def column(self, key: str) -> str | None:
        """The source column for a canonical key, with LLaMA-Factory's defaults for the formatting."""
        defaults = ALPACA_COLUMNS if self.formatting == "alpaca" else SHAREGPT_COLUMNS
        return self.columns.get(key, defaults.get(key))

    def tag(self, key: str) -> str | None:
        defaults = OPENAI_TAGS if self.formatting == "openai" else SHAREGPT_TAGS
        return self.tags.get(key, defaults.get(key))

    def local_paths(self) -> list[Path]:
        """The files behind a local dataset (a folder lists its files)."""
        if self.source != "file":
            return []
        path = Path(self.location)
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [path]


def read_registry(dataset_dir: str | Path) -> dict:
    """Loads dataset_info.json, naming the line and column of a syntax error."""
    path = Path(dataset_dir) / REGISTRY_FILE
    if not Path(dataset_dir).is_dir():
        raise DataError(f"dataset_dir {dataset_dir} does not exist; set dataset_dir to the folder holding "
                        f"{REGISTRY_FILE}")
    if not path.is_file():
        raise DataError(f"{path} not found: dataset names are looked up in {REGISTRY_FILE} inside dataset_dir "
                        "(or give a file path as the dataset)")
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(registry, dict):
        raise DataError(f"{path}: must be a JSON object of dataset name -> entry")
    return registry


def _check_entry(name: str, entry, path: Path) -> None:
    where = f"{path}: dataset '{name}'"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: entry must be an object, got {type(entry).__name__}")
    for key in entry:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(key, ENTRY_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(ENTRY_KEYS)}"
            raise DataError(f"{where}: unknown key '{key}'{hint}")
    if not any(key in entry for key in SOURCE_KEYS):
        raise DataError(f"{where}: needs one of {', '.join(SOURCE_KEYS)}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DataError(f"{where}: formatting '{formatting}' is not one of {', '.join(FORMATTINGS)}")
    for group, allowed in (("columns", COLUMN_KEYS), ("tags", TAG_KEYS)):
        block = entry.get(group, {})
        if not isinstance(block, dict):
            raise DataError(f"{where}: '{group}' must be an object")
        for key in block:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
                raise DataError(f"{where}: unknown {group} key '{key}'{hint}")


def spec_from_entry(name: str, entry: dict, dataset_dir: Path, registry_path: Path) -> DatasetSpec:
    _check_entry(name, entry, registry_path)
    common = {
        "formatting": entry.get("formatting", "alpaca"),
        "ranking": bool(entry.get("ranking", False)),
        "subset": entry.get("subset"),
        "split": entry.get("split", "train"),
        "folder": entry.get("folder"),
        "num_samples": entry.get("num_samples"),
        "columns": dict(entry.get("columns", {})),
        "tags": dict(entry.get("tags", {})),
        "registry": str(registry_path),
    }
    if "file_name" in entry:
        return DatasetSpec(name=name, source="file", location=str(dataset_dir / entry["file_name"]), **common)
    for key in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"):
        if key in entry:
            return DatasetSpec(name=name, source="hub", location=str(entry[key]), **common)
    raise AssertionError("checked above")


def spec_from_path(path: Path) -> DatasetSpec:
    """A dataset given as a file or folder: alpaca columns unless the rows hold `messages`/`conversations`."""
    return DatasetSpec(name=str(path), source="file", location=str(path), formatting="auto")


def resolve_datasets(names: list[str] | None, dataset_dir: str | Path) -> list[DatasetSpec]:
    """Looks each name up in dataset_dir/dataset_info.json; a name that is an existing path is taken as a file."""
    specs = []
    registry = None
    dataset_dir = Path(dataset_dir)
    for name in names or []:
        for candidate in (Path(name), dataset_dir / name):
            if candidate.suffix and candidate.exists() or candidate.is_dir() and not (
                    candidate / REGISTRY_FILE).exists() and candidate != dataset_dir:
                specs.append(spec_from_path(candidate))
                break
        else:
            if registry is None:
                registry = read_registry(dataset_dir)
            if name not in registry:
                close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                listed = ", ".join(sorted(registry)) or "(none)"
                raise DataError(f"dataset '{name}' is not registered in {dataset_dir / REGISTRY_FILE}.{hint} "
                                f"Registered: {listed}")
            specs.append(spec_from_entry(name, registry[name], dataset_dir, dataset_dir / REGISTRY_FILE))
    return specs
