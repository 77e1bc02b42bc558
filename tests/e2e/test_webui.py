"""The web UI: form -> YAML/command, and real training, evaluation and prediction started from the page on loopback."""

import json
import socket
import time
from pathlib import Path

import pytest
import yaml

from tunesmith.webui import form

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"


def test_every_config_key_of_our_groups_is_on_the_form():
    from tunesmith.config.schema import GROUPS

    on_form = {key for keys in form.SECTIONS.values() for key in keys}
    for name in ("model", "method", "data", "output", "launch"):
        assert set(GROUPS[name].model_fields) <= on_form, name


def test_form_values_become_the_yaml_the_cli_reads():
    values = {key: field.default for key, field in form.fields().items()
              if key in {k for keys in form.SECTIONS.values() for k in keys}}
    values.update(model_name_or_path="models/m", dataset="a,b", finetuning_type="lora", lora_rank=16,
                  quantization_bit=4, rope_scaling="linear", use_dora=True, learning_rate="0.0002")
    config = form.to_config(values)
    assert config["lora_rank"] == 16 and config["quantization_bit"] == 4 and config["use_dora"] is True
    assert config["learning_rate"] == 0.0002 and config["dataset"] == "a,b"
    assert "lora_dropout" not in config  # schema defaults stay out of the YAML
    assert form.validate({**config, "output_dir": "x"}) is None
    assert yaml.safe_load(form.to_yaml(config)) == config
    assert form.command_line("cfg.yaml") == "tunesmith train cfg.yaml"
    assert "only applies to finetuning_type: lora" in form.validate({**config, "finetuning_type": "full"})


def test_chinese_texts_cover_every_form_key():
    from tunesmith.webui.texts import texts

    zh = texts("zh")["fields"]
    shown = [key for sections in (form.SECTIONS, form.EVAL_SECTIONS) for keys in sections.values() for key in keys]
    missing = [key for key in [*shown, "export_dir", "export_size", "export_dtype", "temperature", "top_p",
                               "max_new_tokens"] if key not in zh]
    assert not missing
    assert set(texts("zh")["ui"]) == set(texts("en")["ui"])


def test_model_families_name_existing_templates():
    from tunesmith.data.template import template_names

    families = form.families()
    assert {"LLaMA-3-8B-Instruct", "Qwen3-8B", "Mistral-7B-Instruct-v0.3", "ChatML"} <= set(families)
    assert all(entry["template"] in template_names() for entry in families.values())
    assert families["Qwen2.5-7B-Instruct"] == {"template": "qwen", "path": "Qwen/Qwen2.5-7B-Instruct"}
    generic = {"default", "empty", "alpaca", "chatml_de", "fewshot"}  # not one model family's template
    assert set(template_names()) - generic <= {entry["template"] for entry in families.values()}


def test_eval_yaml_from_the_form_carries_the_model_keys_only():
    train = form.to_config({"model_name_or_path": "m", "template": "chatml", "dataset": "d", "learning_rate": 1e-3,
                            "output_dir": "o"})
    values = {key: form.EVAL_DEFAULTS.get(key, form.fields()[key].default)
              for keys in form.EVAL_SECTIONS.values() for key in keys}
    bench = form.eval_config(train, {**values, "n_shot": 0, "save_dir": "r"}, "benchmark")
    assert bench == {"model_name_or_path": "m", "template": "chatml",
                     "task_dir": str(form.DEMO_BENCHMARK), "task": "demo_en_test", "n_shot": 0, "save_dir": "r"}
    predict = form.eval_config(train, {**values, "eval_dataset": "d"}, "predict")
    assert predict["do_predict"] is True and predict["predict_with_generate"] is True
    assert predict["eval_dataset"] == "d" and predict["max_new_tokens"] == 64 and "task" not in predict
    assert form.validate(bench) is None and form.validate(predict) is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def model(tmp_path, tiny_model_dir):
    """The tiny model copied into the app's workspace root (tmp_path): the UI reads nothing outside its root."""
    import shutil

    return shutil.copytree(tiny_model_dir, tmp_path / "model")


@pytest.fixture
def client(tmp_path):
    """The real app on a free loopback port, its workspace root tmp_path, driven over HTTP with gradio_client."""
    pytest.importorskip("gradio")
    from gradio_client import Client

    from tunesmith.webui.app import build_app

    app = build_app(tmp_path)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        app.close()


KEYS = [key for keys in form.SECTIONS.values() for key in keys]


def form_values(**changes) -> list:
    """Every form input in page order: the form's defaults with some changed."""
    values = {key: form.fields()[key].default for key in KEYS}
    values.update(changes)
    return [None if isinstance(v, list) else v for v in (values[key] for key in KEYS)]


def test_training_started_from_the_page_runs_and_reports_progress(client, tmp_path, model):
    ordered = form_values(model_name_or_path=str(model), dataset="tunesmith_identity",
                          dataset_dir=str(DEMO_DATA), template="chatml", max_steps=4, logging_steps=1,
                          output_dir=str(tmp_path / "out"), per_device_train_batch_size=2,
                          gradient_accumulation_steps=1, learning_rate=1e-3, save_steps=1000)
    path = str(tmp_path / "run.yaml")
    records = client.predict(*ordered, api_name="/preview_data")
    assert "registered in" in records and "tunesmith_skills" in records and "Who are you?" in records
    preview = client.predict(path, *ordered, api_name="/preview")
    assert preview.startswith(f"# tunesmith train {path}") and "dataset: tunesmith_identity" in preview
    status, _ = client.predict(path, *ordered, api_name="/start")
    assert "Running" in status
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, percent, _, log = client.predict("en", api_name="/refresh")
        if "Finished" in status or "Failed" in status:
            break
        time.sleep(1)
    assert "Finished" in status, log
    assert "4/4" in status and percent == 100
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert yaml.safe_load(Path(path).read_text())["template"] == "chatml"  # the page wrote the CLI's YAML


def test_errors_from_a_bad_form_appear_on_the_page(client, tmp_path, model):
    ordered = form_values(model_name_or_path=str(model), quantization_bit=4, finetuning_type="full")
    status, _ = client.predict(str(tmp_path / "bad.yaml"), *ordered, api_name="/start")
    assert "Failed" in status and "can only be trained with finetuning_type: lora" in status
    assert not (tmp_path / "bad.yaml").exists()


def test_chat_tab_streams_a_reply(client, model):
    from tunesmith.webui.app import _text

    assert "loaded" in client.predict(*form_values(model_name_or_path=str(model), template="chatml"),
                                      api_name="/chat_load")
    history, cleared = client.predict("Hello", [], "", "", 0.7, 0.9, 5, api_name="/chat")
    assert cleared == "" and _text(history[0]["content"]) == "Hello" and history[1]["role"] == "assistant"
    more, _ = client.predict("Again", history, "", "", 0.7, 0.9, 5, api_name="/chat")
    assert len(more) == 4  # the history goes back to the engine as plain text turns


EVAL_KEYS = [key for keys in form.EVAL_SECTIONS.values() for key in keys]


def eval_values(**changes) -> list:
    """Every Evaluate & Predict input in page order: the tab's defaults with some changed."""
    values = {key: form.EVAL_DEFAULTS.get(key, form.fields()[key].default) for key in EVAL_KEYS}
    values.update(changes)
    return [values[key] for key in EVAL_KEYS]


def wait_for_eval(client, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, table, log = client.predict("en", api_name="/eval_refresh")
        if "Finished" in status or "Failed" in status:
            return status, table, log
        time.sleep(1)
    raise AssertionError(f"no result in {seconds} s: {status}\n{log}")


def test_benchmark_and_predict_run_from_the_page(client, tmp_path, model):
    train = form_values(model_name_or_path=str(model), template="chatml", dataset_dir=str(DEMO_DATA))
    path = str(tmp_path / "train.yaml")
    preview = client.predict(path, "benchmark", *train, *eval_values(n_shot=0), api_name="/eval_preview")
    assert preview.startswith(f"# tunesmith eval {tmp_path / 'benchmark.yaml'}") and "task: demo_en_test" in preview
    # a CLI error (unknown task) appears on the page
    status, _, _ = client.predict(path, "benchmark", *train, *eval_values(task="mmlu_test"), api_name="/eval_start")
    assert "Evaluating" in status
    status, _, log = wait_for_eval(client)
    assert "Failed" in status and "available tasks there: demo_en_dev, demo_en_test" in status, log
    # benchmark: the page writes the YAML, runs `tunesmith eval` and shows results.json's accuracies
    status, save_dir, _ = client.predict(path, "benchmark", *train, *eval_values(n_shot=0, save_dir=""),
                                         api_name="/eval_start")
    assert save_dir.startswith(str(tmp_path / "benchmark-"))  # a new folder was picked for the results
    status, table, log = wait_for_eval(client)
    assert "Finished" in status, log
    results = json.loads((Path(save_dir) / "results.json").read_text())
    rows = {name: value for name, value in table["data"]}
    assert rows["Average"] == results["average"] and rows["STEM"] == results["categories"]["STEM"]
    assert yaml.safe_load((tmp_path / "benchmark.yaml").read_text())["n_shot"] == 0
    # predict: generated answers scored with BLEU/ROUGE
    status, save_dir, _ = client.predict(path, "predict", *train,
                                         *eval_values(eval_dataset="tunesmith_identity", max_samples=4,
                                                      max_new_tokens=8, save_dir=str(tmp_path / "pred")),
                                         api_name="/eval_start")
    status, table, log = wait_for_eval(client)
    assert "Finished" in status, log
    rows = {name: value for name, value in table["data"]}
    assert rows["predict_samples"] == 4 and {"predict_bleu-4", "predict_rouge-l"} <= set(rows)
    assert (tmp_path / "pred" / "generated_predictions.jsonl").is_file()
