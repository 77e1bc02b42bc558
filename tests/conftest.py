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


@pytest.fixture(scope="session")
def tiny_vl_model_dir(tiny_model_dirs) -> Path:
    """Folder of a tiny random Qwen2-VL (`tunesmith tiny --arch qwen2_vl`), built once per session."""
    from tunesmith.model.tiny import ensure_tiny_model

    return ensure_tiny_model(tiny_model_dirs._root / "tiny-qwen2_vl", "qwen2_vl")


def write_vl_dataset(folder: Path) -> Path:
    """A tiny image dataset in LF's layout: `mllm_demo` (ShareGPT/OpenAI roles) and `vl_alpaca` (Alpaca), images in
    folder/images/, paths relative to the folder (LF's media_dir default, the dataset_dir)."""
    import json

    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, color, size in (("red.png", (220, 30, 30), (64, 48)), ("blue.png", (30, 30, 220), (40, 72))):
        Image.new("RGB", size, color).save(folder / "images" / name)
    chat = [{"messages": [{"role": "user", "content": "<image>What colour is this?"},
                          {"role": "assistant", "content": f"It is {colour}."}], "images": [f"images/{colour}.png"]}
            for colour in ("red", "blue")]
    chat.append({"messages": [{"role": "user", "content": "<image>and<image>: which is red?"},
                              {"role": "assistant", "content": "The first is red."}],
                 "images": ["images/red.png", "images/blue.png"]})
    (folder / "mllm_demo.json").write_text(json.dumps(chat))
    alpaca = [{"instruction": "<image>Name the colour.", "input": "", "output": "red", "images": ["images/red.png"]}]
    (folder / "vl_alpaca.json").write_text(json.dumps(alpaca))
    pairs = [{"instruction": "<image>Which colour is it?", "chosen": colour, "rejected": other,
              "images": [f"images/{colour}.png"]} for colour, other in (("red", "blue"), ("blue", "red"))]
    (folder / "vl_dpo.json").write_text(json.dumps(pairs))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    (folder / "dataset_info.json").write_text(json.dumps({
        "mllm_demo": {"file_name": "mllm_demo.json", "formatting": "sharegpt",
                      "columns": {"messages": "messages", "images": "images"}, "tags": tags},
        "vl_alpaca": {"file_name": "vl_alpaca.json", "columns": {"prompt": "instruction", "query": "input",
                                                                  "response": "output", "images": "images"}},
        "vl_dpo": {"file_name": "vl_dpo.json", "ranking": True, "columns": {
            "prompt": "instruction", "chosen": "chosen", "rejected": "rejected", "images": "images"}},
    }))
    return folder


@pytest.fixture(scope="session")
def vl_data_dir(tmp_path_factory) -> Path:
    """write_vl_dataset in a session folder. Do not write into it."""
    return write_vl_dataset(tmp_path_factory.mktemp("vl-data"))


@pytest.fixture(scope="session")
def tiny_audio_model_dir(tiny_model_dirs) -> Path:
    """Folder of a tiny random Qwen2-Audio (`tunesmith tiny --arch qwen2_audio`), built once per session."""
    from tunesmith.model.tiny import ensure_tiny_model

    return ensure_tiny_model(tiny_model_dirs._root / "tiny-qwen2_audio", "qwen2_audio")


def write_tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1, hz: float = 440.0) -> Path:
    """A sine tone as a 16-bit PCM WAV file (the standard library's wave module)."""
    import wave

    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * hz * t)
    pcm = (np.stack([tone] * channels, axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def write_audio_dataset(folder: Path) -> Path:
    """A tiny audio dataset in LF's layout: `audio_demo` (ShareGPT, like LF's mllm_audio_demo), `audio_alpaca`
    (Alpaca) and `audio_dpo` (ranking); WAV tones in folder/audios/, paths relative to the folder."""
    import json

    write_tone(folder / "audios" / "low.wav", 0.6, hz=220.0)
    write_tone(folder / "audios" / "high.wav", 1.0, rate=22050, channels=2, hz=880.0)
    chat = [{"messages": [{"role": "user", "content": "<audio>What is this sound?"},
                          {"role": "assistant", "content": f"It is a {pitch} tone."}],
             "audios": [f"audios/{pitch}.wav"]} for pitch in ("low", "high")]
    chat.append({"messages": [{"role": "user", "content": "<audio>and<audio>: which is low?"},
                              {"role": "assistant", "content": "The first is low."}],
                 "audios": ["audios/low.wav", "audios/high.wav"]})
    (folder / "audio_demo.json").write_text(json.dumps(chat))
    alpaca = [{"instruction": "<audio>Name the pitch.", "input": "", "output": "low", "audios": ["audios/low.wav"]}]
    (folder / "audio_alpaca.json").write_text(json.dumps(alpaca))
    pairs = [{"instruction": "<audio>Which pitch is it?", "chosen": pitch, "rejected": other,
              "audios": [f"audios/{pitch}.wav"]} for pitch, other in (("low", "high"), ("high", "low"))]
    (folder / "audio_dpo.json").write_text(json.dumps(pairs))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    (folder / "dataset_info.json").write_text(json.dumps({
        "audio_demo": {"file_name": "audio_demo.json", "formatting": "sharegpt",
                       "columns": {"messages": "messages", "audios": "audios"}, "tags": tags},
        "audio_alpaca": {"file_name": "audio_alpaca.json", "columns": {"prompt": "instruction", "query": "input",
                                                                       "response": "output", "audios": "audios"}},
        "audio_dpo": {"file_name": "audio_dpo.json", "ranking": True, "columns": {
            "prompt": "instruction", "chosen": "chosen", "rejected": "rejected", "audios": "audios"}},
    }))
    return folder


@pytest.fixture(scope="session")
def audio_data_dir(tmp_path_factory) -> Path:
    """write_audio_dataset in a session folder. Do not write into it."""
    return write_audio_dataset(tmp_path_factory.mktemp("audio-data"))


def write_video(path: Path, frames: int, fps: int, size: tuple[int, int] = (64, 48), codec: str = "mpeg4") -> Path:
    """A tiny video written with PyAV: `frames` frames of `size` (width, height) at `fps`, each a different red."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[..., 0] = (index * 40) % 256
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_video_dataset(folder: Path) -> Path:
    """A tiny video dataset in LF's layout: `video_demo` (ShareGPT, like LF's mllm_video_demo), `video_alpaca`
    (Alpaca) and `video_dpo` (ranking); videos in folder/videos/ (a 2 s mp4 at 5 fps, a 1.75 s avi at 4 fps)."""
    import json

    write_video(folder / "videos" / "short.mp4", 10, 5)
    write_video(folder / "videos" / "tiny.avi", 7, 4, (40, 30))
    chat = [{"messages": [{"role": "user", "content": "<video>What happens?"},
                          {"role": "assistant", "content": f"It turns red ({name})."}],
             "videos": [f"videos/{name}"]} for name in ("short.mp4", "tiny.avi")]
    chat.append({"messages": [{"role": "user", "content": "<video>and<video>: which is longer?"},
                              {"role": "assistant", "content": "The first."}],
                 "videos": ["videos/short.mp4", "videos/tiny.avi"]})
    (folder / "video_demo.json").write_text(json.dumps(chat))
    alpaca = [{"instruction": "<video>Name the colour.", "input": "", "output": "red", "videos": ["videos/short.mp4"]}]
    (folder / "video_alpaca.json").write_text(json.dumps(alpaca))
    pairs = [{"instruction": "<video>Which colour?", "chosen": "red", "rejected": "blue", "videos": [f"videos/{n}"]}
             for n in ("short.mp4", "tiny.avi")]
    (folder / "video_dpo.json").write_text(json.dumps(pairs))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    (folder / "dataset_info.json").write_text(json.dumps({
        "video_demo": {"file_name": "video_demo.json", "formatting": "sharegpt",
                       "columns": {"messages": "messages", "videos": "videos"}, "tags": tags},
        "video_alpaca": {"file_name": "video_alpaca.json", "columns": {"prompt": "instruction", "query": "input",
                                                                       "response": "output", "videos": "videos"}},
        "video_dpo": {"file_name": "video_dpo.json", "ranking": True, "columns": {
            "prompt": "instruction", "chosen": "chosen", "rejected": "rejected", "videos": "videos"}},
    }))
    return folder


@pytest.fixture(scope="session")
def video_data_dir(tmp_path_factory) -> Path:
    """write_video_dataset in a session folder. Do not write into it."""
    return write_video_dataset(tmp_path_factory.mktemp("video-data"))
