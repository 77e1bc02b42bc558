"""`tunesmith data check|preview|export` and the encoded-data cache, through the CLI on real files."""

import json
from pathlib import Path

import pytest

from tunesmith.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO / "src" / "tunesmith" / "demo_data"
LF_DATA = REPO.parent / "shared" / "lf-demo-data"


def config(tmp_path, model_dir, **keys):
    values = {"model_name_or_path": str(model_dir), "stage": "sft", "template": "qwen",
              "dataset": "tunesmith_identity,tunesmith_skills", "dataset_dir": str(DEMO_DATA), "cutoff_len": 128,
              **keys}
    path = tmp_path / "cfg.yaml"
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items()))
    return str(path)


def test_check_reports_counts_lengths_and_truncation(tmp_path, tiny_model_dir, capsys):
    assert main(["data", "check", config(tmp_path, tiny_model_dir, cutoff_len=40)]) == 0
    out = capsys.readouterr().out
    assert "tunesmith_identity: 11 records, all valid" in out and "tunesmith_skills: 9 records, all valid" in out
    assert "training mix: 20 records -> 20 examples (0 dropped)" in out
    assert "token lengths: p50" in out and "truncated by cutoff_len=40:" in out


def test_preview_marks_the_trained_tokens(tmp_path, tiny_model_dir, capsys):
    assert main(["data", "preview", config(tmp_path, tiny_model_dir), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- example") == 1
    assert "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n⟦I am Tuney" in out
    assert "tunesmith.<|im_end|>\n⟧" in out


def test_export_writes_every_example_in_order(tmp_path, tiny_model_dir):
    out = tmp_path / "encoded.jsonl"
    assert main(["data", "export", config(tmp_path, tiny_model_dir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and set(rows[0]) == {"input_ids", "labels"}
    assert all(len(row["input_ids"]) == len(row["labels"]) for row in rows)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert "Who are you?" in tokenizer.decode(rows[0]["input_ids"])
    assert "Count from one to five." in tokenizer.decode(rows[11]["input_ids"])  # second dataset follows the first


def test_export_is_the_same_between_runs_with_workers(tmp_path, tiny_model_dir):
    first, second = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    cfg = config(tmp_path, tiny_model_dir, preprocessing_num_workers=2)
    assert main(["data", "export", cfg, "--out", str(first)]) == 0
    assert main(["data", "export", cfg, "--out", str(second)]) == 0
    assert first.read_text() == second.read_text()


def test_tokenized_path_is_saved_reused_and_invalidated(tmp_path, tiny_model_dir):
    from tunesmith.config.load import load_config
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.load import load_tokenizer

    cache = tmp_path / "tok"
    cfg = load_config(config(tmp_path, tiny_model_dir, tokenized_path=str(cache)))
    first = build_datasets(cfg, load_tokenizer(cfg.model), encoding="supervised")
    assert (cache / "tunesmith_cache.json").is_file()
    tokenizer = load_tokenizer(cfg.model)
    again = build_datasets(cfg, tokenizer, encoding="supervised")
    assert again.train["input_ids"] == first.train["input_ids"]
    assert tokenizer.pad_token is not None  # the template still set up the tokenizer the collator pads with
    changed = load_config(config(tmp_path, tiny_model_dir, tokenized_path=str(cache), cutoff_len=16))
    shorter = build_datasets(changed, load_tokenizer(changed.model), encoding="supervised")
    assert max(len(ids) for ids in shorter.train["input_ids"]) <= 16  # stale cache detected, data re-encoded


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({"template": "qwenn"}, "unknown template 'qwenn'. Did you mean qwen"),
        ({"cutoff_len": 1, "template": "chatml"}, "every training example was dropped"),
        ({"model_name_or_path": "/nowhere/model"}, "model folder not found: /nowhere/model"),
        ({"dataset": "missing_name"}, "dataset 'missing_name' is not registered"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(tmp_path, tiny_model_dir, capsys, keys, expected):
    code = main(["train", config(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "out"), **keys)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing is written before data and model are known good


def test_no_template_and_no_chat_template(tmp_path, tiny_model_dir, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config_file = bare / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config.pop("chat_template", None)
    config_file.write_text(json.dumps(tokenizer_config))
    cfg = config(tmp_path, bare)
    text = Path(cfg).read_text().replace('template: "qwen"\n', "")
    Path(cfg).write_text(text)
    assert main(["data", "check", cfg]) == 2
    assert "`template` is not set and the tokenizer has no chat_template" in capsys.readouterr().err


def test_tokenizer_chat_template_masks_match_the_builtin_template(tmp_path, tiny_model_dir):
    from tunesmith.config.load import load_config
    from tunesmith.data.pipeline import build_datasets
    from tunesmith.model.load import load_tokenizer

    builtin = load_config(config(tmp_path, tiny_model_dir, template="chatml"))
    own = load_config(config(tmp_path, tiny_model_dir, template=None))
    a = build_datasets(builtin, load_tokenizer(builtin.model), encoding="supervised").train
    b = build_datasets(own, load_tokenizer(own.model), encoding="supervised").train
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]


def lf_entries():
    if not (LF_DATA / "dataset_info.json").is_file():
        return []
    info = json.loads((LF_DATA / "dataset_info.json").read_text())
    return [name for name, entry in info.items() if "file_name" in entry and (LF_DATA / entry["file_name"]).exists()]




def lf_stage(entry: dict, name: str) -> str:
    if entry.get("ranking"):
        return "dpo"
    if "kto_tag" in entry.get("columns", {}):
        return "kto"
    return "pt" if name in ("c4_demo", "wiki_demo") else "sft"


@pytest.mark.skipif(not lf_entries(), reason="../shared/lf-demo-data is absent")
@pytest.mark.parametrize("name", lf_entries() or ["none"])
def test_llamafactory_demo_data_checks_and_previews(tmp_path, tiny_model_dir, capsys, name):
    entry = json.loads((LF_DATA / "dataset_info.json").read_text())[name]
    cfg = config(tmp_path, tiny_model_dir, dataset=name, dataset_dir=str(LF_DATA), stage=lf_stage(entry, name),
                 max_samples=50)
    columns = entry.get("columns", {}).keys()
    if "videos" in columns:  # LF's video demos need a Qwen-VL model; this one is text-only
        assert main(["data", "check", cfg]) == 2
        assert "videos train on Qwen2-VL, Qwen2.5-VL and Qwen3-VL models" in capsys.readouterr().err
        return
    if "audios" in columns:  # audios need an audio-language model; this one is text-only
        assert main(["data", "check", cfg]) == 2
        assert "the model has no audio feature extractor" in capsys.readouterr().err
        return
    if "images" in columns:  # images need a vision-language model; this one is text-only
        assert main(["data", "check", cfg]) == 2
        assert "the model has no image processor" in capsys.readouterr().err
        return
    assert main(["data", "check", cfg]) == 0
    assert main(["data", "preview", cfg, "-n", "1"]) == 0
    assert "--- example 0" in capsys.readouterr().out


@pytest.mark.skipif(not lf_entries(), reason="../shared/lf-demo-data is absent")
def test_llamafactory_hub_entries_fail_with_an_offline_message(tmp_path, tiny_model_dir, capsys):
    assert main(["data", "check", config(tmp_path, tiny_model_dir, dataset="alpaca_en",
                                         dataset_dir=str(LF_DATA))]) == 2
    assert "needs a download from the hub (llamafactory/alpaca_en) but tunesmith is offline" in capsys.readouterr().err
