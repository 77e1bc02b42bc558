"""Template table, template errors, the tokenizer's own Jinja template path and the encoders' own rules."""

import json
from types import SimpleNamespace

import pytest

from tunesmith.data.encode import encode_supervised, encoder_for
from tunesmith.data.jinja_template import JinjaTemplate
from tunesmith.data.records import IGNORE_INDEX, make_record
from tunesmith.data.template import get_template, template_names
from tunesmith.errors import DataError, TemplateError
from tunesmith.model.tiny import build_tokenizer

LF_NAMES = ["default", "empty", "alpaca", "vicuna", "chatml", "qwen", "qwen3", "qwen3_nothink", "llama2", "llama3",
            "mistral", "gemma", "phi", "deepseek", "yi", "glm4"]


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    ([msg("user", "What is the capital of France?"), msg("assistant", "Paris.")], "You are a helpful assistant."),
    ([msg("user", "你好"), msg("assistant", "你好！"), msg("user", "How are you?"), msg("assistant", "Fine.")], ""),
    ([msg("user", "Hi"), msg("assistant", "Hello!\n\nHow can I help?"), msg("user", "Bye"), msg("assistant", "")], "S"),
]


def test_table_has_every_llamafactory_template():
    assert set(LF_NAMES) <= set(template_names())


def test_unknown_template_lists_names_and_closest():
    with pytest.raises(TemplateError) as info:
        get_template("qwen4", build_tokenizer())
    message = str(info.value)
    assert "unknown template 'qwen4'" in message and "Did you mean qwen" in message
    assert all(name in message for name in LF_NAMES)


def test_no_template_and_no_chat_template_asks_for_template():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(TemplateError, match="set `template:`") as info:
        get_template(None, tokenizer)
    assert "chatml" in str(info.value) and "llama3" in str(info.value)


def test_unknown_tool_format_is_an_error():
    with pytest.raises(DataError, match="tool_format 'hermes' is unknown; choose one of default"):
        get_template("qwen", build_tokenizer(), tool_format="hermes")


def test_train_on_prompt_refused_for_efficient_eos_template():
    with pytest.raises(TemplateError, match="glm4 does not support `train_on_prompt`"):
        get_template("glm4", build_tokenizer(), train_on_prompt=True)


def test_overrides_do_not_leak_between_calls():
    # LF mutates its shared template objects; ours are built fresh each call.
    get_template("qwen", build_tokenizer(), default_system="Be terse.", tool_format="default")
    template = get_template("qwen", build_tokenizer())
    assert template.default_system.startswith("You are Qwen") and template.tool_format == "qwen"


@pytest.mark.parametrize(("messages", "system"), CONVERSATIONS)
def test_jinja_template_equals_chatml_template(messages, system):
    tokenizer = build_tokenizer()  # its chat_template is ChatML
    jinja = get_template(None, tokenizer)
    assert isinstance(jinja, JinjaTemplate)
    reference_tokenizer = build_tokenizer()
    chatml = get_template("chatml", reference_tokenizer)
    assert jinja.encode_multiturn(tokenizer, messages, system) == \
        chatml.encode_multiturn(reference_tokenizer, messages, system)
    assert jinja.encode_oneturn(tokenizer, messages, system) == \
        chatml.encode_oneturn(reference_tokenizer, messages, system)


def test_jinja_template_with_default_system_equals_qwen():
    messages, _ = CONVERSATIONS[1]
    qwen_tokenizer, tokenizer = build_tokenizer(), build_tokenizer()
    qwen = get_template("qwen", qwen_tokenizer)
    jinja = get_template(None, tokenizer, default_system=qwen.default_system)
    assert jinja.encode_multiturn(tokenizer, messages) == qwen.encode_multiturn(qwen_tokenizer, messages)


def test_jinja_template_masks_headers_and_trains_answers_with_end_token():
    tokenizer = build_tokenizer()
    jinja = get_template(None, tokenizer)
    record = make_record([msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Bye")],
                         [msg("assistant", "See you.")], system="S")
    batch = {key: [value] for key, value in record.items()}
    out = encode_supervised(batch, jinja, tokenizer, cutoff_len=1024)
    ids, labels = out["input_ids"][0], out["labels"][0]
    trained = [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "Hello!<|im_end|>\nSee you.<|im_end|>\n"
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi")
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.convert_ids_to_tokens(jinja.stop_token_ids(tokenizer)) == ["</s>", "<|im_end|>"]


def test_jinja_template_that_rewrites_history_is_refused():
    tokenizer = build_tokenizer(chat_template="{{ messages | length }}{% for m in messages %}{{ m['content'] }}"
                                              "{% endfor %}")
    jinja = get_template(None, tokenizer)
    with pytest.raises(TemplateError, match="renders earlier turns differently"):
        jinja.encode_multiturn(tokenizer, [msg("user", "a"), msg("assistant", "b")])


def test_encode_supervised_drops_examples_with_nothing_to_train():
    tokenizer = build_tokenizer()
    template = get_template("qwen", tokenizer)
    records = [make_record([msg("user", "Hi")], [msg("assistant", "Hello")]),
               make_record([msg("user", "Hi"), msg("assistant", "x")], [msg("assistant", "bad shape")])]
    batch = {key: [record[key] for record in records] for key in records[0]}
    assert len(encode_supervised(batch, template, tokenizer, cutoff_len=1024)["input_ids"]) == 1
    assert len(encode_supervised(batch, template, tokenizer, cutoff_len=1)["input_ids"]) == 0  # all masked


def test_pretrain_blocks_follow_llamafactory_packing_rules():
    tokenizer = build_tokenizer()
    template = get_template("llama3", tokenizer)
    batch = {"prompt": [[msg("user", "The quick brown fox jumps over the lazy dog.")]] * 3}

    def blocks(packing, cutoff_len=8):
        args = SimpleNamespace(cutoff_len=cutoff_len, packing=packing)
        return encoder_for("pretrain", template=template, tokenizer=tokenizer, data_args=args)(batch)["input_ids"]

    assert {len(row) for row in blocks(None)} == {8}  # pt's default packing keeps cutoff_len
    assert {len(row) for row in blocks(True)} == {7}  # an explicit `packing: true` takes one off, as in LF
    assert tokenizer.decode(blocks(False, 64)[0]).endswith("<|end_of_text|>")  # llama3 documents end so in LF


def test_tool_list_and_calls_are_formatted_per_template():
    tokenizer = build_tokenizer()
    template = get_template("qwen", tokenizer)
    tools = json.dumps([{"name": "add", "description": "Add", "parameters": {"type": "object", "properties": {}}}])
    call = json.dumps({"name": "add", "arguments": {"a": 1}})
    (prompt, answer), = template.encode_multiturn(tokenizer, [msg("user", "1+?"), msg("function", call)], "", tools)
    assert "# Tools" in tokenizer.decode(prompt)
    assert tokenizer.decode(answer) == '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n'
    with pytest.raises(DataError, match="not valid JSON"):
        template.encode_multiturn(tokenizer, [msg("user", "x"), msg("function", "add(1)")], "", tools)
