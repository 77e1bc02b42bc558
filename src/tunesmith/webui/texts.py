"""Interface texts per language, from texts/<lang>.yaml: every config key's label and one-line help, and the page's
own texts. A key without a text (new in the schema) falls back to English, then to its name in words."""

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


def humanise(key: str) -> str:
    """A key in words, for keys the texts do not name yet: `lora_rank` -> "Lora rank"."""
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def label(lang: str, key: str, english_help: str = "") -> tuple[str, str]:
    """(label, help) of a config key in a language: its text there, else the English one, else the key in words and
    the schema's help."""
    for where in (lang, "en"):
        entry = (texts(where).get("fields") or {}).get(key)
        if entry:
            return entry[0], entry[1]
    return humanise(key), english_help


class Relabel:
    """The components whose texts come from the language files, and how each is rendered in another language."""

    def __init__(self, gr, fields: dict):
        self.gr, self.fields, self.entries = gr, fields, []
        self.keys: dict[str, str] = {}  # elem_id -> the config key its field writes (shown beside its label)
        self.lang = "en"  # the page's language, for messages written by event handlers (one user per app)

    def _add(self, component, render):
        self.entries.append((component, render))
        return component

    def label(self, component, name: str):
        """label (and info, when the texts have `<name>_help`) from the ui texts."""
        def render(lang):
            if f"{name}_help" in texts("en")["ui"]:
                return self.gr.update(label=ui(lang, name), info=ui(lang, f"{name}_help"))
            return self.gr.update(label=ui(lang, name))
        return self._add(component, render)

    def value(self, component, name: str):
        """a button's (or markdown's) text."""
        return self._add(component, lambda lang: self.gr.update(value=ui(lang, name)))

    def table(self, component, name: str, columns):
        """a table's label and its column names, columns(lang)."""
        return self._add(component, lambda lang: self.gr.update(label=ui(lang, name), headers=columns(lang)))

    def heading(self, component, name: str):
        """a markdown heading (### text) from the ui texts."""
        return self._add(component, lambda lang: self.gr.update(value=f"### {ui(lang, name)}"))

    def title(self, component):
        return self._add(component, lambda lang: self.gr.update(value=f"## {ui(lang, 'title')}"))

    def field(self, component, key: str):
        """label and help of a config key."""
        self.keys[component.elem_id or key] = key

        def render(lang):
            text, help_text = label(lang, key, self.fields[key].help if key in self.fields else "")
            return self.gr.update(label=text, info=help_text)
        return self._add(component, render)

    def choices(self, component, name: str, values: tuple):
        """a radio's label and its choices' texts (ui names `<name>_<value>`)."""
        def render(lang):
            return self.gr.update(label=ui(lang, name), choices=[(ui(lang, f"{name}_{v}"), v) for v in values])
        return self._add(component, render)

    @property
    def components(self) -> list:
        return [component for component, _ in self.entries]

    def updates(self, lang: str) -> list:
        self.lang = lang
        return [render(lang) for _, render in self.entries]
