"""Writes tests/assets/golden_audio_predict.json: LLaMA-Factory 0.9.5's predict encodings of audio records (its
UnsupervisedDatasetProcessor: the prompt's input_ids with the expanded <|AUDIO|> runs, and the reference answer's ids
as labels) for the qwen2_audio template, for tests/unit/test_audio_predict_golden.py.

Dev tool only; it runs in the LF venv like scripts/make_audio_golden.py, whose records, audios (decoded by
tunesmith's PyAV decoder and handed to LF as arrays) and tiny feature extractor it reuses:

    PYTHONPATH=src /work/venvs/lf/bin/python scripts/make_audio_predict_golden.py
"""

import copy
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_audio_golden
import make_golden
from llamafactory.data import template as lf_template
from llamafactory.data.processor import UnsupervisedDatasetProcessor
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

from tunesmith.data.audio import decode_audio
from tunesmith.model.audio import AUDIO_TOKENS, tiny_feature_extractor
from tunesmith.model.tiny import build_tokenizer, fingerprint
from tunesmith.model.vision import add_media_tokens

OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden_audio_predict.json"
NAME = make_audio_golden.NAME
# case -> (records, options); "audio_cut" is cut inside its <|AUDIO|> run by cutoff_len (tunesmith refuses it)
CASES = {
    "one_audio": (["one_audio"], {}),
    "two_audios_two_turns": (["two_audios_two_turns"], {}),
    "long_audio_window": (["long_audio"], {}),
    "resampled_chirp": (["chirp"], {}),
    "batch": (["one_audio", "two_audios_two_turns", "long_audio"], {}),
    "long_answer_cut": (["long_answer"], {"cutoff_len": 96}),  # the answer is cut, the prompt kept whole
    "audio_cut": (["long_answer"], {"cutoff_len": 80}),  # 11 of its 12 <|AUDIO|> kept
}


def run_case(names, options):
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, AUDIO_TOKENS)
    lf_template.TEMPLATES[NAME] = copy.deepcopy(make_golden.PRISTINE[NAME])
    args = DataArguments(template=NAME, cutoff_len=options.get("cutoff_len", 1024))
    template = get_template_and_fix_tokenizer(tokenizer, args)
    processor = types.SimpleNamespace(
        feature_extractor=tiny_feature_extractor(),
        audio_sampling_rate=16000,
        audio_bos_token="<|audio_bos|>",
        audio_eos_token="<|audio_eos|>",
        model_input_names=["input_features", "feature_attention_mask"],
    )
    waves = {name: decode_audio(make_audio_golden.OUT / "audios" / name, 16000) for name in make_audio_golden.AUDIOS}
    records = make_audio_golden.RECORDS
    batch = {
        "_prompt": [copy.deepcopy(records[n]["prompt"]) for n in names],
        "_response": [copy.deepcopy(records[n]["response"]) for n in names],
        "_system": [records[n]["system"] for n in names],
        "_tools": [records[n]["tools"] for n in names],
        "_images": [None] * len(names),
        "_videos": [None] * len(names),
        "_audios": [[waves[audio] for audio in make_audio_golden.AUDIOS_OF[n]] for n in names],
    }
    output = UnsupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=processor, data_args=args
    ).preprocess_dataset(batch)
    prompts = tokenizer.batch_decode(output["input_ids"], skip_special_tokens=False)  # LF's `prompt` field
    return {"input_ids": output["input_ids"], "labels": output["labels"], "prompts": prompts}


def main():
    make_audio_golden.write_audios()
    golden = {
        "template": NAME,
        "llamafactory": make_golden.lf_version,
        "tokenizer_fingerprint": fingerprint(build_tokenizer()),
        "records": make_audio_golden.RECORDS,
        "audios_of": make_audio_golden.AUDIOS_OF,
        "cases": [
            {"case": case, "records": names, "options": options, "output": run_case(names, options)}
            for case, (names, options) in CASES.items()
        ],
    }
    OUT.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{OUT.name}: {len(CASES)} cases, {OUT.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
