"""Lists LLaMA-Factory's settable config keys (read from its hparams dataclasses with ast, never imported) and how
tunesmith's schema takes each: honoured; refused (loads at LF's default, which means "off"; any other value is refused
with the reason); option (of a refused feature: loads at any value, acts only with the switch); or unknown.

    python scripts/lf_keys.py /work/lf-src            # summary + every key that is not honoured
    python scripts/lf_keys.py /work/lf-src --json     # one row per key
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

SKIPPED_CLASSES: set[str] = set()


def _literal(node):
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def _field(value: ast.expr | None) -> tuple[object, str] | None:
    """(default, help) of `field(default=..., metadata={"help": ...})` or of a plain default; None for init=False."""
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        kwargs = {kw.arg: kw.value for kw in value.keywords}
        if "init" in kwargs and _literal(kwargs["init"]) is False:
            return None  # set by LF's own code, not by a config
        default = _literal(kwargs.get("default"))
        if "default_factory" in kwargs:
            default = ast.unparse(kwargs["default_factory"]) + "()"
        help_text = ""
        meta = kwargs.get("metadata")
        if isinstance(meta, ast.Dict):
            for key, item in zip(meta.keys, meta.values):
                if _literal(key) == "help":
                    help_text = str(_literal(item))
        return default, " ".join(help_text.split())
    return _literal(value), ""


def lf_keys(checkout: str | Path) -> dict[str, dict]:
    """key -> {class, file, default, help, type} for every settable field of every dataclass in LF's hparams
    package (transformers' own TrainingArguments fields, which LF inherits, are not in these files)."""
    folder = Path(checkout) / "src" / "llamafactory" / "hparams"
    if not folder.is_dir():
        raise SystemExit(f"not a LLaMA-Factory checkout (no {folder})")
    keys: dict[str, dict] = {}
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in tree.body:
            if not isinstance(cls, ast.ClassDef) or cls.name in SKIPPED_CLASSES:
                continue
            for stmt in cls.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    name = stmt.target.id
                    if name.startswith("_"):
                        continue
                    found = _field(stmt.value)
                    if found is None:
                        continue
                    default, help_text = found
                    keys.setdefault(
                        name,
                        {
                            "class": cls.name,
                            "file": path.name,
                            "default": default,
                            "type": ast.unparse(stmt.annotation),
                            "help": help_text,
                        },
                    )
    return keys


def classify(keys: dict[str, dict]) -> list[dict]:
    """One row per LF key: how tunesmith takes it (honoured / refused / unknown), with the refusal's reason."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tunesmith.config.load import known_keys
    from tunesmith.config.refusals import reason_of
    from tunesmith.config.schema import RENAMED_KEYS, training_fields

    owner = known_keys(training_fields())
    rows = []
    for key, info in sorted(keys.items()):
        name = RENAMED_KEYS.get(key, key) if key not in owner else key
        reason = reason_of(name)
        if name not in owner:
            status = "unknown"
        elif not reason or reason.startswith("some values"):
            status = "honoured"  # at every value, or all but the refused ones (finetuning_type: oft)
        elif reason.startswith("only acts with"):
            status = "option"  # loads at any value; acts only with its feature's switch, which is refused
        else:
            status = "refused"  # loads at LF's default (= off); any other value is refused with the reason
        rows.append({"key": key, "status": status, "group": owner.get(name), "reason": reason, **info})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="a LLaMA-Factory source checkout")
    parser.add_argument("--json", action="store_true", help="print one JSON row per key")
    args = parser.parse_args(argv)
    rows = classify(lf_keys(args.checkout))
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    statuses = ("honoured", "refused", "option", "unknown")
    counts = {status: sum(row["status"] == status for row in rows) for status in statuses}
    print(f"{len(rows)} LLaMA-Factory keys: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for status in ("unknown", "refused", "option"):
        for row in rows:
            if row["status"] == status:
                print(f"  {status:8} {row['key']:34} ({row['class']}) {row['reason'] or ''}")
    return 1 if counts["unknown"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
