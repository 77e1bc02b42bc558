"""Our image encodings equal LLaMA-Factory 0.9.5's mm_plugin ones exactly (goldens: scripts/make_vl_golden.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden_vl"
CASES = [
    (path.stem, case["case"])
    for path in sorted(GOLDEN.glob("*.json"))
    for case in json.loads(path.read_text())["cases"]
]


def test_every_vl_template_has_a_golden_file():
    from tunesmith.data.audio import audio_template_names
    from tunesmith.data.template import template_table

    audio = set(audio_template_names())  # golden_audio (tests/unit/test_audio_golden.py)
    vl = sorted(name for name, entry in template_table().items() if entry.get("mm_plugin") and name not in audio)
    assert sorted(path.stem for path in GOLDEN.glob("*.json")) == vl


def family(name: str):
    """(tokenizer, image processor) of a VL template's family, as scripts/make_vl_golden.py builds them."""
    from tunesmith.data.template import template_table
    from tunesmith.model import vision_llava
    from tunesmith.model.tiny import build_tokenizer
    from tunesmith.model.tiny_gemma3 import GEMMA3_TOKENS, tiny_gemma3_image_processor
    from tunesmith.model.tiny_internvl import INTERNVL_TOKENS, tiny_internvl_image_processor
    from tunesmith.model.vision import VL_TOKENS, add_media_tokens, tiny_image_processor

    tokenizer = build_tokenizer()
    plugin = template_table()[name]["mm_plugin"]
    if plugin == "gemma3":
        add_media_tokens(tokenizer, GEMMA3_TOKENS)
        return tokenizer, tiny_gemma3_image_processor()
    if plugin == "intern_vl":
        add_media_tokens(tokenizer, INTERNVL_TOKENS)
        return tokenizer, tiny_internvl_image_processor()
    if plugin in vision_llava.ARCHS:
        vision_llava.add_image_token(tokenizer)
        image_processor = vision_llava.tiny_image_processor(plugin)
        image_processor.processor_settings = vision_llava.tiny_settings()  # as load_image_processor attaches them
        return tokenizer, image_processor
    add_media_tokens(tokenizer, VL_TOKENS)
    return tokenizer, tiny_image_processor()


@pytest.mark.parametrize(("name", "case_name"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_image_encoding_matches_llamafactory(name, case_name):
    from tunesmith.data.encode import encoder_for
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import make_plugin, with_images
    from tunesmith.model.tiny import build_tokenizer, fingerprint

    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert golden["llamafactory"] == "0.9.5" and golden["tokenizer_fingerprint"] == fingerprint(build_tokenizer())
    case = next(c for c in golden["cases"] if c["case"] == case_name)
    options = case["options"]
    tokenizer, image_processor = family(name)
    template = get_template(name, tokenizer, train_on_prompt=options.get("train_on_prompt", False))
    bounds = SimpleNamespace(
        image_max_pixels=options.get("image_max_pixels", 768 * 768),
        image_min_pixels=options.get("image_min_pixels", 32 * 32),
        image_do_pan_and_scan=options.get("image_do_pan_and_scan", False),
        crop_to_patches=options.get("crop_to_patches", False),
    )
    plugin = make_plugin(template, image_processor, bounds)
    records = [golden["records"][n] for n in case["records"]]
    batch = {key: [r[key] for r in records] for key in ("prompt", "response", "system", "tools", "kto_tag")}
    batch["images"] = [[str(GOLDEN / "images" / image) for image in golden["images_of"][n]] for n in case["records"]]
    args = SimpleNamespace(
        cutoff_len=options.get("cutoff_len", 1024),
        packing=None,
        mask_history=False,
        train_on_prompt=options.get("train_on_prompt", False),
    )
    output = with_images(encoder_for("supervised", template=template, tokenizer=tokenizer, data_args=args), plugin)(
        batch
    )
    expected = case["output"]
    assert output["input_ids"] == expected["input_ids"]
    assert output["labels"] == expected["labels"]
    assert len(output["image_paths"]) == len(expected["media"])
    for paths, ids, media in zip(output["image_paths"], output["input_ids"], expected["media"]):
        inputs = plugin.inputs(paths)
        assert list(inputs["pixel_values"].shape) == media["pixel_values_shape"]
        for key in ("image_grid_thw", "image_sizes"):  # Qwen-VL's grids, LLaVA-NeXT's sizes
            assert (inputs[key].tolist() if key in inputs else None) == media.get(key)
        if "token_type_ids" in media:  # Gemma 3
            import torch

            assert (
                plugin.batch_inputs(tokenizer, torch.tensor([ids]))["token_type_ids"][0].tolist()
                == (media["token_type_ids"])
            )
