"""load_records end to end, from a dataset_info.json through files and formats to canonical records: one case per
format and file type, and the errors users meet most (each layer's own cases: test_data_registry.py, test_data_files.py,
test_data_formats.py, test_data_mixing.py)."""

import json

import pandas as pd
import pytest

from tunesmith.data.loader import load_records
from tunesmith.errors import DataError

ALPACA = [
    {"instruction": "Add", "input": "1 and 2", "output": "3", "system": "Be exact.",
     "history": [["Hi", "Hello"]]},
    {"instruction": "Colour of snow?", "input": "", "output": "White", "system": "", "history": []},
]
SHAREGPT = [
    {"conversations": [{"from": "system", "value": "Sys"}, {"from": "human", "value": "Weather?"},
                       {"from": "function_call", "value": '{"name": "w", "arguments": {}}'},
                       {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}],
     "tools": '[{"name": "w", "description": "", "parameters": {"type": "object", "properties": {}}}]'},
]
OPENAI = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                        {"role": "assistant", "content": "A"}]}]


def registry(tmp_path, entries: dict, files: dict):
    for name, rows in files.items():
        path = tmp_path / name
        if isinstance(rows, str):
            path.write_text(rows)
        elif name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        elif name.endswith(".json"):
            path.write_text(json.dumps(rows, ensure_ascii=False))
        elif name.endswith(".csv"):
            pd.DataFrame(rows).to_csv(path, index=False)
        elif name.endswith(".parquet"):
            pd.DataFrame(rows).to_parquet(path)
    (tmp_path / "dataset_info.json").write_text(json.dumps(entries))
    return tmp_path


def test_alpaca_with_history_and_system(tmp_path):
    # like LLaMA-Factory, a "columns" block replaces the defaults, so it names every column it uses
    columns = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
               "history": "history"}
    d = registry(tmp_path, {"a": {"file_name": "a.json", "columns": columns}}, {"a.json": ALPACA})
    records = load_records(["a"], d, "sft")
    first = records[0]
    assert first["prompt"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                               {"role": "user", "content": "Add\n1 and 2"}]
    assert first["response"] == [{"role": "assistant", "content": "3"}]
    assert first["system"] == "Be exact."
    assert records[1]["prompt"] == [{"role": "user", "content": "Colour of snow?"}]


def test_sharegpt_with_tools_function_calls_and_observations(tmp_path):
    d = registry(tmp_path, {"s": {"file_name": "s.json", "formatting": "sharegpt",
                                  "columns": {"messages": "conversations", "tools": "tools"}}},
                 {"s.json": SHAREGPT})
    record = load_records(["s"], d, "sft")[0]
    assert [m["role"] for m in record["prompt"]] == ["user", "function", "observation"]
    assert record["response"] == [{"role": "assistant", "content": "Sunny."}]
    assert record["system"] == "Sys" and json.loads(record["tools"])[0]["name"] == "w"


def test_openai_messages_with_custom_tags(tmp_path):
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    d = registry(tmp_path, {"o": {"file_name": "o.jsonl", "formatting": "sharegpt",
                                  "columns": {"messages": "messages"}, "tags": tags}}, {"o.jsonl": OPENAI})
    record = load_records(["o"], d, "sft")[0]
    assert record["system"] == "S" and record["response"][0]["content"] == "A"


@pytest.mark.parametrize("name", ["a.csv", "a.parquet", "a.jsonl"])
def test_file_types(tmp_path, name):
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    d = registry(tmp_path, {"a": {"file_name": name}}, {name: rows})
    assert [r["response"][0]["content"] for r in load_records(["a"], d, "sft")] == ["a0", "a1", "a2"]


def test_text_for_pretraining_and_folders_and_paths(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "1.txt").write_text("first line\nsecond line\n")
    (tmp_path / "texts" / "2.txt").write_text("third line\n")
    d = registry(tmp_path, {"t": {"file_name": "texts", "columns": {"prompt": "text"}}}, {})
    records = load_records(["t"], d, "pt")
    assert [r["prompt"][0]["content"] for r in records] == ["first line", "second line", "third line"]
    assert records[0]["response"] == []
    path = tmp_path / "direct.json"
    path.write_text(json.dumps(ALPACA))
    assert len(load_records([str(path)], tmp_path / "texts", "sft")) == 2  # a path needs no registry


def test_ranking_and_kto_records(tmp_path):
    rows = [{"instruction": "q", "chosen": "good", "rejected": "bad", "tag": True}]
    d = registry(tmp_path, {"p": {"file_name": "p.json", "ranking": True},
                            "k": {"file_name": "k.json", "columns": {"prompt": "instruction", "response": "chosen",
                                                        "kto_tag": "tag"}}},
                 {"p.json": rows, "k.json": rows})
    pair = load_records(["p"], d, "dpo")[0]
    assert [m["content"] for m in pair["response"]] == ["good", "bad"]
    kto = load_records(["k"], d, "kto")[0]
    assert kto["kto_tag"] is True and kto["response"][0]["content"] == "good"
    with pytest.raises(DataError, match="has no chosen/rejected columns; stage dpo needs a ranking dataset"):
        load_records(["k"], d, "dpo")
    with pytest.raises(DataError, match="has no kto_tag column"):
        load_records(["p"], d, "kto")


def error_of(tmp_path, entries, files, names, stage="sft"):
    d = registry(tmp_path, entries, files)
    with pytest.raises(DataError) as info:
        load_records(names, d, stage)
    return str(info.value)


def test_unregistered_name_lists_the_registered_ones(tmp_path):
    message = error_of(tmp_path, {"alpaca_demo": {"file_name": "a.json"}}, {"a.json": ALPACA}, ["alpaca_dmo"])
    assert "'alpaca_dmo' is not registered" in message and "Did you mean alpaca_demo" in message
    assert "Registered: alpaca_demo" in message


def test_missing_file(tmp_path):
    message = error_of(tmp_path, {"a": {"file_name": "gone.json"}}, {}, ["a"])
    assert "file not found" in message and "gone.json" in message and "dataset_info.json" in message


def test_malformed_json_names_file_and_line(tmp_path):
    message = error_of(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": '[\n{"instruction": "x",}\n]'}, ["a"])
    assert "a.json line 2" in message and "invalid JSON" in message
    message = error_of(tmp_path, {"b": {"file_name": "b.jsonl"}}, {"b.jsonl": '{"a": 1}\n{"a": \n'}, ["b"])
    assert "b.jsonl line 2" in message


def test_missing_column_names_expected_and_present(tmp_path):
    message = error_of(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": [{"question": "q", "answer": "a"}]},
                       ["a"])
    assert "no column 'instruction' (prompt)" in message and "its columns are question, answer" in message


def test_record_without_answer_names_the_record(tmp_path):
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": None}]
    message = error_of(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": rows}, ["a"])
    assert "record 1 (0-based)" in message and "'output'" in message


def test_unknown_sharegpt_role(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}]
    message = error_of(tmp_path, {"s": {"file_name": "s.json", "formatting": "sharegpt"}}, {"s.json": rows}, ["s"])
    assert "unknown role 'bot'" in message and "record 0" in message and "'gpt'" in message


def test_empty_dataset_and_bad_registry(tmp_path):
    assert "is empty" in error_of(tmp_path, {"a": {"file_name": "a.json"}}, {"a.json": ""}, ["a"])
    assert "unknown key 'file_nme'" in error_of(tmp_path, {"a": {"file_nme": "a.json"}}, {}, ["a"])
    (tmp_path / "dataset_info.json").write_text('{"a": {"file_name": "a.json",}}')
    with pytest.raises(DataError, match="line 1, column 30: invalid JSON"):
        load_records(["a"], tmp_path, "sft")
    with pytest.raises(DataError, match="dataset_dir .* does not exist"):
        load_records(["a"], tmp_path / "nowhere", "sft")


def test_hub_entries_fail_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = error_of(tmp_path, {"h": {"hf_hub_url": "org/data"}}, {}, ["h"])
    assert "needs a download from the hub (org/data) but tunesmith is offline" in message
