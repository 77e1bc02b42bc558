"""Writes tests/assets/golden_vl/<template>.json: LLaMA-Factory 0.9.5's image encodings (input_ids, labels, the
expanded image token runs, pixel_values' shape and image_grid_thw / image_sizes) for the VL templates (Qwen-VL,
LLaVA, LLaVA-NeXT), for our golden test.

Dev tool only; it runs in the LF venv like scripts/make_golden.py (whose text records and stubs it reuses):

    PYTHONPATH=src /work/venvs/lf/bin/python scripts/make_vl_golden.py [TEMPLATE ...]   # default: all VL ones

The images are tests/assets/golden_vl/images/*.png (written here, once, if absent). The processor is tunesmith's
tiny PIL image processor of the family (model/vision.py, model/vision_llava.py), which LF's mm_plugin calls as it
would a model's, after its own resizing (image_max_pixels/image_min_pixels, set on the processor as LF's loader
does); for LLaVA(-NeXT) it sits in transformers' own LlavaProcessor / LlavaNextProcessor with the tiny models'
processor settings (patch_size, num_additional_image_tokens, vision_feature_select_strategy), as LF loads it.
"""

import copy
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden
from llamafactory.data import template as lf_template
from llamafactory.data.processor import SupervisedDatasetProcessor
from llamafactory.data.template import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

from tunesmith.data.template import template_table
from tunesmith.model import vision_llava
from tunesmith.model.tiny import build_tokenizer, fingerprint
from tunesmith.model.vision import add_vl_tokens, tiny_image_processor

OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden_vl"
TEMPLATES = [name for name, entry in template_table().items() if entry.get("mm_plugin")]
LLAVA = {"llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor"}  # mm_plugin -> its family's processor class
IMAGES = {
    "red.png": ((64, 48), (220, 30, 30)),
    "blue.png": ((40, 72), (30, 30, 220)),
    "big.png": ((900, 700), (30, 200, 30)),
    "tiny.png": ((20, 10), (200, 200, 30)),
}
msg = make_golden.msg
RECORDS = {
    "one_image": make_golden.record([msg("user", "<image>What colour is this?")], [msg("assistant", "It is red.")]),
    "two_images_two_turns": make_golden.record(
        [msg("user", "<image>Who are they?"), msg("assistant", "Two squares."), msg("user", "And this?<image>")],
        [msg("assistant", "A blue one.")],
        system="Look closely.",
    ),
    "big_image": make_golden.record([msg("user", "Describe <image> please.")], [msg("assistant", "Green.")]),
    "tiny_image": make_golden.record([msg("user", "<image>")], [msg("assistant", "Yellow.")]),
}
IMAGES_OF = {
    "one_image": ["red.png"],
    "two_images_two_turns": ["red.png", "blue.png"],
    "big_image": ["big.png"],
    "tiny_image": ["tiny.png"],
}
# case -> (records, options: cutoff_len, train_on_prompt, image_max_pixels, image_min_pixels)
CASES = {
    "one_image": (["one_image"], {}),
    "two_images_two_turns": (["two_images_two_turns"], {}),
    "big_image_default_bounds": (["big_image"], {}),
    "big_image_max_pixels": (["big_image"], {"image_max_pixels": 128 * 128}),
    "tiny_image_min_pixels": (["tiny_image"], {"image_min_pixels": 64 * 64}),
    "batch_train_on_prompt": (["one_image", "two_images_two_turns"], {"train_on_prompt": True}),
    "truncated": (["two_images_two_turns"], {"cutoff_len": 40}),
}


def write_images() -> None:
    from PIL import Image

    (OUT / "images").mkdir(parents=True, exist_ok=True)
    for name, (size, color) in IMAGES.items():
        if not (OUT / "images" / name).is_file():
            Image.new("RGB", size, color).save(OUT / "images" / name)


def make_processor(name, tokenizer, options):
    """The processor LF's plugin gets: the family's tiny image processor (in LLaVA's own processor class) with the
    resize bounds LF's patch_processor sets on it."""
    bounds = {
        "image_max_pixels": options.get("image_max_pixels", 768 * 768),
        "image_min_pixels": options.get("image_min_pixels", 32 * 32),
    }
    plugin = template_table()[name]["mm_plugin"]
    if plugin in LLAVA:
        import transformers

        image_processor = vision_llava.tiny_image_processor(plugin)
        processor = getattr(transformers, LLAVA[plugin])(
            image_processor=image_processor, tokenizer=tokenizer, **vision_llava.tiny_settings()
        )
        for key, value in bounds.items():
            setattr(processor, key, value)
        return processor
    image_processor = tiny_image_processor()
    return types.SimpleNamespace(
        image_processor=image_processor,
        video_processor=image_processor,
        model_input_names=["pixel_values", "image_grid_thw"],
        **bounds,
    )


def media_of(inputs) -> dict:
    out = {"pixel_values_shape": list(inputs["pixel_values"].shape)}
    for key in ("image_grid_thw", "image_sizes"):
        if key in inputs:
            out[key] = inputs[key].tolist()
    return out


def run_case(name, names, options):
    tokenizer = build_tokenizer()
    if template_table()[name]["mm_plugin"] in LLAVA:
        vision_llava.add_image_token(tokenizer)
    else:
        add_vl_tokens(tokenizer)
    lf_template.TEMPLATES[name] = copy.deepcopy(make_golden.PRISTINE[name])
    args = DataArguments(
        template=name, cutoff_len=options.get("cutoff_len", 1024), train_on_prompt=options.get("train_on_prompt", False)
    )
    template = get_template_and_fix_tokenizer(tokenizer, args)
    processor = make_processor(name, tokenizer, options)
    batch = {
        "_prompt": [copy.deepcopy(RECORDS[n]["prompt"]) for n in names],
        "_response": [copy.deepcopy(RECORDS[n]["response"]) for n in names],
        "_system": [RECORDS[n]["system"] for n in names],
        "_tools": [RECORDS[n]["tools"] for n in names],
        "_images": [[str(OUT / "images" / image) for image in IMAGES_OF[n]] for n in names],
        "_videos": [None] * len(names),
        "_audios": [None] * len(names),
    }
    output = SupervisedDatasetProcessor(
        template=template, tokenizer=tokenizer, processor=processor, data_args=args
    ).preprocess_dataset(batch)
    media = []
    for row, paths in enumerate(output["images"]):
        inputs = template.mm_plugin.get_mm_inputs(
            paths, [], [], [len(paths)], [0], [0], [output["input_ids"][row]], processor
        )
        media.append(media_of(inputs))
    return {"input_ids": output["input_ids"], "labels": output["labels"], "media": media}


def main(only=None):
    write_images()
    for name in only or TEMPLATES:
        golden = {
            "template": name,
            "llamafactory": make_golden.lf_version,
            "tokenizer_fingerprint": fingerprint(build_tokenizer()),
            "records": RECORDS,
            "images_of": IMAGES_OF,
            "cases": [],
        }
        for case, (names, options) in CASES.items():
            golden["cases"].append(
                {"case": case, "records": names, "options": options, "output": run_case(name, names, options)}
            )
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"{path.name}: {len(golden['cases'])} cases, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1:] or None)
