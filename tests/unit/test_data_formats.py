"""Alpaca, ShareGPT, OpenAI-messages and text rows -> canonical records per stage, and every record-level error."""

import json
import logging

import pytest

from tunesmith.data.loader import load_records
from tunesmith.errors import DataError


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write(tmp_path, rows, entry=None, file_name="data.json"):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    path = folder / file_name
    if file_name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif file_name.endswith(".json"):
        path.write_text(json.dumps(rows))
    else:
        path.write_text(rows)
    (folder / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": file_name, **(entry or {})}}))
    return folder


def load(tmp_path, rows, stage="sft", entry=None, file_name="data.json", **kwargs):
    folder = write(tmp_path, rows, entry, file_name)
    return load_records(["mine"], str(folder), stage, cache_dir=str(tmp_path / "cache"), **kwargs).to_list()


def record(prompt, response, system="", tools="", kto_tag=None):
    return {"prompt": prompt, "response": response, "system": system, "tools": tools, "kto_tag": kto_tag}


# --- alpaca ---------------------------------------------------------------------------------------------------

def test_alpaca_with_input_history_system_and_tools(tmp_path):
    rows = [{"instruction": "Translate", "input": "bonjour", "output": "hello", "sys": "Be brief.",
             "hist": [["hi", "hello!"], ["how are you?", "fine"]], "tools": [{"name": "f"}]},
            {"instruction": "Say hi", "input": "", "output": "hi", "sys": None, "hist": None, "tools": None},
            {"instruction": "", "input": "only input", "output": "ok", "sys": None, "hist": [], "tools": None}]
    entry = {"columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "sys",
                         "history": "hist", "tools": "tools"}}
    assert load(tmp_path, rows, entry=entry) == [
        record([user("hi"), assistant("hello!"), user("how are you?"), assistant("fine"), user("Translate\nbonjour")],
               [assistant("hello")], system="Be brief.", tools='[{"name": "f"}]'),
        record([user("Say hi")], [assistant("hi")]),
        record([user("only input")], [assistant("ok")]),
    ]


def test_alpaca_defaults_without_input_column(tmp_path):
    assert load(tmp_path, [{"instruction": "q", "output": "a"}]) == [record([user("q")], [assistant("a")])]


def test_alpaca_csv_numbers_become_text(tmp_path):
    rows = load(tmp_path, "instruction,output\n2+2?,4\n3+3?,6\n", file_name="math.csv")
    assert rows[0] == record([user("2+2?")], [assistant("4")])


@pytest.mark.parametrize("stage", ["rm", "dpo"])
def test_alpaca_ranking(tmp_path, stage):
    rows = [{"instruction": "q", "input": "x", "good": "yes", "bad": "no"}]
    entry = {"ranking": True, "columns": {"prompt": "instruction", "query": "input", "chosen": "good",
                                          "rejected": "bad"}}
    assert load(tmp_path, rows, stage, entry) == [record([user("q\nx")], [assistant("yes"), assistant("no")])]


def test_alpaca_kto(tmp_path):
    rows = [{"instruction": "q", "output": "a", "label": True}, {"instruction": "q2", "output": "b", "label": False}]
    entry = {"columns": {"prompt": "instruction", "response": "output", "kto_tag": "label"}}
    assert load(tmp_path, rows, "kto", entry) == [record([user("q")], [assistant("a")], kto_tag=True),
                                                  record([user("q2")], [assistant("b")], kto_tag=False)]


def test_text_for_pretraining(tmp_path):
    entry = {"columns": {"prompt": "text"}}
    assert load(tmp_path, "first doc\nsecond doc\n", "pt", entry, file_name="wiki.txt") == [
        record([user("first doc")], []), record([user("second doc")], [])]
    # alpaca rows in pt: the user text (instruction + input), like LLaMA-Factory
    assert load(tmp_path, [{"instruction": "i", "input": "x", "output": "o"}], "pt") == [record([user("i\nx")], [])]


def test_ppo_answer_is_optional(tmp_path):
    rows = [{"instruction": "q", "output": None}, {"instruction": "q2", "output": "a"}]
    assert load(tmp_path, rows, "ppo") == [record([user("q")], []), record([user("q2")], [assistant("a")])]


def test_what_llamafactory_allows_empty_stays_allowed(tmp_path):
    # an empty input (most of LF's alpaca demo), an empty instruction with an input (LF prompts with the input)
    rows = [{"instruction": "q", "input": "", "output": "a"}, {"instruction": "", "input": "only input", "output": "a"}]
    assert [r["prompt"][0]["content"] for r in load(tmp_path, rows)] == ["q", "only input"]
    # ranking data does not read `output`; ppo's answer is optional; a blank pre-training text is kept (eos only)
    for sub in ("rm", "ppo", "pt"):
        (tmp_path / sub).mkdir()
    ranking = [{"instruction": "q", "output": None, "chosen": "yes", "rejected": "no"}]
    entry = {"ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}
    assert load(tmp_path / "rm", ranking, "dpo", entry)[0]["response"][0]["content"] == "yes"
    assert load(tmp_path / "ppo", [{"instruction": "q", "output": None}], "ppo")[0]["response"] == []
    text = load(tmp_path / "pt", [{"text": "doc"}, {"text": ""}], "pt", {"columns": {"prompt": "text"}})
    assert [r["prompt"][0]["content"] for r in text] == ["doc", ""]


# --- sharegpt / openai ----------------------------------------------------------------------------------------

def test_sharegpt_system_turn_tools_and_function_calls(tmp_path):
    call = '{"name": "add", "arguments": {"a": 1}}'
    rows = [{"conversations": [
        {"from": "system", "value": "You add."}, {"from": "human", "value": "1+1?"},
        {"from": "function_call", "value": call}, {"from": "observation", "value": "2"},
        {"from": "gpt", "value": "It is 2."}], "tools": '[{"name": "add"}]'}]
    entry = {"formatting": "sharegpt", "columns": {"messages": "conversations", "tools": "tools"}}
    assert load(tmp_path, rows, entry=entry) == [record(
        [user("1+1?"), {"role": "function", "content": call}, {"role": "observation", "content": "2"}],
        [assistant("It is 2.")], system="You add.", tools='[{"name": "add"}]')]


def test_sharegpt_custom_tags_and_system_column(tmp_path):
    rows = [{"chat": [{"speaker": "me", "text": "hi"}, {"speaker": "bot", "text": "hello"},
                      {"speaker": "me", "text": "weather?"}, {"speaker": "call", "text": "{}"},
                      {"speaker": "result", "text": "sunny"}, {"speaker": "bot", "text": "Sunny."}],
             "prompt_sys": "Be nice."}]
    entry = {"formatting": "sharegpt", "columns": {"messages": "chat", "system": "prompt_sys"},
             "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "me", "assistant_tag": "bot",
                      "function_tag": "call", "observation_tag": "result"}}
    assert load(tmp_path, rows, entry=entry) == [record(
        [user("hi"), assistant("hello"), user("weather?"), {"role": "function", "content": "{}"},
         {"role": "observation", "content": "sunny"}], [assistant("Sunny.")], system="Be nice.")]


def test_sharegpt_ranking(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"}],
             "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}]
    entry = {"formatting": "sharegpt", "ranking": True,
             "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}
    assert load(tmp_path, rows, "dpo", entry) == [record([user("q")], [assistant("good"), assistant("bad")],
                                                         system="S")]


def test_sharegpt_kto_with_openai_tags(tmp_path):
    rows = [{"messages": [user("q"), assistant("a")], "label": False}]
    entry = {"formatting": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    assert load(tmp_path, rows, "kto", entry) == [record([user("q")], [assistant("a")], kto_tag=False)]


def test_openai_messages_tool_calls_and_merged_tool_results(tmp_path):
    calls = [{"id": "1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
             {"id": "2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]
    rows = [{"messages": [
        {"role": "system", "content": "S"}, user("do a and b"),
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "content": "A"}, {"role": "tool", "content": "B"},
        {"role": "assistant", "content": [{"type": "text", "text": "done"}]}], "tools": [{"name": "a"}]}]
    entry = {"formatting": "openai", "columns": {"messages": "messages", "tools": "tools"}}
    assert load(tmp_path, rows, entry=entry) == [record(
        [user("do a and b"),
         {"role": "function", "content": json.dumps([c["function"] for c in calls])},
         {"role": "observation", "content": "A\n</tool_response>\n<tool_response>\nB"}],
        [assistant("done")], system="S", tools='[{"name": "a"}]')]


# --- datasets given as paths ----------------------------------------------------------------------------------

def test_paths_detect_their_format(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "alpaca.json").write_text(json.dumps([{"instruction": "q", "input": "", "output": "a", "system": "S"}]))
    (folder / "share.jsonl").write_text(json.dumps({"conversations": [{"from": "human", "value": "q"},
                                                                      {"from": "gpt", "value": "a"}]}) + "\n")
    (folder / "oai.jsonl").write_text(json.dumps({"messages": [user("q"), assistant("a")]}) + "\n")
    (folder / "notes.txt").write_text("plain text\n")
    (folder / "prefs.json").write_text(json.dumps([{"instruction": "q", "chosen": "y", "rejected": "n"}]))
    cache = str(tmp_path / "cache")
    sft = load_records(["alpaca.json", "share.jsonl", str(folder / "oai.jsonl")], str(folder), "sft", cache_dir=cache)
    assert sft.to_list() == [record([user("q")], [assistant("a")], system="S"), record([user("q")], [assistant("a")]),
                             record([user("q")], [assistant("a")])]
    assert load_records(["notes.txt"], str(folder), "pt", cache_dir=cache).to_list() == [record([user("plain text")],
                                                                                               [])]
    assert load_records(["prefs.json"], str(folder), "dpo", cache_dir=cache).to_list() == [
        record([user("q")], [assistant("y"), assistant("n")])]
    with pytest.raises(DataError, match="column mapped as response for stage sft \\(plain text trains with stage pt"):
        load_records(["notes.txt"], str(folder), "sft", cache_dir=cache)


def test_path_with_unknown_columns(tmp_path):
    (tmp_path / "odd.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(DataError) as err:
        load_records([str(tmp_path / "odd.jsonl")], str(tmp_path), "sft", cache_dir=str(tmp_path / "cache"))
    assert "cannot tell its format from its columns (question, answer)" in str(err.value)
    assert "dataset_info.json" in str(err.value)


# --- errors ---------------------------------------------------------------------------------------------------

def test_missing_column_names_file_expected_and_present(tmp_path):
    with pytest.raises(DataError) as err:
        load(tmp_path, [{"instruction": "q", "answer": "a"}])
    message = str(err.value)
    assert "dataset 'mine'" in message and str(tmp_path / "data" / "data.json") in message
    assert "column 'output' (response)" in message and "its columns are instruction, answer" in message
    assert str(tmp_path / "data" / "dataset_info.json") in message and "\"columns\"" in message


def test_explicitly_mapped_column_must_exist(tmp_path):
    entry = {"columns": {"prompt": "instruction", "response": "output", "system": "sytem_prompt"}}
    with pytest.raises(DataError, match="column 'sytem_prompt' \\(system\\)"):
        load(tmp_path, [{"instruction": "q", "output": "a", "system_prompt": "s"}], entry=entry)


def test_sharegpt_empty_system_turn_and_tool_result_are_allowed(tmp_path):
    conversation = [{"from": "system", "value": ""}, {"from": "human", "value": "q"},
                    {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
                    {"from": "observation", "value": ""}, {"from": "gpt", "value": "done"}]
    (row,) = load(tmp_path, [{"conversations": conversation}], entry={"formatting": "sharegpt"})
    assert row["prompt"][-1] == {"role": "observation", "content": ""} and row["system"] == ""


def test_record_missing_a_value(tmp_path):
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q2"}]
    with pytest.raises(DataError) as err:
        load(tmp_path, rows)
    message = str(err.value)
    assert "record 1 (0-based)" in message and "no value for 'output'" in message
    assert "expected columns: 'instruction', 'output'" in message and "present in this record: 'instruction'" in message


@pytest.mark.parametrize("rows, entry, stage, expected", [
    ([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
      {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}],
     {"formatting": "sharegpt"}, "sft",
     ["record 1 (0-based)", "message 1 has unknown role 'bot' in 'from'",
      ("allowed: 'human' (user), 'gpt' (assistant), 'observation' (observation), 'function_call' (function), "
      "'system' (system)"), "\"tags\""]),
    ([{"conversations": [user("q"), assistant("a")]}], {"formatting": "sharegpt"}, "sft",
     ["record 0 (0-based)", "message 0 has no 'from' (the role tag); its keys: role, content", "\"tags\""]),
    ([{"messages": [{"role": "user", "content": ["q"]}, assistant("a")]}], {"formatting": "openai",
                                                                           "columns": {"messages": "messages"}},
     "sft", ["message 0: 'content' must be text, got list"]),
    ([{"conversations": "not a list"}], {"formatting": "sharegpt"}, "sft",
     ["'conversations' (the messages column) must be a list of messages"]),
    ([{"instruction": "q", "output": "a", "label": "yes"}],
     {"columns": {"prompt": "instruction", "response": "output", "kto_tag": "label"}}, "kto",
     ["record 0 (0-based)", "'label' (the kto_tag column) must be true or false, got 'yes'"]),
    ([{"instruction": "q", "output": "a", "history": [["only one"]]}],
     {"columns": {"prompt": "instruction", "response": "output", "history": "history"}}, "sft",
     ["'history' item 0 must be a [query, answer] pair"]),
    ([{"instruction": "q", "output": ["a"]}], None, "sft", ["'output' (the response column) must be text, got list"]),
    ([{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "human", "value": "y"},
       "rejected": {"from": "gpt", "value": "n"}}],
     {"formatting": "sharegpt", "ranking": True, "columns": {"messages": "conversations", "chosen": "chosen",
                                                             "rejected": "rejected"}}, "dpo",
     ["'chosen' must be an assistant or function-call message, got role user"]),
    ([{"conversations": [{"from": "human", "value": "q"}], "chosen": "y", "rejected": "n"}],
     {"formatting": "sharegpt", "ranking": True, "columns": {"messages": "conversations", "chosen": "chosen",
                                                             "rejected": "rejected"}}, "dpo",
     ["'chosen' is a str, not an object with 'from' and 'value'"]),
])
def test_record_errors(tmp_path, rows, entry, stage, expected):
    with pytest.raises(DataError) as err:
        load(tmp_path, rows, stage, entry)
    message = str(err.value)
    assert message.startswith(f"dataset 'mine' ({tmp_path / 'data' / 'data.json'})")
    for part in expected:
        assert part in message


def test_a_mapped_videos_column_must_exist(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mllm.json").write_text(json.dumps([{"messages": [{"from": "human", "value": "hi"},
                                                                {"from": "gpt", "value": "hello"}]}]))
    (folder / "dataset_info.json").write_text(json.dumps({"mllm": {
        "file_name": "mllm.json", "formatting": "sharegpt", "columns": {"messages": "messages", "videos": "videos"}}}))
    with pytest.raises(DataError, match="has no column 'videos' .videos. for stage sft"):
        load_records(["mllm"], str(folder), "sft")


# --- records LLaMA-Factory skips ------------------------------------------------------------------------------

def test_out_of_order_and_empty_conversations_are_skipped_with_a_warning(tmp_path, caplog):
    good = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    rows = [{"conversations": good},
            {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
            {"conversations": []},
            {"conversations": [{"from": "human", "value": "q"}]},
            {"conversations": good}]
    with caplog.at_level(logging.WARNING, logger="tunesmith.data.formats"):
        records = load(tmp_path, rows, entry={"formatting": "sharegpt"})
    assert len(records) == 2
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "tunesmith.data.formats"]
    assert "skipped 3 of 5 records" in warning and "dataset 'mine'" in warning
    assert "1 turns out of order (records 1)" in warning and "1 empty conversation (records 2)" in warning
    assert "1 ends on the wrong turn (records 3)" in warning


def test_all_records_skipped_is_an_error(tmp_path):
    rows = [{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}] * 7
    with pytest.raises(DataError) as err:
        load(tmp_path, rows, entry={"formatting": "sharegpt"})
    assert "none of its 7 records can be used for stage sft" in str(err.value)
    assert "turns out of order (records 0, 1, 2, 3, 4, ...)" in str(err.value)


def test_sampled_records_keep_their_file_index_in_messages(tmp_path):
    rows = [{"instruction": f"q{i}", "output": "a"} for i in range(6)]
    rows[4]["output"] = None
    with pytest.raises(DataError, match="record 4 \\(0-based\\)"):
        load(tmp_path, rows, entry={"num_samples": 6})


def test_tags_block_must_name_role_and_content_tags(tmp_path):
    entry = {"formatting": "sharegpt", "tags": {"user_tag": "u", "assistant_tag": "a"}}
    with pytest.raises(DataError, match="must name \"role_tag\" and \"content_tag\""):
        load(tmp_path, [{"conversations": []}], entry=entry)


def test_worker_processes_convert_and_report_errors(tmp_path):
    from datasets import Dataset

    from tunesmith.data.formats import NUM_PROC_MIN_ROWS, convert
    from tunesmith.data.registry import DatasetSpec

    rows = [{"instruction": f"q{i}", "output": "a"} for i in range(NUM_PROC_MIN_ROWS)]
    spec = DatasetSpec(name="big", load_from="file", location="mem")
    assert len(convert(Dataset.from_list(rows), spec, "sft", num_proc=2)) == NUM_PROC_MIN_ROWS
    rows[-1]["output"] = None
    with pytest.raises(DataError, match=f"record {NUM_PROC_MIN_ROWS - 1} \\(0-based\\)"):
        convert(Dataset.from_list(rows), spec, "sft", num_proc=2)
