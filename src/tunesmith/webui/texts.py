"""Interface texts per language, from texts/<lang>.yaml; field labels fall back to English from the schema."""

from __future__ import annotations

from functools import cache
from pathlib import Path

LANGUAGES = ("en", "zh")


@cache
def texts(lang: str) -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).parent / "texts" / f"{lang}.yaml").read_text(encoding="utf-8"))


def ui(lang: str, name: str) -> str:
    return texts(lang)["ui"].get(name) or texts("en")["ui"][name]


def label(lang: str, key: str, english_help: str) -> tuple[str, str]:
    """(label, help) of a config key in a language."""
    entry = (texts(lang).get("fields") or {}).get(key)
    if entry:
        return entry[0], entry[1]
    return key, english_help
