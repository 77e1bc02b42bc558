"""Writes tests/assets/golden/<template>.json: LLaMA-Factory 0.9.5's encodings of shared cases, for our golden tests.

Dev tool only; it runs in its own venv with LLaMA-Factory installed (never a tunesmith dependency):

    python3 -m venv /work/lfgold-venv
    /work/lfgold-venv/bin/pip install torch==2.13.0
    /work/lfgold-venv/bin/pip install --no-deps llamafactory==0.9.5
    /work/lfgold-venv/bin/pip install transformers==5.6.0 "datasets<=4.0.0" peft==0.18.1 "trl<=0.24.0" \
        "accelerate<=1.11.0" pydantic omegaconf pyyaml numpy pillow sentencepiece tiktoken protobuf fire \
        "tyro<0.9.0" einops scipy packaging pandas matplotlib
    PYTHONPATH=src /work/lfgold-venv/bin/python scripts/make_golden.py
"""

import copy
import datetime
import importlib.machinery
import json
import sys
import types
from pathlib import Path

for name in ("torchaudio", "av"):  # LF's multimodal plugin imports them; text templates never use them
    stub = types.ModuleType(name)
    stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = stub

from llamafactory import __version__ as lf_version  # noqa: E402
from llamafactory.data import tool_utils  # noqa: E402
from llamafactory.data.processor.pretrain import PretrainDatasetProcessor  # noqa: E402
from llamafactory.data.processor.supervised import SupervisedDatasetProcessor  # noqa: E402
from llamafactory.data.template import get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.hparams import DataArguments  # noqa: E402

from tunesmith.model.tiny import build_tokenizer, fingerprint  # noqa: E402

TEMPLATES = ["default", "empty", "alpaca", "vicuna", "chatml", "qwen", "qwen3", "qwen3_nothink", "llama2", "llama3",
             "mistral", "gemma", "phi", "deepseek", "yi", "glm4"]
TOOL_DATE = "24 Nov 2026"
OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden"


class FixedDate(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 11, 24)


tool_utils.datetime = FixedDate  # llama3's tool prompt prints today's date


def msg(role, content):
    return {"role": role, "content": content}


TOOLS = json.dumps([{"name": "get_weather", "description": "Weather of a city",
                     "parameters": {"type": "object", "properties": {
                         "city": {"type": "string", "description": "City name"},
                         "unit": {"type": "string", "description": "Unit", "enum": ["c", "f"]}},
                         "required": ["city"]}}])
LONG = " ".join(f"word{i} is here" for i in range(60))

RECORDS = {
    "single_system": {"prompt": [msg("user", "What is the capital of France?")],
                      "response": [msg("assistant", "The capital of France is Paris.")],
                      "system": "You are a helpful assistant.", "tools": ""},
    "default_system": {"prompt": [msg("user", "Say hello.")], "response": [msg("assistant", "Hello!")],
                       "system": "", "tools": ""},
    "multi_turn_zh": {"prompt": [msg("user", "你好，你是谁？"), msg("assistant", "我是一个助手。"),
                                 msg("user", "What can you do?"), msg("assistant", "I can answer questions."),
                                 msg("user", "请写一句诗。")],
                      "response": [msg("assistant", "床前明月光，疑是地上霜。")],
                      "system": "Answer briefly.", "tools": ""},
    "tools": {"prompt": [msg("user", "What's the weather in Paris?"),
                         msg("function", json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})),
                         msg("observation", json.dumps({"temperature": 21, "sky": "clear"})),
                         msg("assistant", "It is 21 degrees and clear in Paris."),
                         msg("user", "And in Berlin?")],
              "response": [msg("function", json.dumps({"name": "get_weather",
                                                       "arguments": {"city": "Berlin", "unit": "c"}}))],
              "system": "", "tools": TOOLS},
    "long": {"prompt": [msg("user", "Summarize: " + LONG)], "response": [msg("assistant", "A long answer. " + LONG)],
             "system": "", "tools": ""},
    "thinking": {"prompt": [msg("user", "What is 2+2?"),
                            msg("assistant", "<think>\nTwo plus two.\n</think>\n\nIt is 4."),
                            msg("user", "And 3+3?")],
                 "response": [msg("assistant", "<think>\nThree plus three.\n</think>\n\nIt is 6.")],
                 "system": "", "tools": ""},
    "no_thinking": {"prompt": [msg("user", "Name a colour.")], "response": [msg("assistant", "Blue.")],
                    "system": "", "tools": ""},
}
# (case name, record, options)
CASES = [
    ("single_system", "single_system", {}),
    ("default_system", "default_system", {}),
    ("multi_turn_zh", "multi_turn_zh", {}),
    ("multi_turn_zh_train_on_prompt", "multi_turn_zh", {"train_on_prompt": True}),
    ("multi_turn_zh_mask_history", "multi_turn_zh", {"mask_history": True}),
    ("tools", "tools", {}),
    ("tools_mask_history", "tools", {"mask_history": True}),
    ("long_cutoff_64", "long", {"cutoff_len": 64}),
    ("long_cutoff_17", "long", {"cutoff_len": 17}),
    ("multi_turn_cutoff_40", "multi_turn_zh", {"cutoff_len": 40}),
    ("multi_turn_cutoff_40_mask_history", "multi_turn_zh", {"cutoff_len": 40, "mask_history": True}),
    ("thinking", "thinking", {}),
    ("thinking_mask_history", "thinking", {"mask_history": True}),
    ("thinking_disabled", "thinking", {"enable_thinking": False}),
    ("no_thinking", "no_thinking", {}),
    ("no_thinking_disabled", "no_thinking", {"enable_thinking": False}),
]
PT_TEXTS = ["Plain text for pre-training. " + LONG[:200], "第二段文字，用于预训练。", "Short one."]


def encode_case(template_name, record, options):
    tokenizer = build_tokenizer()
    args = DataArguments(template=template_name, cutoff_len=options.get("cutoff_len", 1024),
                         train_on_prompt=options.get("train_on_prompt", False),
                         mask_history=options.get("mask_history", False),
                         enable_thinking=options.get("enable_thinking", True))
    template = get_template_and_fix_tokenizer(tokenizer, args)
    processor = SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=args)
    input_ids, labels = processor._encode_data_example(
        prompt=copy.deepcopy(record["prompt"]), response=copy.deepcopy(record["response"]),
        system=record["system"], tools=record["tools"], images=[], videos=[], audios=[])
    return {"input_ids": input_ids, "labels": labels}, tokenizer


def encode_pretrain(template_name, cutoff_len):
    tokenizer = build_tokenizer()
    args = DataArguments(template=template_name, cutoff_len=cutoff_len)
    args.packing = True  # LF's parser turns packing on for stage pt
    template = get_template_and_fix_tokenizer(tokenizer, args)
    processor = PretrainDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=args)
    result = processor.preprocess_dataset({"_prompt": [[msg("user", text)] for text in PT_TEXTS]})
    return {"input_ids": [list(x) for x in result["input_ids"]]}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATES:
        golden = {"template": name, "llamafactory": lf_version, "tokenizer_fingerprint": fingerprint(build_tokenizer()),
                  "tool_date": TOOL_DATE, "records": RECORDS, "cases": []}
        for case, record_name, options in CASES:
            try:
                encoded, tokenizer = encode_case(name, RECORDS[record_name], options)
            except Exception as exc:  # LF refuses some combinations (e.g. train_on_prompt with efficient_eos)
                golden["cases"].append({"case": case, "record": record_name, "options": options,
                                        "error": f"{type(exc).__name__}: {exc}"})
                continue
            golden["cases"].append({"case": case, "record": record_name, "options": options, **encoded})
        golden["eos_token"], golden["pad_token"] = tokenizer.eos_token, tokenizer.pad_token
        golden["vocab_size_after_fix"] = len(tokenizer)
        golden["pretrain"] = {"texts": PT_TEXTS, "cutoff_len": 16, **encode_pretrain(name, 16)}
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"{path}: {len(golden['cases'])} cases")


if __name__ == "__main__":
    main()
