"""Benchmark accuracy per subject, per category and on average; the printed table, results.json and results.log."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from tunesmith.evaluate.benchmark import Benchmark


def accuracies(benchmark: Benchmark, predictions: dict[str, list[dict]]) -> dict:
    """{"average", "categories": {name: acc}, "subjects": {key: acc}}: percentages; categories and the average
    count every question once (as LLaMA-Factory does), not the mean of subject scores."""
    categories: dict[str, list[bool]] = {}
    subjects = {}
    every = []
    for subject in benchmark.subjects:
        correct = [row["prediction"] == row["answer"] for row in predictions[subject.key]]
        subjects[subject.key] = _percent(correct)
        categories.setdefault(subject.category, []).extend(correct)
        every.extend(correct)
    return {"average": _percent(every), "categories": {name: _percent(c) for name, c in categories.items()},
            "subjects": subjects}


def _percent(correct: list[bool]) -> float:
    return round(100 * sum(correct) / len(correct), 2) if correct else 0.0


def _cells(text: str) -> int:
    """Terminal width of text: CJK characters take two cells, so Chinese subject names line up."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _right(text: str, width: int) -> str:
    return " " * max(width - _cells(text), 0) + text


def table(benchmark: Benchmark, predictions: dict[str, list[dict]], scores: dict, heading: str) -> str:
    """The text report: average, each category, then each subject with its counts."""
    names = [*scores["categories"], *(s.name for s in benchmark.subjects), "Average"]
    width = max(_cells(name) for name in names)
    total = sum(len(rows) for rows in predictions.values())
    lines = [heading, f"{_right('Average', width)}: {scores['average']:6.2f}  ({total} questions)"]
    lines += [f"{_right(name, width)}: {acc:6.2f}" for name, acc in scores["categories"].items()]
    lines.append("")
    for subject in benchmark.subjects:
        rows = predictions[subject.key]
        right = sum(row["prediction"] == row["answer"] for row in rows)
        lines.append(f"{_right(subject.name, width)}: {scores['subjects'][subject.key]:6.2f}  ({right}/{len(rows)}, "
                     f"{subject.category})")
    return "\n".join(lines) + "\n"


def write_results(save_dir: Path, benchmark: Benchmark, predictions: dict[str, list[dict]], scores: dict,
                  text: str, settings: dict) -> None:
    """results.json (settings, scores and every prediction) and results.log (the table) in a new save_dir."""
    save_dir.mkdir(parents=True, exist_ok=False)
    subjects = {subject.key: {"name": subject.name, "category": subject.category,
                              "accuracy": scores["subjects"][subject.key], "predictions": predictions[subject.key]}
                for subject in benchmark.subjects}
    payload = {**settings, "average": scores["average"], "categories": scores["categories"], "subjects": subjects}
    (save_dir / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    (save_dir / "results.log").write_text(text, encoding="utf-8")
