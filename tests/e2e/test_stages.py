"""rm, dpo, kto and ppo end to end through the CLI on the tiny model with small local data."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.cli import main
from tunesmith.config.load import load_config
from tunesmith.infer.engine import ChatEngine

PAIRS = [
    ("Who are you?", "I am Tuney, a small assistant.", "I do not know."),
    ("Say hello.", "Hello! Nice to meet you.", "Go away."),
    ("Count to three.", "One, two, three.", "Three, one, two."),
    ("What colour is the sky?", "The sky is blue.", "The sky is green."),
    ("What is two plus two?", "Four.", "Five."),
    ("Name a fruit.", "An apple.", "A chair."),
    ("Name a colour.", "Red.", "Seven."),
    ("Who made you?", "The tunesmith project.", "Nobody."),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage-data")
    ranking = [{"instruction": q, "input": "", "chosen": c, "rejected": r} for q, c, r in PAIRS]
    (root / "ranking.json").write_text(json.dumps(ranking))
    feedback = [{"instruction": q, "output": answer, "tag": tag} for q, c, r in PAIRS for answer, tag in
                ((c, True), (r, False))]
    (root / "feedback.json").write_text(json.dumps(feedback))
    (root / "plain.json").write_text(json.dumps([{"instruction": q, "output": c} for q, c, _ in PAIRS]))
    info = {
        "pairs": {"file_name": "ranking.json", "ranking": True,
                  "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
        "feedback": {"file_name": "feedback.json",
                     "columns": {"prompt": "instruction", "response": "output", "kto_tag": "tag"}},
        "plain": {"file_name": "plain.json"},
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


def train(model_dir, data_dir, out, stage, *overrides, dataset="pairs", steps=2, code=0):
    config = Path(str(out) + ".yaml")
    config.write_text(f"stage: {stage}\n")
    args = [f"model_name_or_path={model_dir}", f"dataset={dataset}", f"dataset_dir={data_dir}", "template=chatml",
            "cutoff_len=64", f"output_dir={out}", f"max_steps={steps}", "per_device_train_batch_size=2",
            "learning_rate=1e-3", "logging_steps=1", "save_strategy=no", "report_to=none", "seed=7", *overrides]
    assert main(["train", str(config), *args]) == code
    return Path(out)


def losses(out):
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_dpo_first_loss_is_log2_and_adapter_loads(tiny_model_dir, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = train(tiny_model_dir, data_dir, tmp_path / "dpo", "dpo", "pref_beta=0.1")
    first = losses(out)[0]
    assert abs(first - math.log(2)) < 1e-3  # LoRA starts as the identity: policy == reference
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    assert model(torch.tensor([[1, 5, 6]])).logits.shape[-1] >= 1024


def test_full_dpo_with_ref_model_starts_at_log2(tiny_model_dir, data_dir, tmp_path):
    out = train(tiny_model_dir, data_dir, tmp_path / "full", "dpo", "finetuning_type=full",
                f"ref_model={tiny_model_dir}")
    assert abs(losses(out)[0] - math.log(2)) < 1e-3
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("options", [["pref_loss=hinge"], ["pref_loss=ipo"], ["pref_loss=orpo"],
                                     ["pref_loss=simpo", "simpo_gamma=0.5"], ["pref_ftx=1.0"],
                                     ["dpo_label_smoothing=0.1"]], ids=lambda o: "-".join(o))
def test_dpo_losses_train(tiny_model_dir, data_dir, tmp_path, options):
    out = train(tiny_model_dir, data_dir, tmp_path / "loss", "dpo", *options)
    values = losses(out)
    assert len(values) == 2 and all(math.isfinite(v) for v in values)
    if options == ["pref_loss=hinge"]:
        assert abs(values[0] - 1.0) < 1e-3  # relu(1 - beta * 0) at the reference
    if options == ["dpo_label_smoothing=0.1"]:
        assert abs(values[0] - math.log(2)) < 1e-3  # smoothing mixes two ln 2 terms at the reference


def test_rm_accuracy_on_held_out_pairs_and_value_head_loads(tiny_model_dir, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    out = train(tiny_model_dir, data_dir, tmp_path / "rm", "rm", "val_size=2")
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 2 and 0.0 <= results["eval_accuracy"] <= 1.0
    weights = load_file(out / "adapter_model.safetensors")
    head = [name for name in weights if "score" in name]
    assert head, "the value head is saved with the adapter"
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model = PeftModel.from_pretrained(base, out)
    saved = weights[head[0]]
    assert any(torch.equal(param, saved) for name, param in model.named_parameters() if "score" in name)
    assert model(torch.tensor([[1, 5, 6]])).logits.shape == (1, 1)


def test_full_rm_saves_a_sequence_classifier(tiny_model_dir, data_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = train(tiny_model_dir, data_dir, tmp_path / "rmfull", "rm", "finetuning_type=full")
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model(torch.tensor([[1, 5, 6]])).logits.shape == (1, 1)


def test_kto_trains_with_weights(tiny_model_dir, data_dir, tmp_path):
    out = train(tiny_model_dir, data_dir, tmp_path / "kto", "kto", "kto_chosen_weight=1.0", "kto_rejected_weight=1.2",
                dataset="feedback", steps=3)
    assert len(losses(out)) == 3 and all(math.isfinite(v) for v in losses(out))
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()


def test_kto_accepts_batch_size_one_as_llamafactory_does(tiny_model_dir, data_dir, tmp_path):
    out = train(tiny_model_dir, data_dir, tmp_path / "kto1", "kto", "per_device_train_batch_size=1",
                dataset="feedback", steps=2)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["train_batch_size"] == 1 and len(losses(out)) == 2 and all(math.isfinite(v) for v in losses(out))


@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir, tmp_path_factory):
    """A plain Hugging Face one-label sequence classifier (random head): a reward model not made by tunesmith."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(out)
    return out


@pytest.mark.parametrize("stage, dataset, message", [
    ("dpo", "plain", "needs a ranking dataset"),
    ("rm", "feedback", "needs a ranking dataset"),
    ("kto", "pairs", "has no kto_tag column"),
    ("ppo", "pairs", "is a ranking dataset"),
    ("ppo", "feedback", "is KTO feedback data"),
])
def test_wrong_kind_of_data_is_refused(tiny_model_dir, data_dir, classifier_dir, tmp_path, capsys, stage, dataset,
                                       message):
    train(tiny_model_dir, data_dir, tmp_path / "bad", stage, f"reward_model={classifier_dir}", dataset=dataset, code=2)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_ppo_lora_with_our_rm_changes_the_policy_and_the_adapter_loads(tiny_model_dir, data_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rm = train(tiny_model_dir, data_dir, tmp_path / "rm", "rm", steps=1)
    out = train(tiny_model_dir, data_dir, tmp_path / "ppo", "ppo", f"reward_model={rm}", "max_new_tokens=8",
                "ppo_epochs=2", "save_strategy=steps", "save_steps=2", dataset="plain")
    for folder in (out, out / "checkpoint-2"):  # the pad token TRL's PPO was given stays out of saved tokenizers
        assert len(AutoTokenizer.from_pretrained(folder)) == len(AutoTokenizer.from_pretrained(tiny_model_dir))
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(math.isfinite(row["loss"]) for row in log)
    assert all("reward" in row and "objective/kl" in row for row in log)
    assert (out / "all_results.json").is_file() and (out / "tokenizer_config.json").is_file()
    lora_b = [value for name, value in load_file(out / "adapter_model.safetensors").items() if "lora_B" in name]
    assert lora_b and any(value.abs().sum() > 0 for value in lora_b)  # LoRA B starts at zero: the policy moved
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    assert model(torch.tensor([[1, 5, 6]])).logits.shape[-1] >= 1024
    engine = ChatEngine(load_config(out, ["do_sample=false", "max_new_tokens=4"]))  # what `tunesmith chat RUN` does
    assert engine.chat([{"role": "user", "content": "Say hello."}])[0].completion_tokens >= 1


@pytest.mark.parametrize("method", ["finetuning_type=full", "finetuning_type=freeze", "quantization_bit=4"])
def test_ppo_with_a_classifier_reward_model(tiny_model_dir, data_dir, classifier_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    out = train(tiny_model_dir, data_dir, tmp_path / "ppo", "ppo", f"reward_model={classifier_dir}", method,
                "max_new_tokens=8", dataset="plain", steps=1)
    if method == "quantization_bit=4":  # QLoRA: the adapter trained on the 4-bit policy
        weights = load_file(out / "adapter_model.safetensors")
        assert any(torch.count_nonzero(value) for name, value in weights.items() if "lora_B" in name)
        return
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    changed = {name for name in base if not torch.equal(trained[name], base[name])}
    assert changed
    if method == "finetuning_type=freeze":  # only the last freeze_trainable_layers (2 of 2 here) may move
        assert all(".layers." in name for name in changed)


@pytest.mark.parametrize("reward, message", [
    (None, "stage ppo needs `reward_model`"),
    ("model", "is not a reward model"),
    ("missing", "reward_model folder not found"),
])
def test_ppo_refuses_a_missing_or_wrong_reward_model(tiny_model_dir, data_dir, tmp_path, capsys, reward, message):
    paths = {"model": tiny_model_dir, "missing": tmp_path / "nowhere"}
    overrides = [f"reward_model={paths[reward]}"] if reward else []
    train(tiny_model_dir, data_dir, tmp_path / "bad", "ppo", *overrides, dataset="plain", code=2)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
