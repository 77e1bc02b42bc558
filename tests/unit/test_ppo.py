"""stage ppo's pieces that need no training: the pad token TRL sees, the prompt batches, reward model folders."""

import copy
import json

import pytest

from tunesmith.errors import ModelError
from tunesmith.train.ppo import PAD_TOKEN, ppo_tokenizer, prompt_collator, reward_source


def test_a_pad_equal_to_eos_gets_its_own_id_in_a_copy(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.pad_token = tokenizer.eos_token  # what the chat template sets when a model has no pad token
    seen = ppo_tokenizer(tokenizer)
    assert seen.pad_token == PAD_TOKEN and seen.pad_token_id not in (tokenizer.eos_token_id, None)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the run's own tokenizer (saved with it) is unchanged
    eos = tokenizer.eos_token_id
    batch = prompt_collator(tokenizer, None)([{"input_ids": [1, 7, eos, 8]}, {"input_ids": [1, 9]}])["input_ids"]
    assert batch.tolist() == [[1, 7, eos, 8], [seen.pad_token_id, seen.pad_token_id, 1, 9]]  # left padding


def test_a_distinct_pad_is_kept(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.pad_token = "<pad>"
    assert ppo_tokenizer(tokenizer) is tokenizer


def test_reward_model_folders(tmp_path):
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS", "base_model_name_or_path": "/b"}))
    assert reward_source(str(rm)) == ("/b", str(rm))
    (rm / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM", "base_model_name_or_path": "/b"}))
    with pytest.raises(ModelError, match="not a reward model"):
        reward_source(str(rm))
    classifier = tmp_path / "cls"
    classifier.mkdir()
    (classifier / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                        "id2label": {"0": "LABEL_0"}}))
    assert reward_source(str(classifier)) == (str(classifier), None)
    (classifier / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                        "id2label": {"0": "a", "1": "b"}}))
    with pytest.raises(ModelError, match="2 labels"):
        reward_source(str(classifier))
    with pytest.raises(ModelError, match="neither a model"):
        reward_source(str(tmp_path))


def test_lf_ppo_keys_become_trl_batches():
    from types import SimpleNamespace

    from tunesmith.config.load import load_config
    from tunesmith.errors import ConfigError
    from tunesmith.train.ppo import ppo_keys

    config = load_config(None, {"stage": "ppo", "reward_model": "r", "ppo_epochs": 3, "ppo_buffer_size": 2,
                                "max_new_tokens": 16, "temperature": 0.7})
    args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=3, max_steps=5, world_size=1)
    keys = ppo_keys(args, config.method, config.generation, prompts=12)
    # one batch of replies = 2 per device x 3 accumulation x 2 buffer = 12 prompts, trained in 2 mini-batches
    assert keys["num_ppo_epochs"] == 3 and keys["num_mini_batches"] == 2 and keys["gradient_accumulation_steps"] == 6
    assert keys["total_episodes"] == 5 * 12 and keys["whiten_rewards"] is False
    assert keys["response_length"] == 16 and keys["temperature"] == 0.7
    with pytest.raises(ConfigError, match="replies for 12 prompts at a time .* the data has 11"):
        ppo_keys(args, config.method, config.generation, prompts=11)
