"""Reading local files of every type, folders and hub entries into `datasets.Dataset`, with precise errors."""

import json

import pytest

from tunesmith.data.files import check_json_file, load_files, load_rows, sample
from tunesmith.data.registry import DatasetSpec
from tunesmith.errors import DataError

ROWS = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]


def local(path, name="mine", registry=None):
    return DatasetSpec(name=name, load_from="file", location=str(path), registry=registry)


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def write_arrow(path, rows):
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


WRITERS = {
    "list.json": lambda p, rows: p.write_text(json.dumps(rows, indent=2)),
    "lines.json": lambda p, rows: p.write_text("\n".join(json.dumps(r) for r in rows) + "\n"),
    "d.jsonl": lambda p, rows: p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n"),
    "d.csv": lambda p, rows: p.write_text("instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n"
                                                                            for r in rows)),
    "d.parquet": write_parquet,
    "d.arrow": write_arrow,
}


@pytest.mark.parametrize("file_name", list(WRITERS))
def test_every_file_type(tmp_path, file_name):
    path = tmp_path / file_name
    WRITERS[file_name](path, ROWS)
    rows = load_rows(local(path), cache_dir=str(tmp_path / "cache"))
    assert rows.to_list() == ROWS


def test_text_file_is_one_record_per_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first line\nsecond line\n")
    rows = load_rows(local(path), cache_dir=str(tmp_path / "cache"))
    assert rows["text"] == ["first line", "second line"]
    assert any((tmp_path / "cache").iterdir())  # cache_dir reaches datasets


def test_a_folder_and_several_files(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(3):
        (folder / f"part-{i}.jsonl").write_text(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n")
    (folder / ".DS_Store").write_text("ignored")
    rows = load_rows(local(folder), cache_dir=str(tmp_path / "cache"))
    assert rows["instruction"] == ["q0", "q1", "q2"]
    rows = load_files([folder / "part-2.jsonl", folder / "part-0.jsonl"], "mine", cache_dir=str(tmp_path / "cache"))
    assert rows["instruction"] == ["q2", "q0"]


@pytest.mark.parametrize("files, expected", [
    (["a.json", "b.csv"], "mixes file types (csv, json)"),
    (["a.json", "notes.md"], "cannot read notes.md"),
    ([], "is empty"),
])
def test_folder_errors(tmp_path, files, expected):
    folder = tmp_path / "shards"
    folder.mkdir()
    for name in files:
        (folder / name).write_text('[{"instruction": "a", "output": "b"}]' if name.endswith(".json") else "x\n")
    with pytest.raises(DataError) as err:
        load_rows(local(folder))
    assert expected in str(err.value) and str(folder) in str(err.value) and "'mine'" in str(err.value)


def test_subfolders_are_refused(tmp_path):
    (tmp_path / "shards" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="holds subfolders \\(train\\)"):
        load_rows(local(tmp_path / "shards"))


def test_missing_file_names_path_dataset_and_registry(tmp_path):
    spec = local(tmp_path / "gone.json", registry=str(tmp_path / "dataset_info.json"))
    with pytest.raises(DataError) as err:
        load_rows(spec)
    message = str(err.value)
    assert "dataset 'mine'" in message and str(tmp_path / "gone.json") in message and "dataset_info.json" in message


@pytest.mark.parametrize("file_name, text, expected", [
    ("bad.json", '[\n  {"instruction": "a"},\n  {"instruction": "b",}\n]', "line 3, column 23"),
    ("bad.jsonl", '{"instruction": "a"}\n{"instruction": \n', "line 2, column 17"),
    ("bad.json", '{"instruction": "a"}\n{"instruction" "b"}\n', "line 2, column 16"),  # JSON lines in .json
    ("top.json", '{\n  "instruction": ["a", "b"]\n}', "holds one JSON dict"),
    ("top.json", '"just text"', "holds one JSON str"),
    ("rec.json", '[{"instruction": "a"}, ["not", "an", "object"]]', "record 1 (0-based) is a list"),
    ("rec.jsonl", '{"instruction": "a"}\n\n[1]\n', "line 3 (record 1, 0-based) is a list"),
    ("empty.json", "", "is empty"),
    ("blank.jsonl", "\n \n", "is empty"),
    ("none.json", "[]", "holds no records"),
    ("empty.csv", "", "is empty"),
    ("header.csv", "instruction,output\n", "holds no records"),
])
def test_file_errors(tmp_path, file_name, text, expected):
    path = tmp_path / file_name
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_rows(local(path), cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert expected in message and str(path) in message and "dataset 'mine'" in message


def test_json_lines_in_a_json_file_load_like_llamafactory(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    assert check_json_file(path, "mine") == 2
    path.write_text('{"instruction": "only", "output": "one"}')
    assert load_rows(local(path), cache_dir=str(tmp_path / "cache")).to_list() == [
        {"instruction": "only", "output": "one"}]


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes('[{"instruction": "caf\u00e9"}]'.encode("latin-1"))
    with pytest.raises(DataError, match="is not UTF-8 text"):
        load_rows(local(path))


def test_datasets_errors_are_wrapped_with_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError) as err:
        load_rows(local(path), cache_dir=str(tmp_path / "cache"))
    assert str(path) in str(err.value) and "as parquet" in str(err.value)


def test_hub_entries_fail_fast_when_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = DatasetSpec(name="alpaca_en", load_from="hf_hub", location="llamafactory/alpaca_en",
                       registry="/data/dataset_info.json")
    with pytest.raises(DataError) as err:
        load_rows(spec)
    assert str(err.value).startswith("dataset 'alpaca_en' needs a download from the hub (llamafactory/alpaca_en) "
                                     "but tunesmith is offline")
    assert "download it and register a local file_name instead" in str(err.value)


def test_connection_errors_read_as_offline(monkeypatch):
    import datasets

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'llamafactory/alpaca_en' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match="needs a download from the hub .* but tunesmith is offline"):
        load_rows(DatasetSpec(name="alpaca_en", load_from="hf_hub", location="llamafactory/alpaca_en"))
    with pytest.raises(DataError, match="ModelScope .* which tunesmith does not download from"):
        load_rows(DatasetSpec(name="ms", load_from="ms_hub", location="org/ms"))


def test_script_folder_of_data_files(tmp_path):
    folder = tmp_path / "scripted"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    rows = load_rows(DatasetSpec(name="s", load_from="script", location=str(folder)), str(tmp_path / "cache"))
    assert rows.to_list() == ROWS[:1]
    (folder / "loader.py").write_text("")
    with pytest.raises(DataError, match="loading scripts are not supported"):
        load_rows(DatasetSpec(name="s", load_from="script", location=str(folder)))


def test_num_samples_and_max_samples():
    from datasets import Dataset

    rows = Dataset.from_dict({"i": list(range(10))})
    spec = DatasetSpec(name="n", load_from="file", location="x")
    same, ids = sample(rows, spec)
    assert same is rows and ids is None
    head, ids = sample(rows, spec, max_samples=3)
    assert head["i"] == [0, 1, 2] and ids is None
    subset, ids = sample(rows, DatasetSpec(name="n", load_from="file", location="x", num_samples=4), seed=1)
    assert len(subset) == 4 and len(set(subset["i"])) == 4 and subset["i"] == ids
    again, _ = sample(rows, DatasetSpec(name="n", load_from="file", location="x", num_samples=4), seed=1)
    assert again["i"] == subset["i"]  # seeded
    over, ids = sample(rows, DatasetSpec(name="n", load_from="file", location="x", num_samples=25), seed=1)
    assert len(over) == 25 and set(over["i"]) == set(range(10))  # every row, then oversampled
    capped, ids = sample(rows, DatasetSpec(name="n", load_from="file", location="x", num_samples=25), 5, seed=1)
    assert capped["i"] == over["i"][:5] == ids
