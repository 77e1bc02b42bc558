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


@pytest.mark.parametrize(("name", "case_name"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_image_encoding_matches_llamafactory(name, case_name):
    from tunesmith.data.encode import encoder_for
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import make_plugin, with_images
    from tunesmith.model.tiny import build_tokenizer, fingerprint
    from tunesmith.model.vision import add_vl_tokens, tiny_image_processor

    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert golden["llamafactory"] == "0.9.5" and golden["tokenizer_fingerprint"] == fingerprint(build_tokenizer())
    case = next(c for c in golden["cases"] if c["case"] == case_name)
    options = case["options"]
    tokenizer = build_tokenizer()
    add_vl_tokens(tokenizer)
    template = get_template(name, tokenizer, train_on_prompt=options.get("train_on_prompt", False))
    bounds = SimpleNamespace(
        image_max_pixels=options.get("image_max_pixels", 768 * 768),
        image_min_pixels=options.get("image_min_pixels", 32 * 32),
    )
    plugin = make_plugin(template, tiny_image_processor(), bounds)
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
    for paths, media in zip(output["image_paths"], expected["media"]):
        inputs = plugin.inputs(paths)
        assert list(inputs["pixel_values"].shape) == media["pixel_values_shape"]
        assert inputs["image_grid_thw"].tolist() == media["image_grid_thw"]
