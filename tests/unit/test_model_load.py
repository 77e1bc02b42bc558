"""Tokenizer/model loading: dtype and attention mapping, offline and missing-path errors, resize, checkpointing."""

import logging

import pytest
import torch

from tunesmith.config.schema import MethodArgs, ModelArgs
from tunesmith.errors import DependencyError, ModelError
from tunesmith.model.load import attn_implementation, load_model, load_tokenizer, resolve_dtype

IDS = torch.tensor([[1, 50, 60, 70, 80, 90, 100, 110]])
NO_FA2 = not torch.cuda.is_available()


def _args(path, **method):
    return ModelArgs(model_name_or_path=str(path)), MethodArgs(**method)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU mapping")
def test_resolve_dtype_on_cpu(caplog):
    assert resolve_dtype("auto") == torch.float32
    assert resolve_dtype("float32") == torch.float32
    with caplog.at_level(logging.WARNING, logger="tunesmith.model.load"):
        assert resolve_dtype("bfloat16") == torch.bfloat16
        assert resolve_dtype("float16") == torch.float16
    assert "slow" in caplog.text


@pytest.mark.skipif(not NO_FA2, reason="CPU mapping")
@pytest.mark.parametrize(
    ("key", "expected"), [("auto", "sdpa"), ("sdpa", "sdpa"), ("eager", "eager"), ("disabled", "eager")]
)
def test_attn_implementation_mapping(key, expected):
    assert attn_implementation(key) == expected


@pytest.mark.skipif(not NO_FA2, reason="fa2 is available here")
def test_fa2_without_gpu_is_an_error_not_a_fallback():
    with pytest.raises(DependencyError, match=r"pip install flash-attn --no-build-isolation\); use sdpa"):
        attn_implementation("fa2")


def test_offline_hub_id_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ModelArgs(model_name_or_path="tunesmith-test-org/no-such-model", cache_dir=str(tmp_path))
    message = (
        "model 'tunesmith-test-org/no-such-model' is not a local folder and tunesmith is offline: "
        "download it first or point model_name_or_path at a folder"
    )
    with pytest.raises(ModelError) as err:
        load_tokenizer(args)
    assert str(err.value) == message
    with pytest.raises(ModelError, match="is not a local folder and tunesmith is offline"):
        load_model(args, MethodArgs(), tokenizer=None)


@pytest.mark.parametrize("path", ["/nonexistent/tunesmith/model", "./missing-model-folder"])
def test_missing_local_path_names_it(path):
    with pytest.raises(ModelError, match=f"model folder not found: {path}"):
        load_tokenizer(ModelArgs(model_name_or_path=path))


def test_a_typo_in_a_local_path_is_not_sent_to_the_hub_and_gets_a_suggestion(tmp_path, monkeypatch):
    (tmp_path / "models" / "tiny-llama").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=r"model folder not found: models/tiny-lama; did you mean models/tiny-llama\?"):
        load_tokenizer(ModelArgs(model_name_or_path="models/tiny-lama"))


def test_tokenizer_pads_right(tiny_model_dir):
    tokenizer = load_tokenizer(ModelArgs(model_name_or_path=str(tiny_model_dir)))
    assert tokenizer.padding_side == "right"
    assert tokenizer.pad_token is None  # the chat template sets pad = eos after fixing eos, like LLaMA-Factory

    from tunesmith.data.template import get_template

    get_template("qwen", tokenizer)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"


def test_training_load_sets_up_checkpointing_and_logs_counts(tiny_model_dir, caplog):
    model_args, method_args = _args(tiny_model_dir, finetuning_type="lora")
    tokenizer = load_tokenizer(model_args)
    with caplog.at_level(logging.INFO, logger="tunesmith.model.load"):
        model = load_model(model_args, method_args, tokenizer)
    assert "trainable params: 16,384 || all params: " in caplog.text
    assert "trainable%: " in caplog.text
    assert model.training and model.config.use_cache is False
    assert model.base_model.model.is_activation_checkpointing
    # Checkpointing with frozen embeddings still yields LoRA gradients.
    model(input_ids=IDS, labels=IDS).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # lora_A gets none while B == 0
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_disable_gradient_checkpointing_and_inference(tiny_model_dir):
    model_args = ModelArgs(model_name_or_path=str(tiny_model_dir), disable_gradient_checkpointing=True)
    tokenizer = load_tokenizer(model_args)
    model = load_model(model_args, MethodArgs(finetuning_type="full"), tokenizer)
    assert not model.is_activation_checkpointing
    assert all(p.requires_grad for p in model.parameters())
    model = load_model(model_args, MethodArgs(finetuning_type="lora"), tokenizer, is_trainable=False)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert not hasattr(model, "peft_config")


def test_trainable_params_are_float32_on_a_bf16_model(tiny_model_dir):
    model_args = ModelArgs(model_name_or_path=str(tiny_model_dir), dtype="bfloat16")
    tokenizer = load_tokenizer(model_args)
    model = load_model(model_args, MethodArgs(finetuning_type="lora"), tokenizer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    model = load_model(model_args, MethodArgs(finetuning_type="freeze", freeze_trainable_layers=1), tokenizer)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["model.layers.1.mlp.up_proj.weight"] == torch.float32
    assert dtypes["model.layers.0.mlp.up_proj.weight"] == torch.bfloat16


def test_vocab_resize_when_the_tokenizer_grows(tiny_model_dir, tmp_path):
    from safetensors import safe_open

    model_args, method_args = _args(tiny_model_dir, finetuning_type="lora")
    tokenizer = load_tokenizer(model_args)
    old_size = len(tokenizer)
    base = load_model(model_args, MethodArgs(finetuning_type="full"), tokenizer, is_trainable=False)
    assert base.get_input_embeddings().weight.size(0) == old_size  # no resize needed
    old = base.get_input_embeddings().weight.detach().clone()

    tokenizer.add_special_tokens({"additional_special_tokens": ["<|new_a|>", "<|new_b|>"]})
    assert len(tokenizer) == old_size + 2
    model = load_model(model_args, method_args, tokenizer)
    embed = model.get_input_embeddings().weight
    assert embed.size(0) == 1088  # grown to a multiple of 64
    assert model.get_output_embeddings().weight.size(0) == 1088
    assert torch.equal(embed[:old_size].detach(), old)
    new_rows = embed[old_size:].detach()
    assert (new_rows.mean(0) - old.mean(0)).abs().max() < 0.1  # mean init (+ noise like LLaMA-Factory)
    # LoRA trains and saves the resized embedding and head.
    assert set(model.peft_config["default"].modules_to_save) == {"embed_tokens", "lm_head"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("embed_tokens.modules_to_save" in n for n in trainable)
    assert any("lm_head.modules_to_save" in n for n in trainable)
    new_id = tokenizer.convert_tokens_to_ids("<|new_b|>")
    model(input_ids=torch.tensor([[1, new_id, 50]]))
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any("embed_tokens" in k for k in keys) and any("lm_head" in k for k in keys)


def test_resize_keeps_tied_embeddings_tied(tiny_model_dirs, tmp_path):
    model_args = ModelArgs(model_name_or_path=str(tiny_model_dirs["gemma"]))  # ties embed_tokens and lm_head
    tokenizer = load_tokenizer(model_args)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|new_a|>"]})
    model = load_model(model_args, MethodArgs(finetuning_type="lora"), tokenizer)
    assert model.peft_config["default"].ensure_weight_tying
    inner = model.base_model.model
    assert inner.lm_head.modules_to_save["default"].weight is inner.model.embed_tokens.modules_to_save["default"].weight
    with torch.no_grad():
        inner.model.embed_tokens.modules_to_save["default"].weight.add_(0.1)  # "train" the new rows
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    model.save_pretrained(tmp_path)
    reloaded = load_model(
        ModelArgs(model_name_or_path=model_args.model_name_or_path, adapter_name_or_path=[str(tmp_path)]),
        MethodArgs(finetuning_type="lora"),
        tokenizer,
        is_trainable=False,
    )
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=IDS).logits, expected, atol=1e-5)


def test_a_folder_without_a_model_is_a_model_error(tmp_path):
    args = ModelArgs(model_name_or_path=str(tmp_path))
    with pytest.raises(ModelError, match=f"could not load a tokenizer from {tmp_path}"):
        load_tokenizer(args)
    with pytest.raises(ModelError, match=f"could not load a model from {tmp_path}"):
        load_model(args, MethodArgs(), tokenizer=None)
