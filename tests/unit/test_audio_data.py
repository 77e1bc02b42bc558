"""Audios in training data: LF's `audios` column with <audio> placeholders, paths, checks, PyAV decoding and the
Qwen2-Audio encoding (the exact token counts are pinned against LF by tests/unit/test_audio_golden.py)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunesmith.data.loader import load_records
from tunesmith.errors import ConfigError, DataError

LF_DATA = Path(__file__).resolve().parents[3] / "shared" / "lf-demo-data"


def test_sharegpt_and_alpaca_audios_resolve_against_the_dataset_dir(audio_data_dir):
    records = load_records(["audio_demo", "audio_alpaca"], str(audio_data_dir), "sft")
    assert records.column_names[-1] == "audios"
    rows = records.to_list()
    assert [len(r["audios"]) for r in rows] == [1, 1, 2, 1]
    assert rows[0]["audios"] == [str(audio_data_dir / "audios" / "low.wav")]
    assert rows[3]["prompt"][0]["content"] == "<audio>Name the pitch."


def test_media_dir_moves_the_audios(audio_data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(audio_data_dir, data)
    media = tmp_path / "media"
    media.mkdir()
    (data / "audios").rename(media / "audios")
    with pytest.raises(DataError, match=r"audio 0 \(audios/low.wav\) not found"):
        load_records(["audio_alpaca"], str(data), "sft")
    records = load_records(["audio_alpaca"], str(data), "sft", media_dir=str(media))
    assert records[0]["audios"] == [str(media / "audios" / "low.wav")]


def test_text_image_and_audio_datasets_mix(audio_data_dir, vl_data_dir, tmp_path):
    (tmp_path / "text.json").write_text(json.dumps([{"instruction": "hi", "output": "hello"}]))
    records = load_records(["audio_alpaca", str(tmp_path / "text.json")], str(audio_data_dir), "sft")
    assert records["audios"] == [[str(audio_data_dir / "audios" / "low.wav")], []]
    shutil.copy(vl_data_dir / "vl_alpaca.json", tmp_path / "vl.json")
    (tmp_path / "images").symlink_to(vl_data_dir / "images")
    (tmp_path / "audios").symlink_to(audio_data_dir / "audios")
    mixed = load_records(
        ["audio_alpaca", str(tmp_path / "vl.json")], str(audio_data_dir), "sft", media_dir=str(tmp_path)
    )
    assert mixed.column_names[-2:] == ["images", "audios"]
    assert [len(a) for a in mixed["audios"]] == [1, 0] and [len(i) for i in mixed["images"]] == [0, 1]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"audios": ["audios/none.wav"]}, "audio 0 (audios/none.wav) not found"),
        ({"audios": ["audios/bad.wav"]}, "is unreadable: PyAV cannot open it"),
        ({"audios": ["audios/picture.png"]}, "is unreadable: it holds no audio stream"),
        ({"audios": ["audios/low.wav", "audios/low.wav"]}, "1 <audio> placeholders in its messages but 2 audios"),
        ({"audios": []}, "1 <audio> placeholders in its messages but 0 audios"),
        ({"audios": [3]}, "audio 0 must be a file path"),
    ],
)
def test_bad_audios_name_the_file_record_and_medium(audio_data_dir, tmp_path, row, expected):
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(audio_data_dir, data)
    (data / "audios" / "bad.wav").write_text("not audio")
    Image.new("RGB", (8, 8)).save(data / "audios" / "picture.png")
    good = {"instruction": "<audio>Name it.", "input": "", "output": "low", "audios": ["audios/low.wav"]}
    (data / "audio_alpaca.json").write_text(json.dumps([good, {**good, **row}]))
    with pytest.raises(DataError) as err:
        load_records(["audio_alpaca"], str(data), "sft")
    message = str(err.value)
    assert "audio_alpaca.json) record 1 (0-based" in message and "(medium: audio)" in message and expected in message


def test_audios_and_videos_in_one_record_load_both(audio_data_dir, tmp_path):
    """LF's mllm_video_audio_demo layout: both columns load (training them together needs Qwen2.5-Omni)."""
    from conftest import write_video

    data = tmp_path / "data"
    shutil.copytree(audio_data_dir, data)
    write_video(data / "videos" / "v.mp4", 4, 2)
    info = json.loads((data / "dataset_info.json").read_text())
    info["audio_demo"]["columns"]["videos"] = "videos"
    (data / "dataset_info.json").write_text(json.dumps(info))
    row = {"messages": [{"role": "user", "content": "<video><audio>What is it?"},
                        {"role": "assistant", "content": "A tone."}],
           "audios": ["audios/low.wav"], "videos": ["videos/v.mp4"]}
    (data / "audio_demo.json").write_text(json.dumps([row]))
    record = load_records(["audio_demo"], str(data), "sft")[0]
    assert record["audios"] == [str(data / "audios" / "low.wav")] and record["videos"] == [str(data / "videos" / "v.mp4")]


def test_pyav_decodes_mono_at_the_sampling_rate(tmp_path):
    import numpy as np
    from conftest import write_tone

    from tunesmith.data.audio import AudioDecodeError, decode_audio

    stereo = write_tone(tmp_path / "s.wav", 0.5, rate=44100, channels=2)
    wave = decode_audio(stereo, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == 8000
    assert 0.45 < float(np.abs(wave).max()) < 0.55  # the channels averaged (not summed), amplitude 0.5
    assert len(decode_audio(stereo, 8000)) == 4000
    with open(stereo, "rb") as handle:  # file objects too (chat uploads)
        assert len(decode_audio(handle, 16000)) == 8000
    (tmp_path / "x.wav").write_text("nope")
    with pytest.raises(AudioDecodeError, match="PyAV cannot decode it"):
        decode_audio(tmp_path / "x.wav", 16000)


def _plugin(rate=16000):
    from tunesmith.data.audio import make_plugin
    from tunesmith.data.template import get_template
    from tunesmith.model.audio import AUDIO_TOKENS, tiny_feature_extractor
    from tunesmith.model.tiny import build_tokenizer
    from tunesmith.model.vision import add_media_tokens

    tokenizer = build_tokenizer()
    add_media_tokens(tokenizer, AUDIO_TOKENS)
    template = get_template("qwen2_audio", tokenizer)
    multimodal = SimpleNamespace(audio_sampling_rate=rate)
    return tokenizer, template, make_plugin(template, tiny_feature_extractor(), multimodal)


def test_audios_expand_to_audio_tokens_and_features(audio_data_dir):
    _, _, plugin = _plugin()
    low, high = str(audio_data_dir / "audios" / "low.wav"), str(audio_data_dir / "audios" / "high.wav")
    messages = [{"role": "user", "content": "<audio>and<audio>?"}]
    content = plugin.expand(messages, [low, high])[0]["content"]
    # 0.6 s -> 60 mel frames -> 15 tokens; 1.0 s -> 100 frames -> 25 tokens (LF's formula)
    assert (
        content
        == "<|audio_bos|>" + "<|AUDIO|>" * 15 + "<|audio_eos|>and<|audio_bos|>" + "<|AUDIO|>" * 25 + "<|audio_eos|>?"
    )
    inputs = plugin.inputs([low, high])
    assert list(inputs["input_features"].shape) == [2, 16, 200]
    assert inputs["feature_attention_mask"].sum(-1).tolist() == [60, 100]
    with pytest.raises(DataError, match="1 <audio> placeholders but 2 audios"):
        plugin.expand([{"role": "user", "content": "<audio>"}], [low, high])
    import numpy as np

    with pytest.raises(DataError, match=r"audio 0 is too short \(50 ms of mel frames\).*at least 70 ms"):
        plugin.expand([{"role": "user", "content": "<audio>"}], [np.zeros(800, dtype=np.float32)])
    assert (
        "<|AUDIO|><|AUDIO|><|audio_eos|>"
        in plugin.expand([{"role": "user", "content": "<audio>"}], [np.zeros(1120, dtype=np.float32)])[0]["content"]
    )


def test_audio_sampling_rate_must_be_the_extractors_and_templates_need_audio_support():
    from tunesmith.data.audio import make_plugin
    from tunesmith.data.template import get_template
    from tunesmith.model.audio import tiny_feature_extractor
    from tunesmith.model.tiny import build_tokenizer

    with pytest.raises(ConfigError, match="audio_sampling_rate: 8000, but this model's feature extractor"):
        _plugin(8000)
    with pytest.raises(DataError, match="template qwen has no audio support.*qwen2_audio"):
        make_plugin(get_template("qwen", build_tokenizer()), tiny_feature_extractor())


def test_the_collator_adds_input_features_in_order(audio_data_dir):
    from tunesmith.data.audio import ENCODED_AUDIOS, AudioCollator, with_audios
    from tunesmith.data.encode import encoder_for

    tokenizer, template, plugin = _plugin()
    records = load_records(["audio_demo"], str(audio_data_dir), "sft").to_dict()
    args = SimpleNamespace(cutoff_len=1024, packing=None, mask_history=False, train_on_prompt=False)
    encoded = with_audios(
        encoder_for("supervised", template=template, tokenizer=tokenizer, data_args=args), plugin, tokenizer
    )(records)
    assert [len(paths) for paths in encoded[ENCODED_AUDIOS]] == [1, 1, 2]
    features = [{key: encoded[key][i] for key in encoded} for i in range(3)]
    batch = AudioCollator(tokenizer, None, plugin)(features)
    assert ENCODED_AUDIOS not in batch
    assert list(batch["input_features"].shape) == [4, 16, 200]
    assert batch["feature_attention_mask"].sum(-1).tolist() == [60, 100, 60, 100]
    assert batch["input_ids"].shape == batch["labels"].shape


def test_text_models_refuse_audio_data(audio_data_dir):
    from tunesmith.data.audio import check_audios_fit

    records = load_records(["audio_demo"], str(audio_data_dir), "sft")
    with pytest.raises(DataError, match="the model has no audio feature extractor.*--arch qwen2_audio"):
        check_audios_fit(records, "supervised", None)
    with pytest.raises(DataError, match="audios are trained with stages sft and dpo only"):
        check_audios_fit(records, "unsupervised", object())


@pytest.mark.skipif(not (LF_DATA / "mllm_audio_demo.json").is_file(), reason="../shared/lf-demo-data is absent")
def test_llamafactorys_audio_demo_loads_and_encodes():
    _, _, plugin = _plugin()
    records = load_records(["mllm_audio_demo"], str(LF_DATA), "sft").to_list()
    assert [Path(r["audios"][0]).name for r in records] == ["1.mp3", "2.wav", "3.flac"]
    for record in records:
        content = plugin.expand(record["prompt"], record["audios"])[0]["content"]
        assert content.startswith("<|audio_bos|><|AUDIO|>") and "<|audio_eos|>" in content
