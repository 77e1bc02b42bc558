"""RMSNorm layers with a training weight recompute their normed input in backward (model/rmsnorm.py): the same loss
and gradients as the model's own forward to float32 rounding, one saved tensor fewer per norm, and only where the
weight trains."""

import copy

import torch

from tunesmith.model.rmsnorm import use_recomputed_rmsnorm


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).train()
    with torch.no_grad():  # weights away from 1, so their gradients matter
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return model


def _step(model, ids):
    model.zero_grad(set_to_none=True)
    saved = {}  # storage -> bytes: a tensor saved by two ops counts once

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sum(saved.values())


def test_full_fine_tune_same_loss_and_gradients_fewer_saved_elements():
    plain = _llama()
    recomputed = copy.deepcopy(plain)
    assert use_recomputed_rmsnorm(recomputed) == 5  # 2 per layer and the final norm
    ids = torch.randint(0, 128, (2, 24))
    loss, grads, saved = _step(plain, ids)
    loss_r, grads_r, saved_r = _step(recomputed, ids)
    torch.testing.assert_close(loss_r, loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == grads_r.keys() and "model.norm.weight" in grads
    for name in grads:
        torch.testing.assert_close(grads_r[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)
    assert saved - saved_r == 5 * 2 * 24 * 32 * 4  # one (tokens, hidden) float32 tensor fewer per norm


def test_frozen_weights_and_eval_run_the_model_own_forward():
    model = _llama()
    use_recomputed_rmsnorm(model)
    ids = torch.randint(0, 128, (1, 12))
    for param in model.parameters():
        param.requires_grad_(param.ndim == 2)  # norms frozen, as under LoRA: nothing to gain
    names = []
    output = model(input_ids=ids)
    stack = [output.logits.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None:
            names.append(type(node).__name__)
            stack.extend(next_node for next_node, _ in node.next_functions)
    assert names and not [name for name in names if "RMSNorm" in name]
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
