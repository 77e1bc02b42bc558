"""Chat templates: turn a conversation into token ids turn by turn, exactly as LLaMA-Factory's templates do."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.data import tools as toolfmt
from tunesmith.data.records import ASSISTANT, FUNCTION, OBSERVATION, USER
from tunesmith.errors import TemplateError

if TYPE_CHECKING:
    from tunesmith.data.jinja_template import JinjaTemplate

log = logging.getLogger(__name__)

TABLE = Path(__file__).with_name("templates.yaml")
BOS, EOS = "{{bos_token}}", "{{eos_token}}"
STYLES = ("plain", "llama2", "reasoning")


@cache
def template_table() -> dict:
    import yaml

    return yaml.safe_load(TABLE.read_text(encoding="utf-8"))


def template_names() -> list[str]:
    return list(template_table())


def _slots(value) -> list:
    """A slot list; a slot is text, {{bos_token}}/{{eos_token}}, or {token: X} (X's id, looked up in the vocab)."""
    slots = [value] if isinstance(value, (str, dict)) else list(value)
    for slot in slots:
        if isinstance(slot, dict) and set(slot) != {"token"}:
            raise TemplateError(f"a template slot mapping must be {{token: TEXT}}, not {slot!r}")
    return slots


def _pair(value, name: str, key: str) -> tuple[str, str]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise TemplateError(f"template {name}: {key} must be a list of two strings (open, close), not {value!r}")
    return tuple(value)


@dataclasses.dataclass
class Template:
    """A chat template: slot lists per role plus the few switches that change how turns are encoded."""

    name: str
    user: list[str]
    assistant: list[str]
    system: list[str]
    function: list[str]
    observation: list[str]
    prefix: list[str]
    tool_format: str = "default"
    tools_slot: str | None = None  # when set, the tool list is this text with {{content}} = the tools' JSON as given
    default_system: str = ""
    stop_words: list[str] = dataclasses.field(default_factory=list)
    thought_words: tuple[str, str] = ("<think>\n", "\n</think>\n\n")
    tool_call_words: tuple[str, str] = ("<tool_call>", "</tool_call>")
    empty_thought: str | None = None  # the empty thought block; None = thought_words[0] + thought_words[1]
    efficient_eos: bool = False
    replace_eos: bool = False
    replace_jinja_template: bool = False
    style: str = "plain"
    enable_thinking: bool | None = True
    preserve_thinking: bool = False  # keep earlier turns' thoughts in prompts (encode_oneturn) and with mask_history
    tool_date: str | None = None  # llama3's tool prompt carries today's date; tests pin it
    added_tokens: list[str] = dataclasses.field(default_factory=list)  # new to the vocab after fix_tokenizer
    mm_plugin: str | None = None  # how images are expanded into tokens (data/vision.py PLUGINS); None: text only

    # ---- slots -> ids
    @staticmethod
    def fill(slots: list, **values: str) -> list:
        out = []
        for slot in slots:
            if isinstance(slot, str) and slot not in (BOS, EOS):
                for key, value in values.items():
                    slot = slot.replace("{{" + key + "}}", value, 1)
            out.append(slot)
        return out

    @staticmethod
    def to_ids(tokenizer, elements: list) -> list[int]:
        ids = []
        for element in elements:
            if isinstance(element, dict):
                ids.append(tokenizer.convert_tokens_to_ids(element["token"]))
            elif element == BOS:
                if tokenizer.bos_token_id is not None:
                    ids.append(tokenizer.bos_token_id)
            elif element == EOS:
                if tokenizer.eos_token_id is not None:
                    ids.append(tokenizer.eos_token_id)
            elif element:
                ids += tokenizer.encode(element, add_special_tokens=False)
        return ids

    def _system_text(self, system: str, tools: str) -> str:
        if self.tools_slot is not None:
            tool_text = self.tools_slot.replace("{{content}}", tools, 1) if tools else ""
        else:
            tool_text = toolfmt.format_tools(self.tool_format, tools, self.tool_date) if tools else ""
        return system + tool_text

    def encode_messages(self, tokenizer, messages: list[dict], system: str | None, tools: str | None) -> list[list[int]]:
        """One id list per message; the first also holds the prefix and the system prompt."""
        system = system or self.default_system
        encoded = []
        for index, message in enumerate(messages):
            elements, merged_system = [], ""
            if index == 0:
                elements += self.prefix
                if system or tools:
                    text = self._system_text(system, tools or "")
                    if self.style == "llama2":
                        merged_system = self.fill(self.system, content=text)[0]  # LF keeps the first slot only
                    else:
                        elements += self.fill(self.system, content=text)
            role, content = message["role"], message["content"]
            if role == USER:
                if self.style == "llama2":
                    elements += self.fill(self.user, content=merged_system + content)
                else:
                    elements += self.fill(self.user, content=content, idx=str(index // 2))
            elif role == ASSISTANT:
                elements += self.fill(self.assistant, content=content)
            elif role == OBSERVATION:
                elements += self.fill(self.observation, content=content)
            elif role == FUNCTION:
                thought = self.thought_words if self.style != "llama2" else None
                calls = self.tool_call_words if self.style != "llama2" else None
                text = toolfmt.format_function_turn(self.tool_format, content, thought, calls)
                elements += self.fill(self.function, content=text)
            else:
                raise TemplateError(f"template {self.name}: unexpected role {role!r}")
            encoded.append(self.to_ids(tokenizer, elements))
        return encoded

    # ---- thinking (reasoning style)
    def remove_thought(self, content: str) -> str:
        pattern = re.compile(f"{re.escape(self.thought_words[0])}(.*?){re.escape(self.thought_words[1])}", re.DOTALL)
        return re.sub(pattern, "", content).lstrip("\n")

    def _has_thought(self, content: str) -> bool:
        return self.thought_words[0].strip() in content or self.thought_words[1].strip() in content

    def empty_thought_ids(self, tokenizer) -> list[int]:
        empty = self.thought_words[0] + self.thought_words[1] if self.empty_thought is None else self.empty_thought
        return tokenizer.encode(empty, add_special_tokens=False)

    # ---- public encoders
    def encode_multiturn(self, tokenizer, messages: list[dict], system: str | None = None, tools: str | None = None,
                         discard_history_thoughts: bool = False) -> list[tuple[list[int], list[int]]]:
        """(prompt_ids, answer_ids) for every turn of a conversation that ends with an answer."""
        if self.style != "reasoning":
            encoded = self.encode_messages(tokenizer, messages, system, tools)
            return [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]
        messages = [dict(m) for m in messages]
        if self.enable_thinking is False:
            for i in range(1, len(messages), 2):
                messages[i]["content"] = self.remove_thought(messages[i]["content"])
        if discard_history_thoughts:
            for i in range(1, len(messages) - 2, 2):
                messages[i]["content"] = self.remove_thought(messages[i]["content"])
        encoded = self.encode_messages(tokenizer, messages, system, tools)
        turns = [len(messages) - 2] if discard_history_thoughts else range(0, len(messages), 2)
        for i in turns:
            if not self._has_thought(messages[i + 1]["content"]):
                if not self.enable_thinking:
                    encoded[i] = encoded[i] + self.empty_thought_ids(tokenizer)
                else:
                    encoded[i + 1] = self.empty_thought_ids(tokenizer) + encoded[i + 1]
        return [(encoded[i], encoded[i + 1]) for i in range(0, len(encoded), 2)]

    def encode_oneturn(self, tokenizer, messages: list[dict], system: str | None = None,
                       tools: str | None = None) -> tuple[list[int], list[int]]:
        """All but the last message as the prompt (ending with the answer cue), and the last message's ids."""
        if self.style == "reasoning":
            messages = [dict(m) for m in messages]
            if not self.preserve_thinking:
                for i in range(1, len(messages) - 2, 2):
                    messages[i]["content"] = self.remove_thought(messages[i]["content"])
            if self.enable_thinking is False:
                messages[-1]["content"] = self.remove_thought(messages[-1]["content"])
        encoded = self.encode_messages(tokenizer, messages, system, tools)
        prompt = [token for ids in encoded[:-1] for token in ids]
        answer = encoded[-1]
        if self.style == "reasoning" and not self._has_thought(messages[-1]["content"]):
            if not self.enable_thinking:
                prompt = prompt + self.empty_thought_ids(tokenizer)
            else:
                answer = self.empty_thought_ids(tokenizer) + answer
        return prompt, answer

    def stop_token_ids(self, tokenizer) -> list[int]:
        ids = {tokenizer.eos_token_id}
        ids.update(tokenizer.convert_tokens_to_ids(word) for word in self.stop_words)
        return sorted(i for i in ids if i is not None)

    def extract_tool_calls(self, text: str):
        """The tool calls in a generated reply (list of FunctionCall), or None when it is plain text."""
        return toolfmt.extract_calls(self.tool_format, text)

    # ---- tokenizer fixes
    def fix_tokenizer(self, tokenizer) -> list[str]:
        """Sets eos/pad and adds stop words like LLaMA-Factory; returns the tokens that were new to the vocab."""
        before = len(tokenizer)
        stop_words = list(self.stop_words)
        if self.replace_eos:
            if not stop_words:
                raise TemplateError(f"template {self.name}: replace_eos needs stop_words")
            _set_eos(tokenizer, stop_words.pop(0))
        if tokenizer.eos_token_id is None:
            _set_eos(tokenizer, "<|endoftext|>")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if stop_words:
            _add_special(tokenizer, stop_words)
        if tokenizer.chat_template is None or self.replace_jinja_template:
            if self.has_token_slots():
                log.warning("template %s has {token: ...} slots: no Jinja template written", self.name)
            else:
                tokenizer.chat_template = self.jinja_template(tokenizer)
        added = sorted((index, token) for token, index in tokenizer.get_vocab().items() if index >= before)
        self.added_tokens = [token for _, token in added]
        if self.added_tokens:
            log.warning("template %s added %s to the tokenizer; the embeddings will be resized",
                        self.name, ", ".join(self.added_tokens))
        return self.added_tokens

    def has_token_slots(self) -> bool:
        slots = self.prefix + self.system + self.user + self.assistant
        return any(isinstance(slot, dict) for slot in slots)

    def jinja_template(self, tokenizer) -> str:
        """A Jinja chat template equivalent to this template, saved with the tokenizer for other tools."""
        def jinja(slots, placeholder="content"):
            items = []
            for slot in slots:
                if slot == BOS:
                    if tokenizer.bos_token_id is not None:
                        items.append("'" + tokenizer.bos_token + "'")
                elif slot == EOS:
                    if tokenizer.eos_token_id is not None:
                        items.append("'" + tokenizer.eos_token + "'")
                else:
                    head, *tail = slot.split("{{content}}")
                    if head:
                        items.append("'" + head.replace("'", "\\'") + "'")
                    if tail:
                        items.append(placeholder)
                        if tail[0]:
                            items.append("'" + tail[0].replace("'", "\\'") + "'")
            return " + ".join(items) or "''"

        out = "{{ " + jinja(self.prefix) + " }}" if self.prefix else ""
        if self.default_system:
            out += "{% set system_message = '" + self.default_system.replace("'", "\\'") + "' %}"
        out += ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
                "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
                "{% endif %}")
        if self.style == "llama2":
            out += ("{% for message in loop_messages %}{% if loop.index0 == 0 and system_message is defined %}"
                    "{% set content = " + jinja(self.system, "system_message") + " + message['content'] %}"
                    "{% else %}{% set content = message['content'] %}{% endif %}")
        else:
            out += ("{% if system_message is defined %}{{ " + jinja(self.system, "system_message") + " }}{% endif %}"
                    "{% for message in loop_messages %}{% set content = message['content'] %}")
        out += ("{% if message['role'] == 'user' %}{{ " + jinja(self.user) + " }}"
                "{% elif message['role'] == 'assistant' %}{{ " + jinja(self.assistant) + " }}{% endif %}{% endfor %}")
        return out


def _set_eos(tokenizer, token: str) -> None:
    if tokenizer.eos_token != token:
        tokenizer.add_special_tokens({"eos_token": token})
        log.info("eos token set to %s", token)


def _add_special(tokenizer, tokens: list[str]) -> None:
    try:
        tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_additional_special_tokens=False)
    except (TypeError, ValueError):
        tokenizer.add_tokens(tokens, special_tokens=True)


def build_template(name: str, entry: dict) -> Template:
    """Applies the table's defaults (those of LLaMA-Factory's register_template) to one entry."""
    efficient_eos = bool(entry.get("efficient_eos", False))
    default_answer = ["{{content}}"] if efficient_eos else ["{{content}}", EOS]
    assistant = _slots(entry.get("assistant", default_answer))
    style = entry.get("style", "plain")
    if style not in STYLES:
        raise TemplateError(f"template {name}: style must be one of {', '.join(STYLES)}")
    words = {key: _pair(entry[key], name, key) for key in ("thought_words", "tool_call_words") if key in entry}
    return Template(
        name=name,
        user=_slots(entry.get("user", "{{content}}")),
        assistant=assistant,
        system=_slots(entry.get("system", "{{content}}")),
        function=_slots(entry.get("function", assistant)),
        observation=_slots(entry.get("observation", entry.get("user", "{{content}}"))),
        prefix=_slots(entry.get("prefix", [])),
        tool_format=toolfmt.check_format(entry.get("tools", "default")),
        tools_slot=entry.get("tools_slot"),
        empty_thought=entry.get("empty_thought"),
        **words,
        default_system=entry.get("default_system", ""),
        stop_words=list(entry.get("stop_words", [])),
        efficient_eos=efficient_eos,
        replace_eos=bool(entry.get("replace_eos", False)),
        replace_jinja_template=bool(entry.get("replace_jinja_template", False)),
        style=style,
        mm_plugin=entry.get("mm_plugin"),
    )


def get_template(name: str | None, tokenizer, *, default_system: str | None = None, tool_format: str | None = None,
                 enable_thinking: bool | None = True, preserve_thinking: bool = False, train_on_prompt: bool = False,
                 tool_date: str | None = None) -> Template | JinjaTemplate:
    """The named template (or the tokenizer's own Jinja template when name is None), with the tokenizer fixed.

    Fixing follows LLaMA-Factory: eos becomes stop_words[0] when replace_eos, pad = eos when missing, other stop
    words become special tokens; `template.added_tokens` lists tokens new to the vocab (resize the embeddings).
    """
    if name is None:
        from tunesmith.data.jinja_template import JinjaTemplate

        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "no chat template: `template` is not set and the tokenizer has no chat_template; set `template:` "
                f"to one of {', '.join(template_names())}"
            )
        template = JinjaTemplate(tokenizer.chat_template, default_system=default_system or "")
        if tokenizer.eos_token_id is None:
            _set_eos(tokenizer, "<|endoftext|>")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return template
    table = template_table()
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TemplateError(f"unknown template '{name}'.{hint} Valid templates: {', '.join(table)}")
    template = build_template(name, table[name])
    if train_on_prompt and template.efficient_eos:
        raise TemplateError(f"template {name} does not support `train_on_prompt` (it uses efficient_eos)")
    if tool_format is not None:
        template.tool_format = toolfmt.check_format(tool_format)
        template.tools_slot = None
        template.function = ["{{content}}"] if template.efficient_eos else ["{{content}}", EOS]
    if default_system is not None:
        template.default_system = default_system
    if template.style == "reasoning":
        template.enable_thinking = enable_thinking
        template.preserve_thinking = preserve_thinking
    template.tool_date = tool_date
    template.fix_tokenizer(tokenizer)
    return template
