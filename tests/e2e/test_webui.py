"""The web UI: form -> YAML/command, and a real training started from the page on loopback."""

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
    missing = [key for keys in form.SECTIONS.values() for key in keys if key not in zh]
    assert not missing
    assert set(texts("zh")["ui"]) == set(texts("en")["ui"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def client(tmp_path):
    """The real app on a free loopback port, driven over HTTP with gradio_client."""
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


def test_training_started_from_the_page_runs_and_reports_progress(client, tmp_path, tiny_model_dir):
    ordered = form_values(model_name_or_path=str(tiny_model_dir), dataset="tunesmith_identity",
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


def test_errors_from_a_bad_form_appear_on_the_page(client, tmp_path, tiny_model_dir):
    ordered = form_values(model_name_or_path=str(tiny_model_dir), quantization_bit=4, finetuning_type="full")
    status, _ = client.predict(str(tmp_path / "bad.yaml"), *ordered, api_name="/start")
    assert "Failed" in status and "can only be trained with finetuning_type: lora" in status
    assert not (tmp_path / "bad.yaml").exists()


def test_chat_tab_streams_a_reply(client, tiny_model_dir):
    from tunesmith.webui.app import _text

    assert "loaded" in client.predict(*form_values(model_name_or_path=str(tiny_model_dir), template="chatml"),
                                      api_name="/chat_load")
    history, cleared = client.predict("Hello", [], "", "", 0.7, 0.9, 5, api_name="/chat")
    assert cleared == "" and _text(history[0]["content"]) == "Hello" and history[1]["role"] == "assistant"
    more, _ = client.predict("Again", history, "", "", 0.7, 0.9, 5, api_name="/chat")
    assert len(more) == 4  # the history goes back to the engine as plain text turns
