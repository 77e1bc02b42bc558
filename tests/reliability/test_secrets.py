"""No secret (hub_token, hf_hub_token, api_key) is written anywhere in a run folder: not in tunesmith_config.yaml,
not in training_args.bin (the run's and every checkpoint's); in memory the Trainer keeps hub_token for push_to_hub."""

import copy
import io
import json
import pickle
import uuid
from pathlib import Path

import pytest
import torch

from tunesmith.cli import main
from tunesmith.train.output_safety import is_secret, keep_secrets_out_of_pickles

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "demo_data"
PAIRS = [("Who are you?", "I am Tuney.", "No idea."), ("Say hello.", "Hello!", "Go away."),
         ("Name a fruit.", "An apple.", "A chair."), ("Count to two.", "One, two.", "Two, one.")]


def pairs_data(root: Path) -> Path:
    rows = [{"instruction": q, "input": "", "chosen": c, "rejected": r} for q, c, r in PAIRS]
    (root / "ranking.json").write_text(json.dumps(rows))
    info = {"pairs": {"file_name": "ranking.json", "ranking": True,
                      "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}}
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


@pytest.mark.parametrize("stage", ["sft", "dpo"])  # dpo: the trainer's args are TRL's DPOConfig
def test_no_secret_in_any_file_of_a_run(tiny_model_dir, tmp_path, stage):
    secrets = {key: f"secret-{key}-{uuid.uuid4().hex}" for key in ("hub_token", "hf_hub_token", "api_key")}
    config = tmp_path / "train.yaml"
    config.write_text(f"stage: {stage}\n")
    data = [f"dataset_dir={DEMO_DATA}", "dataset=tunesmith_identity"] if stage == "sft" else [
        f"dataset_dir={pairs_data(tmp_path)}", "dataset=pairs"]
    out = tmp_path / "run"
    assert main(["train", str(config), f"model_name_or_path={tiny_model_dir}", *data, "template=chatml",
                 "cutoff_len=64", f"output_dir={out}", "max_steps=2", "save_steps=1", "per_device_train_batch_size=2",
                 "logging_steps=1", "report_to=none", *(f"{key}={value}" for key, value in secrets.items())]) == 0
    written = [path for path in out.rglob("*") if path.is_file()]
    assert {"training_args.bin", "checkpoint-1/training_args.bin", "checkpoint-2/training_args.bin",
            "tunesmith_config.yaml"} <= {str(path.relative_to(out)) for path in written}
    for path in written:
        content = path.read_bytes()
        for key, value in secrets.items():
            assert value.encode() not in content, f"{key} written in {path}"
    args = torch.load(out / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert args.hub_token is None and args.max_steps == 2 and args.save_steps == 1  # the rest is kept
    assert type(args).__module__.startswith(("transformers.", "trl."))  # loads without tunesmith


@pytest.mark.parametrize("config_class", ["transformers.Seq2SeqTrainingArguments", "trl.DPOConfig"])
def test_pickles_drop_the_token_while_memory_and_copies_keep_it(tmp_path, config_class):
    import importlib

    module, name = config_class.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    args = cls(output_dir=str(tmp_path), hub_token="hf_secret_value", learning_rate=3e-4, report_to="none", bf16=False)
    keep_secrets_out_of_pickles(args)
    keep_secrets_out_of_pickles(args)  # twice is harmless
    saved = io.BytesIO()
    torch.save(args, saved)  # what Trainer._save does for training_args.bin
    assert b"hf_secret_value" not in saved.getvalue()
    assert b"hf_secret_value" not in pickle.dumps(args)
    loaded = torch.load(io.BytesIO(saved.getvalue()), weights_only=False)
    assert type(loaded) is cls and loaded.hub_token is None and loaded.learning_rate == 3e-4
    assert args.hub_token == "hf_secret_value"  # push_to_hub reads it from trainer.args
    assert isinstance(args, cls) and copy.deepcopy(args).hub_token == "hf_secret_value"
    assert copy.copy(args).hub_token == "hf_secret_value"


def test_secret_keys():
    for key in ("hub_token", "hf_hub_token", "api_key", "ms_hub_token", "wandb_api_key"):
        assert is_secret(key), key
    for key in ("max_new_tokens", "split_special_tokens", "use_fast_tokenizer", "tokenized_path", "output_dir"):
        assert not is_secret(key), key
