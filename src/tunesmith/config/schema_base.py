"""What every settings group shares: the base class and the list types LLaMA-Factory writes as "a,b,c"."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


def _split_commas(value):
    """LLaMA-Factory writes lists as "a,b,c"; YAML lists are accepted too."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        return [item for item in items if item]
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value]
    return value


def _split_floats(value):
    items = _split_commas(value) if isinstance(value, str) else value
    return None if items is None else [float(item) for item in items]


NameList = Annotated[list[str] | None, BeforeValidator(_split_commas)]
FloatList = Annotated[list[float] | None, BeforeValidator(_split_floats)]


class Group(BaseModel):
    """Base of every settings group: unknown keys are rejected by the loader, values are validated here."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
