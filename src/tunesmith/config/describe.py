"""Human-readable listings of the config keys and of a resolved config."""

from __future__ import annotations

import typing

from tunesmith.config.schema import GROUPS, training_fields


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if typing.get_origin(annotation) is None else None
    text = text or str(annotation)
    for noise in ("typing.", "transformers.trainer_utils.", "transformers.training_args.", "NoneType"):
        text = text.replace(noise, "None" if noise == "NoneType" else "")
    return text


def key_rows() -> list[tuple[str, str, str, str, str]]:
    """(group, key, type, default, help) for every key tunesmith accepts."""
    rows = []
    for group_name, group in GROUPS.items():
        for key, field in group.model_fields.items():
            rows.append((group_name, key, _type_name(field.annotation), repr(field.default), field.description or ""))
    for key, (annotation, default, help_text) in training_fields().items():
        first_line = " ".join(help_text.split())[:110]
        rows.append(("train", key, _type_name(annotation), repr(default), first_line))
    return rows


def print_keys() -> None:
    current = None
    for group, key, type_name, default, help_text in key_rows():
        if group != current:
            title = "training (Hugging Face TrainingArguments)" if group == "train" else group
            print(f"\n[{title}]")
            current = group
        print(f"  {key}: {type_name} = {default}\n      {help_text}")


def print_resolved(config) -> None:
    import yaml

    print(yaml.safe_dump(config.flat(), sort_keys=False, allow_unicode=True), end="")
