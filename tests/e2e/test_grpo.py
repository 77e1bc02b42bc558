"""Stage grpo end to end through the CLI on the tiny model: a verifiable reward rises, every policy type trains."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.cli import main
from tunesmith.config.load import load_config
from tunesmith.infer.engine import ChatEngine

QUESTIONS = [
    "Say a word.",
    "Name a fruit.",
    "Name a colour.",
    "Who are you?",
    "Count to three.",
    "Say hello.",
    "What is two plus two?",
    "Pick an animal.",
]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grpo-data") / "prompts.json"
    path.write_text(json.dumps([{"instruction": q, "solution": "yes"} for q in QUESTIONS]))
    return path


def grpo(model_dir, prompts, out, *overrides, steps=2, code=0) -> Path:
    config = Path(str(out) + ".yaml")
    config.write_text("stage: grpo\n")
    args = [
        f"model_name_or_path={model_dir}",
        f"dataset={prompts}",
        "template=chatml",
        "cutoff_len=64",
        f"output_dir={out}",
        f"max_steps={steps}",
        "per_device_train_batch_size=8",
        "num_generations=4",
        "max_completion_length=8",
        "learning_rate=5e-3",
        "logging_steps=1",
        "save_strategy=no",
        "report_to=none",
        "seed=42",
        *overrides,
    ]
    assert main(["train", str(config), *args]) == code
    return Path(out)


def rewards(out: Path, key: str = "reward") -> list[float]:
    return [row[key] for row in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines()) if key in row]


def test_a_verifiable_reward_rises_and_the_run_chats(tiny_model_dir, prompts, tmp_path):
    # Reward 1 when the reply holds the letter "p": about 3 in 10 of the random model's 8-token replies do.
    out = grpo(tiny_model_dir, prompts, tmp_path / "grpo", "reward_funcs=format", "reward_pattern=p", steps=30)
    seen = rewards(out)
    assert len(seen) == 30 and seen == rewards(out, "rewards/format/mean")
    first, last = sum(seen[:10]) / 10, sum(seen[-10:]) / 10
    assert last > first + 0.2, (first, last, seen)  # seeded: first 10 steps 0.44, last 10 0.83 here
    lora_b = [value for name, value in load_file(out / "adapter_model.safetensors").items() if "lora_B" in name]
    assert lora_b and any(value.abs().sum() > 0 for value in lora_b)
    assert (out / "all_results.json").is_file() and (out / "tokenizer_config.json").is_file()
    engine = ChatEngine(load_config(out, ["do_sample=false", "max_new_tokens=4"]))  # what `tunesmith chat RUN` does
    assert engine.chat([{"role": "user", "content": "Say hello."}])[0].completion_tokens >= 1


def test_a_reward_function_from_a_file_next_to_the_config(tiny_model_dir, prompts, tmp_path):
    (tmp_path / "my_rewards.py").write_text(
        "def short_and_right(completions, solution, completion_ids, **kwargs):\n"
        "    return [float(s in c) - len(ids) / 100 for c, s, ids in zip(completions, solution, completion_ids)]\n"
    )
    out = grpo(
        tiny_model_dir,
        prompts,
        tmp_path / "custom",
        "reward_funcs=my_rewards.py:short_and_right,accuracy",
        "val_size=2",
        "per_device_eval_batch_size=8",
    )
    assert rewards(out, "rewards/short_and_right/mean") and rewards(out, "rewards/accuracy/mean")
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 2 and "eval_reward" in results  # TRL generates and scores the held-out prompts


@pytest.mark.parametrize("method", ["finetuning_type=full", "finetuning_type=freeze", "quantization_bit=4"])
def test_full_freeze_and_qlora_policies_train(tiny_model_dir, prompts, tmp_path, method):
    from transformers import AutoModelForCausalLM

    # beta > 0: a reference model (full/freeze: a copy from model_name_or_path; QLoRA: the adapter turned off)
    out = grpo(
        tiny_model_dir,
        prompts,
        tmp_path / "grpo",
        "reward_funcs=format,length",
        "reward_pattern=a|e",
        "beta=0.04",
        method,
    )
    assert all(
        "kl" in row for row in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines()) if "loss" in row
    )
    if method == "quantization_bit=4":
        weights = load_file(out / "adapter_model.safetensors")
        assert any(torch.count_nonzero(value) for name, value in weights.items() if "lora_B" in name)
        return
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    changed = {name for name in base if not torch.equal(trained[name], base[name])}
    assert changed
    if method == "finetuning_type=freeze":
        assert all(".layers." in name for name in changed)


def test_a_reward_model_from_stage_rm_scores_the_completions(tiny_model_dir, prompts, tmp_path):
    pairs = [{"instruction": q, "chosen": "Yes.", "rejected": "No."} for q in QUESTIONS]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {
                "pairs": {
                    "file_name": "pairs.json",
                    "ranking": True,
                    "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"},
                }
            }
        )
    )
    (tmp_path / "rm.yaml").write_text("stage: rm\n")
    rm = tmp_path / "rm"
    assert (
        main(
            [
                "train",
                str(tmp_path / "rm.yaml"),
                f"model_name_or_path={tiny_model_dir}",
                "dataset=pairs",
                f"dataset_dir={tmp_path}",
                "template=chatml",
                "cutoff_len=64",
                f"output_dir={rm}",
                "max_steps=1",
                "save_strategy=no",
                "report_to=none",
            ]
        )
        == 0
    )
    out = grpo(
        tiny_model_dir, prompts, tmp_path / "grpo", "reward_funcs=reward_model,length", f"reward_model={rm}", steps=1
    )
    scores = [
        key for key in json.loads((out / "trainer_log.jsonl").read_text().splitlines()[0]) if key.startswith("rewards/")
    ]
    assert len(scores) == 4  # mean and std of the rm adapter's scores and of the length penalty


@pytest.mark.parametrize(
    "overrides, message",
    [
        ((), "stage grpo needs `reward_funcs`"),
        (("reward_funcs=nonsense",), "unknown reward function `nonsense`"),
        (("reward_funcs=missing.py:f",), "file not found"),
        (("reward_funcs=format", "num_generations=3"), "make that a multiple of num_generations"),
        (("reward_funcs=format", "do_sample=false"), "stage grpo samples its completions"),
        (("reward_funcs=format", "val_size=2", "per_device_eval_batch_size=2"), "an eval batch holds 2"),
        (("reward_funcs=reward_model",), "reward_funcs `reward_model` needs `reward_model`"),
        (("reward_funcs=format", "reward_pattern=("), "`reward_pattern` is not a valid regex"),
    ],
)
def test_bad_grpo_configs_are_refused_before_any_load(tiny_model_dir, prompts, tmp_path, capsys, overrides, message):
    grpo(tiny_model_dir, prompts, tmp_path / "bad", *overrides, code=2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
