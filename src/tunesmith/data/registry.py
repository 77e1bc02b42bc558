"""The dataset registry: LLaMA-Factory's dataset_info.json read strictly into DatasetSpecs, plus plain file paths."""

from __future__ import annotations

import dataclasses
import difflib
import errno
import json
import os
import re
from pathlib import Path

from tunesmith.errors import DataError

REGISTRY_FILE = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
               "audios", "chosen", "rejected", "kto_tag")
TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
# Where the data comes from, in LLaMA-Factory's order of preference: entry key -> load_from.
SOURCES = {"hf_hub_url": "hf_hub", "ms_hub_url": "ms_hub", "om_hub_url": "om_hub", "script_url": "script",
           "cloud_file_name": "cloud_file", "file_name": "file"}
OPTION_KEYS = ("formatting", "ranking", "subset", "split", "folder", "num_samples", "columns", "tags", "load_from")
COLON = re.compile(r"\s*:")  # after a string, makes it an object key
IGNORED_KEYS = ("file_sha1",)  # written by older LLaMA-Factory versions; never read
ENTRY_KEYS = (*SOURCES, *OPTION_KEYS, *IGNORED_KEYS)

# LLaMA-Factory's defaults. They apply only while an entry has no "columns" / "tags" block: a block replaces them,
# so a key it leaves out is unmapped (None).
DEFAULT_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "messages": "conversations"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
# LLaMA-Factory requires a tags block for formatting "openai"; without one we assume OpenAI's own names.
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it comes from and how its columns map onto the canonical record."""

    name: str
    load_from: str  # file, hf_hub, ms_hub, om_hub, script or cloud_file
    location: str  # an absolute local path, or a hub id / cloud path
    formatting: str = "alpaca"  # alpaca, sharegpt, openai; "auto" for a path given as the dataset
    ranking: bool = False
    subset: str | None = None
    split: str = "train"
    folder: str | None = None
    num_samples: int | None = None
    columns: dict | None = None  # the entry's "columns" block; None when it has none
    tags: dict | None = None  # the entry's "tags" block; None when it has none
    registry: str | None = None  # the dataset_info.json it came from

    def column(self, key: str) -> str | None:
        """The source column of a canonical key, or None when it is unmapped."""
        if self.columns is not None:
            return self.columns.get(key)
        if self.ranking and key in ("chosen", "rejected"):  # LLaMA-Factory has no default here and fails
            return key
        return DEFAULT_COLUMNS.get(key)

    def tag(self, key: str) -> str | None:
        """The role/content tag of a message key, or None when it is unmapped."""
        if self.tags is not None:
            return self.tags.get(key)
        return (OPENAI_TAGS if self.formatting == "openai" else SHAREGPT_TAGS)[key]

    @property
    def is_local(self) -> bool:
        return self.load_from == "file"

    def where(self) -> str:
        """`dataset 'name' (location)`, the prefix of every message about this dataset."""
        return f"dataset '{self.name}' ({self.location})"

    def local_paths(self) -> list[Path]:
        """The existing files behind a local dataset (a folder lists its files); [] for other sources."""
        if not self.is_local:
            return []
        path = Path(self.location)
        if path.is_dir():
            return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        return [path] if path.is_file() else []


def symlink_loop(path: str | Path) -> Path | None:
    """The part of `path` (itself or a folder above it) that is a symlink loop, or None when it has none.
    Path.exists() is False for a loop, which would otherwise read as "not found"."""
    path = Path(os.path.abspath(path))
    for part in [*reversed(path.parents), path]:
        try:
            os.stat(part)
        except OSError as exc:
            return part if exc.errno == errno.ELOOP else None
    return None


def loop_message(path: str | Path) -> str | None:
    """"PATH is a symlink loop" (naming the looping folder when it is one above PATH), or None."""
    loop = symlink_loop(path)
    if loop is None:
        return None
    where = "" if loop == Path(os.path.abspath(path)) else f" (in {path})"
    return f"{loop} is a symlink loop{where}: the link points back to itself; fix it or point at the real file"


def read_registry(dataset_dir: str | Path, needed_by: str | None = None) -> dict:
    """Loads dataset_info.json, naming the line and column of a syntax error."""
    folder = Path(dataset_dir)
    path = folder / REGISTRY_FILE
    reason = f" (needed to look up dataset '{needed_by}', which is not an existing file or folder either)" \
        if needed_by else ""
    loop = loop_message(path)
    if loop:
        raise DataError(f"dataset_dir {folder}: {loop}")
    if not folder.is_dir():
        raise DataError(f"dataset_dir {folder} does not exist{reason}; set dataset_dir to the folder holding "
                        f"{REGISTRY_FILE}, or give the dataset as a file path")
    if not path.is_file():
        raise DataError(f"{path} not found{reason}: dataset names are looked up in {REGISTRY_FILE} inside "
                        "dataset_dir; create it, point dataset_dir at the folder that has it, or give a file path")
    try:
        text = path.read_text(encoding="utf-8-sig")
        registry = json.loads(text)
        _check_duplicate_keys(text, path)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg}); fix the file "
                        "(a trailing comma or a missing quote is the usual cause)") from None
    if not isinstance(registry, dict):
        raise DataError(f"{path}: must be one JSON object mapping dataset names to entries, "
                        f"got a {type(registry).__name__}")
    return registry


def _check_duplicate_keys(text: str, path: Path) -> None:
    """json keeps the last of two equal keys; in dataset_info.json that silently drops an entry or a setting."""
    from json.decoder import JSONObject
    from json.scanner import py_make_scanner

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        start = s_and_end[1]  # just after the "{"
        pairs, end = JSONObject(s_and_end, strict, scan_once, None, list, memo)
        seen = set()
        for key, _ in pairs:
            if key in seen:
                lines = _key_lines(text, start, end, key)
                at = f" (lines {', '.join(map(str, lines))})" if len(lines) > 1 else ""
                raise DataError(f"{path}: key {json.dumps(key, ensure_ascii=False)} appears twice in the same "
                                f"object{at}; JSON keeps only the last one, so the first would be silently ignored: "
                                "rename or remove one of them")
            seen.add(key)
        return dict(pairs), end

    decoder = json.JSONDecoder()
    decoder.parse_object = parse_object
    decoder.scan_once = py_make_scanner(decoder)  # the C scanner does not call parse_object
    decoder.decode(text)


def _key_lines(text: str, start: int, end: int, key: str) -> list[int]:
    """The line numbers where `key` is a key of the object text[start:end] (its own level, not nested ones)."""
    lines, depth, index = [], 0, start
    while index < end:
        char = text[index]
        if char == '"':
            close = index + 1
            while text[close] != '"':
                close += 2 if text[close] == "\\" else 1
            is_key = COLON.match(text, close + 1) is not None
            if depth == 0 and is_key and json.loads(text[index: close + 1]) == key:
                lines.append(text.count("\n", 0, index) + 1)
            index = close + 1
            continue
        depth += char in "[{"
        depth -= char in "]}"
        index += 1
    return lines


def _unknown(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key '{key}'; {hint}allowed: {', '.join(allowed)}"


def _check_entry(name: str, entry: object, where: str) -> dict:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: the entry must be a JSON object, got a {type(entry).__name__}")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise DataError(f"{where}: {_unknown(key, ENTRY_KEYS)}")
    sources = [key for key in SOURCES if key in entry]
    if not sources:
        raise DataError(f"{where}: says nowhere to load from; add \"file_name\" (a file or folder in dataset_dir) "
                        f"or one of {', '.join(k for k in SOURCES if k != 'file_name')}")
    for key in (*sources, "subset", "split", "folder"):
        if key in entry and not (isinstance(entry[key], str) and entry[key]):
            raise DataError(f"{where}: \"{key}\" must be a non-empty string, got {entry[key]!r}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DataError(f"{where}: \"formatting\" is {formatting!r}; allowed values: {', '.join(FORMATTINGS)}")
    if not isinstance(entry.get("ranking", False), bool):
        raise DataError(f"{where}: \"ranking\" must be true or false, got {entry['ranking']!r}")
    num = entry.get("num_samples")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise DataError(f"{where}: \"num_samples\" must be a whole number >= 1, got {num!r}")
    if "load_from" in entry:
        wanted = {value: key for key, value in SOURCES.items()}
        if entry["load_from"] not in wanted or wanted[entry["load_from"]] not in entry:
            usable = ", ".join(SOURCES[key] for key in sources)
            raise DataError(f"{where}: \"load_from\" is {entry['load_from']!r}; this entry can load from: {usable}")
    for block, allowed in (("columns", COLUMN_KEYS), ("tags", TAG_KEYS)):
        mapping = entry.get(block, {})
        if not isinstance(mapping, dict):
            raise DataError(f"{where}: \"{block}\" must be a JSON object, got a {type(mapping).__name__}")
        for key, value in mapping.items():
            if key not in allowed:
                raise DataError(f"{where}: in \"{block}\": {_unknown(key, allowed)}")
            if value is not None and not (isinstance(value, str) and value):
                raise DataError(f"{where}: \"{block}\".\"{key}\" must be a name (a string), got {value!r}")
    return entry


def spec_from_entry(name: str, entry: object, dataset_dir: str | Path, registry_path: str | Path) -> DatasetSpec:
    """Validates one dataset_info.json entry and turns it into a DatasetSpec."""
    entry = _check_entry(name, entry, f"{registry_path}: dataset '{name}'")
    source = entry.get("load_from")
    key = next(k for k, v in SOURCES.items() if v == source) if source else next(k for k in SOURCES if k in entry)
    location = entry[key]
    if key in ("file_name", "script_url"):  # relative to dataset_dir, like LLaMA-Factory
        location = str((Path(dataset_dir) / location).absolute())
    return DatasetSpec(
        name=name,
        load_from=SOURCES[key],
        location=location,
        formatting=entry.get("formatting", "alpaca"),
        ranking=entry.get("ranking", False),
        subset=entry.get("subset"),
        split=entry.get("split", "train"),
        folder=entry.get("folder"),
        num_samples=entry.get("num_samples"),
        columns=dict(entry["columns"]) if "columns" in entry else None,
        tags=dict(entry["tags"]) if "tags" in entry else None,
        registry=str(registry_path),
    )


def spec_from_path(name: str, path: Path) -> DatasetSpec:
    """A dataset given as a file or folder path; its format is detected from its columns when converting."""
    return DatasetSpec(name=name, load_from="file", location=str(path.absolute()), formatting="auto")


def _existing_path(name: str, dataset_dir: Path) -> Path | None:
    for candidate in (Path(name).expanduser(), dataset_dir / name):
        loop = loop_message(candidate)
        if loop:
            raise DataError(f"dataset '{name}': {loop}")
        if candidate.exists():
            if candidate.is_dir() and (candidate / REGISTRY_FILE).is_file():
                raise DataError(f"dataset '{name}' is a folder holding {REGISTRY_FILE} ({candidate}); set "
                                "dataset_dir to that folder and name datasets registered in it instead")
            return candidate
    return None


def _registered(name: str, registry: dict, registry_path: Path) -> None:
    if name in registry:
        return
    close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    listed = ", ".join(sorted(registry)) or "(none)"
    raise DataError(f"dataset '{name}' is not registered in {registry_path} and is not an existing file or folder."
                    f"{hint} Registered: {listed}. Add an entry for it, or give a path to the data file.")


def resolve_datasets(names: list[str] | str | None, dataset_dir: str | Path) -> list[DatasetSpec]:
    """One DatasetSpec per name: a dataset_info.json entry, or else an existing file/folder (absolute, or
    relative to the current folder or dataset_dir). The registry is read only when a name needs it."""
    if isinstance(names, str):
        names = names.split(",")
    dataset_dir = Path(dataset_dir)
    registry_path = dataset_dir / REGISTRY_FILE
    registry = None  # read once, on first need
    specs = []
    for name in names or []:
        name = name.strip()
        if not name:
            raise DataError("an empty dataset name was given; list names from dataset_info.json or file paths")
        path = _existing_path(name, dataset_dir)
        if path is not None:
            if registry is None and registry_path.is_file():  # a registered name wins over a same-named path
                try:
                    registry = read_registry(dataset_dir)
                except DataError:  # a broken registry does not block a path; names that need it report it
                    pass
            if registry is None or name not in registry:
                specs.append(spec_from_path(name, path))
                continue
        if registry is None:
            registry = read_registry(dataset_dir, needed_by=None if path else name)
        _registered(name, registry, registry_path)
        specs.append(spec_from_entry(name, registry[name], dataset_dir, registry_path))
    return specs
