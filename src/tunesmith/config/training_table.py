"""Hugging Face TrainingArguments' fields as data (training_fields.json), so validating a config never imports
transformers; `python -m tunesmith.config.training_table` regenerates the file and a test checks it is current."""

from __future__ import annotations

import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

TABLE = Path(__file__).with_name("training_fields.json")
# The only names a type in the table may use: YAML gives plain values, so enums are their strings.
TYPE_NAMES = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list, "Any": Any,
              "None": None, "Literal": Literal}


def annotation_text(annotation) -> str:
    """A field's annotation written with TYPE_NAMES only: enums become str, objects YAML cannot hold become Any."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return "None"
    if origin in (typing.Union, types.UnionType):
        enums = [arg for arg in args if isinstance(arg, type) and issubclass(arg, enum.Enum)]
        if enums and str in args:  # `IntervalStrategy | str`: only the enum's values are valid, so say which
            values = [member.value for cls in enums for member in cls]
            args = (Literal[tuple(values)], *(arg for arg in args if arg is not str and arg not in enums))
        parts = list(dict.fromkeys(annotation_text(arg) for arg in args))
        return "Any" if "Any" in parts else " | ".join(parts)
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if origin in (list, dict):
        inner = ", ".join(annotation_text(arg) for arg in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if annotation is Any:
        return "Any"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "str"
    if isinstance(annotation, type) and annotation.__name__ in TYPE_NAMES:
        return annotation.__name__
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "str"
    return "Any"


def build_table() -> dict[str, dict]:
    """Every (Seq2Seq)TrainingArguments init field of the installed transformers: type, default, help."""
    import dataclasses

    import transformers

    cls = transformers.Seq2SeqTrainingArguments
    hints = typing.get_type_hints(cls)
    table = {"transformers": transformers.__version__, "fields": {}}
    for field in dataclasses.fields(cls):
        if not field.init or field.name.startswith("_"):
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        if isinstance(default, enum.Enum):
            default = default.value
        table["fields"][field.name] = {"type": annotation_text(hints[field.name]), "default": default,
                                       "help": field.metadata.get("help", "")}
    return table


def load_table() -> dict[str, dict]:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def training_fields() -> dict[str, tuple]:
    """name -> (annotation, default, help) for every TrainingArguments field, read from the table."""
    fields = {}
    for name, entry in load_table()["fields"].items():
        annotation = eval(entry["type"], {"__builtins__": {}}, TYPE_NAMES)  # our own table, fixed names
        fields[name] = (annotation, entry["default"], entry["help"])
    return fields


if __name__ == "__main__":
    TABLE.write_text(json.dumps(build_table(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {TABLE}")
