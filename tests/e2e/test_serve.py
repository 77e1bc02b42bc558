"""Chat, the OpenAI-compatible API and export on a model trained by `tunesmith train`."""

import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tunesmith.cli import main
from tunesmith.config.load import load_config

TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"}},
                         "required": ["city"]}}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny model fully fine-tuned to call a tool for the weather and to answer two prompts."""
    root = tmp_path_factory.mktemp("served")
    rows = [
        {"conversations": [{"from": "human", "value": "What's the weather in Paris?"},
                           {"from": "function_call",
                            "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})}],
         "tools": json.dumps(TOOLS)},
        {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi there!"}], "tools": ""},
        {"conversations": [{"from": "human", "value": "Say bye."}, {"from": "gpt", "value": "Goodbye!"}], "tools": ""},
    ]
    (root / "tool.json").write_text(json.dumps(rows))
    (root / "dataset_info.json").write_text(json.dumps({"tool": {
        "file_name": "tool.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}}}))
    (root / "train.yaml").write_text("stage: sft\n")
    out = root / "model"
    assert main(["train", str(root / "train.yaml"), f"model_name_or_path={tiny_model_dir}", "dataset=tool",
                 f"dataset_dir={root}", "template=qwen", "finetuning_type=full", f"output_dir={out}", "max_steps=80",
                 "learning_rate=3e-3", "per_device_train_batch_size=3", "report_to=none", "save_strategy=no",
                 "seed=1"]) == 0
    (root / "serve.yaml").write_text(f"model_name_or_path: {out}\ntemplate: qwen\ndo_sample: false\n"
                                     "max_new_tokens: 40\n")
    return root


def test_chat_cli_through_stdin(trained, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hi.\nclear\nSay bye.\nexit\n"))
    assert main(["chat", str(trained / "serve.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Assistant: Hi there!" in out and "History cleared." in out and "Assistant: Goodbye!" in out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained):
    import uvicorn

    from tunesmith.api.app import create_app
    from tunesmith.infer.engine import ChatEngine

    engine = ChatEngine(load_config(trained / "serve.yaml"))
    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(create_app(engine, api_key="secret"), host="127.0.0.1", port=port,
                                             log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", engine.name
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server[0], api_key="secret", max_retries=0)


def test_models_and_chat(client, server):
    assert [model.id for model in client.models.list().data] == [server[1]]
    reply = client.chat.completions.create(model=server[1], messages=[{"role": "user", "content": "Say hi."}])
    assert reply.choices[0].message.content == "Hi there!"
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0


def test_streamed_chat(client, server):
    stream = client.chat.completions.create(model=server[1], stream=True,
                                            messages=[{"role": "system", "content": ""},
                                                      {"role": "user", "content": "Say bye."}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "Goodbye!"


def test_tool_call(client, server):
    reply = client.chat.completions.create(
        model=server[1], messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[{"type": "function", "function": tool} for tool in TOOLS])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_bad_requests_get_openai_errors(client, server):
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=server[1], messages=[])
    assert info.value.status_code == 400 and "messages" in str(info.value)
    with pytest.raises(openai.BadRequestError, match="last message must be from the user"):
        client.chat.completions.create(model=server[1], messages=[{"role": "user", "content": "a"},
                                                                  {"role": "assistant", "content": "b"}])


def test_api_key_is_checked(server):
    import openai

    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=server[0], api_key=key or "none", max_retries=0)
        if not key:
            bad = openai.OpenAI(base_url=server[0], api_key="x", max_retries=0, default_headers={"Authorization": ""})
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_concurrent_requests_get_their_own_answers(client, server):
    prompts = {"Say hi.": "Hi there!", "Say bye.": "Goodbye!"} 

    def ask(prompt):
        reply = client.chat.completions.create(model=server[1], messages=[{"role": "user", "content": prompt}])
        return prompt, reply.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, list(prompts) * 3))
    assert all(prompts[prompt] == answer for prompt, answer in answers)


def test_merged_export_gives_the_same_logits(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.model.load import load_model, load_tokenizer

    (tmp_path / "c.yaml").write_text("stage: sft\n")
    adapter = tmp_path / "adapter"
    demo = __import__("tunesmith.demo", fromlist=["DEMO_DATA"]).DEMO_DATA
    assert main(["train", str(tmp_path / "c.yaml"), f"model_name_or_path={tiny_model_dir}",
                 "dataset=tunesmith_identity", f"dataset_dir={demo}", "template=chatml", f"output_dir={adapter}",
                 "max_steps=3", "learning_rate=1e-2", "report_to=none", "save_strategy=no"]) == 0
    keys = [f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={adapter}", "template=chatml"]
    merged_dir = tmp_path / "merged"
    assert main(["export", str(tmp_path / "c.yaml"), *keys, f"export_dir={merged_dir}", "export_dtype=float32"]) == 0
    config = load_config(tmp_path / "c.yaml", keys)
    tokenizer = load_tokenizer(config.model)
    reference = load_model(config.model, config.method, tokenizer, is_trainable=False)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[4, 100, 200, 300, 5]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, reference(ids).logits, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-3)
    assert (merged_dir / "tokenizer_config.json").is_file() and (merged_dir / "chat_template.jinja").is_file()


def test_chat_from_a_run_folder(trained, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Say hi.\n"))
    assert main(["chat", str(trained / "model"), "do_sample=false", "max_new_tokens=10"]) == 0
    assert "Assistant: Hi there!" in capsys.readouterr().out


def test_export_refuses_a_quantized_base(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "c.yaml").write_text("stage: sft\n")
    code = main(["export", str(tmp_path / "c.yaml"), f"model_name_or_path={tiny_model_dir}", "quantization_bit=4",
                 f"export_dir={tmp_path / 'x'}"])
    assert code == 2 and "cannot merge adapters into a quantized base" in capsys.readouterr().err
