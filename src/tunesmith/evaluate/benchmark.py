"""Reads multiple-choice benchmark folders in the public MMLU / C-Eval / CMMLU layouts into questions.

A benchmark is a folder `<task_dir>/<benchmark>/` holding `mapping.json` ({subject: {"name", "category"}}) and one
CSV per subject per split. For split S and subject X the first file found among these is read:

    <benchmark>/S/X_S.csv         C-Eval, and tunesmith's own layout (the bundled demo benchmarks)
    <benchmark>/data/S/X_S.csv    MMLU (data.tar unpacked as published)
    <benchmark>/S/X.csv           CMMLU
    <benchmark>/X_S.csv           everything in one folder

Rows are question, A, B, C, D, answer. A first row naming those columns is a header (any case; other columns such
as C-Eval's `id` or CMMLU's unnamed index are ignored); without one, 6 columns are read as above and 7 as an id
followed by them. Split names follow LLaMA-Factory's tasks: `validation` reads `val` files and `train` reads `dev`
files, so mmlu_test, ceval_validation and cmmlu_test all work; few-shot examples come from `dev`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from tunesmith.errors import ConfigError, DataError

CHOICES = ("A", "B", "C", "D")
FEW_SHOT_SPLIT = "dev"
SPLIT_ALIASES = {"validation": "val", "train": "dev"}  # LLaMA-Factory's split names -> the published folder names


@dataclasses.dataclass
class Question:
    """One multiple-choice question and where it was read from."""

    question: str
    choices: dict[str, str]  # letter -> text
    answer: str  # one of CHOICES
    id: str  # the file's id column, else the row's position in the file (0-based)
    source: str  # "file:line", for messages


@dataclasses.dataclass
class Subject:
    """The questions of one subject in the evaluated split, and its few-shot examples."""

    key: str
    name: str
    category: str
    questions: list[Question]
    dev: list[Question]


@dataclasses.dataclass
class Benchmark:
    """A benchmark split: its subjects, in mapping.json order."""

    name: str
    split: str
    folder: Path
    subjects: list[Subject]


def parse_task(task: str) -> tuple[str, str]:
    """"mmlu_test" -> ("mmlu", "test"); the benchmark name may itself hold underscores."""
    name, _, split = task.strip().rpartition("_")
    if not name or not split:
        raise ConfigError(f"`task` is <benchmark>_<split>, e.g. mmlu_test or ceval_validation, not {task!r}")
    return name, split


def available_tasks(task_dir: Path) -> list[str]:
    """Every <benchmark>_<split> that task_dir holds (benchmarks: sub-folders with a mapping.json)."""
    tasks = []
    if task_dir.is_dir():
        for folder in sorted(p for p in task_dir.iterdir() if (p / "mapping.json").is_file()):
            tasks += [f"{folder.name}_{split}" for split in available_splits(folder, _read_mapping(folder))]
    return tasks


def available_splits(folder: Path, subjects: dict) -> list[str]:
    """The splits for which the first subject has a file."""
    if not subjects:
        return []
    first = next(iter(subjects))
    names = {"dev", "val", "test"} | {p.name for p in folder.iterdir() if p.is_dir() and p.name != "data"}
    if (folder / "data").is_dir():
        names |= {p.name for p in (folder / "data").iterdir() if p.is_dir()}
    names |= {p.stem[len(first) + 1:] for p in folder.glob(f"{first}_*.csv")}
    return sorted(split for split in names if split and subject_file(folder, first, split) is not None)


def subject_file(folder: Path, subject: str, split: str) -> Path | None:
    """The CSV of one subject in one split, by the layouts listed in this module's docstring."""
    for path in _candidates(folder, subject, split):
        if path.is_file():
            return path
    return None


def _candidates(folder: Path, subject: str, split: str) -> list[Path]:
    return [folder / split / f"{subject}_{split}.csv", folder / "data" / split / f"{subject}_{split}.csv",
            folder / split / f"{subject}.csv", folder / f"{subject}_{split}.csv"]


def _read_mapping(folder: Path) -> dict:
    path = folder / "mapping.json"
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"{path}: expected a non-empty object {{subject: {{\"name\": ..., \"category\": ...}}}}")
    for key, entry in mapping.items():
        if not isinstance(entry, dict) or not {"name", "category"} <= set(entry):
            raise DataError(f"{path}: subject '{key}' needs \"name\" and \"category\", got {entry!r}")
    return mapping


def _split_folder(split: str) -> str:
    return SPLIT_ALIASES.get(split, split)


def load_benchmark(task_dir: str | Path, task: str, n_shot: int) -> Benchmark:
    """Reads every subject of a task (and its dev examples when n_shot > 0); errors name the path and the fix."""
    name, split = parse_task(task)
    task_dir = Path(task_dir)
    folder = task_dir / name
    if not (folder / "mapping.json").is_file():
        tasks = available_tasks(task_dir)
        where = f"available tasks there: {', '.join(tasks)}" if tasks else (
            "it holds no benchmark folder (one with a mapping.json)" if task_dir.is_dir() else "that folder is missing")
        missing = "no mapping.json in" if folder.is_dir() else "benchmark folder not found:"
        raise ConfigError(f"task {task}: {missing} {folder}; {where}. Set `task_dir` to the folder holding "
                          f"<benchmark>/mapping.json")
    mapping = _read_mapping(folder)
    splits = available_splits(folder, mapping)
    subjects = []
    for key, entry in mapping.items():
        questions = read_questions(_require_file(folder, key, split, task, splits))
        if not questions:
            raise DataError(f"{subject_file(folder, key, _split_folder(split))}: no questions")
        dev = read_questions(_require_file(folder, key, FEW_SHOT_SPLIT, task, splits)) if n_shot > 0 else []
        subjects.append(Subject(key, str(entry["name"]), str(entry["category"]), questions, dev))
    return Benchmark(name, split, folder, subjects)


def _require_file(folder: Path, subject: str, split: str, task: str, splits: list[str]) -> Path:
    path = subject_file(folder, subject, _split_folder(split))
    if path is None:
        looked = ", ".join(str(p) for p in _candidates(folder, subject, _split_folder(split)))
        purpose = " (few-shot examples: set n_shot=0 to skip them)" if split == FEW_SHOT_SPLIT else ""
        raise DataError(f"task {task}: split '{split}' of subject '{subject}' not found{purpose}; looked for "
                        f"{looked}; splits available: {', '.join(splits) or 'none'}")
    return path


def read_questions(path: Path) -> list[Question]:
    """The questions of one CSV (with or without a header, with or without an id column)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(text.splitlines(keepends=True))
    rows = []
    try:
        line = 1
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    columns = _header_columns(rows[0][1], path)
    if columns is not None:
        rows = rows[1:]
    questions = []
    for position, (line, row) in enumerate(rows):
        where = f"{path}:{line}"
        if columns is None:
            if len(row) not in (6, 7):
                raise DataError(f"{where}: expected 6 columns (question, A, B, C, D, answer) or 7 (with an id "
                                f"first), got {len(row)}")
            picked = dict(zip(("question", *CHOICES, "answer"), row[-6:], strict=True))
            picked["id"] = row[0] if len(row) == 7 else str(position)
        else:
            if len(row) != columns["width"]:
                raise DataError(f"{where}: expected {columns['width']} columns as the header has, got {len(row)}")
            picked = {key: row[index] for key, index in columns.items() if key != "width"}
            picked.setdefault("id", str(position))
        answer = picked["answer"].strip()
        if answer not in CHOICES:
            raise DataError(f"{where}: answer {picked['answer']!r} is not one of {', '.join(CHOICES)}")
        questions.append(Question(picked["question"], {ch: picked[ch] for ch in CHOICES}, answer, picked["id"],
                                  where))
    return questions


def _header_columns(first: list[str], path: Path) -> dict[str, int] | None:
    """Column positions when the first row is a header, else None."""
    names = [cell.strip().lower() for cell in first]
    if "question" not in names:
        return None
    wanted = ("question", "a", "b", "c", "d", "answer")
    missing = [name for name in wanted if name not in names]
    if missing:
        hint = " (C-Eval's test answers are not public: evaluate its validation split)" if missing == ["answer"] else ""
        raise DataError(f"{path}:1: the header lacks column(s) {', '.join(missing)}; it has {', '.join(first)}{hint}")
    columns = {key.upper() if len(key) == 1 else key: names.index(key) for key in wanted}
    if "id" in names:
        columns["id"] = names.index("id")
    columns["width"] = len(first)
    return columns
