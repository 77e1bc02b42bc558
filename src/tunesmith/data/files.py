"""Reads a dataset's rows (local files, a folder, or the hub) into a `datasets.Dataset`, checking files first."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.data.registry import DatasetSpec, loop_message
from tunesmith.errors import DataError
from tunesmith.hub import OFFLINE_VARIABLES, is_offline

BUILDERS = {".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
            ".txt": "text"}


def data_files(spec: DatasetSpec) -> list[Path]:
    """The files of a local dataset: the file itself, or the files of a folder, all of one supported type."""
    path = Path(spec.location)
    origin = f" (\"file_name\" of its entry in {spec.registry})" if spec.registry else ""
    loop = loop_message(path)
    if loop:
        raise DataError(f"dataset '{spec.name}': {loop}{origin}")
    if not path.exists():
        raise DataError(f"dataset '{spec.name}': file not found: {path}{origin}; check the path and dataset_dir")
    if path.is_file():
        files = [path]
    else:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        for entry in entries:
            if entry.is_symlink() and not entry.exists():  # a loop or a dangling link: not silently left out
                problem = loop_message(entry) or f"{entry} is a broken symlink (its target does not exist)"
                raise DataError(f"dataset '{spec.name}': folder {path}: {problem}")
        folders = [p.name for p in entries if p.is_dir()]
        if folders:
            raise DataError(f"dataset '{spec.name}': folder {path} holds subfolders ({', '.join(folders)}); put the "
                            "data files directly in it")
        files = [p for p in entries if p.is_file()]
        if not files:
            raise DataError(f"dataset '{spec.name}': folder {path} is empty; put data files in it "
                            f"({', '.join(BUILDERS)})")
    unsupported = [p.name for p in files if p.suffix.lower() not in BUILDERS]
    if unsupported:
        raise DataError(f"dataset '{spec.name}': cannot read {', '.join(unsupported)} in {path}: the file type is "
                        f"told by its extension, one of {', '.join(BUILDERS)}")
    kinds = sorted({BUILDERS[p.suffix.lower()] for p in files})
    if len(kinds) > 1:
        raise DataError(f"dataset '{spec.name}': folder {path} mixes file types ({', '.join(kinds)}); keep one "
                        "type per folder, or register each type as its own dataset")
    return files


def _json_lines(lines: list[str], path: Path, dataset: str) -> int:
    count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"dataset '{dataset}': {path} line {number}, column {exc.colno}: invalid JSON "
                            f"({exc.msg}); each line of a JSON-lines file must be one complete object") from None
        if not isinstance(row, dict):
            raise DataError(f"dataset '{dataset}': {path} line {number} (record {count}, 0-based) is a "
                            f"{type(row).__name__}, not an object of named columns")
        count += 1
    return count


def check_json_file(path: Path, dataset: str) -> int:
    """Parses a .json (a list of objects, or JSON lines like LLaMA-Factory accepts) or .jsonl file and returns its
    record count; a problem is reported with the file, line and column, or the record index."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"dataset '{dataset}': {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    body = text.strip()
    if not body:
        raise DataError(f"dataset '{dataset}': {path} is empty; it needs at least one record")
    if path.suffix.lower() == ".jsonl" or body.startswith("{"):
        lines = text.splitlines()
        first = next(line for line in lines if line.strip())
        try:
            json.loads(first)
        except json.JSONDecodeError:  # not JSON lines; maybe one pretty-printed object
            if path.suffix.lower() == ".json":
                return _json_document(text, path, dataset)
        count = _json_lines(lines, path, dataset)
    else:
        count = _json_document(text, path, dataset)
    if count == 0:
        raise DataError(f"dataset '{dataset}': {path} holds no records")
    return count


def _json_document(text: str, path: Path, dataset: str) -> int:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"dataset '{dataset}': {path} line {exc.lineno}, column {exc.colno}: invalid JSON "
                        f"({exc.msg})") from None
    if not isinstance(rows, list):
        raise DataError(f"dataset '{dataset}': {path} holds one JSON {type(rows).__name__}; it must be a list of "
                        "records ([{...}, {...}]) or JSON lines (one object per line)")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"dataset '{dataset}': {path} record {index} (0-based) is a {type(row).__name__}, "
                            "not an object of named columns")
    return len(rows)


def _file_records(path: Path, dataset: str) -> int | None:
    """How many records one data file holds, where that is cheap and certain (not CSV: quoting and blank lines)."""
    kind = BUILDERS.get(path.suffix.lower())
    try:
        if kind == "json":
            return check_json_file(path, dataset)
        if kind == "text":
            return len(path.read_text(encoding="utf-8").splitlines())
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except (DataError, OSError, UnicodeDecodeError, ValueError):
        return None
    return None


def locate_record(spec: DatasetSpec, index: int) -> tuple[Path, int] | None:
    """For a dataset of several files (a folder), the file holding its record `index` and the record's index in
    that file; None for a single file or where the files' record counts are unknown. Used for error messages."""
    if not spec.is_local:
        return None
    try:
        paths = data_files(spec)
    except DataError:
        return None
    if len(paths) < 2:
        return None
    for path in paths:
        count = _file_records(path, spec.name)
        if count is None:
            return None
        if index < count:
            return path, index
        index -= count
    return None


def load_files(paths: list[str | Path], dataset: str, *, split: str = "train", cache_dir: str | None = None):
    """Local files of one type as one `datasets.Dataset`, through `datasets.load_dataset` after our own checks."""
    from datasets import load_dataset

    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise DataError(f"dataset '{dataset}': {loop_message(path) or f'file not found: {path}'}")
        if path.suffix.lower() not in BUILDERS:
            raise DataError(f"dataset '{dataset}': cannot read {path}: unknown extension; use one of "
                            f"{', '.join(BUILDERS)}")
        if path.stat().st_size == 0:
            raise DataError(f"dataset '{dataset}': {path} is empty; it needs at least one record")
        if BUILDERS[path.suffix.lower()] == "json":
            check_json_file(path, dataset)
    builder = BUILDERS[paths[0].suffix.lower()]
    try:
        rows = load_dataset(builder, data_files=[str(p) for p in paths], split=split, cache_dir=cache_dir)
    except Exception as exc:  # pyarrow / datasets errors become one message naming the files
        names = ", ".join(str(p) for p in paths)
        if "corresponds to no data" in str(exc):  # e.g. a CSV with only its header line
            raise DataError(f"dataset '{dataset}': {names} holds no records") from None
        detail = " ".join(str(exc).split())[:500]
        raise DataError(f"dataset '{dataset}': could not read {names} as {builder}: {type(exc).__name__}: "
                        f"{detail}") from None
    if len(rows) == 0:
        raise DataError(f"dataset '{dataset}': {', '.join(str(p) for p in paths)} holds no records")
    return rows


def _offline_error(spec: DatasetSpec) -> DataError:
    return DataError(f"dataset '{spec.name}' needs a download from the hub ({spec.location}) but tunesmith is offline "
                     f"({' or '.join(OFFLINE_VARIABLES)} is set, or the hub cannot be reached); download it and "
                     f"register a local file_name instead (in {spec.registry or 'dataset_info.json'})")


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "TimeoutError",
                         "ConnectTimeout", "ReadTimeout", "ConnectError", "Timeout"})


def load_remote(spec: DatasetSpec, cache_dir: str | None = None):
    """A hub dataset through `datasets.load_dataset`, only when online; other remote kinds explain themselves."""
    if spec.load_from == "script":  # since datasets 4 a "script" folder is read as a folder of data files
        return _load_folder_dataset(spec, cache_dir)
    if is_offline():
        raise _offline_error(spec)
    if spec.load_from != "hf_hub":
        tool = {"ms_hub": "ModelScope", "om_hub": "Modelers (openMind)", "cloud_file": "cloud storage"}[spec.load_from]
        raise DataError(f"dataset '{spec.name}' is on {tool} ({spec.location}), which tunesmith does not download "
                        f"from; download it and register a local file_name instead (in {spec.registry})")
    from datasets import DownloadConfig, load_dataset

    try:
        return load_dataset(spec.location, name=spec.subset, data_dir=spec.folder, split=spec.split,
                            cache_dir=cache_dir, download_config=DownloadConfig(max_retries=1))
    except Exception as exc:
        if _is_connection_error(exc) or any(_is_connection_error(e) for e in (exc.__cause__, exc.__context__) if e):
            raise _offline_error(spec) from None
        detail = " ".join(str(exc).split())[:500]
        raise DataError(f"dataset '{spec.name}': could not load {spec.location} from the hub: "
                        f"{type(exc).__name__}: {detail}") from None


def _load_folder_dataset(spec: DatasetSpec, cache_dir: str | None):
    from datasets import load_dataset

    folder = Path(spec.location)
    if not folder.is_dir() or any(folder.glob("*.py")):
        raise DataError(f"dataset '{spec.name}': script_url {folder} must be a folder of data files; dataset loading "
                        "scripts are not supported by datasets>=4 — convert the data to files and use file_name")
    try:
        return load_dataset(str(folder), name=spec.subset, data_dir=spec.folder, split=spec.split,
                            cache_dir=cache_dir)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:500]
        raise DataError(f"dataset '{spec.name}': could not read folder {folder}: {type(exc).__name__}: "
                        f"{detail}") from None


def check_available(spec: DatasetSpec) -> None:
    """Fails fast, before anything is loaded, on a missing local file or a hub dataset while offline."""
    if spec.is_local:
        data_files(spec)
    elif spec.load_from != "script" and is_offline():
        raise _offline_error(spec)


def load_rows(spec: DatasetSpec, cache_dir: str | None = None):
    """The raw rows of one dataset, before any conversion or sampling."""
    if not spec.is_local:
        rows = load_remote(spec, cache_dir)
    else:
        rows = load_files(data_files(spec), spec.name, split=spec.split, cache_dir=cache_dir)
    if len(rows) == 0:
        raise DataError(f"{spec.where()} holds no records")
    return rows


def sample(rows, spec: DatasetSpec, max_samples: int | None = None, seed: int = 42):
    """Applies the registry's num_samples (a random subset, oversampled when larger, like LLaMA-Factory) and then
    max_samples (the first N). Returns (rows, source indices or None when rows are a prefix of the original)."""
    import numpy as np

    indexes = None
    if spec.num_samples is not None:
        rng = np.random.default_rng(seed)
        indexes = rng.permutation(len(rows))[: spec.num_samples]
        missing = spec.num_samples - len(indexes)
        if missing > 0:
            indexes = np.concatenate([indexes, rng.choice(len(rows), missing)])
        indexes = indexes.tolist()
    if max_samples is not None:
        if indexes is not None:
            indexes = indexes[:max_samples]
        elif max_samples < len(rows):
            return rows.select(range(max_samples)), None
    return (rows, None) if indexes is None else (rows.select(indexes), indexes)
