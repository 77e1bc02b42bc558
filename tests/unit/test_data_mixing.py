"""load_records over several datasets: mix strategies and probabilities, max_samples/num_samples, and what each
stage requires of a dataset (one record source per test; formats are test_data_formats.py's)."""

import json

import pytest

from tunesmith.data.loader import load_records
from tunesmith.errors import DataError

RECORD_COLUMNS = ["prompt", "response", "system", "tools", "kto_tag"]


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps([{"instruction": f"a{i}", "output": "x"} for i in range(6)]))
    (folder / "b.jsonl").write_text("".join(
        json.dumps({"conversations": [{"from": "human", "value": f"b{i}"}, {"from": "gpt", "value": "y"}]}) + "\n"
        for i in range(3)))
    (folder / "prefs.json").write_text(json.dumps([{"instruction": "p", "chosen": "c", "rejected": "r"}]))
    (folder / "kto.json").write_text(json.dumps([{"instruction": "k", "output": "o", "label": True}]))
    (folder / "dataset_info.json").write_text(json.dumps({
        "a": {"file_name": "a.json"},
        "b": {"file_name": "b.jsonl", "formatting": "sharegpt"},
        "a3": {"file_name": "a.json", "num_samples": 3},
        "a9": {"file_name": "a.json", "num_samples": 9},
        "prefs": {"file_name": "prefs.json", "ranking": True,
                  "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
        "kto": {"file_name": "kto.json", "columns": {"prompt": "instruction", "response": "output",
                                                     "kto_tag": "label"}},
    }))
    return str(folder)


def load(data_dir, names, stage="sft", **kwargs):
    kwargs.setdefault("cache_dir", str(data_dir) + "/../cache")
    return load_records(names, data_dir, stage, **kwargs)


def firsts(records):
    return [r["prompt"][0]["content"] for r in records]


def test_concat_keeps_order_and_canonical_columns(data_dir):
    records = load(data_dir, ["a", "b"])
    assert records.column_names == RECORD_COLUMNS
    assert firsts(records) == [f"a{i}" for i in range(6)] + ["b0", "b1", "b2"]


def test_interleave_under_stops_at_the_first_exhausted(data_dir):
    records = load(data_dir, ["a", "b"], mix_strategy="interleave_under")
    assert firsts(records) == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_interleave_over_runs_until_all_are_exhausted(data_dir):
    records = load(data_dir, ["a", "b"], mix_strategy="interleave_over")
    assert len(records) == 12 and set(firsts(records)) == {f"a{i}" for i in range(6)} | {"b0", "b1", "b2"}


def test_interleave_probs_are_seeded(data_dir):
    one = load(data_dir, ["a", "b"], mix_strategy="interleave_under", interleave_probs=[0.5, 0.5], seed=3)
    two = load(data_dir, ["a", "b"], mix_strategy="interleave_under", interleave_probs=[0.5, 0.5], seed=3)
    assert firsts(one) == firsts(two)
    a, b = {f"a{i}" for i in range(6)}, {"b0", "b1", "b2"}
    assert set(firsts(one)) >= a or set(firsts(one)) >= b  # stopped when the first dataset ran out
    over = load(data_dir, ["a", "b"], mix_strategy="interleave_over", interleave_probs=[0.5, 0.5], seed=3)
    assert len(over) >= 9 and set(firsts(over)) == a | b  # ran until both were exhausted: every record is in


@pytest.mark.parametrize("strategy, probs, expected", [
    ("interleave_under", [1.0], "has 1 values for 2 datasets"),
    ("interleave_under", [0.5, 0.6], "must be non-negative and sum to 1 (they sum to 1.1)"),
    ("interleave_under", [1.5, -0.5], "must be non-negative"),
    ("interleave_over", [1.0, 0.0], "no interleave_probs value may be 0"),
    ("concat", [0.5, 0.5], "only applies to mix_strategy interleave_under or interleave_over"),
    ("shuffle", None, "mix_strategy 'shuffle' is unknown; allowed: concat, interleave_under, interleave_over"),
])
def test_mix_errors(data_dir, strategy, probs, expected):
    with pytest.raises(DataError) as err:
        load(data_dir, ["a", "b"], mix_strategy=strategy, interleave_probs=probs)
    assert expected in str(err.value)


def test_max_samples_applies_per_dataset(data_dir):
    assert firsts(load(data_dir, ["a", "b"], max_samples=2)) == ["a0", "a1", "b0", "b1"]


def test_num_samples_subsamples_and_oversamples(data_dir):
    three = firsts(load(data_dir, ["a3"]))
    assert len(three) == 3 and len(set(three)) == 3
    nine = firsts(load(data_dir, ["a9"]))
    assert len(nine) == 9 and set(nine) == {f"a{i}" for i in range(6)}
    assert len(load(data_dir, ["a9"], max_samples=4)) == 4


def test_each_stage_gets_what_it_needs(data_dir):
    assert load(data_dir, ["prefs"], "rm")[0]["response"] == [{"role": "assistant", "content": "c"},
                                                               {"role": "assistant", "content": "r"}]
    assert load(data_dir, ["kto"], "kto")[0]["kto_tag"] is True
    assert load(data_dir, ["a"], "ppo")[0]["response"] == [{"role": "assistant", "content": "x"}]
    assert load(data_dir, ["a"], "pt")[0]["response"] == []


@pytest.mark.parametrize("names, stage, expected", [
    (["a"], "dpo", ("dataset 'a' ({dir}/a.json) has no chosen/rejected columns; stage dpo needs a ranking dataset "
                   "(set \"ranking\": true and map \"chosen\" and \"rejected\" under \"columns\" in "
                   "{dir}/dataset_info.json)")),
    (["b"], "rm", "stage rm needs a ranking dataset"),
    (["prefs"], "sft", "is a ranking dataset (chosen/rejected answers), which stage sft cannot use"),
    (["a"], "kto", "dataset 'a' ({dir}/a.json) has no kto_tag column; stage kto needs one"),
    (["kto"], "sft", "is KTO feedback data (it maps a kto_tag column)"),
    (["a"], "orpo", "unknown stage 'orpo' for data loading; allowed: pt, sft, rm, dpo, kto, ppo"),
])
def test_stage_errors(data_dir, names, stage, expected):
    with pytest.raises(DataError) as err:
        load(data_dir, names, stage)
    assert expected.format(dir=data_dir) in str(err.value)


def test_stage_is_checked_before_any_file_is_read(data_dir, tmp_path):
    (tmp_path / "data" / "a.json").unlink()
    with pytest.raises(DataError, match="stage dpo needs a ranking dataset"):
        load(data_dir, ["prefs", "a"], "dpo")


def test_no_names(data_dir):
    with pytest.raises(DataError, match="no dataset given"):
        load(data_dir, [])
