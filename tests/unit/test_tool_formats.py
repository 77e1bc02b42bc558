"""Every tool format reads back the calls it writes; template table entries with bad slots or word pairs are refused."""

import json

import pytest

from tunesmith.data import tools as toolfmt
from tunesmith.data.template import build_template, get_template
from tunesmith.errors import TemplateError
from tunesmith.model.tiny import build_tokenizer

CALLS = [
    toolfmt.FunctionCall("weather", json.dumps({"city": "Rome", "days": 3, "units": ["c"]})),
    toolfmt.FunctionCall("add", json.dumps({"xs": [2, 3]})),
]
SINGLE_ONLY = {"glm4"}  # GLM-4's format cannot express parallel calls


@pytest.mark.parametrize("name", sorted(toolfmt.TOOL_FORMATS))
def test_written_calls_are_extracted_back(name):
    calls = CALLS[:1] if name in SINGLE_ONLY else CALLS
    text = toolfmt.TOOL_FORMATS[name][1](calls)
    if name == "minimax2":  # the template's answer carries the wrapper the model generates around the invokes
        text = f"<minimax:tool_call>\n{text}\n</minimax:tool_call>"
    extracted = toolfmt.extract_calls(name, text)
    assert [(c.name, json.loads(c.arguments)) for c in extracted] == [(c.name, json.loads(c.arguments)) for c in calls]
    assert toolfmt.extract_calls(name, "Just a plain answer.") is None


@pytest.mark.parametrize("name", sorted(toolfmt.TOOL_FORMATS))
def test_tool_list_names_every_tool(name):
    tools = json.dumps(
        [
            {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}},
        ]
    )
    text = toolfmt.format_tools(name, tools, "24 Nov 2026")
    assert "weather" in text and "add" in text
    assert toolfmt.format_tools(name, "[]") == ""


def test_token_slots_encode_the_tokens_id():
    tokenizer = build_tokenizer()
    template = get_template("chatglm3", tokenizer)
    ids = template.to_ids(tokenizer, template.fill(template.user, content="hi"))
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|user|>")
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_bad_slot_mapping_and_word_pairs_are_refused():
    with pytest.raises(TemplateError, match="token: TEXT"):
        build_template("x", {"user": [{"text": "<|user|>"}, "{{content}}"]})
    with pytest.raises(TemplateError, match="thought_words must be a list of two strings"):
        build_template("x", {"thought_words": "<think>"})


def test_empty_thought_comes_from_the_table():
    tokenizer = build_tokenizer()
    glm47, qwen3 = get_template("glm4_7", tokenizer), get_template("qwen3", build_tokenizer())
    assert tokenizer.decode(glm47.empty_thought_ids(tokenizer)) == "</think>"
    assert qwen3.empty_thought_ids(tokenizer) == tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False)
