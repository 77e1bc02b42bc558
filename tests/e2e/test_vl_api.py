"""The OpenAI-compatible API with images: image_url content parts as data: URLs, local paths and file:// URLs on a
tiny Qwen2-VL over real HTTP, and OpenAI-shaped 400s for what it refuses (network URLs, bad data, text models)."""

import base64
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from tunesmith.config.load import load_config

KEY = "sekret"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "What colour is this?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(engine):
    import uvicorn

    from tunesmith.api.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine, api_key=KEY), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture(scope="module")
def vl_engine(tiny_vl_model_dir):
    from tunesmith.infer.engine import ChatEngine

    return ChatEngine(
        load_config(
            None,
            {
                "model_name_or_path": str(tiny_vl_model_dir),
                "template": "qwen2_vl",
                "do_sample": False,
                "max_new_tokens": 6,
            },
        )
    )


@pytest.fixture(scope="module")
def vl(vl_engine):
    with serving(vl_engine) as url:
        yield url


@pytest.fixture(scope="module")
def red(vl_data_dir):
    return (vl_data_dir / "images" / "red.png").absolute()


def data_url(path, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def ask(url: str, image_url: str, text: str = QUESTION, **extra) -> httpx.Response:
    content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": text}]
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(url, json=body, headers=AUTH, timeout=60)


def refused(response: httpx.Response, *words: str, code: str | None = None) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert all(word in error["message"] for word in words), error["message"]
    assert code is None or error["code"] == code
    return error


def test_a_data_url_image_is_answered_as_the_engine_answers_it(vl, vl_engine, red):
    response = ask(vl, data_url(red))
    assert response.status_code == 200, response.text
    body = response.json()
    messages = [{"role": "user", "content": f"<image>{QUESTION}"}]
    expected = vl_engine.chat(messages, images=[str(red)])[0]
    assert body["choices"][0]["message"]["content"] == expected.text
    assert (
        body["usage"]["prompt_tokens"] == expected.prompt_tokens == len(vl_engine.encode(messages, images=[str(red)]))
    )
    # the same image as a local path and as a file:// URL
    for same in (str(red), red.as_uri()):
        assert ask(vl, same).json()["choices"][0]["message"]["content"] == expected.text


def test_images_stream_and_sit_where_their_parts_are(vl, vl_engine, red, vl_data_dir):
    with httpx.stream(
        "POST",
        vl,
        json={
            "model": "m",
            "stream": True,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(red)}},
                        {"type": "text", "text": QUESTION},
                    ],
                }
            ],
        },
        headers=AUTH,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    streamed = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert streamed == vl_engine.chat([{"role": "user", "content": f"<image>{QUESTION}"}], images=[str(red)])[0].text

    blue = vl_data_dir / "images" / "blue.png"
    two = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first "}, {"type": "image_url", "image_url": {"url": data_url(red)}}],
        },
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": str(blue)}}, {"type": "text", "text": "second"}],
        },
    ]
    response = httpx.post(vl, json={"model": "m", "messages": two}, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    turns = [
        {"role": "user", "content": "first <image>"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "<image>second"},
    ]
    assert response.json()["usage"]["prompt_tokens"] == len(vl_engine.encode(turns, images=[str(red), str(blue)]))


def test_what_the_api_refuses_with_images(vl, red, tmp_path):
    refused(ask(vl, "https://example.com/cat.png"), "https: URLs are not fetched", code="invalid_image")
    refused(ask(vl, "http://127.0.0.1/cat.png"), "not fetched", code="invalid_image")
    refused(ask(vl, "data:image/png;base64,***"), "base64 does not decode", code="invalid_image")
    refused(
        ask(vl, "data:image/png;base64," + base64.b64encode(b"not a picture").decode()),
        "not an image PIL can read",
        code="invalid_image",
    )
    refused(ask(vl, data_url(red, "text/plain")), "holds text/plain, not an image", code="invalid_image")
    refused(ask(vl, str(tmp_path / "missing.png")), "no image file", code="invalid_image")
    refused(ask(vl, red.as_uri().replace("file://", "file://otherhost")), "not on host 'otherhost'")
    refused(ask(vl, data_url(red), text="<image> and this"), "keep the text free of it")
    empty = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    refused(httpx.post(vl, json=empty, headers=AUTH), "an image_url part needs")
    in_reply = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": data_url(red)}}]},
            {"role": "user", "content": "and?"},
        ],
    }
    refused(httpx.post(vl, json=in_reply, headers=AUTH), "images are accepted in user messages only")
    audio = {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
    refused(httpx.post(vl, json=audio, headers=AUTH), "an input_audio part needs")
    assert ask(vl, data_url(red)).status_code == 200  # the server is fine after all that


def test_a_text_model_refuses_images_and_keeps_image_text(tiny_model_dir, red):
    from tunesmith.infer.engine import ChatEngine

    engine = ChatEngine(
        load_config(
            None,
            {"model_name_or_path": str(tiny_model_dir), "template": "qwen", "do_sample": False, "max_new_tokens": 3},
        )
    )
    with serving(engine) as url:
        error = refused(ask(url, data_url(red)), "text-only model: it cannot take images", code="model_not_multimodal")
        assert error["message"].startswith("messages[0].content[0].image_url: ")
        plain = {"model": "m", "messages": [{"role": "user", "content": "what is <image> in HTML?"}]}
        assert httpx.post(url, json=plain, headers=AUTH, timeout=60).status_code == 200
