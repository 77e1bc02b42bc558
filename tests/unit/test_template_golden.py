"""Our templates give LLaMA-Factory 0.9.5's exact input_ids and labels (golden files from scripts/make_golden.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunesmith.data.encode import encode_conversation, encode_pretrain
from tunesmith.data.template import get_template
from tunesmith.model.tiny import build_tokenizer, fingerprint

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden"
FILES = sorted(GOLDEN.glob("*.json"))
REQUIRED = ["default", "empty", "alpaca", "vicuna", "chatml", "qwen", "qwen3", "qwen3_nothink", "llama2", "llama3",
            "mistral", "gemma", "phi", "deepseek", "yi", "glm4"]


def load(name):
    return json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


def test_every_required_template_has_a_golden_file():
    assert sorted(path.stem for path in FILES) == sorted(REQUIRED)


@pytest.mark.parametrize("name", REQUIRED)
def test_supervised_encodings_match_llamafactory(name):
    golden = load(name)
    assert golden["tokenizer_fingerprint"] == fingerprint(build_tokenizer()), \
        "the tiny tokenizer changed: regenerate goldens with scripts/make_golden.py"
    checked = 0
    for case in golden["cases"]:
        options = case["options"]
        record = golden["records"][case["record"]]
        tokenizer = build_tokenizer()
        try:
            template = get_template(name, tokenizer, enable_thinking=options.get("enable_thinking", True),
                                    train_on_prompt=options.get("train_on_prompt", False),
                                    tool_date=golden["tool_date"])
        except Exception as exc:
            assert "error" in case, f"{case['case']}: we refused ({exc}) where LLaMA-Factory encoded"
            continue
        assert "error" not in case, f"{case['case']}: LLaMA-Factory refused ({case.get('error')}), we did not"
        input_ids, labels = encode_conversation(
            template, tokenizer, record["prompt"], record["response"], record["system"], record["tools"],
            options.get("cutoff_len", 1024), options.get("train_on_prompt", False), options.get("mask_history", False))
        assert input_ids == case["input_ids"], f"{name}/{case['case']}: input_ids differ"
        assert labels == case["labels"], f"{name}/{case['case']}: labels differ"
        assert tokenizer.eos_token == golden["eos_token"] and tokenizer.pad_token == golden["pad_token"]
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("name", REQUIRED)
def test_pretrain_blocks_match_llamafactory(name):
    golden = load(name)["pretrain"]
    tokenizer = build_tokenizer()
    template = get_template(name, tokenizer)
    batch = {"prompt": [[{"role": "user", "content": text}] for text in golden["texts"]]}
    args = SimpleNamespace(cutoff_len=golden["cutoff_len"], packing=True)
    assert encode_pretrain(batch, template=template, tokenizer=tokenizer, data_args=args)["input_ids"] == \
        golden["input_ids"]
