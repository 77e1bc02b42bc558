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
    small = activation_bytes(model, 256)
    assert activation_bytes(model, 512) == 2 * small
    assert checkpointing(model, ModelArgs(), batch_tokens=10**9) is True


def test_the_decision_uses_the_estimate_commands_arithmetic(model):
    """The same bytes as `tunesmith estimate`'s activations for that shape; eager attention adds its probabilities."""
    from tunesmith.model.shape import activation_bytes as estimate
    from tunesmith.model.shape import text_shape

    shape = text_shape(model.config)
    assert activation_bytes(model, 256) == estimate(shape, 1, 256, 4, checkpointing=False, eager=False)
    attention, model.config._attn_implementation = model.config._attn_implementation, "eager"
    try:
        eager = activation_bytes(model, 256)
    finally:
        model.config._attn_implementation = attention
    assert eager == estimate(shape, 1, 256, 4, checkpointing=False, eager=True) > activation_bytes(model, 256)
