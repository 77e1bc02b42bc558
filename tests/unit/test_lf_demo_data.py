"""LLaMA-Factory's own demo data and dataset_info.json load unchanged; hub entries fail with a clear offline message."""

import json
from pathlib import Path

import pytest

from tunesmith.data.loader import load_records
from tunesmith.errors import DataError

DEMO = Path(__file__).resolve().parents[2].parent / "shared" / "lf-demo-data"
pytestmark = pytest.mark.skipif(not (DEMO / "dataset_info.json").is_file(), reason=f"{DEMO} is absent")


def registry() -> dict:
    return json.loads((DEMO / "dataset_info.json").read_text()) if DEMO.is_dir() else {}


def natural_stage(name: str, entry: dict) -> str:
    if entry.get("ranking"):
        return "dpo"
    if "kto_tag" in entry.get("columns", {}):
        return "kto"
    if entry.get("columns", {}).get("prompt") == "text":  # c4_demo, wiki_demo
        return "pt"
    return "sft"


def file_records(path: Path) -> int:
    if path.suffix == ".txt":
        return len(path.read_text(encoding="utf-8").splitlines())
    if path.suffix == ".jsonl":
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return len(json.loads(path.read_text(encoding="utf-8")))


LOCAL = [name for name, entry in registry().items() if "file_name" in entry]
REMOTE = [name for name, entry in registry().items() if "file_name" not in entry]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lf-demo-cache"))


def check_shape(records, stage: str) -> None:
    for record in records:
        prompt, response = record["prompt"], record["response"]
        assert record["system"] is not None and record["tools"] is not None
        if stage == "pt":
            assert len(prompt) == 1 and prompt[0]["role"] == "user" and prompt[0]["content"] and response == []
            continue
        assert len(prompt) % 2 == 1
        for turn, message in enumerate(prompt):
            assert message["role"] in (("user", "observation") if turn % 2 == 0 else ("assistant", "function"))
        assert len(response) == (2 if stage == "dpo" else 1)
        assert all(m["role"] in ("assistant", "function") for m in response)
        assert (record["kto_tag"] is not None) == (stage == "kto")


@pytest.mark.parametrize("name", LOCAL)
def test_every_local_entry_loads_for_its_stage(name, cache_dir):
    entry = registry()[name]
    stage = natural_stage(name, entry)
    path = DEMO / entry["file_name"]
    if not path.exists():  # registered in LLaMA-Factory's registry, but its file is not shipped (mllm_*)
        with pytest.raises(DataError) as err:
            load_records([name], str(DEMO), stage, cache_dir=cache_dir)
        assert f"dataset '{name}'" in str(err.value) and str(path) in str(err.value)
        return
    columns = entry.get("columns", {}).keys()
    records = load_records([name], str(DEMO), stage, cache_dir=cache_dir)
    assert len(records) == file_records(path)  # nothing in the demo data is skipped
    images = ["images"] if "images" in columns else []
    audios = ["audios"] if "audios" in columns else []
    videos = ["videos"] if "videos" in columns else []
    assert records.column_names == ["prompt", "response", "system", "tools", "kto_tag", *images, *audios, *videos]
    if images:  # paths resolved against dataset_dir (LF's default media_dir), one per <image>
        for record in records.to_list():
            assert record["images"] and all(Path(p).is_file() and Path(p).is_absolute() for p in record["images"])
            text = "".join(m["content"] for m in record["prompt"] + record["response"])
            assert text.count("<image>") == len(record["images"])
    for medium in (*audios, *videos):  # the same for audios and <audio>, videos and <video>
        for record in records.to_list():
            assert record[medium] and all(Path(p).is_file() and Path(p).is_absolute() for p in record[medium])
            text = "".join(m["content"] for m in record["prompt"] + record["response"])
            assert text.count(f"<{medium[:-1]}>") == len(record[medium])
    check_shape(records.to_list(), stage)


def test_demo_specifics(cache_dir):
    identity = load_records(["identity"], str(DEMO), "sft", cache_dir=cache_dir)
    assert "{{name}}" in identity[0]["response"][0]["content"]  # placeholders stay, like LLaMA-Factory
    tools = load_records(["glaive_toolcall_en_demo"], str(DEMO), "sft", cache_dir=cache_dir).to_list()
    assert all(r["tools"] for r in tools) and any(m["role"] == "function" for r in tools for m in r["prompt"])
    dpo = load_records(["dpo_en_demo"], str(DEMO), "dpo", cache_dir=cache_dir).to_list()
    assert sum(bool(r["system"]) for r in dpo) == 80  # records that open with a system turn
    kto = load_records(["kto_en_demo"], str(DEMO), "kto", cache_dir=cache_dir)
    assert set(kto["kto_tag"]) == {True, False}
    mixed = load_records(["alpaca_en_demo", "glaive_toolcall_en_demo", "identity"], str(DEMO), "sft",
                         max_samples=50, mix_strategy="interleave_over", cache_dir=cache_dir)
    assert len(mixed) == 150


def test_hub_entries_fail_with_the_offline_message(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert len(REMOTE) > 50
    for name in REMOTE:
        entry = registry()[name]
        with pytest.raises(DataError) as err:
            load_records([name], str(DEMO), natural_stage(name, entry))
        message = str(err.value)
        assert message.startswith(f"dataset '{name}' needs a download from the hub (") and "offline" in message
        assert "register a local file_name instead" in message
