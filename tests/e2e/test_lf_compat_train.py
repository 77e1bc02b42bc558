"""LLaMA-Factory's ways, end to end: the flag-only form (`tunesmith train --model_name_or_path M --stage sft ...`, no
YAML) trains; early_stopping_steps stops a run whose eval loss stops improving."""

import json
import logging
from pathlib import Path

from tunesmith.cli import main

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"


def test_train_with_flags_only(tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tunesmith.train.run")
    out = tmp_path / "out"
    flags = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--stage",
        "sft",
        "--do_train",
        "--finetuning_type",
        "lora",
        "--dataset",
        "tunesmith_identity",
        "--dataset_dir",
        str(DEMO_DATA),
        "--template",
        "chatml",
        "--max_samples",
        "4",
        "--max_steps",
        "2",
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--print_param_status",
    ]
    assert main(["train", *flags]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert "lora_A.default.weight: torch.float32 cpu, trainable True" in caplog.text


def test_config_show_with_flags_only(capsys):
    assert main(["config", "show", "--model_name_or_path", "m", "--stage", "rm", "--lora-rank", "4"]) == 0
    shown = capsys.readouterr().out
    assert "model_name_or_path: m" in shown and "stage: rm" in shown and "lora_rank: 4" in shown


def test_a_mistake_in_the_flags_names_the_key(capsys):
    assert main(["config", "show", "--lora_rnak", "4"]) == 2
    assert "unknown key 'lora_rnak'; did you mean 'lora_rank'" in capsys.readouterr().err


def test_early_stopping_steps_stops_when_eval_loss_stops_improving(tiny_model_dir, tmp_path):
    out = tmp_path / "stop"
    overrides = [
        f"model_name_or_path={tiny_model_dir}",
        "stage=sft",
        "finetuning_type=full",
        "dataset=tunesmith_identity",
        f"dataset_dir={DEMO_DATA}",
        "template=chatml",
        "max_samples=16",
        "val_size=4",
        "max_steps=30",
        "learning_rate=5.0",
        "eval_strategy=steps",
        "eval_steps=1",
        "early_stopping_steps=1",
        f"output_dir={out}",
        "report_to=none",
        "save_strategy=no",
        "seed=1",
    ]  # lr 5: eval loss gets worse
    assert main(["train", *overrides]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] < 30


def test_early_stopping_needs_evaluations(capsys):
    assert main(["config", "show", "--early_stopping_steps", "3"]) == 2
    assert "`early_stopping_steps` counts evaluations" in capsys.readouterr().err
