"""LLaMA-Factory's model options on the tiny model: pure_bf16, upcast_layernorm, upcast_lmhead_output, MoE coef."""

import torch

from tunesmith.config.schema import LFMethodArgs, LFModelArgs, MethodArgs, ModelArgs
from tunesmith.model.lf_options import configure_moe
from tunesmith.model.load import load_model


def _load(tiny_model_dir, tiny_tokenizer, lf_model=None, lf_method=None, dtype="auto"):
    model_args = ModelArgs(model_name_or_path=str(tiny_model_dir), dtype=dtype)
    return load_model(model_args, MethodArgs(finetuning_type="full"), tiny_tokenizer, is_trainable=True,
                      lf_model=lf_model, lf_method=lf_method)


def test_pure_bf16_keeps_bf16_and_trains(tiny_model_dir, tiny_tokenizer):
    model = _load(tiny_model_dir, tiny_tokenizer, lf_method=LFMethodArgs(pure_bf16=True))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_upcast_layernorm_and_lmhead_output(tiny_model_dir, tiny_tokenizer):
    lf_model = LFModelArgs(upcast_layernorm=True, upcast_lmhead_output=True)
    model = _load(tiny_model_dir, tiny_tokenizer, lf_model=lf_model, lf_method=LFMethodArgs(pure_bf16=True))
    norms = [p for n, p in model.named_parameters() if p.ndim == 1 and "norm" in n]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 norms run under mixed precision, as in LLaMA-Factory
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.float32


def test_moe_aux_loss_coef_sets_router_config():
    from transformers import MixtralConfig, Qwen2MoeConfig

    for config in (Qwen2MoeConfig(), MixtralConfig()):
        configure_moe(config, 0.01, is_trainable=True)
        assert config.output_router_logits is True and config.router_aux_loss_coef == 0.01
    untouched = Qwen2MoeConfig(router_aux_loss_coef=0.5)
    configure_moe(untouched, 0.01, is_trainable=False)
    assert untouched.router_aux_loss_coef == 0.5
