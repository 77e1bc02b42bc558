"""Our templates and encoders give LLaMA-Factory 0.9.5's exact ids, labels and masks (goldens: scripts/make_golden.py)."""

import json
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunesmith.data.encode import encode_conversation, encoder_for
from tunesmith.data.records import IGNORE_INDEX
from tunesmith.data.template import get_template, template_names
from tunesmith.errors import TunesmithError
from tunesmith.model.tiny import build_tokenizer, fingerprint

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden"
REQUIRED = template_names()  # every built-in template is pinned by a golden file
REGENERATE = "the tiny tokenizer changed: regenerate goldens with scripts/make_golden.py"


@cache
def load(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


def all_cases():
    for name in REQUIRED:
        for index, case in enumerate(load(name)["cases"]):
            yield pytest.param(name, index, id=f"{name}-{case['kind']}-{case['case']}")


def make_template(name: str, tokenizer, golden: dict, options: dict):
    return get_template(name, tokenizer, default_system=options.get("default_system"),
                        tool_format=options.get("tool_format"), enable_thinking=options.get("enable_thinking", True),
                        train_on_prompt=options.get("train_on_prompt", False), tool_date=golden["tool_date"])


def batch_of(golden: dict, names: list[str]) -> dict:
    records = [golden["records"][name] for name in names]
    return {key: [record[key] for record in records] for key in ("prompt", "response", "system", "tools", "kto_tag")}


def test_every_required_template_has_a_golden_file():
    assert sorted(path.stem for path in GOLDEN.glob("*.json")) == sorted(REQUIRED)


@pytest.mark.parametrize("name", REQUIRED)
def test_golden_made_with_this_tokenizer(name):
    assert load(name)["tokenizer_fingerprint"] == fingerprint(build_tokenizer()), REGENERATE
    assert load(name)["llamafactory"] == "0.9.5"


def bare_tokenizer(vocab: dict):
    """The golden's word-level tokenizer without any template token (same as scripts/make_golden.py builds)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("which", ["tokenizer_fix", "bare_tokenizer_fix"])
def test_tokenizer_fixed_like_llamafactory(name, which):
    expected = load(name)[which]
    tokenizer = build_tokenizer() if which == "tokenizer_fix" else bare_tokenizer(expected["vocab"])
    template = get_template(name, tokenizer)
    assert (tokenizer.eos_token, tokenizer.pad_token, len(tokenizer)) == \
        (expected["eos_token"], expected["pad_token"], expected["vocab_size"])
    assert template.added_tokens == expected["added_tokens"]


@pytest.mark.parametrize(("name", "index"), list(all_cases()))
def test_encoding_matches_llamafactory(name, index):
    golden = load(name)
    case = golden["cases"][index]
    options, kind = case["options"], case["kind"]
    tokenizer = build_tokenizer()
    batch = batch_of(golden, case["records"])
    data_args = SimpleNamespace(cutoff_len=options.get("cutoff_len", 1024), packing=options.get("packing"),
                                train_on_prompt=options.get("train_on_prompt", False),
                                mask_history=options.get("mask_history", False))
    try:
        template = make_template(name, tokenizer, golden, options)
        output = encoder_for(kind, template=template, tokenizer=tokenizer, data_args=data_args)(batch)
    except TunesmithError as exc:
        assert "error" in case, f"we refused ({exc}) where LLaMA-Factory encoded"
        return
    assert "error" not in case, f"LLaMA-Factory refused ({case.get('error')}), we did not"
    expected = case["output"]
    if kind == "supervised":
        # Per example we equal LF; LF also keeps examples with nothing to train on, which we drop.
        valid = [i for i, (prompt, response) in enumerate(zip(batch["prompt"], batch["response"]))
                 if len(prompt) % 2 == 1 and len(response) == 1]
        for row, i in enumerate(valid):
            ids, labels = encode_conversation(template, tokenizer, batch["prompt"][i], batch["response"][i],
                                              batch["system"][i], batch["tools"][i], data_args.cutoff_len,
                                              data_args.train_on_prompt, data_args.mask_history)
            assert (ids, labels) == (expected["input_ids"][row], expected["labels"][row])
        kept = [row for row, labels in enumerate(expected["labels"]) if any(x != IGNORE_INDEX for x in labels)]
        expected = {key: [rows[row] for row in kept] for key, rows in expected.items()}
    assert sorted(output) == sorted(expected)
    for key in expected:
        assert output[key] == expected[key], f"{name}/{kind}/{case['case']}: {key} differs"
