"""Writes tests/assets/golden_vl/<template>.json: LLaMA-Factory 0.9.5's image encodings (input_ids, labels, the
expanded image token runs, pixel_values' shape and image_grid_thw / image_sizes / token_type_ids) for the VL
templates (Qwen-VL, Gemma 3, InternVL, LLaVA, LLaVA-NeXT), for our golden test.

Dev tool only; it runs in the LF venv like scripts/make_golden.py (whose text records and stubs it reuses):

    PYTHONPATH=src /work/venvs/lf/bin/python scripts/make_vl_golden.py [TEMPLATE ...]   # default: all VL ones

The images are tests/assets/golden_vl/images/*.png (written here, once, if absent). The processor is tunesmith's
tiny PIL Qwen2-VL image processor (model/vision.py), which LF's mm_plugin calls as it would a model's, after its
own resizing (image_max_pixels/image_min_pixels, set on the processor as LF's loader does).

Gemma 3: the tiny PIL Gemma 3 image processor (model/tiny_gemma3.py) behind a processor with Gemma3Processor's
attributes (boi_token, full_image_sequence, image_token_id, image_seq_length). With image_do_pan_and_scan, LF 0.9.5's
Gemma3Plugin reads num_crops as transformers 4 returned it ([[crops of image 0, of image 1, ...]]: it indexes
num_crops[0][i]); transformers 5's image processor returns a flat tensor, on which LF 0.9.5 itself fails (IndexError),
so the processor here hands LF the transformers 4 layout (NestedCrops) and LF's code runs unchanged.

InternVL: the tiny PIL GOT-OCR2 image processor (model/tiny_internvl.py) with image_seq_length and crop_to_patches
set as LF's loader sets them on InternVLProcessor (whose video processor needs torchvision, so it is not built).

LLaVA(-NeXT): the tiny PIL image processor of the family (model/vision_llava.py) in transformers' own LlavaProcessor /
LlavaNextProcessor with the tiny models' processor settings (patch_size, num_additional_image_tokens,
vision_feature_select_strategy), as LF loads it.
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
from tunesmith.model.tiny_gemma3 import GEMMA3_TOKENS, tiny_gemma3_image_processor
from tunesmith.model.tiny_internvl import INTERNVL_TOKENS, tiny_internvl_image_processor
from tunesmith.model.vision import VL_TOKENS, add_media_tokens, tiny_image_processor

OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "golden_vl"
# the image templates (qwen2_audio: scripts/make_audio_golden.py; qwen2_omni: scripts/make_omni_golden.py)
TEMPLATES = [n for n, e in template_table().items() if e.get("mm_plugin") not in (None, "qwen2_audio", "qwen2_omni")]
LLAVA = {"llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor"}  # mm_plugin -> its family's processor class
IMAGES = {
    "red.png": ((64, 48), (220, 30, 30)),
    "blue.png": ((40, 72), (30, 30, 220)),
    "big.png": ((900, 700), (30, 200, 30)),
    "tiny.png": ((20, 10), (200, 200, 30)),
    "wide.png": ((1200, 400), (200, 30, 200)),  # pan-and-scan: 3 crops of 400x400
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
    "wide_image": make_golden.record([msg("user", "<image>Read the banner.")], [msg("assistant", "Purple.")]),
}
IMAGES_OF = {
    "one_image": ["red.png"],
    "two_images_two_turns": ["red.png", "blue.png"],
    "big_image": ["big.png"],
    "tiny_image": ["tiny.png"],
    "wide_image": ["wide.png"],
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
# template -> its own cases (keys only that family has)
TEMPLATE_CASES = {
    "gemma3": {
        "pan_and_scan_wide": (["wide_image"], {"image_do_pan_and_scan": True}),
        # crops for the wide image, none for the others (LF still writes its sentence around them)
        "pan_and_scan_batch": (["one_image", "wide_image", "two_images_two_turns"], {"image_do_pan_and_scan": True}),
        "pan_and_scan_big_max_pixels": (["big_image"], {"image_do_pan_and_scan": True, "image_max_pixels": 512 * 256}),
    },
    "intern_vl": {
        "crop_to_patches_wide": (["wide_image"], {"crop_to_patches": True}),
        "crop_to_patches_batch": (["one_image", "wide_image", "two_images_two_turns"], {"crop_to_patches": True}),
        "crop_to_patches_big_max_pixels": (["big_image"], {"crop_to_patches": True, "image_max_pixels": 128 * 128}),
    },
}


class NestedCrops:
    """An image processor whose num_crops comes in transformers 4's layout, [[per image]], as LF 0.9.5 reads it."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, images, **kwargs):
        out = self.image_processor(images, **kwargs)
        if "num_crops" in out:
            out["num_crops"] = [out["num_crops"].tolist()]
        return out


def make_processor(name, options):
    """The tokenizer with the family's image tokens and an LF processor stand-in for it."""
    tokenizer = build_tokenizer()
    bounds = {
        "image_max_pixels": options.get("image_max_pixels", 768 * 768),
        "image_min_pixels": options.get("image_min_pixels", 32 * 32),
    }
    plugin = template_table()[name]["mm_plugin"]
    if plugin in LLAVA:
        import transformers

        vision_llava.add_image_token(tokenizer)
        processor = getattr(transformers, LLAVA[plugin])(
            image_processor=vision_llava.tiny_image_processor(plugin),
            tokenizer=tokenizer,
            **vision_llava.tiny_settings(),
        )
        for key, value in bounds.items():
            setattr(processor, key, value)
        return tokenizer, processor
    if name == "gemma3":
        ids = add_media_tokens(tokenizer, GEMMA3_TOKENS)
        image_processor = tiny_gemma3_image_processor()
        length = image_processor.image_seq_length
        processor = types.SimpleNamespace(
            image_processor=NestedCrops(image_processor),
            boi_token="<start_of_image>",
            image_token_id=ids["<image_soft_token>"],
            image_seq_length=length,
            full_image_sequence="\n\n<start_of_image>" + "<image_soft_token>" * length + "<end_of_image>\n\n",
            image_do_pan_and_scan=options.get("image_do_pan_and_scan", False),
            **bounds,
        )
        return tokenizer, processor
    if name == "intern_vl":
        add_media_tokens(tokenizer, INTERNVL_TOKENS)
        image_processor = tiny_internvl_image_processor()
        processor = types.SimpleNamespace(
            image_processor=image_processor,
            image_seq_length=image_processor.image_seq_length,
            crop_to_patches=options.get("crop_to_patches", False),
            **bounds,
        )
        return tokenizer, processor
    add_media_tokens(tokenizer, VL_TOKENS)
    image_processor = tiny_image_processor()
    processor = types.SimpleNamespace(
        image_processor=image_processor,
        video_processor=image_processor,
        model_input_names=["pixel_values", "image_grid_thw"],
        **bounds,
    )
    return tokenizer, processor


def write_images() -> None:
    from PIL import Image

    (OUT / "images").mkdir(parents=True, exist_ok=True)
    for name, (size, color) in IMAGES.items():
        if not (OUT / "images" / name).is_file():
            Image.new("RGB", size, color).save(OUT / "images" / name)


def run_case(name, names, options):
    tokenizer, processor = make_processor(name, options)
    lf_template.TEMPLATES[name] = copy.deepcopy(make_golden.PRISTINE[name])
    args = DataArguments(
        template=name, cutoff_len=options.get("cutoff_len", 1024), train_on_prompt=options.get("train_on_prompt", False)
    )
    template = get_template_and_fix_tokenizer(tokenizer, args)
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
        one = {"pixel_values_shape": list(inputs["pixel_values"].shape)}
        for key in ("image_grid_thw", "image_sizes"):
            if key in inputs:
                one[key] = inputs[key].tolist()
        if "token_type_ids" in inputs:
            one["token_type_ids"] = inputs["token_type_ids"][0]
        media.append(one)
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
        for case, (names, options) in {**CASES, **TEMPLATE_CASES.get(name, {})}.items():
            golden["cases"].append(
                {"case": case, "records": names, "options": options, "output": run_case(name, names, options)}
            )
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"{path.name}: {len(golden['cases'])} cases, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv[1:] or None)
