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
