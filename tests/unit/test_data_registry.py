"""dataset_info.json parsing (LLaMA-Factory's schema and defaults), file-path datasets and every registry error."""

import dataclasses
import json

import pytest

from tunesmith.data.registry import DatasetSpec, resolve_datasets
from tunesmith.errors import DataError


def registry(folder, entries):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_info.json").write_text(json.dumps(entries))
    return folder


def test_full_entry_becomes_a_spec(tmp_path):
    entry = {"file_name": "d.json", "formatting": "sharegpt", "ranking": True, "subset": "en", "split": "train[:10]",
             "folder": "x", "num_samples": 5, "columns": {"messages": "msgs", "chosen": "c", "rejected": "r"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "u", "assistant_tag": "a"}}
    (spec,) = resolve_datasets(["one"], registry(tmp_path, {"one": entry}))
    assert isinstance(spec, DatasetSpec)
    assert (spec.name, spec.load_from, spec.location) == ("one", "file", str(tmp_path / "d.json"))
    assert (spec.formatting, spec.ranking, spec.subset, spec.split, spec.folder, spec.num_samples) == (
        "sharegpt", True, "en", "train[:10]", "x", 5)
    assert spec.registry == str(tmp_path / "dataset_info.json")
    assert (spec.column("messages"), spec.column("chosen"), spec.column("prompt")) == ("msgs", "c", None)
    # a tags block replaces LLaMA-Factory's defaults: tags it leaves out are unmapped
    assert (spec.tag("user_tag"), spec.tag("observation_tag"), spec.tag("system_tag")) == ("u", None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"


def test_llamafactory_defaults(tmp_path):
    folder = registry(tmp_path, {"plain": {"file_name": "a.json"}, "chat": {"file_name": "b.json",
                                                                             "formatting": "sharegpt"},
                                 "oai": {"file_name": "c.json", "formatting": "openai"},
                                 "text": {"file_name": "t.txt", "columns": {"prompt": "text"}}})
    plain, chat, oai, text = resolve_datasets(["plain", "chat", "oai", "text"], folder)
    assert (plain.formatting, plain.ranking, plain.split, plain.num_samples) == ("alpaca", False, "train", None)
    assert [plain.column(k) for k in ("prompt", "query", "response", "history", "system")] == [
        "instruction", "input", "output", None, None]
    assert chat.column("messages") == "conversations"
    assert [chat.tag(k) for k in ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag",
                                  "function_tag", "system_tag")] == [
        "from", "value", "human", "gpt", "observation", "function_call", "system"]
    assert [oai.tag(k) for k in ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag")] == [
        "role", "content", "user", "assistant", "tool"]
    # a columns block replaces the defaults: query/response are unmapped for this text entry
    assert (text.column("prompt"), text.column("query"), text.column("response")) == ("text", None, None)


def test_comma_separated_names_and_hub_sources(tmp_path):
    folder = registry(tmp_path, {
        "both": {"hf_hub_url": "org/hf", "ms_hub_url": "org/ms"},
        "ms": {"ms_hub_url": "org/ms"},
        "pick": {"hf_hub_url": "org/hf", "ms_hub_url": "org/ms", "load_from": "ms_hub"},
        "script": {"script_url": "folder"},
        "cloud": {"cloud_file_name": "s3://bucket/x.json"},
        "old": {"file_name": "x.json", "file_sha1": "abc"},
    })
    specs = resolve_datasets("both, ms,pick,script,cloud,old", folder)
    assert [(s.load_from, s.location) for s in specs] == [
        ("hf_hub", "org/hf"), ("ms_hub", "org/ms"), ("ms_hub", "org/ms"), ("script", str(folder / "folder")),
        ("cloud_file", "s3://bucket/x.json"), ("file", str(folder / "x.json"))]
    assert not specs[0].is_local and specs[-1].is_local


def test_paths_are_datasets(tmp_path, monkeypatch):
    folder = registry(tmp_path / "data", {"reg": {"file_name": "reg.json"}})
    (folder / "inside.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "here.csv").write_text("instruction,output\na,b\n")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "0.jsonl").write_text('{"text": "x"}\n')
    monkeypatch.chdir(tmp_path)
    specs = resolve_datasets([str(folder / "inside.jsonl"), "here.csv", "inside.jsonl", "shards", "reg"], folder)
    assert [s.load_from for s in specs] == ["file"] * 5
    assert [s.formatting for s in specs] == ["auto", "auto", "auto", "auto", "alpaca"]
    assert specs[1].location == str(tmp_path / "here.csv")
    assert specs[2].location == str(folder / "inside.jsonl")
    assert specs[3].local_paths() == [tmp_path / "shards" / "0.jsonl"]
    assert specs[1].name == "here.csv"


def test_registered_name_wins_over_a_same_named_path(tmp_path, monkeypatch):
    folder = registry(tmp_path / "data", {"shards": {"file_name": "real.json"}})
    (tmp_path / "shards").mkdir()
    monkeypatch.chdir(tmp_path)
    (spec,) = resolve_datasets(["shards"], folder)
    assert spec.location == str(folder / "real.json") and spec.formatting == "alpaca"


def test_paths_need_no_registry_and_ignore_a_broken_one(tmp_path):
    data = tmp_path / "a.json"
    data.write_text('[{"instruction": "a", "output": "b"}]')
    (spec,) = resolve_datasets([str(data)], tmp_path / "missing-dir")
    assert spec.location == str(data)
    (tmp_path / "dataset_info.json").write_text("{broken")
    (spec,) = resolve_datasets([str(data)], tmp_path)
    assert spec.formatting == "auto"
    with pytest.raises(DataError, match="invalid JSON"):  # but a name that needs the registry reports it
        resolve_datasets([str(data), "named"], tmp_path)


def test_missing_dataset_dir(tmp_path):
    with pytest.raises(DataError) as err:
        resolve_datasets(["alpaca"], tmp_path / "nope")
    message = str(err.value)
    assert str(tmp_path / "nope") in message and "dataset_dir" in message and "'alpaca'" in message


def test_missing_dataset_info(tmp_path):
    with pytest.raises(DataError) as err:
        resolve_datasets(["alpaca"], tmp_path)
    message = str(err.value)
    assert str(tmp_path / "dataset_info.json") in message and "not found" in message and "file path" in message


def test_invalid_json_names_line_and_column(tmp_path):
    (tmp_path / "dataset_info.json").write_text('{\n  "a": {"file_name": "a.json"},\n  "b": {"file_name": }\n}')
    with pytest.raises(DataError) as err:
        resolve_datasets(["a"], tmp_path)
    message = str(err.value)
    assert str(tmp_path / "dataset_info.json") in message and "line 3, column 22" in message


def test_registry_must_be_an_object(tmp_path):
    (tmp_path / "dataset_info.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="one JSON object"):
        resolve_datasets(["a"], tmp_path)


def test_unregistered_name_lists_names_and_closest(tmp_path):
    folder = registry(tmp_path, {"alpaca_en_demo": {"file_name": "a"}, "alpaca_zh_demo": {"file_name": "b"},
                                 "identity": {"file_name": "c"}})
    with pytest.raises(DataError) as err:
        resolve_datasets(["alpaca_en_dem"], folder)
    message = str(err.value)
    assert "'alpaca_en_dem' is not registered" in message and str(folder / "dataset_info.json") in message
    assert "Did you mean alpaca_en_demo or alpaca_zh_demo?" in message
    assert "Registered: alpaca_en_demo, alpaca_zh_demo, identity" in message


@pytest.mark.parametrize("entry, expected", [
    ({"file_name": "a.json", "colums": {}}, ["unknown key 'colums'", "did you mean 'columns'", "allowed:"]),
    ({"file_name": "a.json", "formatting": "chatml"},
     ["\"formatting\" is 'chatml'", "allowed values: alpaca, sharegpt, openai"]),
    ({"file_name": "a.json", "columns": {"instruction": "q"}},
     ["in \"columns\"", "unknown key 'instruction'", "allowed: prompt, query"]),
    ({"file_name": "a.json", "tags": {"role": "r"}}, ["in \"tags\"", "did you mean 'role_tag'"]),
    ({"formatting": "alpaca"}, ["says nowhere to load from", "file_name"]),
    ({"file_name": "a.json", "num_samples": 0}, ["num_samples", "whole number"]),
    ({"file_name": "a.json", "ranking": "yes"}, ["\"ranking\" must be true or false"]),
    ({"file_name": ""}, ["\"file_name\" must be a non-empty string"]),
    ({"file_name": "a.json", "columns": {"prompt": 3}}, ["\"columns\".\"prompt\" must be a name"]),
    ({"hf_hub_url": "a/b", "load_from": "ms_hub"}, ["\"load_from\" is 'ms_hub'", "can load from: hf_hub"]),
    ("a.json", ["entry must be a JSON object"]),
])
def test_bad_entries_name_the_file_the_entry_and_the_fix(tmp_path, entry, expected):
    folder = registry(tmp_path, {"mine": entry, "fine": {"file_name": "ok.json"}})
    assert resolve_datasets(["fine"], folder)  # only the requested entries are checked
    with pytest.raises(DataError) as err:
        resolve_datasets(["mine"], folder)
    message = str(err.value)
    assert str(folder / "dataset_info.json") in message and "dataset 'mine'" in message
    for part in expected:
        assert part in message


def test_a_folder_holding_a_registry_is_not_a_dataset(tmp_path):
    inner = registry(tmp_path / "inner", {})
    with pytest.raises(DataError, match="set dataset_dir to that folder"):
        resolve_datasets([str(inner)], tmp_path)


def test_empty_name(tmp_path):
    with pytest.raises(DataError, match="empty dataset name"):
        resolve_datasets(["a", " "], registry(tmp_path, {"a": {"file_name": "a.json"}}))


def test_ranking_entry_without_columns_reads_chosen_and_rejected(tmp_path):
    (spec,) = resolve_datasets(["nectar"], registry(tmp_path, {"nectar": {"hf_hub_url": "a/b", "ranking": True}}))
    assert (spec.column("prompt"), spec.column("chosen"), spec.column("rejected")) == ("instruction", "chosen",
                                                                                       "rejected")
