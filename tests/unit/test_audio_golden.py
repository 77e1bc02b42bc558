"""Our audio encodings equal LLaMA-Factory 0.9.5's qwen2_audio mm_plugin ones exactly (goldens:
scripts/make_audio_golden.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "golden_audio"
CASES = [
    (path.stem, case["case"])
    for path in sorted(GOLDEN.glob("*.json"))
    for case in json.loads(path.read_text())["cases"]
]


def test_every_audio_template_has_a_golden_file():
    from tunesmith.data.audio import audio_template_names

    assert sorted(path.stem for path in GOLDEN.glob("*.json")) == ["qwen2_audio"]
    assert sorted(audio_template_names()) == ["qwen2_audio", "qwen2_omni"]  # qwen2_omni: golden_omni (images too)


def test_pyav_decodes_the_golden_audios_to_lfs_sample_counts():
    """The goldens were made from these decodings (channels averaged, resampled to 16 kHz): same lengths here."""
    from tunesmith.data.audio import decode_audio

    golden = json.loads((GOLDEN / "qwen2_audio.json").read_text())
    for name, samples in golden["samples"].items():
        assert len(decode_audio(GOLDEN / "audios" / name, 16000)) == samples, name


@pytest.mark.parametrize(("name", "case_name"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_audio_encoding_matches_llamafactory(name, case_name):
    from tunesmith.data.audio import ENCODED_AUDIOS, make_plugin, with_audios
    from tunesmith.data.encode import encoder_for
    from tunesmith.data.template import get_template
    from tunesmith.errors import DataError
    from tunesmith.model.audio import AUDIO_TOKENS, tiny_feature_extractor
    from tunesmith.model.tiny import build_tokenizer, fingerprint
    from tunesmith.model.vision import add_media_tokens

    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert golden["llamafactory"] == "0.9.5" and golden["tokenizer_fingerprint"] == fingerprint(build_tokenizer())
    case = next(c for c in golden["cases"] if c["case"] == case_name)
    options = case["options"]
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, AUDIO_TOKENS)
    template = get_template(name, tokenizer, train_on_prompt=options.get("train_on_prompt", False))
    plugin = make_plugin(template, tiny_feature_extractor(), SimpleNamespace(audio_sampling_rate=16000))
    records = [golden["records"][n] for n in case["records"]]
    batch = {key: [r[key] for r in records] for key in ("prompt", "response", "system", "tools", "kto_tag")}
    batch["audios"] = [[str(GOLDEN / "audios" / audio) for audio in golden["audios_of"][n]] for n in case["records"]]
    args = SimpleNamespace(
        cutoff_len=options.get("cutoff_len", 1024),
        packing=None,
        mask_history=False,
        train_on_prompt=options.get("train_on_prompt", False),
    )
    encode = with_audios(
        encoder_for("supervised", template=template, tokenizer=tokenizer, data_args=args), plugin, tokenizer
    )
    expected = case["output"]
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    whole = [sum(((f - 1) // 2 + 1 - 2) // 2 + 1 for f in media["frames"]) for media in expected["media"]]
    per_audio = [((f - 1) // 2 + 1 - 2) // 2 + 1 for media in expected["media"] for f in media["frames"]]
    if min(per_audio) < 2:
        # LF encodes a lone <|AUDIO|> (a ~50 ms clip), which transformers' Qwen2-Audio then fails on; tunesmith refuses
        with pytest.raises(DataError, match="is too short"):
            encode(batch)
        return
    if any(ids.count(audio_id) != n for ids, n in zip(expected["input_ids"], whole)):
        # LF's truncation cut into an <|AUDIO|> run (its model then fails: tokens != features); tunesmith refuses it
        with pytest.raises(DataError, match="cutoff_len cuts into the audio tokens"):
            encode(batch)
        return
    output = encode(batch)
    assert output["input_ids"] == expected["input_ids"]
    assert output["labels"] == expected["labels"]
    for ids, paths, media in zip(output["input_ids"], output[ENCODED_AUDIOS], expected["media"]):
        inputs = plugin.inputs(paths)
        assert list(inputs["input_features"].shape) == media["input_features_shape"]
        assert list(inputs["feature_attention_mask"].shape) == media["feature_attention_mask_shape"]
        assert inputs["feature_attention_mask"].sum(-1).tolist() == media["frames"]
        # the <|AUDIO|> runs: one per audio, as long as the model's encoder makes features of it
        assert ids.count(audio_id) == sum(((f - 1) // 2 + 1 - 2) // 2 + 1 for f in media["frames"]) > 0
