"""Predict's prompts with images equal LLaMA-Factory 0.9.5's (its UnsupervisedDatasetProcessor with the qwen2_vl
mm_plugin): input_ids with the expanded image tokens, the reference labels and the decoded `prompt` field
(goldens: scripts/make_vl_predict_golden.py)."""

import json
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets"
GOLDEN = json.loads((ASSETS / "golden_vl_predict.json").read_text())
CASES = [(name, case["case"]) for name, cases in GOLDEN["templates"].items() for case in cases]


@pytest.mark.parametrize(("name", "case_name"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_predict_encoding_matches_llamafactory(name, case_name):
    from datasets import Dataset

    from tunesmith.data.encode import encode_unsupervised
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import ENCODED_IMAGES, make_plugin
    from tunesmith.evaluate.predict import encode_with_media
    from tunesmith.model.tiny import build_tokenizer, fingerprint
    from tunesmith.model.vision import VL_TOKENS, add_media_tokens, tiny_image_processor

    assert GOLDEN["llamafactory"] == "0.9.5" and GOLDEN["tokenizer_fingerprint"] == fingerprint(build_tokenizer())
    case = next(c for c in GOLDEN["templates"][name] if c["case"] == case_name)
    options = case["options"]
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, VL_TOKENS)
    template = get_template(name, tokenizer)
    bounds = SimpleNamespace(
        image_max_pixels=options.get("image_max_pixels", 768 * 768),
        image_min_pixels=options.get("image_min_pixels", 32 * 32),
        image_do_pan_and_scan=False,
        crop_to_patches=False,
    )
    plugin = make_plugin(template, tiny_image_processor(), bounds)
    records = [GOLDEN["records"][n] for n in case["records"]]
    batch = {key: [r[key] for r in records] for key in ("prompt", "response", "system", "tools")}
    batch["images"] = [
        [str(ASSETS / "golden_vl" / "images" / i) for i in GOLDEN["images_of"][n]] for n in case["records"]
    ]
    cutoff_len = options.get("cutoff_len", 1024)
    encode = partial(encode_unsupervised, template=template, tokenizer=tokenizer, cutoff_len=cutoff_len)
    output = encode_with_media(Dataset.from_dict(batch), encode, plugin, tokenizer, cutoff_len)
    expected = case["output"]
    assert output["input_ids"] == expected["input_ids"]
    assert output["labels"] == expected["labels"]
    assert tokenizer.batch_decode(output["input_ids"], skip_special_tokens=False) == expected["prompts"]
    assert output[ENCODED_IMAGES] == batch["images"]
