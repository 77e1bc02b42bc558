"""The tokenizer's own Jinja chat template, with exact answer masks found by rendering growing prefixes."""

from __future__ import annotations

import json

from tunesmith.data.records import ASSISTANT, FUNCTION, OBSERVATION
from tunesmith.errors import TemplateError

ROLE_NAMES = {FUNCTION: ASSISTANT, OBSERVATION: "tool"}


class JinjaTemplate:
    """Same interface as Template; the text comes from tokenizer.apply_chat_template."""

    name = "tokenizer chat template"
    style = "plain"
    efficient_eos = False
    preserve_thinking = False

    def __init__(self, chat_template: str, default_system: str = ""):
        self.chat_template = chat_template
        self.default_system = default_system

    def _conversation(self, messages, system):
        system = system or self.default_system
        conversation = [{"role": "system", "content": system}] if system else []
        for message in messages:
            conversation.append({"role": ROLE_NAMES.get(message["role"], message["role"]),
                                 "content": message["content"]})
        return conversation

    def _render(self, tokenizer, conversation, tools, generation_prompt: bool) -> str:
        kwargs = {"tools": json.loads(tools)} if tools else {}
        try:
            return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt,
                                                 chat_template=self.chat_template, **kwargs)
        except Exception as exc:  # jinja errors from the model's own template
            raise TemplateError(f"the tokenizer's chat template failed to render: {exc}; set `template:`") from None

    def _spans(self, tokenizer, messages, system, tools):
        """The full text and the character span of every answer in it."""
        conversation = self._conversation(messages, system)
        offset = len(conversation) - len(messages)
        full = self._render(tokenizer, conversation, tools, False)
        spans = []
        for answer in range(1, len(messages), 2):
            before = self._render(tokenizer, conversation[: offset + answer], tools, True)
            through = self._render(tokenizer, conversation[: offset + answer + 1], tools, False)
            if not (through.startswith(before) and full.startswith(through)):
                raise TemplateError(
                    "the tokenizer's chat template renders earlier turns differently once later turns are added, "
                    "so answer masks cannot be derived from it; set `template:` to a built-in template"
                )
            spans.append((len(before), len(through)))
        return full, spans

    def encode_multiturn(self, tokenizer, messages, system=None, tools=None, discard_history_thoughts=False):
        full, spans = self._spans(tokenizer, messages, system, tools)
        encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        pairs, cursor = [], 0
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        for start, end in spans:
            prompt, answer = [], []
            while cursor < len(ids) and offsets[cursor][0] < end:
                (answer if offsets[cursor][0] >= start else prompt).append(ids[cursor])
                cursor += 1
            pairs.append((prompt, answer))
        if cursor < len(ids) and pairs:  # trailing text after the last answer belongs to it
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + ids[cursor:])
        return pairs

    def encode_oneturn(self, tokenizer, messages, system=None, tools=None):
        conversation = self._conversation(messages, system)
        prompt = self._render(tokenizer, conversation[:-1], tools, True)
        full = self._render(tokenizer, conversation, tools, False)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        answer_ids = tokenizer.encode(full[len(prompt):], add_special_tokens=False) if full.startswith(prompt) else []
        return prompt_ids, answer_ids

    def stop_token_ids(self, tokenizer) -> list[int]:
        """eos, plus the special tokens the chat template puts right after an answer (e.g. <|im_end|>)."""
        ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        _, answer = self.encode_oneturn(tokenizer, probe)
        special = set(tokenizer.all_special_ids)
        ids.update(token for token in answer if token in special)
        return sorted(ids)

    def extract_tool_calls(self, text: str):
        from tunesmith.data.tools import extract_calls

        return extract_calls("qwen", text)  # the <tool_call> JSON style most chat templates use
