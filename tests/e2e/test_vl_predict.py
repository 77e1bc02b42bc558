"""Predict and benchmarks on a tiny Qwen2-VL: `tunesmith eval do_predict=true` on an image dataset answers each prompt
as the chat engine does for the same prompt and images, left-padded batches answer as batches of one, cutoff_len
that cuts into the image tokens and unusable images are refused; a text benchmark runs on the VL model's text path
with the model's own M-RoPE probabilities; GGUF export of a VL model is refused (llama.cpp needs an mmproj file).
The other image families (LLaVA, LLaVA-NeXT, Gemma 3, InternVL) predict through their plugins as chat answers."""

import json
from pathlib import Path

import pytest
import torch

from tests.e2e.test_eval import DEMO
from tunesmith.cli import main
from tunesmith.config.load import load_config

MAX_NEW = 6
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_vl_lora.yaml"
LONG_QUESTION = (
    "<image>Describe the colour of this picture in one long sentence, with as much detail as you can, "
    "and say whether it is warm or cold."
)


def predict(model_dir, data_dir, out, *overrides, dataset="mllm_demo", template="qwen2_vl"):
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


@pytest.fixture(scope="module")
def engine(tiny_vl_model_dir):
    from tunesmith.infer.engine import ChatEngine

    return ChatEngine(
        load_config(
            None,
            {
                "model_name_or_path": str(tiny_vl_model_dir),
                "template": "qwen2_vl",
                "do_sample": False,
                "max_new_tokens": MAX_NEW,
            },
        )
    )


@pytest.fixture(scope="module")
def mixed_data(vl_data_dir, tmp_path_factory):
    """Prompts of quite different lengths, with one, two and no images, in one dataset (images from vl_data_dir)."""
    folder = tmp_path_factory.mktemp("vl-mixed")
    red, blue = (str(vl_data_dir / "images" / name) for name in ("red.png", "blue.png"))
    rows = [
        ("<image>Colour?", [red], "red"),
        (LONG_QUESTION, [blue], "It is a cold blue."),
        ("Say hello in three words.", [], "Hello to you."),
        ("<image>and<image>: which is red?", [red, blue], "The first."),
    ]
    records = [{"instruction": prompt, "output": answer, "images": images} for prompt, images, answer in rows]
    (folder / "mixed.json").write_text(json.dumps(records))
    (folder / "dataset_info.json").write_text(
        json.dumps(
            {
                "mixed": {
                    "file_name": "mixed.json",
                    "columns": {"prompt": "instruction", "response": "output", "images": "images"},
                }
            }
        )
    )
    return folder, rows


def test_predict_with_images_answers_as_the_chat_engine(engine, tiny_vl_model_dir, vl_data_dir, tmp_path):
    from tunesmith.evaluate.metrics import corpus_similarity

    code, lines = predict(tiny_vl_model_dir, vl_data_dir, tmp_path / "pred", "per_device_eval_batch_size=1")
    assert code == 0 and len(lines) == 3 and all(set(line) == {"prompt", "predict", "label"} for line in lines)
    records = json.loads((vl_data_dir / "mllm_demo.json").read_text())
    for record, line in zip(records, lines, strict=True):
        messages = record["messages"][:1]
        images = [str(vl_data_dir / path) for path in record["images"]]
        prompt = engine.prepare(messages, images=images)
        # the prompt as LLaMA-Factory writes it: the encoded ids decoded, vision tokens included
        assert line["prompt"] == engine.tokenizer.decode(prompt.ids, skip_special_tokens=False)
        grids = prompt.vision["image_grid_thw"]
        assert line["prompt"].count("<|image_pad|>") == int(grids.prod(-1).sum()) // 4 > 0  # merge_size 2
        reply = engine.chat(messages, images=images)[0]
        assert reply.completion_tokens >= 1 and line["predict"] == reply.text
        assert line["label"] == record["messages"][1]["content"] + "\n"  # <|im_end|> skipped, as for text
    results = json.loads((tmp_path / "pred" / "predict_results.json").read_text())
    scores = corpus_similarity([line["predict"] for line in lines], [line["label"] for line in lines])
    assert {key: results[f"predict_{key}"] for key in scores} == {k: round(v, 4) for k, v in scores.items()}
    assert results["predict_samples"] == 3 and "predict_runtime" in results
    # LLaMA-Factory's predict YAML (do_predict without do_train) through `tunesmith train`, batched: the same answers
    (tmp_path / "predict.yaml").write_text(
        f"model_name_or_path: {tiny_vl_model_dir}\ntemplate: qwen2_vl\nstage: sft\ndo_predict: true\n"
        f"predict_with_generate: true\neval_dataset: mllm_demo\ndataset_dir: {vl_data_dir}\n"
        f"max_new_tokens: {MAX_NEW}\nper_device_eval_batch_size: 3\noutput_dir: {tmp_path / 'via_train'}\n"
    )
    assert main(["train", str(tmp_path / "predict.yaml")]) == 0
    via_train = (tmp_path / "via_train" / "generated_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in via_train] == lines


def test_the_images_reach_the_model(tiny_vl_model_dir, vl_data_dir, tmp_path):
    """The same record with another image of the same size (so the same prompt ids) is answered differently."""
    from PIL import Image

    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    for name, colour in (("a.png", (220, 30, 30)), ("b.png", (30, 200, 30))):
        Image.new("RGB", (64, 48), colour).save(folder / "images" / name)
    records = [
        {"instruction": "<image>Colour?", "output": "x", "images": [f"images/{name}"]} for name in ("a.png", "b.png")
    ]
    (folder / "two.json").write_text(json.dumps(records))
    (folder / "dataset_info.json").write_text(
        json.dumps(
            {
                "two": {
                    "file_name": "two.json",
                    "columns": {"prompt": "instruction", "response": "output", "images": "images"},
                }
            }
        )
    )
    code, lines = predict(tiny_vl_model_dir, folder, tmp_path / "pred", "max_new_tokens=12", dataset="two")
    assert code == 0 and lines[0]["prompt"] == lines[1]["prompt"]
    assert lines[0]["predict"] != lines[1]["predict"]


@pytest.mark.parametrize("batch_size", [2, 4])
def test_left_padded_batches_answer_as_batches_of_one(tiny_vl_model_dir, mixed_data, tmp_path, batch_size):
    folder, rows = mixed_data
    code, single = predict(
        tiny_vl_model_dir,
        folder,
        tmp_path / "one",
        "per_device_eval_batch_size=1",
        "max_new_tokens=10",
        dataset="mixed",
    )
    assert code == 0
    code, batched = predict(
        tiny_vl_model_dir,
        folder,
        tmp_path / "batched",
        f"per_device_eval_batch_size={batch_size}",
        "max_new_tokens=10",
        dataset="mixed",
    )
    assert code == 0
    assert [line["prompt"].count("<|vision_start|>") for line in batched] == [len(images) for _, images, _ in rows]
    lengths = [len(line["prompt"]) for line in batched]
    assert len(set(lengths)) == len(lengths)  # every row of a batch is padded to a different extent
    assert [line["predict"] for line in batched] == [line["predict"] for line in single]
    assert all(line["predict"] for line in single)


def test_predict_refusals_name_the_problem(tiny_model_dir, tiny_vl_model_dir, vl_data_dir, tmp_path, capsys):
    code, _ = predict(tiny_model_dir, vl_data_dir, tmp_path / "text", template="qwen")
    err = capsys.readouterr().err
    assert code == 2 and "the predict data holds images" in err and "text-only model" in err
    assert "Traceback" not in err
    code, _ = predict(tiny_vl_model_dir, vl_data_dir, tmp_path / "template", template="qwen")
    err = capsys.readouterr().err
    assert code == 2 and "has no image support; for a vision-language model set `template:`" in err

    # cutoff_len that keeps 2 of the first record's 4 image tokens
    from tunesmith.data.pipeline import resolve_template
    from tunesmith.evaluate.predict import encode_prompts
    from tunesmith.infer.loader import load_image_plugin
    from tunesmith.model.load import load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_vl_model_dir),
            "template": "qwen2_vl",
            "eval_dataset": "mllm_demo",
            "dataset_dir": str(vl_data_dir),
            "max_samples": 1,
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    template = resolve_template(config.data, tokenizer)
    plugin, _ = load_image_plugin(config, template)
    encoded = encode_prompts(config, tokenizer, template, plugin)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    first = ids.index(tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    cutoff = first + 2 + len(labels)
    assert len(labels) * 2 < cutoff  # so the answer is kept whole and the prompt is cut to first + 2 tokens
    code, _ = predict(tiny_vl_model_dir, vl_data_dir, tmp_path / "cut", f"cutoff_len={cutoff}")
    err = capsys.readouterr().err
    assert code == 2 and f"predict data record 0: cutoff_len={cutoff} cuts its prompt inside the image tokens" in err
    assert "(2 of its 4 kept" in err and "raise cutoff_len or lower image_max_pixels" in err
    code, lines = predict(
        tiny_vl_model_dir, vl_data_dir, tmp_path / "uncut", f"cutoff_len={len(ids) + len(labels)}", "max_samples=1"
    )
    assert code == 0 and len(lines) == 1  # just long enough: nothing of the prompt is cut


def test_a_text_benchmark_runs_on_the_vl_models_text_path(tiny_vl_model_dir):
    """The benchmark's left-padded batches with 1D positions give the probabilities of the VL model computing its
    own M-RoPE positions on each prompt alone."""
    from transformers import AutoModelForImageTextToText

    from tunesmith.evaluate.run import evaluate_benchmark
    from tunesmith.evaluate.scoring import letter_ids
    from tunesmith.infer.loader import load_for_inference

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_vl_model_dir),
            "template": "qwen2_vl",
            "task": "demo_en_test",
            "task_dir": str(DEMO),
            "n_shot": 2,
            "batch_size": 4,
        },
    )
    result = evaluate_benchmark(config, None)
    tokenizer, template, _ = load_for_inference(config, job="eval")
    _, choice_ids = letter_ids(template, tokenizer)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vl_model_dir, dtype=torch.float32).eval()
    rows = [row for subject in result["predictions"].values() for row in subject]
    assert len(rows) == len(result["prompts"]) == 24 and len({len(ids) for ids in result["prompts"]}) > 1
    for row, ids in zip(rows, result["prompts"], strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1, choice_ids]
        expected = torch.softmax(logits.float(), dim=-1).tolist()
        assert max(abs(row["probs"][letter] - p) for letter, p in zip("ABCD", expected, strict=True)) < 1e-5


def test_gguf_export_of_a_vl_model_is_refused(tiny_vl_model_dir, tmp_path, capsys):
    code = main(
        [
            "export",
            f"model_name_or_path={tiny_vl_model_dir}",
            "template=qwen2_vl",
            "export_format=gguf",
            f"export_dir={tmp_path / 'gguf'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not (tmp_path / "gguf").exists()
    assert "GGUF export of a multimodal model (qwen2_vl) is not supported" in err
    assert "separate mmproj GGUF holding its vision encoder and projector" in err
    assert "convert_hf_to_gguf.py --mmproj" in err and "export_format: safetensors" in err

    from transformers import AutoModelForImageTextToText

    from tunesmith.errors import ModelError
    from tunesmith.export_gguf import write_gguf

    model = AutoModelForImageTextToText.from_pretrained(tiny_vl_model_dir)
    with pytest.raises(ModelError, match="mmproj"):  # the writer itself refuses too, before writing anything
        write_gguf(model, None, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_do_predict_after_training_answers_with_the_trained_model(tiny_vl_model_dir, vl_data_dir, tmp_path, capsys):
    """do_train + do_predict (LLaMA-Factory's sft workflow): after training, the in-memory model answers eval_dataset
    as `tunesmith eval` does on the saved run; the predict metrics join all_results.json."""
    out = tmp_path / "run"
    train = [
        "train",
        str(EXAMPLE),
        f"model_name_or_path={tiny_vl_model_dir}",
        f"dataset_dir={vl_data_dir}",
        "max_steps=3",
        "learning_rate=0.05",
        "warmup_ratio=0",
        "save_steps=1000",
        "do_train=true",  # with do_predict: train, then predict (without: LF's predict-only YAML)
        "eval_dataset=mllm_demo",
        "do_predict=true",
        f"max_new_tokens={MAX_NEW}",
        "per_device_eval_batch_size=2",
    ]
    # refused before any training: no predict_with_generate, no eval_dataset
    assert main([*train, f"output_dir={out}"]) == 2
    assert "predict_with_generate: true" in capsys.readouterr().err and not out.exists()
    assert main([*train[:-4], "do_predict=true", "predict_with_generate=true", f"output_dir={out}"]) == 2
    assert "answers the prompts of `eval_dataset`" in capsys.readouterr().err and not out.exists()

    assert main([*train, "predict_with_generate=true", f"output_dir={out}"]) == 0
    lines = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(line["prompt"].count("<|image_pad|>") for line in lines)
    results = json.loads((out / "all_results.json").read_text())
    assert (
        results["predict_samples"] == 3
        and results["predict_bleu-4"] == json.loads((out / "predict_results.json").read_text())["predict_bleu-4"]
    )
    code, again = predict(
        tiny_vl_model_dir,
        vl_data_dir,
        tmp_path / "again",
        f"adapter_name_or_path={out}",
        "per_device_eval_batch_size=1",
    )
    assert code == 0 and again == lines
    code, base = predict(tiny_vl_model_dir, vl_data_dir, tmp_path / "base")
    assert code == 0 and [line["predict"] for line in base] != [line["predict"] for line in lines]  # it trained


@pytest.mark.parametrize(
    ("arch", "template"),
    [("llava", "llava"), ("llava_next", "llava_next"), ("gemma3", "gemma3"), ("internvl", "intern_vl")],
)
def test_predict_with_images_on_every_image_family(arch, template, vl_data_dir, tmp_path, capsys):
    """Predict goes through each image family's plugin as training and chat do: its prompts and answers equal the
    chat engine's, and a cutoff_len that cuts into the image tokens (where the plugin's token_type_ids say) is
    refused."""
    from tunesmith.data.encode import infer_seqlen
    from tunesmith.data.pipeline import resolve_template
    from tunesmith.evaluate.predict import encode_prompts
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.infer.loader import load_image_plugin
    from tunesmith.model.load import load_tokenizer
    from tunesmith.model.tiny import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "model", arch=arch)
    code, lines = predict(model_dir, vl_data_dir, tmp_path / "pred", "per_device_eval_batch_size=1", template=template)
    assert code == 0 and len(lines) == 3
    keys = {"model_name_or_path": str(model_dir), "template": template}
    engine = ChatEngine(load_config(None, {**keys, "do_sample": False, "max_new_tokens": MAX_NEW}))
    records = json.loads((vl_data_dir / "mllm_demo.json").read_text())
    for record, line in zip(records, lines, strict=True):
        messages = record["messages"][:1]
        images = [str(vl_data_dir / path) for path in record["images"]]
        prompt = engine.prepare(messages, images=images)
        assert line["prompt"] == engine.tokenizer.decode(prompt.ids, skip_special_tokens=False)
        assert line["predict"] == engine.chat(messages, images=images)[0].text

    config = load_config(None, {**keys, "eval_dataset": "mllm_demo", "dataset_dir": str(vl_data_dir), "max_samples": 1})
    tokenizer = load_tokenizer(config.model, config.lf_model)
    template_obj = resolve_template(config.data, tokenizer)
    plugin, _ = load_image_plugin(config, template_obj)
    encoded = encode_prompts(config, tokenizer, template_obj, plugin)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    at = plugin.token_type_ids(tokenizer, torch.tensor(ids)).nonzero()[:, 0].tolist()
    assert at, "the prompt holds the family's image tokens"
    cutoff = next(
        c for c in range(2, len(ids) + len(labels)) if at[0] < infer_seqlen(len(ids), len(labels), c)[0] <= at[-1]
    )
    code, _ = predict(
        model_dir, vl_data_dir, tmp_path / "cut", f"cutoff_len={cutoff}", "max_samples=1", template=template
    )
    err = capsys.readouterr().err
    assert code == 2 and f"cutoff_len={cutoff} cuts its prompt inside the image tokens" in err
