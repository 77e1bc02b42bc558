"""SwiGLU MLPs that recompute silu(gate) in backward (model/swiglu.py): bitwise the same loss and gradients, one saved
activation fewer, and only where the MLP is the standard one."""

import copy

import pytest
import torch


def _llama(full=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def _grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _saved_bytes(model, ids):
    total = []

    def pack(tensor):
        total.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(total)


def _with_fast_paths(plain, ids):
    """A copy of `plain` with fast LoRA and the recomputed SwiGLU; (copy, plain's (loss, grads), the copy's)."""
    from tunesmith.model.fast_lora import use_fast_lora
    from tunesmith.model.swiglu import use_recomputed_swiglu

    fast = copy.deepcopy(plain)
    use_fast_lora(fast)
    assert use_recomputed_swiglu(fast) == 2
    plain.train(), fast.train()
    return fast, _grads(plain, ids), _grads(fast, ids)


def test_recomputed_swiglu_gives_the_same_loss_and_gradients_bitwise():
    from tunesmith.model.swiglu import use_recomputed_swiglu

    plain = _llama()
    fast = copy.deepcopy(plain)
    assert use_recomputed_swiglu(fast) == 2
    ids = torch.randint(0, 128, (2, 20))
    plain.train(), fast.train()
    loss, grads = _grads(plain, ids)
    fast_loss, fast_grads = _grads(fast, ids)
    assert torch.equal(loss, fast_loss)
    assert grads.keys() == fast_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(fast_grads[name], grad), name
    # silu(gate) and the product not kept (a plain down_proj): two (tokens, intermediate) float32 tensors fewer per
    # layer, 2 layers x 40 tokens x 96
    assert _saved_bytes(plain, ids) - _saved_bytes(fast, ids) == 2 * 2 * 40 * 96 * 4


def test_recomputed_swiglu_only_for_the_standard_silu_mlp_and_only_in_training():
    from transformers import GemmaConfig, GemmaForCausalLM

    from tunesmith.model.swiglu import use_recomputed_swiglu

    gemma = GemmaForCausalLM(
        GemmaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
        )
    )
    assert use_recomputed_swiglu(gemma) == 0  # gelu, not silu
    model = _llama()
    use_recomputed_swiglu(model)
    model.eval()
    ids = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        out = model(input_ids=ids).logits
    reference = _llama().eval()
    with torch.no_grad():
        assert torch.equal(out, reference(input_ids=ids).logits)


@pytest.mark.parametrize("lora", [True, False])
def test_recomputed_swiglu_composes_with_lora(lora):
    peft = pytest.importorskip("peft")
    from tunesmith.model.swiglu import use_recomputed_swiglu

    plain = _llama()
    if lora:
        plain = peft.get_peft_model(plain, peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 16))
    _, (loss, grads), (fast_loss, fast_grads) = _with_fast_paths(plain, ids)
    if lora:  # down_proj is a LoRA layer: it keeps the product as its input, silu(gate) alone goes
        unmerged = copy.deepcopy(plain)
        use_recomputed_swiglu(unmerged)
        assert _saved_bytes(plain, ids) - _saved_bytes(unmerged, ids) == 2 * 32 * 96 * 4
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_merged_lora_down_proj_recomputes_its_input_bitwise():
    """fast LoRA + recomputed SwiGLU: the LoRA down_proj's input (the product) is recomputed, not kept; the same
    loss and gradients bitwise as fast LoRA over the op-by-op MLP."""
    peft = pytest.importorskip("peft")
    from tunesmith.model.fast_lora import use_fast_lora

    plain = peft.get_peft_model(_llama(), peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    use_fast_lora(plain)
    ids = torch.randint(0, 128, (2, 16))
    fast, (loss, grads), (fast_loss, fast_grads) = _with_fast_paths(plain, ids)
    assert torch.equal(loss, fast_loss) and grads.keys() == fast_grads.keys() and len(grads) == 28
    for name, grad in grads.items():
        assert torch.equal(fast_grads[name], grad), name
    # silu(gate) and the product: two (tokens, intermediate) float32 tensors fewer per layer
    assert _saved_bytes(plain, ids) - _saved_bytes(fast, ids) == 2 * 2 * 32 * 96 * 4
    seen, stack = set(), [fast(input_ids=ids).logits.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    assert sum(type(node).__name__ == "SiluMulLoraLinearBackward" for node in seen) == 2
