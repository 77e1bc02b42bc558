"""Hub ids while online: one request, no retries, a clear error, and the hub cache used when the hub is down."""

import http.server
import shutil
import socket
import threading
from typing import ClassVar

import pytest

from tunesmith.config.schema import ModelArgs
from tunesmith.errors import ModelError
from tunesmith.model.load import load_tokenizer


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Answers every request as the hub does for a model that does not exist, and counts them."""

    requests: ClassVar[list[str]] = []

    def do_GET(self):
        self.requests.append(self.path)
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def online(monkeypatch):
    """Online as far as tunesmith can tell; the hub endpoint is set by each test."""
    from huggingface_hub import constants

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def use(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)

    return use


def test_an_unreachable_hub_fails_at_once_with_one_message(online, tmp_path):
    online(f"http://127.0.0.1:{_closed_port()}")
    args = ModelArgs(model_name_or_path="someorg/somemodel", cache_dir=str(tmp_path))
    with pytest.raises(
        ModelError,
        match=r"cannot load model 'someorg/somemodel': the Hugging Face hub \(http://"
        r"127\.0\.0\.1:\d+\) cannot be reached .*; set HF_HUB_OFFLINE=1 to use only local files",
    ):
        load_tokenizer(args)


def test_a_model_missing_on_the_hub_is_asked_for_once(online, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _NotFound.requests.clear()
    try:
        online(f"http://127.0.0.1:{server.server_address[1]}")
        args = ModelArgs(model_name_or_path="someorg/no-such-model", cache_dir=str(tmp_path))
        with pytest.raises(
            ModelError,
            match=r"no model 'someorg/no-such-model' on the Hugging Face hub \(or it is "
            r"private: set hf_hub_token\)",
        ):
            load_tokenizer(args)
    finally:
        server.shutdown()
    assert _NotFound.requests == ["/api/models/someorg/no-such-model/revision/main"]  # one request, no retries


def test_a_cached_model_loads_when_the_hub_is_down(online, tmp_path, tiny_model_dir, caplog):
    snapshot = tmp_path / "models--someorg--cached" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (tmp_path / "models--someorg--cached" / "refs").mkdir()
    (tmp_path / "models--someorg--cached" / "refs" / "main").write_text("a" * 40)
    online(f"http://127.0.0.1:{_closed_port()}")
    tokenizer = load_tokenizer(ModelArgs(model_name_or_path="someorg/cached", cache_dir=str(tmp_path)))
    assert tokenizer("hello")["input_ids"]
    assert "loading 'someorg/cached' from the local hub cache" in caplog.text
