"""Shared pytest setup: offline Hugging Face settings and session-wide tiny tokenizer and model fixtures."""

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

# Tests never touch the hub; set before any test imports transformers/datasets.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TinyModelDirs(Mapping):
    """arch -> folder of a tiny model, each built the first time it is asked for (also callable: dirs("qwen2"))."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._built: dict[str, Path] = {}

    def __getitem__(self, arch: str) -> Path:
        from tunesmith.model.tiny import ARCHS, ensure_tiny_model

        if arch not in ARCHS:
            raise KeyError(arch)
        if arch not in self._built:
            self._built[arch] = ensure_tiny_model(self._root / f"tiny-{arch}", arch)
        return self._built[arch]

    def __call__(self, arch: str = "llama") -> Path:
        return self[arch]

    def __iter__(self) -> Iterator[str]:
        from tunesmith.model.tiny import ARCHS

        return iter(ARCHS)

    def __len__(self) -> int:
        from tunesmith.model.tiny import ARCHS

        return len(ARCHS)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The deterministic tiny tokenizer (bos <s>, eos </s>, no pad, ChatML chat template). Do not mutate it."""
    from tunesmith.model.tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> TinyModelDirs:
    """Lazily built tiny model folders, one per arch: tiny_model_dirs["qwen2"] or tiny_model_dirs("qwen2")."""
    return TinyModelDirs(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_dirs) -> Path:
    """Folder of the tiny llama model (random init, seed 0), built once per session. Do not write into it."""
    return tiny_model_dirs["llama"]
