"""Tests for the tiny tokenizer and tiny random-init models used by every other test."""

import json

import pytest

from tunesmith.errors import ModelError
from tunesmith.model.tiny import (
    ARCHS,
    TEMPLATE_ADDED_TOKENS,
    TEMPLATE_SPECIAL_TOKENS,
    build_tokenizer,
    ensure_tiny_model,
    fingerprint,
    save_tiny_model,
)

# Golden: changes only if the corpus, the token lists or the `tokenizers` trainer change. If that is on purpose,
# update it here and regenerate every golden file that records it.
FINGERPRINT = "15dbf66934cc8286"

TEXTS = [
    "Hello, world! The model learns to answer questions.",
    "  two leading spaces,\ttabs\t\tand trailing spaces   ",
    "line one\nline two\n\n\nafter blank lines\r\nwindows line\n",
    "def add(a, b):\n    return a + b\n",
    '{"name": "get_weather", "arguments": {"city": "北京"}}',
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "Mixed 中文 and English, numbers 12345 and 3.14159.",
    "Rare characters: émigré, naïve, Ω≈ç√, 😀🚀, ﷺ, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


def test_tokenizer_is_deterministic(tiny_tokenizer):
    again = build_tokenizer()
    assert again.get_vocab() == tiny_tokenizer.get_vocab()
    assert again.backend_tokenizer.to_str() == tiny_tokenizer.backend_tokenizer.to_str()
    assert fingerprint(again) == fingerprint(tiny_tokenizer) == FINGERPRINT


def test_tokenizer_basics(tiny_tokenizer):
    tok = tiny_tokenizer
    assert 1000 <= len(tok) <= 2000
    assert (tok.unk_token, tok.bos_token, tok.eos_token) == ("<unk>", "<s>", "</s>")
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.pad_token is None and tok.pad_token_id is None
    for word in [" the", " and", " model", " capital"]:
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word


@pytest.mark.parametrize("token", ("<s>", "</s>", "<unk>") + TEMPLATE_SPECIAL_TOKENS + TEMPLATE_ADDED_TOKENS)
def test_special_tokens_are_single_ids(tiny_tokenizer, token):
    ids = tiny_tokenizer.encode(token, add_special_tokens=False)
    assert len(ids) == 1
    assert tiny_tokenizer.convert_ids_to_tokens(ids[0]) == token
    # never split, even glued to ordinary text
    assert ids[0] in tiny_tokenizer.encode(f"abc{token}xyz\n", add_special_tokens=False)


def test_special_flags(tiny_tokenizer):
    decoded = tiny_tokenizer.decode(
        tiny_tokenizer.encode("<s><|im_start|>user\nhi<think>x</think><tool_call>{}</tool_call><|im_end|></s>"),
        skip_special_tokens=True,
    )
    assert decoded == "user\nhi<think>x</think><tool_call>{}</tool_call>"  # thinking/tool tags are kept, like Qwen's
    assert set(TEMPLATE_SPECIAL_TOKENS) <= set(tiny_tokenizer.all_special_tokens)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_no_added_tokens(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.encode(text) == ids  # add_special_tokens=True adds nothing either
    assert tiny_tokenizer(text)["input_ids"] == ids
    assert tiny_tokenizer.unk_token_id not in ids  # byte-level: every byte has a token
    assert tiny_tokenizer.decode(ids) == text


def test_round_trip_with_special_tokens(tiny_tokenizer):
    text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n 你好 <|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template(tiny_tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    text = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    prompt = tiny_tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_fingerprint_detects_a_change():
    tok = build_tokenizer()
    before = fingerprint(tok)
    tok.add_tokens(["<new_token>"])
    assert fingerprint(tok) != before


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_arch_saves_loads_and_generates(tiny_model_dirs, tiny_tokenizer, arch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dirs[arch]
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert sum(p.stat().st_size for p in path.iterdir()) < 1_000_000

    tok = AutoTokenizer.from_pretrained(path)
    # AutoTokenizer may pick a model-specific class (Qwen2Tokenizer for qwen2): it must still tokenize the same
    assert fingerprint(tok) == FINGERPRINT
    assert tok.pad_token is None and (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    for text in TEXTS + ["<|im_start|>user\nhi<think>x</think><|im_end|>\n"]:
        assert tok.encode(text) == tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tok.chat_template == tiny_tokenizer.chat_template

    model = AutoModelForCausalLM.from_pretrained(path)
    config = model.config
    assert config.model_type == arch
    assert model.dtype == torch.float32
    assert config.vocab_size >= len(tok) and config.vocab_size % 8 == 0
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, None)
    assert config.hidden_size == 64 and config.num_hidden_layers == 2
    assert config.tie_word_embeddings == (arch == "gemma")
    assert model.generation_config.eos_token_id == 2

    batch = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (1, batch["input_ids"].shape[1], config.vocab_size)
    assert torch.isfinite(out.loss)
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    assert generated.shape[1] <= batch["input_ids"].shape[1] + 4


def test_model_build_is_deterministic(tmp_path):
    import torch
    from safetensors.torch import load_file

    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    first = load_file(save_tiny_model(tmp_path / "a", "qwen3") / "model.safetensors")
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is left alone
    second = load_file(save_tiny_model(tmp_path / "b", "qwen3") / "model.safetensors")
    other = load_file(save_tiny_model(tmp_path / "c", "qwen3", seed=1) / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_sizes_and_chat_template_are_configurable(tmp_path):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    path = save_tiny_model(
        tmp_path / "m", "mistral", hidden_size=32, num_heads=2, num_kv_heads=1, chat_template=template
    )
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]) == (32, 2, 1)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(path).chat_template == template


def test_vocab_size_widens_the_embeddings_past_the_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM

    path = save_tiny_model(tmp_path / "m", vocab_size=4000)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.get_input_embeddings().weight.shape[0] == model.lm_head.weight.shape[0] == 4000
    with pytest.raises(ModelError, match="at least the tokenizer's 1024 ids"):
        save_tiny_model(tmp_path / "small", vocab_size=100)


def test_refuses_to_overwrite(tmp_path):
    path = save_tiny_model(tmp_path / "m")
    with pytest.raises(ModelError, match="already holds a model"):
        save_tiny_model(path)
    before = (path / "config.json").read_text()
    assert save_tiny_model(path, "phi3", overwrite=True) == path
    assert (path / "config.json").read_text() != before
    assert json.loads((path / "config.json").read_text())["model_type"] == "phi3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or trash folders left behind


def test_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not empty"):
        save_tiny_model(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_builds_into_an_empty_existing_folder(tmp_path):
    assert save_tiny_model(tmp_path) == tmp_path
    assert (tmp_path / "config.json").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(ModelError, match="unknown tiny model arch"):
        save_tiny_model(tmp_path / "x", "gpt9")
    with pytest.raises(ModelError, match="num_heads"):
        save_tiny_model(tmp_path / "y", hidden_size=30, num_heads=4)
    assert list(tmp_path.iterdir()) == []


def test_ensure_tiny_model_reuses(tmp_path):
    path = ensure_tiny_model(tmp_path / "m", "gemma")
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(path, "gemma") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ModelError, match="'gemma' model, not 'llama'"):
        ensure_tiny_model(path, "llama")
