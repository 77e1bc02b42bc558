"""Our Qwen2.5-Omni encodings (images and audios, template qwen2_omni) equal LLaMA-Factory 0.9.5's qwen2_omni
mm_plugin ones exactly (goldens: scripts/make_omni_golden.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets"
GOLDEN = ASSETS / "golden_omni"
CASES = [case["case"] for case in json.loads((GOLDEN / "qwen2_omni.json").read_text())["cases"]]


def test_every_omni_template_has_a_golden_file():
    from tunesmith.data.template import template_table

    omni = sorted(name for name, entry in template_table().items() if entry.get("mm_plugin") == "qwen2_omni")
    assert sorted(path.stem for path in GOLDEN.glob("*.json")) == omni == ["qwen2_omni"]


def omni_plugin(template, options):
    """The plugin pair as training makes it (data/pipeline.py): data/vision.py's and data/audio.py's make_plugin
    for the template, on the tiny model's processors."""
    from tunesmith.data.audio import make_plugin as make_audio_plugin
    from tunesmith.data.omni import pair
    from tunesmith.data.vision import make_plugin
    from tunesmith.model.audio import tiny_feature_extractor
    from tunesmith.model.vision import tiny_image_processor

    multimodal = SimpleNamespace(
        image_max_pixels=options.get("image_max_pixels", 768 * 768),
        image_min_pixels=options.get("image_min_pixels", 32 * 32),
        image_do_pan_and_scan=False,
        crop_to_patches=False,
        audio_sampling_rate=16000,
    )
    image = make_plugin(template, tiny_image_processor(), multimodal)
    return pair(image, make_audio_plugin(template, tiny_feature_extractor(), multimodal))


@pytest.mark.parametrize("case_name", CASES)
def test_omni_encoding_matches_llamafactory(case_name):
    from tunesmith.data.audio import ENCODED_AUDIOS, with_audios
    from tunesmith.data.encode import encoder_for
    from tunesmith.data.omni import OmniCollator, OmniPlugin
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import ENCODED_IMAGES, with_images
    from tunesmith.errors import DataError
    from tunesmith.model.omni import OMNI_TOKENS
    from tunesmith.model.tiny import build_tokenizer, fingerprint
    from tunesmith.model.vision import add_media_tokens

    golden = json.loads((GOLDEN / "qwen2_omni.json").read_text())
    assert golden["llamafactory"] == "0.9.5" and golden["tokenizer_fingerprint"] == fingerprint(build_tokenizer())
    case = next(c for c in golden["cases"] if c["case"] == case_name)
    options = case["options"]
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, OMNI_TOKENS)
    template = get_template("qwen2_omni", tokenizer, train_on_prompt=options.get("train_on_prompt", False))
    plugin = omni_plugin(template, options)
    assert isinstance(plugin, OmniPlugin)
    records = [golden["records"][n] for n in case["records"]]
    batch = {key: [r[key] for r in records] for key in ("prompt", "response", "system", "tools", "kto_tag")}
    media = [golden["media_of"][n] for n in case["records"]]
    batch["images"] = [[str(ASSETS / "golden_vl" / "images" / image) for image in images] for images, _ in media]
    batch["audios"] = [[str(ASSETS / "golden_audio" / "audios" / audio) for audio in audios] for _, audios in media]
    args = SimpleNamespace(
        cutoff_len=options.get("cutoff_len", 1024),
        packing=None,
        mask_history=False,
        train_on_prompt=options.get("train_on_prompt", False),
    )
    base = encoder_for("supervised", template=template, tokenizer=tokenizer, data_args=args)
    encode = with_audios(with_images(base, plugin.image), plugin.audio, tokenizer)  # as data/pipeline.py wraps it
    expected = case["output"]
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    whole = [sum(((f - 1) // 2 + 1 - 2) // 2 + 1 for f in want.get("frames", [])) for want in expected["media"]]
    if any(ids.count(audio_id) != n for ids, n in zip(expected["input_ids"], whole)):
        # LF's truncation cut into an <|AUDIO|> run (its model then fails: tokens != features); tunesmith refuses it
        with pytest.raises(DataError, match="cutoff_len cuts into the audio tokens"):
            encode(batch)
        return
    output = encode(batch)
    assert output["input_ids"] == expected["input_ids"]
    assert output["labels"] == expected["labels"]
    image_id = tokenizer.convert_tokens_to_ids("<|IMAGE|>")
    collate = OmniCollator(tokenizer, None, plugin)
    for row, want in enumerate(expected["media"]):
        ids = output["input_ids"][row]
        feature = {key: output[key][row] for key in ("input_ids", "attention_mask", "labels")}
        feature.update({ENCODED_IMAGES: output[ENCODED_IMAGES][row], ENCODED_AUDIOS: output[ENCODED_AUDIOS][row]})
        got = collate([feature])
        assert sorted(set(got) - {"input_ids", "attention_mask", "labels"}) == want["inputs"]  # no mm_token_type_ids
        if "pixel_values_shape" in want:
            assert list(got["pixel_values"].shape) == want["pixel_values_shape"]
            assert got["image_grid_thw"].tolist() == want["image_grid_thw"]
            assert ids.count(image_id) == sum(t * h * w // 4 for t, h, w in want["image_grid_thw"]) > 0
        if "input_features_shape" in want:
            assert list(got["input_features"].shape) == want["input_features_shape"]
            assert got["feature_attention_mask"].sum(-1).tolist() == want["frames"]
            assert ids.count(audio_id) == sum(((f - 1) // 2 + 1 - 2) // 2 + 1 for f in want["frames"]) > 0


def test_the_omni_collator_carries_both_media_twice_for_dpo():
    """dpo's pairwise batch: chosen rows, then rejected rows, each with its example's images and audios."""
    from tunesmith.data.audio import ENCODED_AUDIOS
    from tunesmith.data.omni import OmniCollator
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import ENCODED_IMAGES
    from tunesmith.model.omni import OMNI_TOKENS
    from tunesmith.model.tiny import build_tokenizer
    from tunesmith.model.vision import add_media_tokens

    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, OMNI_TOKENS)
    plugin = omni_plugin(get_template("qwen2_omni", tokenizer), {})
    feature = {
        "chosen_input_ids": [1, 2],
        "chosen_attention_mask": [1, 1],
        "chosen_labels": [1, 2],
        "rejected_input_ids": [1, 3],
        "rejected_attention_mask": [1, 1],
        "rejected_labels": [1, 3],
        ENCODED_IMAGES: [str(ASSETS / "golden_vl" / "images" / "red.png")],
        ENCODED_AUDIOS: [str(ASSETS / "golden_audio" / "audios" / "tone.wav")],
    }
    batch = OmniCollator(tokenizer, None, plugin, pairwise=True)([feature])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 2
    assert list(batch["input_features"].shape) == [2, 16, 200] and "mm_token_type_ids" not in batch


def test_qwen2_omni_on_a_model_without_audio_is_refused():
    from tunesmith.data.omni import pair
    from tunesmith.data.template import get_template
    from tunesmith.data.vision import make_plugin
    from tunesmith.errors import DataError
    from tunesmith.model.tiny import build_tokenizer
    from tunesmith.model.vision import tiny_image_processor

    image = make_plugin(get_template("qwen2_omni", build_tokenizer()), tiny_image_processor())
    with pytest.raises(DataError, match="template qwen2_omni is Qwen2.5-Omni's"):
        pair(image, None)
