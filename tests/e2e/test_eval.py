"""`tunesmith eval` end to end: a model trained to always answer B scores B's share; batch size does not change
predictions; results files and refusals; the example YAML; predict with generation metrics."""

import json
import random
from pathlib import Path

import pytest

from tunesmith.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "src" / "tunesmith" / "evaluate" / "demo_benchmark"
DEMO_DATA = REPO / "src" / "tunesmith" / "demo_data"
# The demo benchmarks' test answers: 8 of 24 are B (3 of 8 in arithmetic and geography, 2 of 8 in literature).
B_SHARE = {"average": 33.33, "basic_arithmetic": 37.5, "world_geography": 37.5, "literature_and_arts": 25.0}


def run_eval(model_dir, save_dir, *overrides, task="demo_en_test"):
    code = main(["eval", f"model_name_or_path={model_dir}", f"task={task}", f"task_dir={DEMO}", "template=chatml",
                 f"save_dir={save_dir}", *overrides])
    assert code == 0, f"tunesmith eval exited {code}"
    return json.loads((Path(save_dir) / "results.json").read_text(encoding="utf-8"))


def predictions(results):
    return {key: [row["prediction"] for row in subject["predictions"]] for key, subject in results["subjects"].items()}


@pytest.fixture(scope="module")
def always_b_model(tiny_model_dir, tmp_path_factory):
    """The tiny model fully fine-tuned (40 steps) on multiple-choice prompts whose answer is always "B"."""
    root = tmp_path_factory.mktemp("always-b")
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "seven", "green", "music", "paper", "window", "garden", "silver",
             "orange", "tiger", "planet"]
    rows = []
    for i in range(32):
        options = "".join(f"\n{letter}. {word}" for letter, word in zip("ABCD", rng.sample(words, 4), strict=True))
        rows.append({"instruction": f"Question {i}: which word fits best?{options}\nAnswer:", "input": "",
                     "output": "B"})
    data = root / "always_b.json"
    data.write_text(json.dumps(rows))
    config = root / "train.yaml"
    config.write_text("stage: sft\nfinetuning_type: full\ntemplate: chatml\ncutoff_len: 128\n")
    out = root / "model"
    code = main(["train", str(config), f"model_name_or_path={tiny_model_dir}", f"dataset={data}",
                 f"output_dir={out}", "max_steps=40", "per_device_train_batch_size=4", "learning_rate=1e-3",
                 "save_strategy=no", "report_to=none", "seed=7"])
    assert code == 0
    return out


@pytest.mark.parametrize("task,lang,n_shot", [("demo_en_test", "en", 0), ("demo_en_test", "en", 3),
                                              ("demo_zh_test", "zh", 5)])
def test_a_model_that_always_answers_b_scores_b_share(always_b_model, tmp_path, task, lang, n_shot):
    results = run_eval(always_b_model, tmp_path / "r", f"lang={lang}", f"n_shot={n_shot}", task=task)
    assert all(letter == "B" for rows in predictions(results).values() for letter in rows)
    assert results["average"] == B_SHARE["average"]
    assert {key: s["accuracy"] for key, s in results["subjects"].items()} == {
        key: share for key, share in B_SHARE.items() if key != "average"}
    assert results["categories"] == {"STEM": 37.5, "Social Sciences": 37.5, "Humanities": 25.0}


def test_a_training_run_folder_is_a_config(always_b_model, tmp_path):
    # its recorded config gives the model (and template); only the eval keys are added
    code = main(["eval", str(always_b_model), "task=demo_en_test", f"task_dir={DEMO}", "n_shot=0",
                 f"save_dir={tmp_path / 'r'}"])
    assert code == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["average"] == B_SHARE["average"] and results["template"] == "chatml"


def test_results_files_and_batch_size_independence(tiny_model_dir, tmp_path, capsys):
    one = run_eval(tiny_model_dir, tmp_path / "b1", "batch_size=1", "n_shot=2")
    printed = capsys.readouterr().out
    five = run_eval(tiny_model_dir, tmp_path / "b5", "batch_size=5", "n_shot=2")
    assert predictions(one) == predictions(five)
    for key, subject in one["subjects"].items():
        for a, b in zip(subject["predictions"], five["subjects"][key]["predictions"], strict=True):
            assert a["prompt_tokens"] == b["prompt_tokens"]
            assert a["probs"] == pytest.approx(b["probs"], abs=1e-4)
    # every prediction is recorded, with the answer it is compared with
    rows = [row for subject in one["subjects"].values() for row in subject["predictions"]]
    assert len(rows) == 24 and {"id", "prediction", "answer", "probs"} <= set(rows[0])
    assert one["n_shot"] == 2 and one["task"] == "demo_en_test"
    log = (tmp_path / "b1" / "results.log").read_text(encoding="utf-8")
    assert "Average" in log and "basic arithmetic" in log and "Humanities" in log
    assert log.splitlines()[1] in printed  # the table is printed too


def test_existing_save_dir_is_refused(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code = main(["eval", f"model_name_or_path={tiny_model_dir}", "task=demo_en_test", f"task_dir={DEMO}",
                 f"save_dir={tmp_path / 'taken'}"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert list((tmp_path / "taken").iterdir()) == []


@pytest.mark.parametrize("overrides,message", [
    (["task=demo_en_validation"], "split 'validation' of subject 'basic_arithmetic' not found"),
    (["task=mmlu_test"], "available tasks there: demo_en_dev, demo_en_test"),
    (["task=demo_en_test", "template=no_such_template"], "no_such_template"),
    ([], "needs `task`"),
    (["task=demo_en_test", "do_predict=true"], "either `task`"),
])
def test_errors_are_one_clear_line(tiny_model_dir, capsys, overrides, message):
    code = main(["eval", f"model_name_or_path={tiny_model_dir}", f"task_dir={DEMO}", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_example_yaml_runs(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the example's task_dir is relative to the repository
    code = main(["eval", "examples/eval_demo.yaml", f"model_name_or_path={tiny_model_dir}",
                 f"save_dir={tmp_path / 'example'}"])
    assert code == 0
    assert "Average" in capsys.readouterr().out
    assert json.loads((tmp_path / "example" / "results.json").read_text())["n_shot"] == 5


def test_predict_writes_predictions_and_metrics(tiny_model_dir, tmp_path):
    from tunesmith.evaluate.metrics import corpus_similarity

    out = tmp_path / "predict"
    code = main(["eval", f"model_name_or_path={tiny_model_dir}", "do_predict=true", "predict_with_generate=true",
                 "eval_dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}", "template=chatml",
                 f"output_dir={out}", "max_new_tokens=8", "max_samples=6", "per_device_eval_batch_size=4"])
    assert code == 0
    lines = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and set(lines[0]) == {"prompt", "predict", "label"}
    assert lines[0]["prompt"].startswith("<|im_start|>user\n") and lines[0]["label"].startswith("I am Tuney")
    results = json.loads((out / "predict_results.json").read_text())
    expected = corpus_similarity([line["predict"] for line in lines], [line["label"] for line in lines])
    assert {key: results[f"predict_{key}"] for key in expected} == {k: round(v, 4) for k, v in expected.items()}
    assert results["predict_samples"] == 6
    # greedy by default: a second run (replacing the first) writes the same predictions
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", "do_predict=true", "predict_with_generate=true",
                 "eval_dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}", "template=chatml",
                 f"output_dir={out}", "max_new_tokens=8", "max_samples=6", "per_device_eval_batch_size=1",
                 "overwrite_output_dir=true"]) == 0
    again = [json.loads(line) for line in (out / "generated_predictions.jsonl").read_text().splitlines()]
    assert [line["predict"] for line in again] == [line["predict"] for line in lines]
    # LLaMA-Factory's predict YAML runs through `train` too (do_predict without do_train)
    (tmp_path / "predict.yaml").write_text("stage: sft\ndo_predict: true\npredict_with_generate: true\n")
    assert main(["train", str(tmp_path / "predict.yaml"), f"model_name_or_path={tiny_model_dir}",
                 "eval_dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}", "template=chatml",
                 f"output_dir={tmp_path / 'via_train'}", "max_new_tokens=8", "max_samples=6"]) == 0
    via_train = (tmp_path / "via_train" / "generated_predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["predict"] for line in via_train] == [line["predict"] for line in lines]


def test_predict_refusals(tiny_model_dir, tmp_path, capsys):
    base = ["eval", f"model_name_or_path={tiny_model_dir}", "do_predict=true", "eval_dataset=tunesmith_identity",
            f"dataset_dir={DEMO_DATA}", "template=chatml"]
    assert main([*base, f"output_dir={tmp_path}"]) == 2
    assert "predict_with_generate: true" in capsys.readouterr().err
    (tmp_path / "generated_predictions.jsonl").write_text("")
    assert main([*base, "predict_with_generate=true", f"output_dir={tmp_path}"]) == 2
    assert "overwrite_output_dir" in capsys.readouterr().err


def test_do_predict_after_training(tiny_model_dir, tmp_path, capsys):
    """do_train + do_predict, as LLaMA-Factory's sft workflow: the trained model answers eval_dataset in the same run
    (as `tunesmith eval` on the saved adapter does); a multi-process run is refused before training."""
    from tunesmith.config.load import load_config
    from tunesmith.errors import ConfigError
    from tunesmith.evaluate.predict import check_after_training

    out = tmp_path / "run"
    args = ["dataset=tunesmith_identity", "eval_dataset=tunesmith_identity", f"dataset_dir={DEMO_DATA}",
            "template=chatml", "max_samples=4", "max_new_tokens=6", "per_device_eval_batch_size=2"]
    assert main(["train", f"model_name_or_path={tiny_model_dir}", "stage=sft", "finetuning_type=lora", "do_train=true",
                 "do_predict=true", "predict_with_generate=true", "max_steps=2", "learning_rate=0.05",
                 "report_to=none", f"output_dir={out}", *args]) == 0
    lines = (out / "generated_predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads((out / "all_results.json").read_text())["predict_samples"] == 4
    assert main(["eval", f"model_name_or_path={tiny_model_dir}", f"adapter_name_or_path={out}", "do_predict=true",
                 "predict_with_generate=true", f"output_dir={tmp_path / 'again'}", *args]) == 0
    assert (tmp_path / "again" / "generated_predictions.jsonl").read_text().splitlines() == lines
    config = load_config(None, {"model_name_or_path": str(tiny_model_dir), "do_train": True, "do_predict": True,
                                "predict_with_generate": True, "eval_dataset": "tunesmith_identity"})
    with pytest.raises(ConfigError, match="runs in one process, not 2"):
        check_after_training(config, world_size=2)
