"""Predict's encoding of audio records equals LLaMA-Factory 0.9.5's UnsupervisedDatasetProcessor with the
qwen2_audio plugin (prompt ids with the <|AUDIO|> runs, reference answer ids, the decoded prompt);
goldens: scripts/make_audio_predict_golden.py."""

import json
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets"
GOLDEN = json.loads((ASSETS / "golden_audio_predict.json").read_text())
CASES = [case["case"] for case in GOLDEN["cases"]]


@pytest.mark.parametrize("case_name", CASES)
def test_audio_predict_encoding_matches_llamafactory(case_name):
    from datasets import Dataset

    from tunesmith.data.audio import ENCODED_AUDIOS, make_plugin
    from tunesmith.data.encode import encode_unsupervised
    from tunesmith.data.template import get_template
    from tunesmith.errors import DataError
    from tunesmith.evaluate.predict import encode_with_media
    from tunesmith.model.audio import AUDIO_TOKENS, tiny_feature_extractor
    from tunesmith.model.tiny import build_tokenizer, fingerprint
    from tunesmith.model.vision import add_media_tokens

    assert GOLDEN["llamafactory"] == "0.9.5" and GOLDEN["tokenizer_fingerprint"] == fingerprint(build_tokenizer())
    case = next(c for c in GOLDEN["cases"] if c["case"] == case_name)
    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, AUDIO_TOKENS)
    template = get_template(GOLDEN["template"], tokenizer)
    plugin = make_plugin(template, tiny_feature_extractor(), SimpleNamespace(audio_sampling_rate=16000))
    records = [GOLDEN["records"][n] for n in case["records"]]
    batch = {key: [r[key] for r in records] for key in ("prompt", "response", "system", "tools")}
    batch["audios"] = [
        [str(ASSETS / "golden_audio" / "audios" / a) for a in GOLDEN["audios_of"][n]] for n in case["records"]
    ]
    cutoff_len = case["options"].get("cutoff_len", 1024)
    encode = partial(encode_unsupervised, template=template, tokenizer=tokenizer, cutoff_len=cutoff_len)
    expected = case["output"]
    if case_name == "audio_cut":  # LF cuts the <|AUDIO|> run (its model then fails: tokens != features)
        audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
        assert 0 < expected["input_ids"][0].count(audio_id) < 12  # of the 12 of its 0.5 s tone
        with pytest.raises(DataError, match=f"record 0: cutoff_len={cutoff_len} cuts its prompt inside the audio"):
            encode_with_media(Dataset.from_dict(batch), encode, plugin, tokenizer, cutoff_len)
        return
    output = encode_with_media(Dataset.from_dict(batch), encode, plugin, tokenizer, cutoff_len)
    assert output["input_ids"] == expected["input_ids"]
    assert output["labels"] == expected["labels"]
    assert tokenizer.batch_decode(output["input_ids"], skip_special_tokens=False) == expected["prompts"]
    assert output[ENCODED_AUDIOS] == batch["audios"]
