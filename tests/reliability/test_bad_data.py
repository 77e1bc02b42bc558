"""Bad data never passes silently nor crashes: empty texts, duplicate registry keys, symlink loops, huge records."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.data.loader import load_records
from tunesmith.errors import DataError

REPO = Path(__file__).resolve().parents[2]
HUGE_CHARS = 50_000_000  # the 50 MB record that made `data check` die (exit 134) and `train` use 7.5 GB


def write(tmp_path, rows, entry=None, file_name="data.jsonl"):
    folder = tmp_path / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": file_name, **(entry or {})}}))
    return folder


def load(tmp_path, rows, stage="sft", entry=None):
    folder = write(tmp_path, rows, entry)
    return load_records(["mine"], str(folder), stage, cache_dir=str(tmp_path / "cache")).to_list()


def refused(tmp_path, rows, stage="sft", entry=None) -> str:
    with pytest.raises(DataError) as err:
        load(tmp_path, rows, stage, entry)
    message = str(err.value)
    assert message.startswith(f"dataset 'mine' ({tmp_path / 'data' / 'data.jsonl'}) record ")
    return message


# --- null and empty texts -----------------------------------------------------------------------------------

GOOD = {"instruction": "q", "input": "", "output": "a"}


@pytest.mark.parametrize("bad, key, problem", [
    ({"instruction": None, "input": "", "output": "a"}, "'instruction' (the prompt column", "null or absent"),
    ({"input": "", "output": "a"}, "'instruction' (the prompt column", "null or absent"),
    ({"instruction": "", "input": "", "output": "a"}, "'instruction' (the prompt column)", "is empty"),
    ({"instruction": "  \n", "input": None, "output": "a"}, "'instruction' (the prompt column)", "is empty"),
    ({"instruction": "q", "input": "", "output": None}, "'output' (the response column", "null or absent"),
    ({"instruction": "q", "input": "", "output": " "}, "'output' (the response column)", "is empty"),
])
def test_alpaca_null_or_empty_instruction_or_output_names_file_record_id_and_key(tmp_path, bad, key, problem):
    message = refused(tmp_path, [GOOD, GOOD, {"id": "r-2", **bad}, GOOD])
    assert "record 2 (0-based, id 'r-2')" in message and key in message and problem in message
    assert "fill it in or delete the record" in message.lower()


def test_in_a_folder_of_files_the_error_names_the_file_and_its_record(tmp_path):
    folder = tmp_path / "data" / "parts"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text("".join(json.dumps(GOOD) + "\n" for _ in range(2)))
    (folder / "b.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "instruction": None}) + "\n")
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "parts"}}))
    with pytest.raises(DataError) as err:
        load_records(["mine"], str(tmp_path / "data"), "sft", cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert message.startswith(f"dataset 'mine' ({folder}) file b.jsonl record 1 (0-based; record 3 of the dataset)")
    assert "'instruction'" in message


def test_ranking_and_kto_refuse_a_missing_answer(tmp_path):
    entry = {"ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}}
    message = refused(tmp_path, [{"instruction": "q", "chosen": "", "rejected": "no"}], "dpo", entry)
    assert "record 0 (0-based)" in message and "'chosen' (the chosen column) is empty" in message
    message = refused(tmp_path, [{"instruction": "q", "chosen": "yes", "rejected": None}], "dpo", entry)
    assert "no value for 'rejected'" in message
    kto = {"columns": {"prompt": "instruction", "response": "output", "kto_tag": "tag"}}
    message = refused(tmp_path, [{"instruction": "q", "output": "a", "tag": True},
                                 {"instruction": "q", "output": None, "tag": False}], "kto", kto)
    assert "record 1 (0-based)" in message and "no value for 'output'" in message


def turns(*values):
    return [{"from": role, "value": value} for role, value in zip(("human", "gpt") * 4, values)]


@pytest.mark.parametrize("conversation, expected", [
    (turns("q", None), "message 1 has no 'value' (the content tag: null or absent)"),
    ([{"from": "human", "value": "q"}, {"from": "gpt"}], "message 1 has no 'value' (the content tag: null or absent)"),
    (turns("", "a"), "message 0 ('human') has an empty 'value'"),
    (turns("q", "a", "q2", " "), "message 3 ('gpt') has an empty 'value'"),
])
def test_sharegpt_null_empty_or_missing_content_names_the_record_and_turn(tmp_path, conversation, expected):
    rows = [{"conversations": turns("q", "a")}, {"id": 7, "conversations": conversation}]
    message = refused(tmp_path, rows, entry={"formatting": "sharegpt"})
    assert "record 1 (0-based, id 7)" in message and expected in message
    assert "fill it in or delete the record" in message.lower()


def test_sharegpt_ranking_refuses_an_empty_chosen_answer(tmp_path):
    entry = {"formatting": "sharegpt", "ranking": True,
             "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}
    rows = [{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": ""},
             "rejected": {"from": "gpt", "value": "no"}}]
    assert "'chosen' ('gpt') has an empty 'value'" in refused(tmp_path, rows, "dpo", entry)


# --- dataset_info.json ----------------------------------------------------------------------------------------

def test_duplicate_dataset_name_in_the_registry_is_an_error_naming_key_and_lines(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "dataset_info.json").write_text(
        '{\n  "mine": {"file_name": "a.jsonl"},\n  "other": {"file_name": "a.jsonl"},\n'
        '  "mine": {"file_name": "a.jsonl", "formatting": "sharegpt"}\n}\n')
    with pytest.raises(DataError) as err:
        load_records(["other"], str(tmp_path), "sft")
    message = str(err.value)
    assert str(tmp_path / "dataset_info.json") in message
    assert 'key "mine" appears twice' in message and "(lines 2, 4)" in message


def test_duplicate_key_inside_an_entry_is_an_error(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "dataset_info.json").write_text(
        '{"mine": {"file_name": "a.jsonl",\n "columns": {"prompt": "instruction",\n "prompt": "input"}}}')
    with pytest.raises(DataError, match='key "prompt" appears twice in the same object \\(lines 2, 3\\)'):
        load_records(["mine"], str(tmp_path), "sft")


# --- symlink loops ----------------------------------------------------------------------------------------------

def loop_error(tmp_path, file_name, dataset="mine") -> str:
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": file_name}}))
    with pytest.raises(DataError) as err:
        load_records([dataset], str(tmp_path), "sft")
    assert "not found" not in str(err.value)
    return str(err.value)


def test_a_data_file_that_is_a_symlink_loop_is_named_as_one(tmp_path):
    os.symlink("loop.jsonl", tmp_path / "loop.jsonl")
    message = loop_error(tmp_path, "loop.jsonl")
    assert f"{tmp_path / 'loop.jsonl'} is a symlink loop" in message and "dataset 'mine'" in message
    assert f"{tmp_path / 'loop.jsonl'} is a symlink loop" in loop_error(tmp_path, "x", str(tmp_path / "loop.jsonl"))


def test_a_folder_that_is_a_symlink_loop_is_named_as_one(tmp_path):
    os.symlink("data", tmp_path / "data")
    assert f"{tmp_path / 'data'} is a symlink loop" in loop_error(tmp_path, "data")
    message = loop_error(tmp_path, "data/train.jsonl")  # a loop above the file
    assert f"{tmp_path / 'data'} is a symlink loop (in {tmp_path / 'data' / 'train.jsonl'})" in message
    with pytest.raises(DataError, match=f"{tmp_path / 'data'} is a symlink loop"):
        load_records(["mine"], str(tmp_path / "data"), "sft")  # dataset_dir itself


def test_a_looping_link_inside_a_data_folder_is_not_silently_left_out(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    os.symlink("b.jsonl", folder / "b.jsonl")
    assert f"{folder / 'b.jsonl'} is a symlink loop" in loop_error(tmp_path, "data")


# --- records far beyond cutoff_len ------------------------------------------------------------------------------

def small_rows(count=6):
    return [{"id": i, "instruction": f"question {i}?", "input": "", "output": f"answer number {i}."}
            for i in range(count)]


def cli(tmp_path, model_dir, data_file: Path, *commands: list[str], stage="sft") -> subprocess.CompletedProcess:
    """Runs `tunesmith data COMMAND... CONFIG` for each command in one fresh process (its own peak RSS, printed last
    on stderr); exits with the first non-zero code."""
    cfg = {"model_name_or_path": str(model_dir), "stage": stage, "template": "qwen", "dataset": str(data_file),
           "dataset_dir": str(tmp_path), "cutoff_len": 128}
    cfg_path = tmp_path / f"cfg-{data_file.stem}.yaml"
    cfg_path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in cfg.items()))
    code = ("import json, resource, sys\nfrom tunesmith.cli import main\n"
            "codes = [main(['data', *args, sys.argv[1]]) for args in json.loads(sys.argv[2])]\n"
            "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(next((c for c in codes if c), 0))")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf-cache"), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", code, str(cfg_path), json.dumps(commands)], check=False,
                          capture_output=True, text=True, env=env, timeout=600)  # a safety net; it takes seconds


def peak_rss_mb(result) -> float:
    line = [line for line in result.stderr.splitlines() if line.startswith("peak-rss-kb")][-1]
    return int(line.split()[1]) / 1024


def write_jsonl(path: Path, rows) -> Path:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def test_a_50mb_record_is_counted_and_skipped_in_bounded_time_and_memory(tmp_path, tiny_model_dir):
    rows = small_rows()
    huge = {"id": "huge", "instruction": "Summarise.", "input": "", "output": "word " * (HUGE_CHARS // 5)}
    with_huge = write_jsonl(tmp_path / "with_huge.jsonl", [*rows[:3], huge, *rows[3:]])
    write_jsonl(tmp_path / "without.jsonl", rows)

    out = {name: tmp_path / f"{name}.jsonl" for name in ("with", "without")}
    result = cli(tmp_path, tiny_model_dir, with_huge, ["check"], ["export", "--out", str(out["with"])])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with_huge.jsonl: 7 records, all valid, 1 over-long (records 3)" in result.stdout
    assert "over-long: 1 of 7 records hold more than" in result.stdout and "skipped, not trained" in result.stdout
    assert "training mix: 7 records -> 6 examples (1 dropped)" in result.stdout
    assert peak_rss_mb(result) < 2048  # it died with a Rust allocation failure; about 0.9 GB now (loading 50 MB)

    # the small records encode exactly as they do without the huge one
    cfg = tmp_path / "without.yaml"
    cfg.write_text((tmp_path / "cfg-with_huge.yaml").read_text().replace("with_huge.jsonl", "without.jsonl"))
    assert main(["data", "export", str(cfg), "--out", str(out["without"])]) == 0
    assert out["with"].read_text() == out["without"].read_text() and out["with"].read_text().count("\n") == 6


def test_over_long_records_are_counted_in_the_training_data_and_log(tmp_path, tiny_model_dir, caplog):
    from tunesmith.config.load import load_config
    from tunesmith.data.encode import text_bound
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.load import load_tokenizer

    rows = small_rows()
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(f"model_name_or_path: {tiny_model_dir}\nstage: sft\ntemplate: qwen\ncutoff_len: 64\n"
                        f"dataset: {tmp_path / 'd.jsonl'}\ndataset_dir: {tmp_path}\n")
    config = load_config(str(cfg_path))
    tokenizer = load_tokenizer(config.model)
    bound = text_bound(tokenizer, 64)
    write_jsonl(tmp_path / "d.jsonl", rows)
    plain = build_datasets(config, tokenizer, encoding="supervised")
    # a record just over the bound is skipped; one just within it is encoded as LF would (truncated)
    text = ("lorem ipsum dolor " * (bound // 18 + 1))[: bound - 1]
    long_rows = [*rows, {"instruction": "q", "output": text}, {"instruction": "q", "output": text + "."}]
    write_jsonl(tmp_path / "d.jsonl", long_rows)
    with caplog.at_level("WARNING", logger="tunesmith.data.pipeline"):
        data = build_datasets(config, tokenizer, encoding="supervised")
    assert data.dropped == 1 and len(data.train) == 7
    assert data.train["input_ids"][:6] == plain.train["input_ids"] and data.train["labels"][:6] == plain.train["labels"]
    assert len(data.train["input_ids"][6]) == 64
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 of 8 over-long records (positions 7, 0-based)" in warning and f"more than {bound}" in warning


def test_pretraining_keeps_a_long_document_tokenized_in_pieces(tmp_path, tiny_model_dir):
    from datasets import Dataset

    from tunesmith.config.load import load_config
    from tunesmith.data.formats import record_features
    from tunesmith.data.pipeline import encode_records
    from tunesmith.model.load import load_tokenizer

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(f"model_name_or_path: {tiny_model_dir}\nstage: pt\ncutoff_len: 32\ndataset: x\n")
    config = load_config(str(cfg_path))
    tokenizer = load_tokenizer(config.model)
    bound = 20_000  # the mechanism at a small bound (text_bound is at least 1,000,000 characters)
    words = ["alpha", "beta,", "gamma.", "delta", "epsilon", "12", "zeta"]
    long_text = " ".join(words[i * 7 % 5 + i % 3] for i in range(bound // 3))  # about 2 x the bound
    assert len(long_text) > 1.5 * bound
    docs = ["a short document, within the bound. " * 10, long_text, "another short one."]
    records = Dataset.from_list([{"prompt": [{"role": "user", "content": d}], "response": [], "system": "",
                                  "tools": "", "kto_tag": None} for d in docs], features=record_features())
    encoded = encode_records(records, "pretrain", None, tokenizer, config.data, "encoding", bound=bound)
    stream = [t for doc in docs for t in tokenizer(doc + tokenizer.eos_token, add_special_tokens=False)["input_ids"]]
    assert len(stream) // 32 == len(encoded)  # nothing of the long document is lost
    assert [t for row in encoded["input_ids"] for t in row] == stream[: len(encoded) * 32]  # cut between words
    short = encode_records(records.select([0, 2]), "pretrain", None, tokenizer, config.data, "encoding", bound=bound)
    assert len(short) > 0 and short.features == encoded.features  # numpy blocks store as the usual int64 lists
    assert short["input_ids"] == encode_records(records.select([0, 2]), "pretrain", None, tokenizer, config.data,
                                                "encoding")["input_ids"]  # within the bound: as before


def test_pretraining_check_of_a_3mb_document_keeps_it_in_bounded_memory(tmp_path, tiny_model_dir):
    text = "The quick brown fox jumps over the lazy dog. " * 70_000  # 3 MB, three times the bound: all tokenized
    rows = [{"text": f"document {i}."} for i in range(3)] + [{"text": text}]
    result = cli(tmp_path, tiny_model_dir, write_jsonl(tmp_path / "pt.jsonl", rows), ["check"], stage="pt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "over-long: 1 of 4 records hold more than" in result.stdout and "all text kept" in result.stdout
    assert "packed blocks" in result.stdout
    assert peak_rss_mb(result) < 2048
