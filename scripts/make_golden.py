"""Writes tests/assets/golden/<template>.json: LLaMA-Factory 0.9.5's encodings of shared cases, for our golden tests.

Dev tool only. It runs in its own venv with LLaMA-Factory installed (never a tunesmith dependency):

    python3 -m venv /work/lfvenv
    /work/lfvenv/bin/pip install torch==2.13.0            # first: the local CPU wheel (else pip pulls CUDA)
    /work/lfvenv/bin/pip install --no-deps /tmp/lfdl/llamafactory-0.9.5-py3-none-any.whl
    /work/lfvenv/bin/pip install transformers==5.6.0 "datasets<=4.0.0" peft==0.18.1 "trl<=0.24.0" \
        "accelerate<=1.11.0" pydantic omegaconf pyyaml numpy pillow sentencepiece tiktoken protobuf fire \
        "tyro<0.9.0" einops scipy packaging pandas matplotlib
    /work/lfvenv/bin/pip show torch                       # still 2.13.0+cpu
    PYTHONPATH=src /work/lfvenv/bin/python scripts/make_golden.py [OUT_DIR [TEMPLATE ...]]   # default: all

Every case is a batch of canonical records (tests/assets/golden/*.json "records") run through the real LF processor
(`<Kind>DatasetProcessor.preprocess_dataset`) after `get_template_and_fix_tokenizer`, on a freshly built tiny tokenizer;
pt labels are what LF's pt collator (DataCollatorForLanguageModeling, mlm=False) makes of each block.
"""

import copy
import datetime
import importlib.machinery
import json
import sys
import types
from pathlib import Path

for _name in ("torchaudio", "av"):  # imported by LF's multimodal plugin; text templates never use them
    _stub = types.ModuleType(_name)
    _stub.__spec__ = importlib.machinery.ModuleSpec(_name, None)
    sys.modules[_name] = _stub

import transformers
from llamafactory import __version__ as lf_version
from llamafactory.data import template as lf_template
from llamafactory.data import tool_utils
from llamafactory.data.processor import (
    FeedbackDatasetProcessor,
    PairwiseDatasetProcessor,
    PretrainDatasetProcessor,
    SupervisedDatasetProcessor,
    UnsupervisedDatasetProcessor,
)
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments
from transformers import DataCollatorForLanguageModeling

from tunesmith.data.template import template_table
from tunesmith.model.tiny import build_tokenizer, fingerprint

TEMPLATES = list(template_table())  # every template in src/tunesmith/data/templates.yaml
TOOL_DATE = "24 Nov 2026"
OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden"
PRISTINE = copy.deepcopy(lf_template.TEMPLATES)  # LF mutates its template singletons (default_system, tool format)


class FixedDate(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 11, 24)


tool_utils.datetime = FixedDate  # llama3's tool prompt prints today's date


def msg(role, content):
    return {"role": role, "content": content}


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


def record(prompt, response, system="", tools="", kto_tag=None):
    return {"prompt": prompt, "response": response, "system": system, "tools": tools, "kto_tag": kto_tag}


TOOLS = json.dumps([
    {"name": "weather", "description": "Weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"xs": {"type": "array", "items": {"type": "number"}}}}}},
])
LONG = " ".join(f"word{i} is here" for i in range(24))
THOUGHT = "<think>\nI should call the tool.\n</think>\n\n"

RECORDS = {
    "single_system": record([msg("user", "What is the capital of France?")],
                            [msg("assistant", "The capital of France is Paris.")], system="You are a helpful assistant."),
    "default_system": record([msg("user", "Say hello.")], [msg("assistant", "Hello!")]),
    "multi_turn_zh": record([msg("user", "你好，你是谁？"), msg("assistant", "我是一个助手。"),
                             msg("user", "What can you do?"), msg("assistant", "I can answer questions."),
                             msg("user", "请写一句诗。")],
                            [msg("assistant", "床前明月光，疑是地上霜。")], system="Answer briefly."),
    "tools": record([msg("user", "What's the weather in Paris?"),
                     msg("function", json.dumps(call("weather", city="Paris"))),
                     msg("observation", json.dumps({"temperature": 21, "sky": "clear"})),
                     msg("assistant", "It is 21 degrees and clear in Paris."),
                     msg("user", "And in Berlin?")],
                    [msg("function", json.dumps(call("weather", city="Berlin", unit="c")))], tools=TOOLS),
    "tool_variants": record([msg("user", "Add 2 and 3, then tell me the weather in Rome."),
                             msg("function", THOUGHT + json.dumps(call("add", xs=[2, 3]))),
                             msg("observation", "5"),
                             msg("assistant", "2 + 3 = 5."),
                             msg("user", "And the weather?")],
                            [msg("function", "Let me check.<tool_call>" + json.dumps(call("weather", city="Rome"))
                                 + "</tool_call>")], system="Use tools.", tools=TOOLS),
    "parallel_calls": record([msg("user", "Weather in Tokyo and Oslo?")],
                             [msg("function", json.dumps([call("weather", city="Tokyo"),
                                                          call("weather", city="Oslo")]))]),
    "long": record([msg("user", "Summarize: " + LONG)], [msg("assistant", "A long answer. " + LONG)]),
    "thinking": record([msg("user", "What is 2+2?"), msg("assistant", "<think>\nTwo plus two.\n</think>\n\nIt is 4."),
                        msg("user", "And 3+3?")],
                       [msg("assistant", "<think>\nThree plus three.\n</think>\n\nIt is 6.")]),
    "no_thinking": record([msg("user", "Name a colour.")], [msg("assistant", "Blue.")]),
    "invalid": record([msg("user", "Hi"), msg("assistant", "Hello")], [msg("assistant", "Bye")]),
    "prompt_only": record([msg("user", "Tell me a joke.")], []),
    "pair": record([msg("user", "Is the sky blue?")], [msg("assistant", "Yes, on a clear day."), msg("assistant", "No.")]),
    "pair_long": record([msg("user", "Explain: " + LONG[:120])],
                        [msg("assistant", "Good: " + LONG[:150]), msg("assistant", "Bad.")], system="Be exact."),
    "kto_good": record([msg("user", "What is 1+1?")], [msg("assistant", "2.")], kto_tag=True),
    "kto_bad": record([msg("user", "Capital of Japan?")], [msg("assistant", "Paris, I think.")], kto_tag=False),
    "kto_multi": record([msg("user", "Hi!"), msg("assistant", "Hello!"), msg("user", "Count to three.")],
                        [msg("assistant", "One, two, three.")], system="Be nice.", kto_tag=True),
    "text_en": record([msg("user", "Plain text for pre-training. " + LONG[:150])], []),
    "text_zh": record([msg("user", "第二段文字，用于预训练。")], []),
    "text_short": record([msg("user", "Short one.")], []),
}

# kind -> [(case, record names (one batch), options)]; options are LF DataArguments fields.
CASES = {
    "supervised": [
        ("single_system", ["single_system"], {}),
        ("default_system", ["default_system"], {}),
        ("default_system_override_empty", ["default_system"], {"default_system": ""}),
        ("default_system_override", ["default_system"], {"default_system": "Be terse."}),
        ("multi_turn_zh", ["multi_turn_zh"], {}),
        ("multi_turn_zh_train_on_prompt", ["multi_turn_zh"], {"train_on_prompt": True}),
        ("multi_turn_zh_mask_history", ["multi_turn_zh"], {"mask_history": True}),
        ("tools", ["tools"], {}),
        ("tool_variants", ["tool_variants"], {}),
        ("parallel_calls", ["parallel_calls"], {}),
        ("tools_format_qwen", ["tools"], {"tool_format": "qwen"}),
        ("long_cutoff_64", ["long"], {"cutoff_len": 64}),
        ("long_cutoff_17", ["long"], {"cutoff_len": 17}),
        ("multi_turn_cutoff_40", ["multi_turn_zh"], {"cutoff_len": 40}),
        ("multi_turn_cutoff_40_mask_history", ["multi_turn_zh"], {"cutoff_len": 40, "mask_history": True}),
        ("multi_turn_cutoff_7", ["multi_turn_zh"], {"cutoff_len": 7}),
        ("untrainable_cutoff_1", ["single_system", "multi_turn_zh"], {"cutoff_len": 1}),
        ("thinking", ["thinking"], {}),
        ("thinking_mask_history", ["thinking"], {"mask_history": True}),
        ("thinking_disabled", ["thinking"], {"enable_thinking": False}),
        ("thinking_none", ["thinking"], {"enable_thinking": None}),
        ("no_thinking", ["no_thinking"], {}),
        ("no_thinking_disabled", ["no_thinking"], {"enable_thinking": False}),
        ("batch", ["single_system", "invalid", "no_thinking", "default_system", "pair"], {}),
    ],
    "unsupervised": [
        ("single_system", ["single_system"], {}),
        ("multi_turn_zh", ["multi_turn_zh"], {}),
        ("tool_variants", ["tool_variants"], {}),
        ("thinking", ["thinking"], {}),
        ("thinking_disabled", ["thinking"], {"enable_thinking": False}),
        ("no_thinking_disabled", ["no_thinking"], {"enable_thinking": False}),
        ("long_cutoff_64", ["long"], {"cutoff_len": 64}),
        ("batch", ["default_system", "invalid", "prompt_only", "pair"], {}),
    ],
    "pairwise": [
        ("pair", ["pair"], {}),
        ("pair_cutoff_24", ["pair_long"], {"cutoff_len": 24}),
        ("batch", ["pair", "single_system", "pair_long"], {}),
    ],
    "feedback": [
        ("kto", ["kto_good", "kto_bad", "kto_multi"], {}),
        ("kto_cutoff_12", ["kto_good", "kto_bad", "kto_multi"], {"cutoff_len": 12}),
    ],
    "pretrain": [
        ("packing_default", ["text_en", "text_zh", "text_short"], {"cutoff_len": 16, "packing": None}),
        ("packing_explicit", ["text_en", "text_zh", "text_short"], {"cutoff_len": 17, "packing": True}),
        ("no_packing", ["text_en", "text_zh", "text_short"], {"cutoff_len": 16, "packing": False}),
    ],
}
PROCESSORS = {"supervised": SupervisedDatasetProcessor, "unsupervised": UnsupervisedDatasetProcessor,
              "pairwise": PairwiseDatasetProcessor, "feedback": FeedbackDatasetProcessor,
              "pretrain": PretrainDatasetProcessor}
MEDIA = ("images", "videos", "audios")


def lf_response(rec):
    """LF's response column: KTO records carry [answer, ""] (desirable) or ["", answer] (undesirable)."""
    if rec["kto_tag"] is None:
        return copy.deepcopy(rec["response"])
    empty = msg("assistant", "")
    return [rec["response"][0], empty] if rec["kto_tag"] else [empty, rec["response"][0]]


def lf_batch(names):
    recs = [RECORDS[name] for name in names]
    batch = {"_prompt": [copy.deepcopy(r["prompt"]) for r in recs], "_response": [lf_response(r) for r in recs],
             "_system": [r["system"] for r in recs], "_tools": [r["tools"] for r in recs]}
    batch.update({f"_{media}": [None] * len(recs) for media in MEDIA})
    return batch


def data_args(template_name, kind, options):
    options = dict(options)
    packing = options.pop("packing", None)
    args = DataArguments(template=template_name, cutoff_len=options.pop("cutoff_len", 1024), packing=packing,
                         **options)
    if kind == "pretrain" and packing is None:
        args.packing = True  # LF's parser turns packing on for stage pt after DataArguments.__post_init__
    return args


class Unused:
    """Stands in for a multimodal template's processor parts: LF's plugins insist on them even for text-only records.

    The records hold no media, so LF never calls them: it only reads parts, media token names (which then
    appear nowhere) and merge sizes; any other attribute is absent, so LF's getattr defaults apply.
    """

    def __getattr__(self, name):
        if name.endswith(("_processor", "feature_extractor")):
            return Unused()
        if name.endswith(("_token", "_sequence")):
            return f"<unused {name}>"
        if name.endswith("merge_size"):  # Qwen-VL plugins size image token runs by it up front
            return 1
        if name.endswith("seq_length"):  # InternVL's plugin reads image_seq_length up front
            return 1
        raise AttributeError(f"text-only golden run: LF asked a processor for {name!r}")


def run_case(template_name, kind, names, options):
    tokenizer = build_tokenizer()
    lf_template.TEMPLATES[template_name] = copy.deepcopy(PRISTINE[template_name])
    try:
        args = data_args(template_name, kind, options)
        template = get_template_and_fix_tokenizer(tokenizer, args)
        plugin = template.mm_plugin  # an image or audio plugin (qwen2_audio has no image token) wants a processor
        mm_processor = Unused() if (plugin.image_token or plugin.audio_token) is not None else None
        processor = PROCESSORS[kind](template=template, tokenizer=tokenizer, processor=mm_processor, data_args=args)
        output = processor.preprocess_dataset(lf_batch(names))
        if kind == "pretrain":  # LF's pt labels come from its collator, which masks every pad (= eos) token
            collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
            output["labels"] = [collator([{"input_ids": row}])["labels"][0].tolist() for row in output["input_ids"]]
    except Exception as exc:  # LF refuses some combinations (train_on_prompt with efficient_eos, parallel glm4 calls)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"output": {key: [list(row) for row in rows] if key != "kto_tags" else list(rows)
                       for key, rows in output.items() if key not in MEDIA}}


BARE_VOCAB = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3}  # no template tokens: shows which ones LF adds


def bare_tokenizer(vocab):
    """A word-level tokenizer holding only `vocab` (the golden test builds the same one from the JSON)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tokenizer_fix(template_name, tokenizer):
    before = len(tokenizer)
    lf_template.TEMPLATES[template_name] = copy.deepcopy(PRISTINE[template_name])
    get_template_and_fix_tokenizer(tokenizer, DataArguments(template=template_name))
    added = sorted((idx, tok) for tok, idx in tokenizer.get_vocab().items() if idx >= before)
    return {"eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token, "vocab_size": len(tokenizer),
            "added_tokens": [tok for _, tok in added]}


def dump(golden: dict) -> str:
    """Compact JSON with one record and one case per line, so a regenerated golden diffs readably."""
    def compact(value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def block(items, open_, close):
        return open_ + "\n" + ",\n".join(items) + "\n" + close

    fields = [f"{compact(key)}:{compact(value)}" for key, value in golden.items() if key not in ("records", "cases")]
    fields.append('"records":' + block([f"{compact(k)}:{compact(v)}" for k, v in golden["records"].items()], "{", "}"))
    fields.append('"cases":' + block([compact(case) for case in golden["cases"]], "[", "]"))
    return block(fields, "{", "}") + "\n"


def main(out: Path = OUT, only: list[str] | None = None):
    out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(build_tokenizer())
    for name in only or TEMPLATES:
        golden = {"template": name, "llamafactory": lf_version, "transformers": transformers.__version__,
                  "tokenizer_fingerprint": fp, "tool_date": TOOL_DATE, "tokenizer_fix": tokenizer_fix(name, build_tokenizer()),
                  "bare_tokenizer_fix": {"vocab": BARE_VOCAB, **tokenizer_fix(name, bare_tokenizer(BARE_VOCAB))},
                  "records": RECORDS, "cases": []}
        for kind, cases in CASES.items():
            for case, names, options in cases:
                result = run_case(name, kind, names, options)
                golden["cases"].append({"kind": kind, "case": case, "records": names, "options": options, **result})
        path = out / f"{name}.json"
        path.write_text(dump(golden), encoding="utf-8")
        errors = [c["case"] for c in golden["cases"] if "error" in c]
        print(f"{path.name}: {len(golden['cases'])} cases, {path.stat().st_size // 1024} KB, LF errors: {errors}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT, sys.argv[2:])
