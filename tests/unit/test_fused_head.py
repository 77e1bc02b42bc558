"""The LM head and cross-entropy in chunks (model/fused_head.py): the same loss and gradients as transformers' plain
head + ForCausalLMLoss, no (tokens, vocab) tensor kept for the backward pass, and only where it applies."""

import copy
import inspect

import pytest
import torch

from tunesmith.data.collate import CausalLMCollator
from tunesmith.model.fused_head import linear_cross_entropy, use_fused_head

VOCAB = 96


def _llama(tie=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _features():
    generator = torch.Generator().manual_seed(1)
    features = []
    for length, prompt in ((17, 5), (9, 3), (23, 11), (6, 2)):
        ids = torch.randint(2, VOCAB, (length,), generator=generator).tolist()
        features.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return features


def _batch(tiny_tokenizer, model):
    return CausalLMCollator(tiny_tokenizer, model, capacity=32)(_features())


def _grads(model, batch, num_items_in_batch=None):
    model.zero_grad(set_to_none=True)
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    loss = model(**batch, **extra).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("num_items", [None, torch.tensor(50)])
def test_full_fine_tune_same_loss_and_gradients(tiny_tokenizer, tie, num_items):
    plain = _llama(tie).train()
    fused = copy.deepcopy(plain)
    assert use_fused_head(fused)
    batch = _batch(tiny_tokenizer, plain)
    loss, grads = _grads(plain, batch, num_items)
    loss_fused, grads_fused = _grads(fused, batch, num_items)
    torch.testing.assert_close(loss_fused, loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == grads_fused.keys() and "lm_head.weight" in grads or tie
    for name in grads:
        torch.testing.assert_close(grads_fused[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_lora_same_loss_and_gradients_and_no_vocab_sized_saved_tensor(tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0)
    plain = get_peft_model(_llama(), lora).train()
    fused = copy.deepcopy(plain)
    assert use_fused_head(fused)
    batch = _batch(tiny_tokenizer, plain)
    loss, grads = _grads(plain, batch)
    loss_fused, grads_fused = _grads(fused, batch)
    torch.testing.assert_close(loss_fused, loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == grads_fused.keys() and len(grads) == 12
    for name in grads:
        torch.testing.assert_close(grads_fused[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)

    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        fused(**batch).loss.backward()
    assert shapes and not [shape for shape in shapes if shape and shape[-1] == VOCAB]


def test_chunks_and_ignored_targets_match_cross_entropy():
    torch.manual_seed(2)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(VOCAB, 16, requires_grad=True)
    targets = torch.randint(0, VOCAB, (37,))
    targets[[0, 5, 36]] = -100
    reference = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, ignore_index=-100)
    reference.backward()
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss = linear_cross_entropy(hidden, weight, targets, chunk_rows=5)  # 8 chunks, the last of 2 rows
    (loss * 3).backward()
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(hidden.grad, expected[0] * 3)
    torch.testing.assert_close(weight.grad, expected[1] * 3)


def test_outside_training_the_model_own_forward_runs(tiny_tokenizer):
    model = _llama()
    assert use_fused_head(model)
    batch = _batch(tiny_tokenizer, model.train())
    model.eval()
    output = model(**batch)  # eval: the real logits at the kept positions
    assert output.logits.shape == (int(batch["logits_to_keep"].sum()), VOCAB)
    model.train()
    assert model(**batch).logits is None  # training: fused, no logits
    names = set(inspect.signature(model.forward).parameters)  # the Trainer keeps the columns forward names
    assert {"input_ids", "labels", "position_ids"} <= names
    plain = {key: value for key, value in batch.items() if key not in ("logits_to_keep", "shift_labels")}
    assert model(**plain).logits.shape[-1] == VOCAB  # padded batch without label-only logits: the plain path


def test_not_applied_to_other_forwards():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    assert not use_fused_head(Gemma2ForCausalLM(config))  # final logit softcapping between head and loss
