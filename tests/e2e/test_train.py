"""`tunesmith train` end to end on a tiny model: every method and LoRA option, outputs, logs and equivalences."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.cli import main

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"


def train(model_dir, out, *overrides, dataset="tunesmith_identity,tunesmith_skills", steps=4):
    args = [
        f"model_name_or_path={model_dir}",
        f"dataset={dataset}",
        f"dataset_dir={DEMO_DATA}",
        "template=chatml",
        "cutoff_len=64",
        f"output_dir={out}",
        f"max_steps={steps}",
        "per_device_train_batch_size=2",
        "learning_rate=1e-3",
        "logging_steps=1",
        "save_strategy=no",
        "report_to=none",
        "seed=7",
        *overrides,
    ]
    code = main(["train", *_config_file(out), *args])
    assert code == 0, f"tunesmith train exited {code}"
    return Path(out)


def _config_file(out):
    path = Path(str(out) + ".yaml")
    path.write_text("stage: sft\n")
    return [str(path)]


def log_lines(out):
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]


def losses(out):
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_lora_sft_writes_every_output(tiny_model_dir, tmp_path):
    out = train(tiny_model_dir, tmp_path / "lora", "plot_loss=true", "lora_rank=4", "hf_hub_token=secret-token")
    assert "secret-token" not in (out / "tunesmith_config.yaml").read_text()
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "trainer_state.json",
                 "all_results.json", "trainer_log.jsonl", "tunesmith_config.yaml", "versions.json",
                 "training_loss.png"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8  # alpha defaults to 2 x rank
    assert "lm_head" not in config["target_modules"] and "q_proj" in config["target_modules"]
    lines = log_lines(out)
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    for key in ("total_steps", "loss", "lr", "epoch", "elapsed", "remaining", "percentage"):
        assert key in lines[0], key
    assert lines[-1]["total_steps"] == 4 and lines[-1]["percentage"] == 100
    assert json.loads((out / "versions.json").read_text())["torch"] == torch.__version__


def test_non_empty_output_dir_is_refused(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["train", *_config_file(out), f"model_name_or_path={tiny_model_dir}", "dataset=tunesmith_identity",
                 f"dataset_dir={DEMO_DATA}", "template=chatml", f"output_dir={out}", "max_steps=1"])
    assert code == 2
    assert "is not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("method", ["freeze", "full"])
def test_freeze_and_full_save_loadable_models(tiny_model_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    out = train(tiny_model_dir, tmp_path / method, f"finetuning_type={method}", "freeze_trainable_layers=1")
    weights = load_file(out / "model.safetensors")
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    changed = {name for name in base if not torch.equal(base[name], weights[name])}
    if method == "freeze":
        assert changed and all(name.startswith("model.layers.1.") for name in changed)
    else:
        assert any(name.startswith("model.layers.0.") for name in changed)
        assert "model.embed_tokens.weight" in changed
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model(torch.tensor([[1, 5, 6]])).logits.shape[-1] >= 1024


@pytest.mark.parametrize(
    "option, check",
    [
        ("use_dora=true", lambda cfg, w: cfg["use_dora"] and any("magnitude" in k for k in w)),
        ("use_rslora=true", lambda cfg, w: cfg["use_rslora"]),
        ("pissa_init=true", lambda cfg, w: str(cfg["init_lora_weights"]).startswith("pissa")),
        ("additional_target=embed_tokens", lambda cfg, w: any("embed_tokens" in k for k in w)),
        ("loraplus_lr_ratio=16", lambda cfg, w: True),
        ("lora_target=q_proj,v_proj", lambda cfg, w: sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]),
    ],
)
def test_lora_options_train_and_save(tiny_model_dir, tmp_path, option, check):
    out = train(tiny_model_dir, tmp_path / "opt", option, steps=2)
    config = json.loads((out / "adapter_config.json").read_text())
    weights = load_file(out / "adapter_model.safetensors")
    assert check(config, weights)
    assert all(math.isfinite(loss) for loss in losses(out))


def test_pissa_convert_saves_a_plain_lora_adapter(tiny_model_dir, tmp_path):
    out = train(tiny_model_dir, tmp_path / "pissa", "pissa_init=true", "pissa_convert=true", "lora_rank=4", steps=2)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True and config["r"] == 8  # converted: rank 2r, plain init


def test_new_adapter_stacks_on_an_old_one(tiny_model_dir, tmp_path):
    first = train(tiny_model_dir, tmp_path / "first", steps=2)
    second = train(tiny_model_dir, tmp_path / "second", f"adapter_name_or_path={first}", "create_new_adapter=true",
                   steps=2)
    a = load_file(first / "adapter_model.safetensors")
    b = load_file(second / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_accumulation_gives_the_same_first_step_loss(tiny_model_dir, tmp_path):
    big = train(tiny_model_dir, tmp_path / "b4", "per_device_train_batch_size=4", "gradient_accumulation_steps=1",
                "finetuning_type=full", steps=1)
    small = train(tiny_model_dir, tmp_path / "b1", "per_device_train_batch_size=1", "gradient_accumulation_steps=4",
                  "finetuning_type=full", steps=1)
    assert losses(big)[0] == pytest.approx(losses(small)[0], rel=1e-4)


def test_resume_continues_to_the_same_result(tiny_model_dir, tmp_path):
    whole = train(tiny_model_dir, tmp_path / "whole", "save_strategy=steps", "save_steps=2", steps=4)
    part = train(tiny_model_dir, tmp_path / "part", "save_strategy=steps", "save_steps=2", steps=4)
    import shutil

    shutil.rmtree(part / "checkpoint-4")
    for name in ("adapter_model.safetensors", "all_results.json"):
        (part / name).unlink()
    resumed = train(tiny_model_dir, part, "save_strategy=steps", "save_steps=2", "resume_from_checkpoint=true",
                    steps=4)
    assert losses(resumed)[-1] == pytest.approx(losses(whole)[-1], rel=1e-4)


def encoded(model_dir, path, *overrides, dataset):
    """The examples `tunesmith data export` writes: the same encoding training gets, as id lists."""
    code = main(["data", "export", *_config_file(path), "--out", str(path), f"model_name_or_path={model_dir}",
                 f"dataset={dataset}", f"dataset_dir={DEMO_DATA}", "template=chatml", "cutoff_len=64", *overrides])
    assert code == 0
    return [json.loads(line) for line in path.read_text().splitlines()]


def base_and_trained(model_dir, out):
    """The base model and the base model with the run's LoRA adapter, read with transformers and peft directly."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out).eval()
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), trained


@torch.no_grad()
def mean_loss(model, rows) -> float:
    return sum(model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss.item()
               for row in rows) / len(rows)


def test_pretraining_on_plain_text_lowers_the_loss_on_that_text(tiny_model_dir, tmp_path):
    out = train(tiny_model_dir, tmp_path / "pt", "stage=pt", "learning_rate=1e-2", dataset="tunesmith_text", steps=8)
    blocks = encoded(tiny_model_dir, tmp_path / "blocks.jsonl", "stage=pt", dataset="tunesmith_text")
    assert len(blocks) > 1  # packed blocks of cutoff_len tokens
    base, trained = base_and_trained(tiny_model_dir, out)
    before, after = mean_loss(base, blocks), mean_loss(trained, blocks)
    assert after < before - 0.1, (before, after)  # the adapter learned the text


@pytest.mark.slow
def test_full_fine_tune_halves_the_loss(tiny_model_dir, tmp_path):
    out = train(tiny_model_dir, tmp_path / "long", "finetuning_type=full", "learning_rate=3e-3",
                "per_device_train_batch_size=4", dataset="tunesmith_identity", steps=60)
    history = losses(out)
    assert history[-1] < history[0] / 2


def test_val_size_holds_out_data_and_reports_eval_loss(tiny_model_dir, tmp_path):
    out = train(tiny_model_dir, tmp_path / "eval", "val_size=0.25", "eval_strategy=steps", "eval_steps=2", steps=4)
    results = json.loads((out / "all_results.json").read_text())
    assert math.isfinite(results["eval_loss"]) and results["eval_samples"] == 5  # 25% of the 20 demo examples
    assert any("eval_loss" in line for line in log_lines(out))


def test_compute_accuracy_reports_the_token_accuracy_of_the_trained_model(tiny_model_dir, tmp_path):
    out = train(tiny_model_dir, tmp_path / "acc", "eval_dataset=tunesmith_identity", "compute_accuracy=true",
                "learning_rate=1e-2", dataset="tunesmith_identity", steps=8)  # evaluated on what it learned
    reported = json.loads((out / "all_results.json").read_text())["eval_accuracy"]
    _, trained = base_and_trained(tiny_model_dir, out)
    per_example = []  # LLaMA-Factory's definition: next-token argmax hits over the trained tokens, averaged per example
    for row in encoded(tiny_model_dir, tmp_path / "eval.jsonl", dataset="tunesmith_identity"):
        with torch.no_grad():
            predicted = trained(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].argmax(-1)
        labels = torch.tensor(row["labels"][1:])
        trained_tokens = labels != -100
        per_example.append((predicted[trained_tokens] == labels[trained_tokens]).float().mean().item())
    assert len(per_example) == 11  # every identity example
    assert reported == pytest.approx(sum(per_example) / len(per_example), abs=1e-6)
    assert reported > 0.1  # 0.217 measured: a value that says the model learned, not a trivial 0


def test_saved_full_model_config_is_ready_for_inference(tiny_model_dir, tmp_path):
    out = train(tiny_model_dir, tmp_path / "full", "finetuning_type=full", steps=1)
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
