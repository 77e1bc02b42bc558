"""Writes tests/assets/golden_vl_predict.json: LLaMA-Factory 0.9.5's predict encodings of image records (its
UnsupervisedDatasetProcessor: the prompt's input_ids with the expanded <|image_pad|> runs, and the reference answer's
ids as labels) for the Qwen-VL templates, for tests/unit/test_vl_predict_golden.py.

Dev tool only; it runs in the LF venv like scripts/make_vl_golden.py, whose records, images and tiny processor it
reuses:

    PYTHONPATH=src /work/venvs/lf/bin/python scripts/make_vl_predict_golden.py
"""

import copy
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden
import make_vl_golden
from llamafactory.data import template as lf_template
from llamafactory.data.processor import UnsupervisedDatasetProcessor
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

from tunesmith.model.tiny import build_tokenizer, fingerprint
from tunesmith.model.vision import VL_TOKENS, add_media_tokens, tiny_image_processor

OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden_vl_predict.json"
# case -> (records, options); none is cut by cutoff_len (a cut inside the image tokens is refused by tunesmith, and
# LLaMA-Factory's model call would fail on it)
CASES = {
    "one_image": (["one_image"], {}),
    "two_images_two_turns": (["two_images_two_turns"], {}),
    "big_image_max_pixels": (["big_image"], {"image_max_pixels": 128 * 128}),
    "tiny_image_min_pixels": (["tiny_image"], {"image_min_pixels": 64 * 64}),
    "batch": (["one_image", "two_images_two_turns", "big_image"], {}),
}


def run_case(name, names, options):
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, VL_TOKENS)
    lf_template.TEMPLATES[name] = copy.deepcopy(make_golden.PRISTINE[name])
    args = DataArguments(template=name, cutoff_len=options.get("cutoff_len", 1024))
    template = get_template_and_fix_tokenizer(tokenizer, args)
    image_processor = tiny_image_processor()
    processor = types.SimpleNamespace(
        image_processor=image_processor,
        video_processor=image_processor,
        image_max_pixels=options.get("image_max_pixels", 768 * 768),
        image_min_pixels=options.get("image_min_pixels", 32 * 32),
        model_input_names=["pixel_values", "image_grid_thw"],
    )
    records = make_vl_golden.RECORDS
    batch = {
        "_prompt": [copy.deepcopy(records[n]["prompt"]) for n in names],
        "_response": [copy.deepcopy(records[n]["response"]) for n in names],
        "_system": [records[n]["system"] for n in names],
        "_tools": [records[n]["tools"] for n in names],
        "_images": [[str(make_vl_golden.OUT / "images" / i) for i in make_vl_golden.IMAGES_OF[n]] for n in names],
        "_videos": [None] * len(names),
        "_audios": [None] * len(names),
    }
    output = UnsupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=processor, data_args=args
    ).preprocess_dataset(batch)
    prompts = tokenizer.batch_decode(output["input_ids"], skip_special_tokens=False)  # LF's `prompt` field
    return {"input_ids": output["input_ids"], "labels": output["labels"], "prompts": prompts}


def main():
    make_vl_golden.write_images()
    golden = {
        "llamafactory": make_golden.lf_version,
        "tokenizer_fingerprint": fingerprint(build_tokenizer()),
        "records": make_vl_golden.RECORDS,
        "images_of": make_vl_golden.IMAGES_OF,
        "templates": {},
    }
    for name in make_vl_golden.TEMPLATES:
        golden["templates"][name] = [
            {"case": case, "records": names, "options": options, "output": run_case(name, names, options)}
            for case, (names, options) in CASES.items()
        ]
    OUT.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{OUT.name}: {len(CASES)} cases x {len(golden['templates'])} templates, {OUT.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
