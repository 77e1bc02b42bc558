"""Gradient checkpointing: off by default when the activations fit, and LF's key still decides when set."""

import pytest

from tunesmith.config.schema import ModelArgs
from tunesmith.model.load import activation_bytes, checkpointing


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def test_unset_key_turns_checkpointing_off_when_activations_fit(model):
    assert checkpointing(model, ModelArgs(), batch_tokens=4 * 64) is False
    assert checkpointing(model, ModelArgs(), batch_tokens=None) is True  # unknown batch: as before, on


def test_explicit_key_decides(model):
    assert checkpointing(model, ModelArgs(disable_gradient_checkpointing=False), batch_tokens=256) is True
    assert checkpointing(model, ModelArgs(disable_gradient_checkpointing=True), batch_tokens=256) is False


def test_estimate_grows_with_the_batch_and_says_on_for_a_huge_one(model):
    small = activation_bytes(model.config, 256, 4)
    assert activation_bytes(model.config, 512, 4) > 2 * small - 1
    assert checkpointing(model, ModelArgs(), batch_tokens=10**9) is True
