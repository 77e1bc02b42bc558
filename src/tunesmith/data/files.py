"""Reads a registered dataset (local files or the hub) into a `datasets.Dataset`, checking files before pyarrow does."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunesmith.data.registry import DatasetSpec
from tunesmith.errors import DataError

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow",
            ".txt": "text"}


def _offline() -> bool:
    return any(os.environ.get(key, "").lower() in ("1", "true", "yes") for key in
               ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def read_json_rows(path: Path, dataset: str) -> list[dict]:
    """Parses a .json (a list of objects, or JSON lines) or .jsonl file; errors name the file, line and record."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise DataError(f"dataset '{dataset}': {path} is empty")
    rows = None
    if path.suffix == ".json" and text.lstrip()[:1] in "[{":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            first_line = text.lstrip().splitlines()[0]
            if not (text.lstrip().startswith("{") and _is_json(first_line)):  # not JSON lines either
                raise DataError(f"dataset '{dataset}': {path} line {exc.lineno}, column {exc.colno}: "
                                f"invalid JSON: {exc.msg}") from None
    if rows is None:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"dataset '{dataset}': {path} line {number}, column {exc.colno}: invalid JSON "
                                f"line: {exc.msg}") from None
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        raise DataError(f"dataset '{dataset}': {path} must hold a list of records (JSON objects)")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"dataset '{dataset}': {path} record {index} (0-based) is a {type(row).__name__}, "
                            "not an object with named columns")
    return rows


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def _files_of(spec: DatasetSpec) -> list[Path]:
    path = Path(spec.location)
    if not path.exists():
        origin = f" (file_name in {spec.registry})" if spec.registry else ""
        raise DataError(f"dataset '{spec.name}': file not found: {path}{origin}")
    files = spec.local_paths()
    files = [f for f in files if f.suffix.lower() in BUILDERS]
    if not files:
        raise DataError(f"dataset '{spec.name}': {path} holds no data file ({', '.join(sorted(BUILDERS))})")
    kinds = {BUILDERS[f.suffix.lower()] for f in files}
    if len(kinds) > 1:
        raise DataError(f"dataset '{spec.name}': folder {path} mixes file types ({', '.join(sorted(kinds))}); "
                        "keep one type per dataset")
    return files


def load_local(spec: DatasetSpec, cache_dir: str | None = None):
    """A local file, several files or a folder of one type, as a Dataset."""
    from datasets import Dataset, concatenate_datasets, load_dataset

    files = _files_of(spec)
    builder = BUILDERS[files[0].suffix.lower()]
    try:
        if builder == "json":
            parts = [Dataset.from_list(read_json_rows(f, spec.name)) for f in files]
            dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
        else:
            for f in files:
                if f.stat().st_size == 0:
                    raise DataError(f"dataset '{spec.name}': {f} is empty")
            dataset = load_dataset(builder, data_files=[str(f) for f in files], split="train", cache_dir=cache_dir)
    except DataError:
        raise
    except Exception as exc:  # pyarrow/datasets errors become one message naming the files
        names = ", ".join(str(f) for f in files)
        raise DataError(f"dataset '{spec.name}': could not read {names}: {type(exc).__name__}: {exc}") from None
    if len(dataset) == 0:
        raise DataError(f"dataset '{spec.name}': {spec.location} holds no records")
    return dataset


def load_hub(spec: DatasetSpec, cache_dir: str | None = None):
    """A hub dataset through `datasets`, only when online."""
    if _offline():
        raise DataError(f"dataset '{spec.name}' needs a download from the hub ({spec.location}) but tunesmith is "
                        "offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set): download it and register a local "
                        "file_name instead")
    from datasets import load_dataset

    try:
        return load_dataset(spec.location, name=spec.subset, data_dir=spec.folder, split=spec.split,
                            cache_dir=cache_dir)
    except Exception as exc:
        raise DataError(f"dataset '{spec.name}': could not load {spec.location} from the hub: "
                        f"{type(exc).__name__}: {exc}") from None


def load_spec(spec: DatasetSpec, *, max_samples: int | None = None, seed: int = 42, cache_dir: str | None = None):
    """Loads one dataset and applies the registry's num_samples and the config's max_samples."""
    import numpy as np

    dataset = load_local(spec, cache_dir) if spec.source == "file" else load_hub(spec, cache_dir)
    if spec.num_samples is not None:  # like LLaMA-Factory: sample without replacement, then oversample
        rng = np.random.default_rng(seed)
        indexes = rng.permutation(len(dataset))[: spec.num_samples]
        missing = spec.num_samples - len(indexes)
        if missing > 0:
            indexes = np.concatenate([indexes, rng.choice(len(dataset), missing)])
        dataset = dataset.select(indexes.tolist())
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return dataset
