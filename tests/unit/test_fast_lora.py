"""The merged-weight LoRA forward (model/fast_lora.py) gives peft's outputs and gradients, and steps aside where the
two would differ (dropout, DoRA, merged adapters, eval)."""

import copy

import pytest
import torch

peft = pytest.importorskip("peft")


def _lora_llama(**lora):
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
    model = LlamaForCausalLM(config)
    options = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "init_lora_weights": False, **lora}
    return peft.get_peft_model(model, peft.LoraConfig(**options))


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return loss.detach(), grads


def test_fast_lora_equals_peft_loss_and_gradients():
    from tunesmith.model.fast_lora import use_fast_lora

    plain = _lora_llama()
    fast = copy.deepcopy(plain)
    assert use_fast_lora(fast) == 14  # 7 linear layers x 2 decoder layers; lm_head is not a LoRA target
    ids = torch.randint(0, 128, (2, 24))
    plain.train(), fast.train()
    loss, grads = _loss_and_grads(plain, ids)
    fast_loss, fast_grads = _loss_and_grads(fast, ids)
    assert grads.keys() == fast_grads.keys() and len(grads) == 28  # lora_A and lora_B of each layer
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fast_lora_takes_the_merged_path_only_where_it_is_the_same_function():
    from tunesmith.model import fast_lora

    calls = []
    original = fast_lora._function

    def counting():
        function = original()

        class Counted(function):
            @staticmethod
            def forward(ctx, *args):
                calls.append(1)
                return function.forward(ctx, *args)

        return Counted

    ids = torch.randint(0, 128, (1, 12))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_lora, "_function", counting)
        model = _lora_llama()
        fast_lora.use_fast_lora(model)
        model.train()
        model(input_ids=ids)
        assert len(calls) == 14
        calls.clear()
        model.eval()  # generation and evaluation keep peft's forward (no per-call weight merge for one token)
        with torch.no_grad():
            model(input_ids=ids)
        assert not calls
        for options in ({"lora_dropout": 0.1}, {"use_dora": True}):
            other = _lora_llama(**options)
            assert fast_lora.use_fast_lora(other) == 14
            other.train()
            assert torch.isfinite(other(input_ids=ids).logits).all()
            assert not calls, options
        model.train()
        model.merge_adapter()  # merged weights: peft runs the base layer alone
        model(input_ids=ids)
        assert not calls


def test_fast_lora_trains_through_the_cli_to_the_same_adapter(tmp_path, tiny_model_dir):
    """One sft step through `tunesmith train` with and without the merged path: the same loss to 5 digits."""
    from tunesmith.config.load import build_config
    from tunesmith.model import fast_lora
    from tunesmith.train.run import run_training

    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.json").write_text(
        '[{"instruction": "hi", "output": "hello there"}, {"instruction": "bye", "output": "see you soon"}]'
    )
    (data / "dataset_info.json").write_text('{"rows": {"file_name": "rows.json"}}')

    def train(out):
        config = build_config(
            {
                "model_name_or_path": str(tiny_model_dir),
                "stage": "sft",
                "finetuning_type": "lora",
                "lora_target": "all",
                "dataset": "rows",
                "dataset_dir": str(data),
                "template": "default",
                "output_dir": str(out),
                "max_steps": 2,
                "per_device_train_batch_size": 2,
                "learning_rate": 1e-3,
                "logging_steps": 1,
                "report_to": "none",
                "seed": 3,
            }
        )
        return run_training(config)

    counts, original = [], fast_lora.use_fast_lora
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_lora, "use_fast_lora", lambda model: counts.append(original(model)) or counts[-1])
        fast = train(tmp_path / "fast")
    assert counts and counts[0] > 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_lora, "use_fast_lora", lambda model: 0)
        plain = train(tmp_path / "plain")
    assert fast["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)


def _merged_nodes(output) -> int:
    """How many merged-weight LoRA matmuls the autograd graph of `output` holds."""
    seen, stack, count = set(), [output.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += "MergedLoraLinear" in type(node).__name__
        stack.extend(next_node for next_node, _ in node.next_functions)
    return count


def test_fast_lora_on_bitsandbytes_4bit_equals_peft(tmp_path, tiny_model_dir):
    """QLoRA on the CPU: the dequantized 4-bit weight merged with B A gives peft + bitsandbytes' loss and gradients."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tunesmith.model.fast_lora import use_fast_lora
    from tunesmith.model.swiglu import use_recomputed_swiglu

    def qlora():
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        model = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, quantization_config=quantization, dtype=torch.float32
        )
        torch.manual_seed(0)
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        return peft.get_peft_model(model, config).train()

    plain, fast = qlora(), qlora()
    assert use_fast_lora(fast) == 14
    ids = torch.randint(0, 100, (2, 24))
    assert _merged_nodes(fast(input_ids=ids).logits) == 14 and _merged_nodes(plain(input_ids=ids).logits) == 0
    assert use_recomputed_swiglu(fast) == 2  # the 4-bit down_proj then merges inside the MLP's function
    assert _merged_nodes(fast(input_ids=ids).logits) == 12
    loss, grads = _loss_and_grads(plain, ids)
    fast_loss, fast_grads = _loss_and_grads(fast, ids)
    assert grads.keys() == fast_grads.keys() and len(grads) == 28
    torch.testing.assert_close(fast_loss, loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
