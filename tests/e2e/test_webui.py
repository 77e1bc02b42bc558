"""The web UI: form -> YAML/command, and real training, evaluation and prediction started from the page on loopback."""

import json
import re
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


def test_a_key_unset_by_default_stays_unset_unless_chosen():
    """packing is unset by default (on for sft and pt): the page offers unset/true/false, not a checkbox, which the
    browser sends as false when left alone (every run from the page trained unpacked, half as fast)."""
    import gradio as gr

    field = form.fields()["packing"]
    assert (field.kind, field.choices, field.default) == ("choice", (None, True, False), None)
    widget = form.component(gr, field)
    assert isinstance(widget, gr.Dropdown) and widget.value is None
    assert "packing" not in form.to_config({"packing": widget.preprocess(None)})
    assert form.to_config({"packing": widget.preprocess(False)})["packing"] is False


def test_chinese_texts_cover_every_form_key():
    from tunesmith.webui.texts import texts

    zh = texts("zh")["fields"]
    shown = [key for sections in (form.SECTIONS, form.EVAL_SECTIONS) for keys in sections.values() for key in keys]
    missing = [key for key in [*shown, "export_dir", "export_size", "export_dtype", "temperature", "top_p",
                               "max_new_tokens"] if key not in zh]
    assert not missing
    assert set(texts("zh")["ui"]) == set(texts("en")["ui"])


MOST_USED = ["model_name_or_path", "finetuning_type", "dataset", "template", "learning_rate", "num_train_epochs",
             "cutoff_len", "per_device_train_batch_size", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
             "quantization_bit", "stage", "dataset_dir"]


def test_most_used_keys_have_real_texts_and_are_shown_first():
    from tunesmith.webui.texts import texts

    shown_first = [key for section in form.ALWAYS_SHOWN for key in form.SECTIONS[section]]
    assert set(MOST_USED) <= set(shown_first)
    for lang in ("en", "zh"):
        table = texts(lang)["fields"]
        for key in MOST_USED:
            label, help_text = table[key]
            assert label and help_text and label != key and "_" not in label, (lang, key)


def test_every_shown_key_has_an_english_label_in_words():
    """New schema keys may come without a text yet: they show their name in words, never the raw key."""
    from tunesmith.webui.texts import label

    shown = [key for sections in (form.SECTIONS, form.EVAL_SECTIONS) for keys in sections.values() for key in keys]
    assert all("_" not in label("en", key)[0] and label("en", key)[0] != key for key in shown)


def test_a_key_without_texts_falls_back_to_words():
    from tunesmith.webui.texts import humanise, label

    assert label("zh", "brand_new_key", "From the schema.") == ("Brand new key", "From the schema.")
    assert humanise("lora_rank") == "Lora rank"
    assert label("zh", "lora_rank")[0] == "LoRA 秩" and label("en", "lora_rank")[0] == "LoRA rank"


def test_an_error_marks_the_fields_it_names():
    error = form.validate({"model_name_or_path": "m", "quantization_bit": 4, "finetuning_type": "full"})
    assert set(form.named_keys(error, form.fields())) >= {"quantization_bit", "finetuning_type"}
    assert form.named_keys("lora_rank_extra is wrong", ["lora_rank"]) == []


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
    shown = client.predict(*ordered, api_name="/preview_data")
    assert "tunesmith_skills" in shown and "Who are you?" in shown  # the registered names, the first examples
    assert "token lengths: p50" in shown and "truncated by cutoff_len=2048: 0 of" in shown  # `data check` above
    assert shown.count("<tr>") >= 1 + 5 and "<mark>" in shown  # one row per example, trained tokens highlighted
    preview = client.predict(path, *ordered, api_name="/preview")
    assert preview.startswith(f"# tunesmith train {path}") and "dataset: tunesmith_identity" in preview
    status, _ = client.predict(path, *ordered, api_name="/start")
    assert "Running" in status
    deadline, seen = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        status, percent, _, log = client.predict("en", api_name="/refresh")
        seen.append(status)
        if "Finished" in status or "Failed" in status:
            break
        time.sleep(1)
    assert "Finished" in status, log
    assert "4/4" in status and percent == 100 and "tokens/s" in status  # the run counted its tokens
    assert any(re.search(r"memory \d+(\.\d)? [MG]iB RAM", text) for text in seen), seen  # while it ran
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert yaml.safe_load(Path(path).read_text())["template"] == "chatml"  # the page wrote the CLI's YAML


def test_errors_from_a_bad_form_appear_on_the_page(client, tmp_path, model):
    ordered = form_values(model_name_or_path=str(model), quantization_bit=4, finetuning_type="full")
    status, _ = client.predict(str(tmp_path / "bad.yaml"), *ordered, api_name="/start")
    assert "Failed" in status and "can only be trained with finetuning_type: lora" in status
    assert not (tmp_path / "bad.yaml").exists()


def test_load_reads_yaml_as_the_cli_does(client, tmp_path):
    """`eval_strategy: no` stays the string "no" (not YAML 1.1's False) and 1e-4 is a number, as in `tunesmith train`;
    a key the form does not show is named in a warning, not silently taken."""
    from tunesmith.config.load import read_yaml

    path = tmp_path / "cfg.yaml"
    path.write_text("eval_strategy: no\nlearning_rate: 1e-4\nlora_target: q_proj,v_proj\nsave_strategy: no\n")
    updates = client.predict(str(path), api_name="/load")
    values = dict(zip(KEYS, (update["value"] if isinstance(update, dict) else update for update in updates)))
    assert values["eval_strategy"] == "no" == read_yaml(path)["eval_strategy"]
    assert values["learning_rate"] == 1e-4 and values["lora_target"] == "q_proj,v_proj"
    assert form.to_config(values)["eval_strategy"] == "no"


def test_progress_line_shows_speed_and_memory():
    from tunesmith.webui.train_tab import progress_text

    info = {"step": 3, "total_steps": 10, "percentage": 30.0, "elapsed": 4.2, "remaining": 9.8,
            "tokens_per_second": 812.4}
    text = progress_text("en", "running", info, {"ram": 3 * 2**29, "gpu": 3 * 2**30})
    assert text == ("**Running** — 3/10 (30%), 00:00:04 elapsed, 00:00:09 left · 812 tokens/s · "
                    "memory 1.5 GiB RAM, 3.0 GiB GPU")
    assert "内存" in progress_text("zh", "running", {**info, "tokens_per_second": None}, {"ram": 2**20})


def test_chat_sliders_start_from_the_generation_defaults():
    from tunesmith.config.schema import GenerationArgs
    from tunesmith.webui.chat_tab import generation_defaults

    assert generation_defaults() == {"temperature": GenerationArgs().temperature, "top_p": GenerationArgs().top_p,
                                     "max_new_tokens": GenerationArgs().max_new_tokens}


def test_chat_tab_streams_a_reply(client, model):
    from tunesmith.webui.chat_tab import _text

    assert "loaded" in client.predict(*form_values(model_name_or_path=str(model), template="chatml"),
                                      api_name="/chat_load")
    history, cleared, _, _ = client.predict("Hello", [], "", "", 0.7, 0.9, 5, None, None, api_name="/chat")
    assert cleared == "" and _text(history[0]["content"]) == "Hello" and history[1]["role"] == "assistant"
    more, _, _, _ = client.predict("Again", history, "", "", 0.7, 0.9, 5, None, None, api_name="/chat")
    assert len(more) == 4  # the history goes back to the engine as plain text turns


def test_chat_tab_takes_an_image_for_a_vl_model(client, tmp_path, tiny_vl_model_dir, vl_data_dir, model):
    import shutil

    from gradio_client import handle_file

    from tunesmith.config.load import load_config
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.webui.chat_tab import _images, _text

    vl = shutil.copytree(tiny_vl_model_dir, tmp_path / "vl")
    red = shutil.copy(vl_data_dir / "images" / "red.png", tmp_path / "red.png")
    greedy = [0, 0.9, 5]  # temperature 0: greedy, as the API reads it
    assert "loaded" in client.predict(*form_values(model_name_or_path=str(vl), template="qwen2_vl"),
                                      api_name="/chat_load")
    history, cleared, image, _ = client.predict("What colour is this?", [], "", "", *greedy, handle_file(red), None,
                                                api_name="/chat")
    assert cleared == "" and image is None and _text(history[0]["content"]) == "What colour is this?"
    assert len(_images(history[0]["content"])) == 1  # the upload is shown in the user's message
    engine = ChatEngine(load_config(None, {"model_name_or_path": str(vl), "template": "qwen2_vl",
                                           "max_new_tokens": 5}))
    expected = engine.chat([{"role": "user", "content": "<image>What colour is this?"}], images=[red],
                           temperature=0)[0].text
    assert _text(history[1]["content"]) == expected
    # gradio_client hands files back as local paths; a browser (and this) sends them as files again
    history[0]["content"] = [{"type": "file", "file": handle_file(path)} for path in _images(history[0]["content"])
                             ] + [{"type": "text", "text": _text(history[0]["content"])}]
    more, _, _, _ = client.predict("And now?", history, "", "", *greedy, None, None, api_name="/chat")
    turns = [{"role": "user", "content": "<image>What colour is this?"}, {"role": "assistant", "content": expected},
             {"role": "user", "content": "And now?"}]
    assert _text(more[3]["content"]) == engine.chat(turns, images=[red], temperature=0)[0].text  # the image went back

    assert "loaded" in client.predict(*form_values(model_name_or_path=str(model), template="chatml"),
                                      api_name="/chat_load")
    history, kept, _, _ = client.predict("What is it?", [], "", "", *greedy, handle_file(red), None,
                                         api_name="/chat")
    assert "text-only model: it cannot take images" in _text(history[-1]["content"]) and kept == "What is it?"


def test_chat_tab_takes_an_audio_for_an_audio_model(client, tmp_path, tiny_audio_model_dir, audio_data_dir, model):
    import shutil

    from gradio_client import handle_file

    from tunesmith.config.load import load_config
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.webui.chat_tab import _audios, _text

    audio_model = shutil.copytree(tiny_audio_model_dir, tmp_path / "audio")
    low = shutil.copy(audio_data_dir / "audios" / "low.wav", tmp_path / "low.wav")
    greedy = [0, 0.9, 5]
    assert "loaded" in client.predict(*form_values(model_name_or_path=str(audio_model), template="qwen2_audio"),
                                      api_name="/chat_load")
    history, cleared, _, audio = client.predict("What is this sound?", [], "", "", *greedy, None, handle_file(low),
                                                api_name="/chat")
    assert cleared == "" and audio is None and _text(history[0]["content"]) == "What is this sound?"
    assert len(_audios(history[0]["content"])) == 1  # the upload is shown in the user's message
    engine = ChatEngine(load_config(None, {"model_name_or_path": str(audio_model), "template": "qwen2_audio",
                                           "max_new_tokens": 5}))
    expected = engine.chat([{"role": "user", "content": "<audio>What is this sound?"}], audios=[low],
                           temperature=0)[0].text
    assert _text(history[1]["content"]) == expected
    history[0]["content"] = [{"type": "file", "file": handle_file(path)} for path in _audios(history[0]["content"])
                             ] + [{"type": "text", "text": _text(history[0]["content"])}]
    more, _, _, _ = client.predict("And now?", history, "", "", *greedy, None, None, api_name="/chat")
    turns = [{"role": "user", "content": "<audio>What is this sound?"}, {"role": "assistant", "content": expected},
             {"role": "user", "content": "And now?"}]
    assert _text(more[3]["content"]) == engine.chat(turns, audios=[low], temperature=0)[0].text  # the audio went back

    assert "loaded" in client.predict(*form_values(model_name_or_path=str(model), template="chatml"),
                                      api_name="/chat_load")
    history, kept, _, _ = client.predict("What is it?", [], "", "", *greedy, None, handle_file(low), api_name="/chat")
    assert "takes no audio" in _text(history[-1]["content"]) and kept == "What is it?"


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


def test_estimate_button_shows_the_breakdown_a_warning_and_plain_errors(tiny_model_dir, tmp_path):
    """The Train tab's Estimate memory: `tunesmith estimate`'s table on the form's config, without loading weights."""
    from tunesmith.webui.train_tab import estimate_text

    config = {"model_name_or_path": str(tiny_model_dir), "template": "chatml", "finetuning_type": "lora"}
    shown = estimate_text(config, "en")
    assert "memory estimate:" in shown and "peak per device" in shown and "optimizer states" in shown
    assert "exceeds the free memory" not in shown and "fits" in shown
    huge = estimate_text({**config, "per_device_train_batch_size": 4096, "cutoff_len": 1_000_000}, "en")
    assert "exceeds the free memory" in huge and "DOES NOT FIT" in huge
    assert "无法估算" in estimate_text({"template": "chatml"}, "zh")  # no model: says what is missing
    missing = estimate_text({**config, "model_name_or_path": str(tmp_path / "nowhere")}, "en")
    assert missing.startswith("**Cannot estimate**") and "nowhere" in missing


def test_the_media_keys_go_into_the_train_yaml_and_carry_to_predict():
    values = {key: field.default for key, field in form.fields().items()
              if key in {k for keys in form.SECTIONS.values() for k in keys}}
    values.update(model_name_or_path="models/vl", template="qwen2_vl", dataset="mllm_demo", media_dir="media",
                  image_max_pixels=65536, freeze_vision_tower=False, video_fps=1.0, video_maxlen=16)
    config = form.to_config(values)
    assert config["media_dir"] == "media" and config["image_max_pixels"] == 65536
    assert config["video_fps"] == 1.0 and config["video_maxlen"] == 16 and "video_max_pixels" not in config
    assert config["freeze_vision_tower"] is False and "image_min_pixels" not in config  # defaults stay out
    predict = form.eval_config(config, {"eval_dataset": "mllm_demo"}, "predict")
    assert predict["media_dir"] == "media" and predict["image_max_pixels"] == 65536
    assert "freeze_vision_tower" not in predict  # a training-only key
    assert "video_fps" not in predict  # predict refuses videos: their keys stay with training
