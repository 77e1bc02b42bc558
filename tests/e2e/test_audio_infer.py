"""Inference with audios on a tiny Qwen2-Audio: the chat engine encodes an audio message exactly as training does
and answers as model.generate does on the training collator's inputs; `tunesmith chat` attaches audios with
`/audio PATH`; the OpenAI API takes input_audio parts (base64); the merged export reloads with its feature
extractor and gives base+adapter's logits."""

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
import torch
from test_vl_api import AUTH, refused, serving

from tunesmith.cli import main
from tunesmith.config.load import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "train_audio_lora.yaml"
QUESTION = "<audio>What is this sound?"


def audio_config(model_dir, **keys):
    return load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": "qwen2_audio",
            "do_sample": False,
            "max_new_tokens": 6,
            **keys,
        },
    )


@pytest.fixture(scope="module")
def engine(tiny_audio_model_dir):
    from tunesmith.infer.engine import ChatEngine

    return ChatEngine(audio_config(tiny_audio_model_dir))


def training_prompt(model_dir, data_dir, audio: Path) -> tuple[list[int], list[str]]:
    """The prompt part (labels ignored) of the audio_demo example with `audio`, as `tunesmith train` encodes it."""
    from tunesmith.data.audio import ENCODED_AUDIOS
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.data.records import IGNORE_INDEX
    from tunesmith.model.audio import load_feature_extractor
    from tunesmith.model.load import load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(model_dir),
            "template": "qwen2_audio",
            "stage": "sft",
            "dataset": "audio_demo",
            "dataset_dir": str(data_dir),
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    data = build_datasets(config, tokenizer, "supervised", feature_extractor=load_feature_extractor(config.model))
    row = next(row for row in data.train if row[ENCODED_AUDIOS] == [str(audio)])
    first_label = next(i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
    return row["input_ids"][:first_label], row[ENCODED_AUDIOS]


def test_an_audio_message_is_encoded_as_training_encodes_it(engine, tiny_audio_model_dir, audio_data_dir):
    low = (audio_data_dir / "audios" / "low.wav").absolute()
    prompt = engine.prepare([{"role": "user", "content": QUESTION}], audios=[str(low)])
    expected, _ = training_prompt(tiny_audio_model_dir, audio_data_dir, low)
    assert prompt.ids == expected
    tokens = engine.tokenizer.convert_ids_to_tokens(prompt.ids)
    start = tokens.index("<|audio_bos|>")
    assert tokens[start : start + 17] == ["<|audio_bos|>", *["<|AUDIO|>"] * 15, "<|audio_eos|>"]  # 0.6 s: 15 tokens
    assert list(prompt.vision["input_features"].shape) == [1, 16, 200]
    assert prompt.vision["feature_attention_mask"].sum().item() == 60
    # decoded audio (an upload) encodes like its file
    assert engine.prepare([{"role": "user", "content": QUESTION}], audios=[engine.load_audio(low)]).ids == expected


def test_the_engine_answers_as_generate_does_on_the_training_inputs(engine, tiny_audio_model_dir, audio_data_dir):
    from tunesmith.infer.loader import generation_kwargs

    high = str((audio_data_dir / "audios" / "high.wav").absolute())
    messages = [{"role": "user", "content": QUESTION}]
    reply = engine.chat(messages, audios=[high])[0]
    assert reply.completion_tokens >= 1 and reply == engine.chat(messages, audios=[high])[0]  # greedy: deterministic
    assert "".join(engine.stream(messages, audios=[high])) == reply.text
    ids, paths = training_prompt(tiny_audio_model_dir, audio_data_dir, Path(high))
    inputs = torch.tensor([ids])
    kwargs = generation_kwargs(engine.config.generation, engine.tokenizer, engine.template)
    with torch.no_grad():
        out = engine.model.generate(
            inputs, attention_mask=torch.ones_like(inputs), **engine.audio_plugin.inputs(paths), **kwargs
        )
    assert reply.text == engine.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert reply.prompt_tokens == len(ids)


def test_audio_refusals_name_the_problem(engine, tiny_model_dir, audio_data_dir, tmp_path):
    from tunesmith.infer.audios import AudioInputError, load_audio
    from tunesmith.infer.engine import ChatEngine

    low = str(audio_data_dir / "audios" / "low.wav")
    with pytest.raises(AudioInputError, match="1 <audio> placeholders but 0 audios"):
        engine.prepare([{"role": "user", "content": QUESTION}])
    with pytest.raises(AudioInputError, match="0 <audio> placeholders but 1 audios"):
        engine.prepare([{"role": "user", "content": "What sound?"}], audios=[low])
    with pytest.raises(AudioInputError, match="not fetched"):
        load_audio("https://example.com/a.wav", 16000)
    with pytest.raises(AudioInputError, match="not audio PyAV can read"):
        load_audio(b"hello", 16000)
    with pytest.raises(AudioInputError, match="no audio file"):
        load_audio(str(tmp_path / "missing.wav"), 16000)
    encoded = base64.b64encode(Path(low).read_bytes()).decode()
    assert len(load_audio(f"data:audio/wav;base64,{encoded}", 16000)) == 9600  # 0.6 s at 16 kHz
    assert len(load_audio(Path(low).absolute().as_uri(), 8000)) == 4800  # file:// URLs, another rate
    text = ChatEngine(load_config(None, {"model_name_or_path": str(tiny_model_dir), "template": "qwen"}))
    assert not text.takes_audios
    with pytest.raises(AudioInputError, match="takes no audio: chat with an audio-language model"):
        text.prepare([{"role": "user", "content": QUESTION}], audios=[low])
    assert text.prepare([{"role": "user", "content": QUESTION}]).vision == {}  # <audio> is plain text there


def test_chat_cli_attaches_an_audio(engine, tiny_audio_model_dir, audio_data_dir, tmp_path, monkeypatch, capsys):
    low = audio_data_dir / "audios" / "low.wav"
    cfg = tmp_path / "chat.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_audio_model_dir}\ntemplate: qwen2_audio\ndo_sample: false\nmax_new_tokens: 6\n"
    )
    lines = [f"/audio {tmp_path / 'nope.wav'}", f"/audio {low}", "What is this sound?", "<audio>again?", "exit"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", str(cfg)]) == 0
    out = capsys.readouterr().out
    expected = engine.chat([{"role": "user", "content": QUESTION}], audios=[str(low)])[0].text
    assert "/audio PATH` attaches an audio" in out and "Audio not attached: audio: no audio file" in out
    assert "Audio attached (1)" in out and f"Assistant: {expected}\n" in out
    assert "Not sent: the messages hold 2 <audio> placeholders but 1 audios" in out


def ask(url: str, data: str, text: str = "What is this sound?", **extra) -> httpx.Response:
    content = [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}, {"type": "text", "text": text}]
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(url, json=body, headers=AUTH, timeout=60)


def test_the_api_takes_input_audio_parts(engine, audio_data_dir, tiny_vl_model_dir):
    from tunesmith.infer.engine import ChatEngine

    low = audio_data_dir / "audios" / "low.wav"
    data = base64.b64encode(low.read_bytes()).decode()
    messages = [{"role": "user", "content": QUESTION}]
    expected = engine.chat(messages, audios=[str(low)])[0]
    with serving(engine) as url:
        response = ask(url, data)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"] == expected.text
        assert body["usage"]["prompt_tokens"] == expected.prompt_tokens
        refused(ask(url, "***"), "base64 does not decode", code="invalid_audio")
        refused(ask(url, base64.b64encode(b"not a sound").decode()), "not audio PyAV can read", code="invalid_audio")
        refused(ask(url, data, text="<audio> and this"), "keep the text free of it")
        empty = {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
        refused(httpx.post(url, json=empty, headers=AUTH), "an input_audio part needs")
        in_reply = {
            "model": "m",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "input_audio", "input_audio": {"data": data}}]},
                {"role": "user", "content": "and?"},
            ],
        }
        refused(httpx.post(url, json=in_reply, headers=AUTH), "audios are accepted in user messages only")
        assert ask(url, data).status_code == 200  # the server is fine after all that
    vl = ChatEngine(
        load_config(None, {"model_name_or_path": str(tiny_vl_model_dir), "template": "qwen2_vl", "max_new_tokens": 2})
    )
    with serving(vl) as url:
        error = refused(ask(url, data), "takes no audio", code="model_not_multimodal")
        assert error["message"].startswith("messages[0].content[0].input_audio: ")


@pytest.fixture(scope="module")
def adapter(tiny_audio_model_dir, audio_data_dir, tmp_path_factory):
    """A LoRA adapter trained 3 steps by examples/train_audio_lora.yaml."""
    out = tmp_path_factory.mktemp("audio-lora") / "run"
    assert (
        main(
            [
                "train",
                str(EXAMPLE),
                f"model_name_or_path={tiny_audio_model_dir}",
                f"dataset_dir={audio_data_dir}",
                "dataset=audio_demo",
                f"output_dir={out}",
                "max_steps=3",
                "learning_rate=0.05",
                "warmup_ratio=0",
                "save_steps=1000",
            ]
        )
        == 0
    )
    return out


def test_merged_audio_export_reloads_with_its_extractor_and_equal_logits(
    adapter, tiny_audio_model_dir, audio_data_dir, tmp_path
):
    from peft import PeftModel
    from transformers import AutoFeatureExtractor, AutoModelForSeq2SeqLM

    from tunesmith.infer.engine import ChatEngine

    export_dir = tmp_path / "merged"
    assert (
        main(
            [
                "export",
                str(EXAMPLE),
                f"model_name_or_path={tiny_audio_model_dir}",
                f"adapter_name_or_path={adapter}",
                f"export_dir={export_dir}",
                "export_dtype=float32",
            ]
        )
        == 0
    )
    assert (export_dir / "preprocessor_config.json").is_file()
    merged = ChatEngine(audio_config(export_dir))  # the merged folder alone: model, tokenizer, feature extractor
    assert merged.takes_audios
    low = str((audio_data_dir / "audios" / "low.wav").absolute())
    prompt = merged.prepare([{"role": "user", "content": QUESTION}], audios=[low])
    ids = torch.tensor([prompt.ids])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **prompt.vision}
    extractor = AutoFeatureExtractor.from_pretrained(export_dir)
    assert extractor.to_dict() == merged.audio_plugin.feature_extractor.to_dict()
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_audio_model_dir, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        got, want = reloaded(**inputs).logits, unmerged(**inputs).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    with torch.no_grad(), unmerged.disable_adapter():
        plain = unmerged(**inputs).logits
    assert not torch.allclose(plain, want, atol=1e-4)
    assert json.loads((export_dir / "config.json").read_text())["model_type"] == "qwen2_audio"
