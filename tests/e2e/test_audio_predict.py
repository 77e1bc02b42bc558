"""Predict with audios on a tiny Qwen2-Audio: `tunesmith eval do_predict=true` on an audio dataset encodes each prompt
as training does and answers as the chat engine does for the same prompt and audios; left-padded batches (through the
training collator: input_features, feature_attention_mask) answer as batches of one; another audio changes the
answer; audio data on a model without audio, a cutoff_len that cuts into the audio tokens and too short an audio are
refused, naming the problem; do_train + do_predict answers with the trained model."""

import json
from pathlib import Path

import pytest
from conftest import write_tone

from tunesmith.cli import main
from tunesmith.config.load import load_config

MAX_NEW = 6
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_audio_lora.yaml"
LONG_QUESTION = (
    "<audio>Describe this sound in one long sentence, with as much detail as you can, and say whether it is "
    "high or low."
)


def predict(model_dir, data_dir, out, *overrides, dataset="audio_demo", template="qwen2_audio"):
    """`tunesmith eval` with do_predict; returns (exit code, generated_predictions.jsonl rows or None)."""
    code = main(
        [
            "eval",
            f"model_name_or_path={model_dir}",
            f"template={template}",
            "do_predict=true",
            "predict_with_generate=true",
            f"eval_dataset={dataset}",
            f"dataset_dir={data_dir}",
            f"output_dir={out}",
            f"max_new_tokens={MAX_NEW}",
            *overrides,
        ]
    )
    path = out / "generated_predictions.jsonl"
    return code, [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else None


def write_dataset(folder: Path, name: str, rows: list[tuple[str, list[str], str]]) -> Path:
    """An Alpaca dataset `name` in folder of (prompt, audio paths, answer) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"instruction": prompt, "output": answer, "audios": audios} for prompt, audios, answer in rows]
    (folder / f"{name}.json").write_text(json.dumps(records))
    columns = {"prompt": "instruction", "response": "output", "audios": "audios"}
    (folder / "dataset_info.json").write_text(json.dumps({name: {"file_name": f"{name}.json", "columns": columns}}))
    return folder


@pytest.fixture(scope="module")
def engine(tiny_audio_model_dir):
    from tunesmith.infer.engine import ChatEngine

    keys = {"model_name_or_path": str(tiny_audio_model_dir), "template": "qwen2_audio", "do_sample": False}
    return ChatEngine(load_config(None, {**keys, "max_new_tokens": MAX_NEW}))


@pytest.fixture(scope="module")
def mixed_data(audio_data_dir, tmp_path_factory):
    """Prompts of quite different lengths, with one, two and no audios, in one dataset (audios from audio_data_dir)."""
    folder = tmp_path_factory.mktemp("audio-mixed")
    low, high = (str(audio_data_dir / "audios" / name) for name in ("low.wav", "high.wav"))
    tone = str(write_tone(folder / "audios" / "tone.wav", 0.6, hz=880.0))  # the tiny model answers it at length
    rows = [
        ("<audio>Pitch?", [tone], "high"),
        (LONG_QUESTION, [high], "It is a high tone."),
        ("Say hello in three words.", [], "Hello to you."),
        ("<audio>and<audio>: which is low?", [low, high], "The first."),
    ]
    return write_dataset(folder, "mixed", rows), rows


def test_predict_with_audios_answers_as_the_chat_engine(engine, tiny_audio_model_dir, audio_data_dir, tmp_path):
    from tunesmith.data.audio import audio_seqlen
    from tunesmith.evaluate.metrics import corpus_similarity

    code, lines = predict(tiny_audio_model_dir, audio_data_dir, tmp_path / "pred", "per_device_eval_batch_size=1")
    assert code == 0 and len(lines) == 3 and all(set(line) == {"prompt", "predict", "label"} for line in lines)
    records = json.loads((audio_data_dir / "audio_demo.json").read_text())
    for record, line in zip(records, lines, strict=True):
        messages = record["messages"][:1]
        audios = [str(audio_data_dir / path) for path in record["audios"]]
        prompt = engine.prepare(messages, audios=audios)
        # the prompt as LLaMA-Factory writes it: the encoded ids decoded, audio tokens included
        assert line["prompt"] == engine.tokenizer.decode(prompt.ids, skip_special_tokens=False)
        frames = prompt.vision["feature_attention_mask"].sum(-1).tolist()
        assert line["prompt"].count("<|AUDIO|>") == sum(audio_seqlen(int(n)) for n in frames) > 0
        assert line["prompt"].count("<|audio_bos|>") == len(audios)
        reply = engine.chat(messages, audios=audios)[0]
        assert reply.completion_tokens >= 1 and line["predict"] == reply.text
        assert line["label"] == record["messages"][1]["content"] + "\n"  # <|im_end|> skipped, as for text
    assert [line["prompt"].count("<|AUDIO|>") for line in lines] == [15, 25, 40]  # 0.6 s, 1 s, both
    results = json.loads((tmp_path / "pred" / "predict_results.json").read_text())
    scores = corpus_similarity([line["predict"] for line in lines], [line["label"] for line in lines])
    assert {key: results[f"predict_{key}"] for key in scores} == {k: round(v, 4) for k, v in scores.items()}
    assert results["predict_samples"] == 3 and "predict_runtime" in results and "predict_samples_per_second" in results
    # LLaMA-Factory's predict YAML (do_predict without do_train) through `tunesmith train`, batched: the same answers
    (tmp_path / "predict.yaml").write_text(
        f"model_name_or_path: {tiny_audio_model_dir}\ntemplate: qwen2_audio\nstage: sft\ndo_predict: true\n"
        f"predict_with_generate: true\neval_dataset: audio_demo\ndataset_dir: {audio_data_dir}\n"
        f"max_new_tokens: {MAX_NEW}\nper_device_eval_batch_size: 3\noutput_dir: {tmp_path / 'via_train'}\n"
    )
    assert main(["train", str(tmp_path / "predict.yaml")]) == 0
    via_train = (tmp_path / "via_train" / "generated_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in via_train] == lines


def test_media_dir_finds_the_audios(engine, tiny_audio_model_dir, audio_data_dir, tmp_path):
    """Audio paths relative to media_dir (not dataset_dir), as training looks them up."""
    folder = write_dataset(tmp_path / "data", "elsewhere", [("<audio>Pitch?", ["low.wav"], "low")])
    code, lines = predict(
        tiny_audio_model_dir,
        folder,
        tmp_path / "pred",
        f"media_dir={audio_data_dir / 'audios'}",
        dataset="elsewhere",
    )
    low = str(audio_data_dir / "audios" / "low.wav")
    assert (
        code == 0
        and lines[0]["predict"] == engine.chat([{"role": "user", "content": "<audio>Pitch?"}], audios=[low])[0].text
    )


def test_the_audios_reach_the_model(tiny_audio_model_dir, tmp_path):
    """The same record with another audio of the same length (so the same prompt ids) is answered differently."""
    folder = tmp_path / "data"
    for name, hz in (("a.wav", 220.0), ("b.wav", 7000.0)):
        write_tone(folder / "audios" / name, 0.8, hz=hz)
    write_dataset(folder, "two", [("<audio>Pitch?", [f"audios/{name}"], "x") for name in ("a.wav", "b.wav")])
    code, lines = predict(tiny_audio_model_dir, folder, tmp_path / "pred", "max_new_tokens=12", dataset="two")
    assert code == 0 and lines[0]["prompt"] == lines[1]["prompt"]
    assert lines[0]["predict"] != lines[1]["predict"]


@pytest.mark.parametrize("batch_size", [2, 4])
def test_left_padded_batches_answer_as_batches_of_one(tiny_audio_model_dir, mixed_data, tmp_path, batch_size):
    folder, rows = mixed_data
    common = ("max_new_tokens=10",)
    code, single = predict(
        tiny_audio_model_dir, folder, tmp_path / "one", "per_device_eval_batch_size=1", *common, dataset="mixed"
    )
    assert code == 0
    code, batched = predict(
        tiny_audio_model_dir,
        folder,
        tmp_path / "batched",
        f"per_device_eval_batch_size={batch_size}",
        *common,
        dataset="mixed",
    )
    assert code == 0
    assert [line["prompt"].count("<|audio_bos|>") for line in batched] == [len(audios) for _, audios, _ in rows]
    lengths = [len(line["prompt"]) for line in batched]
    assert len(set(lengths)) == len(lengths)  # every row of a batch is padded to a different extent
    assert [line["predict"] for line in batched] == [line["predict"] for line in single]
    assert all(line["predict"] for line in single) and len({line["predict"] for line in single}) > 1


def test_predict_refusals_name_the_problem(tiny_model_dir, tiny_audio_model_dir, audio_data_dir, tmp_path, capsys):
    code, _ = predict(tiny_model_dir, audio_data_dir, tmp_path / "text", template="qwen")
    err = capsys.readouterr().err
    assert code == 2 and "the predict data holds audios (an `audios` column) but they cannot be used" in err
    assert "takes no audio" in err and "Traceback" not in err
    code, _ = predict(tiny_audio_model_dir, audio_data_dir, tmp_path / "template", template="qwen")
    err = capsys.readouterr().err
    assert code == 2 and "has no audio support; for an audio-language model set `template:` to one of" in err

    # cutoff_len that keeps 2 of the first record's 15 audio tokens
    from tunesmith.data.pipeline import resolve_template
    from tunesmith.evaluate.predict import encode_prompts
    from tunesmith.infer.loader import load_audio_plugin
    from tunesmith.model.load import load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_audio_model_dir),
            "template": "qwen2_audio",
            "eval_dataset": "audio_demo",
            "dataset_dir": str(audio_data_dir),
            "max_samples": 1,
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    template = resolve_template(config.data, tokenizer)
    plugin, _ = load_audio_plugin(config, template)
    encoded = encode_prompts(config, tokenizer, template, audio_plugin=plugin)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    first = ids.index(tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    cutoff = first + 2 + len(labels)
    assert len(labels) * 2 < cutoff  # so the answer is kept whole and the prompt is cut to first + 2 tokens
    code, _ = predict(tiny_audio_model_dir, audio_data_dir, tmp_path / "cut", f"cutoff_len={cutoff}")
    err = capsys.readouterr().err
    assert code == 2 and f"predict data record 0: cutoff_len={cutoff} cuts its prompt inside the audio tokens" in err
    assert "(2 of its 15 kept" in err and "raise cutoff_len or use shorter audios" in err
    assert not (tmp_path / "cut" / "generated_predictions.jsonl").exists()
    code, lines = predict(
        tiny_audio_model_dir,
        audio_data_dir,
        tmp_path / "uncut",
        f"cutoff_len={len(ids) + len(labels)}",
        "max_samples=1",
    )
    assert code == 0 and len(lines) == 1  # just long enough: nothing of the prompt is cut

    folder = tmp_path / "short"
    write_tone(folder / "audios" / "blip.wav", 0.03)
    write_dataset(folder, "short", [("Hi", [], "x"), ("<audio>Pitch?", ["audios/blip.wav"], "y")])
    code, _ = predict(tiny_audio_model_dir, folder, tmp_path / "blip", dataset="short")
    err = capsys.readouterr().err
    assert code == 2 and "predict data record 1: audio" in err and "is too short" in err


def test_do_predict_after_training_answers_with_the_trained_model(
    tiny_audio_model_dir, audio_data_dir, tmp_path, capsys
):
    """do_train + do_predict (LLaMA-Factory's sft workflow): after training, the in-memory model answers eval_dataset
    with its audios as `tunesmith eval` does on the saved run; the predict metrics join all_results.json."""
    out = tmp_path / "run"
    train = [
        "train",
        str(EXAMPLE),
        f"model_name_or_path={tiny_audio_model_dir}",
        f"dataset_dir={audio_data_dir}",
        "dataset=audio_demo",
        "max_steps=3",
        "learning_rate=0.05",
        "warmup_ratio=0",
        "save_steps=1000",
        "do_train=true",
        "eval_dataset=audio_demo",
        "do_predict=true",
        "predict_with_generate=true",
        f"max_new_tokens={MAX_NEW}",
        "per_device_eval_batch_size=2",
        f"output_dir={out}",
    ]
    assert main(train) == 0
    lines = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert [line["prompt"].count("<|AUDIO|>") for line in lines] == [15, 25, 40]
    results = json.loads((out / "all_results.json").read_text())
    assert (
        results["predict_samples"] == 3
        and results["predict_bleu-4"] == json.loads((out / "predict_results.json").read_text())["predict_bleu-4"]
    )
    code, again = predict(
        tiny_audio_model_dir,
        audio_data_dir,
        tmp_path / "again",
        f"adapter_name_or_path={out}",
        "per_device_eval_batch_size=1",
    )
    assert code == 0 and again == lines
    code, base = predict(tiny_audio_model_dir, audio_data_dir, tmp_path / "base")
    assert code == 0 and [line["predict"] for line in base] != [line["predict"] for line in lines]  # it trained
