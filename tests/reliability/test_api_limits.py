"""The API under hostile and careless clients: limits, OpenAI-shaped errors, cancellation, load and shutdown."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tunesmith.config.load import load_config

KEY = "sekret"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "hi"}]
SAFETY = 60  # seconds: a generous net against hangs, never a timing assertion
TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"}},
                         "required": ["city"]}}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["type"]
    return error


@contextmanager
def serving(engine, settings=None):
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    from tunesmith.api.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine, api_key=KEY, settings=settings), host="127.0.0.1",
                                           port=port, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SAFETY
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=SAFETY)


def write_config(folder: Path, model: Path, extra: str = "") -> Path:
    path = folder / "serve.yaml"
    path.write_text(f"model_name_or_path: {model}\ntemplate: qwen\ndo_sample: false\nmax_new_tokens: 8\n{extra}")
    return path


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory):
    """A tiny model with a 128-token context (input limit 100 tokens, queue 4, 3 MB bodies)."""
    from tunesmith.infer.engine import ChatEngine
    from tunesmith.model.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("small")
    model = save_tiny_model(root / "model", max_position_embeddings=128)
    config = write_config(root, model, "api_max_input_tokens: 100\napi_max_queue: 4\napi_max_body_bytes: 3000000\n")
    return ChatEngine(load_config(config))


@pytest.fixture(scope="module")
def small(small_engine):
    with serving(small_engine) as url:
        yield url


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    """A tiny model with a 100k-token context: greedy decoding of it runs for minutes unless something stops it."""
    from tunesmith.model.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("long")
    model = save_tiny_model(root / "model", max_position_embeddings=100_000)
    return write_config(root, model, "api_max_queue: 0\napi_request_timeout: 600\n")


@pytest.fixture(scope="module")
def long_engine(long_model):
    from tunesmith.infer.engine import ChatEngine

    return ChatEngine(load_config(long_model))


@pytest.fixture(scope="module")
def long(long_engine):
    """The long model behind a real server that lets one request in at a time (api_max_queue 0)."""
    with serving(long_engine) as url:
        yield url


def chat(url: str, timeout: float = SAFETY, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": HI, **body}, headers=AUTH,
                      timeout=timeout)


@contextmanager
def long_stream(url: str):
    """A streamed reply of (capped) 100k tokens, running once this yields; closed when the block ends.

    Retried while the server answers 429: a stream closed just before may not have given its place back yet."""
    body = {"model": "m", "messages": HI, "stream": True, "max_tokens": 10**9, "temperature": 0}
    deadline = time.monotonic() + SAFETY
    with httpx.Client(timeout=SAFETY) as client:
        while True:
            with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH) as response:
                if response.status_code == 429 and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(line for line in lines if line.startswith("data:"))  # the reply has started
                yield lines
                return


def served_again(url: str) -> httpx.Response:
    """The next short request, retried while the server still reports the previous one's place as taken (429)."""
    deadline = time.monotonic() + SAFETY
    while True:
        response = chat(url, max_tokens=2)
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


# ---- malformed requests: the right status and an OpenAI-shaped body, never a 500


@pytest.mark.parametrize("name, request_args, status, param", [
    ("tool arguments not JSON", {"json": {"model": "m", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "f", "arguments": "{not json"}}]},
        {"role": "tool", "content": "r"}]}}, 400, "messages[1].tool_calls[0].function"),
    ("text part not a string", {"json": {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": 5}]}]}}, 400, "messages[0].content"),
    ("invalid JSON", {"content": b'{"model": "m", "messages": [}', "headers": {"content-type": "application/json"}},
     400, None),
    ("no messages", {"json": {"model": "m", "messages": []}}, 400, "messages"),
    ("five stop strings", {"json": {"model": "m", "messages": HI, "stop": list("abcde")}}, 400, "stop"),
    ("body too large", {"content": b"x" * 3_000_001, "headers": {"content-type": "application/json"}}, 413, None),
])
def test_malformed_requests_get_openai_errors(small, name, request_args, status, param):
    headers = {**AUTH, **request_args.pop("headers", {})}
    response = httpx.post(f"{small}/v1/chat/completions", headers=headers, timeout=SAFETY, **request_args)
    error = is_openai_error(response, status)
    assert error["param"] == param
    if name == "invalid JSON":
        assert "not valid JSON" in error["message"]
    assert chat(small).status_code == 200  # and the server is fine after it


def test_an_unexpected_failure_is_an_openai_shaped_500(small, small_engine, monkeypatch):
    prepare = small_engine.prepare  # what the API calls to encode a request

    def failing(messages, system=None, tools=None, images=None, audios=None):
        if messages[-1]["content"] == "fail":
            raise RuntimeError("a bug")
        return prepare(messages, system, tools, images, audios)

    monkeypatch.setattr(small_engine, "prepare", failing)
    error = is_openai_error(chat(small, messages=[{"role": "user", "content": "fail"}]), 500)
    assert error["type"] == "server_error" and "a bug" not in error["message"]
    assert chat(small).status_code == 200


def test_unknown_routes_and_methods_get_openai_errors(small):
    assert "Invalid URL" in is_openai_error(httpx.get(f"{small}/v1/nothing", headers=AUTH), 404)["message"]
    assert is_openai_error(httpx.get(f"{small}/v1/chat/completions", headers=AUTH), 405)
    assert is_openai_error(httpx.post(f"{small}/v1/models", headers=AUTH), 405)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/v1/models"])
def test_every_route_but_health_needs_the_key(small, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        assert is_openai_error(httpx.get(f"{small}{path}", headers=headers), 401)["code"] == "invalid_api_key"
    assert httpx.get(f"{small}{path}", headers=AUTH).status_code == 200
    assert httpx.get(f"{small}/health").json() == {"status": "ok"}


# ---- limits


def test_a_huge_message_is_refused_before_tokenizing(small):
    response = chat(small, messages=[{"role": "user", "content": "word " * 400_000}])  # 2 MB
    error = is_openai_error(response, 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"


def test_a_prompt_over_api_max_input_tokens_is_refused(small):
    # 114 tokens: inside the model's 128 positions but over the configured 100
    response = chat(small, messages=[{"role": "user", "content": "ab " * 30}])
    error = is_openai_error(response, 400)
    assert error["code"] == "context_length_exceeded" and "at most 100 tokens" in error["message"]


def test_huge_max_tokens_is_capped_to_the_context(small):
    reply = chat(small, max_tokens=1_000_000_000, temperature=0).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    usage = reply["usage"]
    assert 0 < usage["completion_tokens"] and usage["prompt_tokens"] + usage["completion_tokens"] <= 128


def test_stop_strings_cut_the_reply(small):
    text = chat(small, max_tokens=20).json()["choices"][0]["message"]["content"]
    word = next(text[i:i + 2] for i in range(len(text) // 2, len(text)) if text[i:i + 2].isascii()
                and text[i:i + 2].isalpha())
    reply = chat(small, max_tokens=20, stop=[word]).json()["choices"][0]
    assert reply["finish_reason"] == "stop" and reply["message"]["content"] == text[: text.index(word)]


def test_streaming_reports_length_when_max_tokens_cuts_it(small):
    body = {"model": "m", "messages": HI, "stream": True, "max_tokens": 3}
    with httpx.stream("POST", f"{small}/v1/chat/completions", json=body, headers=AUTH, timeout=SAFETY) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert [json.loads(event)["choices"][0]["finish_reason"] for event in events[:-1]][-1] == "length"


def test_100_concurrent_requests_get_answers_or_429_and_the_server_stays_healthy(small):
    def ask(_):
        return chat(small, max_tokens=2)

    with ThreadPoolExecutor(100) as pool:
        responses = list(pool.map(ask, range(100)))
    for response in responses:
        if response.status_code != 200:
            assert is_openai_error(response, response.status_code)["type"] in ("rate_limit_error", "server_error")
            assert response.status_code in (429, 503)
    assert any(response.status_code == 200 for response in responses)
    assert httpx.get(f"{small}/health").status_code == 200
    assert served_again(small).status_code == 200


# ---- long generations: health, queue, disconnects, timeout, shutdown


def test_health_answers_and_the_queue_is_bounded_while_a_long_generation_runs(long):
    with long_stream(long):
        assert httpx.get(f"{long}/health", timeout=SAFETY).json() == {"status": "ok"}
        assert is_openai_error(chat(long, max_tokens=2), 429)["code"] == "rate_limit_exceeded"


def test_a_client_that_disconnects_from_a_stream_cancels_its_generation(long):
    with long_stream(long) as lines:
        next(lines)
    assert served_again(long).status_code == 200  # without the cancel this waits for 100k tokens


def test_a_client_that_disconnects_while_waiting_cancels_its_generation(long):
    assert served_again(long).status_code == 200  # the server is free
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        chat(long, timeout=2, max_tokens=10**9)
    assert served_again(long).status_code == 200


def test_the_request_timeout_stops_a_generation(long_engine):
    settings = long_engine.config.infer.model_copy(update={"api_request_timeout": 2})
    with serving(long_engine, settings) as url:
        reply = chat(url, max_tokens=10**9).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] < 100_000 - reply["usage"]["prompt_tokens"]


def test_sigterm_stops_the_server_mid_generation(long_model, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    log = (tmp_path / "api.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "tunesmith", "api", str(long_model), f"api_port={port}",
                                f"api_key={KEY}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 2 * SAFETY
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with long_stream(url):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        assert process.returncode is not None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


# ---- a streamed tool call


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory, tiny_model_dir):
    """The tiny model fully fine-tuned to call get_weather (the recipe of tests/e2e/test_serve.py)."""
    from tunesmith.cli import main

    root = tmp_path_factory.mktemp("tools")
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    rows = [{"conversations": [{"from": "human", "value": "What's the weather in Paris?"},
                               {"from": "function_call", "value": json.dumps(call)}], "tools": json.dumps(TOOLS)},
            {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi there!"}],
             "tools": ""},
            {"conversations": [{"from": "human", "value": "Say bye."}, {"from": "gpt", "value": "Goodbye!"}],
             "tools": ""}]
    (root / "tool.json").write_text(json.dumps(rows))
    (root / "dataset_info.json").write_text(json.dumps({"tool": {
        "file_name": "tool.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}}}))
    (root / "train.yaml").write_text("stage: sft\n")
    assert main(["train", str(root / "train.yaml"), f"model_name_or_path={tiny_model_dir}", "dataset=tool",
                 f"dataset_dir={root}", "template=qwen", "finetuning_type=full", f"output_dir={root / 'model'}",
                 "max_steps=80", "learning_rate=3e-3", "per_device_train_batch_size=3", "report_to=none",
                 "save_strategy=no", "seed=1"]) == 0
    return write_config(root, root / "model", "max_new_tokens: 40\n")


def test_a_streamed_tool_call_ends_with_tool_calls(tool_model):
    from tunesmith.infer.engine import ChatEngine

    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
            "tools": [{"type": "function", "function": tool} for tool in TOOLS]}
    with serving(ChatEngine(load_config(tool_model))) as url, \
            httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=SAFETY) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    calls = [call for chunk in chunks for call in chunk["choices"][0]["delta"].get("tool_calls") or []]
    assert [call["function"]["name"] for call in calls] == ["get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"} and calls[0]["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
