"""PPO's reward model with LLaMA-Factory's reward_model_adapters and reward_model_quantization_bit, on the tiny model."""

import json
import math
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.config.load import load_config
from tunesmith.errors import TunesmithError

PAIRS = [
    ("Who are you?", "I am Tuney, a small assistant.", "I do not know."),
    ("Say hello.", "Hello! Nice to meet you.", "Go away."),
    ("Count to three.", "One, two, three.", "Three, one, two."),
    ("What colour is the sky?", "The sky is blue.", "The sky is green."),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm-data")
    rows = [{"instruction": q, "input": "", "chosen": c, "rejected": r} for q, c, r in PAIRS]
    (root / "ranking.json").write_text(json.dumps(rows))
    (root / "plain.json").write_text(json.dumps([{"instruction": q, "output": c} for q, c, _ in PAIRS]))
    info = {
        "pairs": {
            "file_name": "ranking.json",
            "ranking": True,
            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
        },
        "plain": {"file_name": "plain.json"},
    }
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(out)
    return out


def args(model_dir, data_dir, out, steps, dataset):
    return [
        f"model_name_or_path={model_dir}",
        f"dataset={dataset}",
        f"dataset_dir={data_dir}",
        "template=chatml",
        "cutoff_len=64",
        f"output_dir={out}",
        f"max_steps={steps}",
        "per_device_train_batch_size=2",
        "learning_rate=5e-2",
        "logging_steps=1",
        "save_strategy=no",
        "report_to=none",
        "seed=7",
    ]


def train(model_dir, data_dir, out, stage, *overrides, steps=1, dataset="pairs"):
    config = Path(str(out) + ".yaml")
    config.write_text(f"stage: {stage}\n")
    assert main(["train", str(config), *args(model_dir, data_dir, out, steps, dataset), *overrides]) == 0
    return Path(out)


@pytest.fixture(scope="module")
def rm_adapter(tiny_model_dir, data_dir, tmp_path_factory):
    return train(tiny_model_dir, data_dir, tmp_path_factory.mktemp("rm") / "run", "rm", steps=3)


def _scores(config, tokenizer):
    from tunesmith.train.ppo import load_reward_model

    model = load_reward_model(config, tokenizer)
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 7, 8, 9, 5]])).logits.squeeze()


def test_reward_model_adapters_are_merged_and_quantization_loads_4_bit(
    tiny_model_dir, data_dir, classifier_dir, rm_adapter, tmp_path
):
    from tunesmith.model.load import load_tokenizer
    from tunesmith.model.quantize import is_quantized
    from tunesmith.train.ppo import load_reward_model

    yaml = tmp_path / "ppo.yaml"
    yaml.write_text("stage: ppo\n")
    base = args(tiny_model_dir, data_dir, tmp_path / "out", 1, "plain") + [f"reward_model={classifier_dir}"]
    plain = load_config(yaml, base)
    tokenizer = load_tokenizer(plain.model)
    with_adapter = load_config(yaml, [*base, f"reward_model_adapters={rm_adapter}"])
    assert not torch.allclose(_scores(plain, tokenizer), _scores(with_adapter, tokenizer))
    quantized = load_config(yaml, [*base, "reward_model_quantization_bit=4"])
    assert is_quantized(load_reward_model(quantized, tokenizer))


def test_ppo_with_a_4_bit_reward_model_trains(tiny_model_dir, data_dir, classifier_dir, rm_adapter, tmp_path):
    out = train(
        tiny_model_dir,
        data_dir,
        tmp_path / "ppo",
        "ppo",
        f"reward_model={classifier_dir}",
        f"reward_model_adapters={rm_adapter}",
        "reward_model_quantization_bit=4",
        "max_new_tokens=6",
        dataset="plain",
    )
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert log and all(math.isfinite(row["loss"]) and "reward" in row for row in log)


def test_reward_model_type_api_is_refused_with_the_reason(tiny_model_dir, data_dir, tmp_path):
    yaml = tmp_path / "ppo.yaml"
    yaml.write_text("stage: ppo\nreward_model: http://localhost:8000/score\nreward_model_type: api\n")
    with pytest.raises(TunesmithError, match="reward server reached over the network"):
        load_config(yaml, args(tiny_model_dir, data_dir, tmp_path / "out", 1, "plain"))
