"""Fine-tuning methods on the tiny llama: trainable sets of full/freeze, LoRA variants, adapters, LoRA+, PiSSA."""

import math

import pytest
import torch

from tunesmith.config.schema import MethodArgs, ModelArgs
from tunesmith.errors import ConfigError, ModelError
from tunesmith.model.adapters import loraplus_optimizer, save_pissa_converted, save_pissa_init
from tunesmith.model.load import load_model, load_tokenizer

IDS = torch.tensor([[1, 50, 60, 70, 80, 90, 100, 110]])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(ModelArgs(model_name_or_path=str(tiny_model_dir)))


@pytest.fixture
def build(tiny_model_dir, tokenizer):
    """build(is_trainable=True, adapters=None, **method keys) -> a loaded model with the method applied."""

    def _build(is_trainable=True, adapters=None, **method):
        model_args = ModelArgs(model_name_or_path=str(tiny_model_dir), adapter_name_or_path=adapters)
        method.setdefault("finetuning_type", "lora")
        return load_model(model_args, MethodArgs(**method), tokenizer, is_trainable=is_trainable)

    return _build


def trainable(model) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


@torch.no_grad()
def logits(model):
    was_training = model.training
    model.eval()
    out = model(input_ids=IDS).logits
    model.train(was_training)
    return out


@torch.no_grad()
def perturb_lora(model, seed=0, scale=0.05):
    """Stands in for training: move every LoRA matrix so the adapter is no longer a no-op."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.add_(torch.randn(param.shape, generator=gen) * scale)


# full / freeze ------------------------------------------------------------------------------------------------


def test_full_trains_everything(build):
    model = build(finetuning_type="full")
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(("layers", "index"), [(1, 1), (-1, 0)])
def test_freeze_trains_exactly_the_chosen_layer(build, layers, index):
    model = build(finetuning_type="freeze", freeze_trainable_layers=layers)
    expected = {n for n, _ in model.named_parameters() if n.startswith(f"model.layers.{index}.")}
    assert expected and trainable(model) == expected


def test_freeze_modules_and_extra_modules(build):
    model = build(
        finetuning_type="freeze",
        freeze_trainable_layers=2,
        freeze_trainable_modules=["mlp"],
        freeze_extra_modules=["embed_tokens"],
    )
    names = trainable(model)
    assert "model.embed_tokens.weight" in names
    layer_params = names - {"model.embed_tokens.weight"}
    assert layer_params and all(".mlp." in n for n in layer_params)
    assert {n.split(".")[2] for n in layer_params} == {"0", "1"}
    assert len(layer_params) == 6  # gate/up/down in two layers


def test_freeze_errors_list_the_valid_names(build):
    with pytest.raises(ConfigError, match=r"mlpp.*choose 'all' or from: input_layernorm, mlp, post_attention"):
        build(finetuning_type="freeze", freeze_trainable_modules=["mlpp"])
    with pytest.raises(ConfigError, match=r"freeze_extra_modules: embed.*choose from: embed_tokens, lm_head, norm"):
        build(finetuning_type="freeze", freeze_extra_modules=["embed"])
    with pytest.raises(ConfigError, match="freeze_trainable_layers: 3 but the model has 2 layers"):
        build(finetuning_type="freeze", freeze_trainable_layers=3)


# LoRA ---------------------------------------------------------------------------------------------------------


def lora_layers(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}


def test_lora_all_targets_every_linear_but_the_head(build):
    model = build(lora_rank=4)
    names = {n.split(".")[-1] for n in lora_layers(model)}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("lm_head" in n for n in trainable(model))
    assert all(("lora_A" in n or "lora_B" in n) for n in trainable(model))
    assert model.peft_config["default"].lora_alpha == 8  # default alpha = 2 x rank


def test_lora_comma_list_and_unknown_target(build):
    model = build(lora_target="q_proj,v_proj")
    assert {n.split(".")[-1] for n in lora_layers(model)} == {"q_proj", "v_proj"}
    with pytest.raises(ConfigError) as err:
        build(lora_target="q_prj")
    assert "did you mean 'q_proj'" in str(err.value)
    assert "valid linear modules: all, down_proj, gate_proj, k_proj, lm_head, o_proj" in str(err.value)
    with pytest.raises(ConfigError, match=r"'mlp' is not a linear layer of this model \(it is a LlamaMLP"):
        build(lora_target="mlp")


@pytest.mark.parametrize(("rslora", "expected"), [(False, 16 / 8), (True, 16 / math.sqrt(8))])
def test_lora_scaling(build, rslora, expected):
    model = build(lora_rank=8, lora_alpha=16, use_rslora=rslora)
    scalings = [layer.scaling["default"] for layer in lora_layers(model).values()]
    assert len(scalings) == 14 and scalings == [pytest.approx(expected)] * 14


def test_dora_adds_magnitude_vectors(build):
    model = build(use_dora=True, lora_target="q_proj")
    magnitudes = [n for n in trainable(model) if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2  # one per layer
    assert torch.allclose(logits(model), logits(build(is_trainable=False)), atol=1e-5)


@pytest.mark.parametrize("iters", [-1, 4])
def test_pissa_moves_the_base_weights_but_keeps_the_output(build, iters):
    base = build(is_trainable=False)
    model = build(pissa_init=True, pissa_iter=iters, lora_target="q_proj,down_proj")
    original = base.model.layers[0].self_attn.q_proj.weight
    residual = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.allclose(original, residual, atol=1e-3)
    assert model.peft_config["default"].init_lora_weights == ("pissa" if iters == -1 else "pissa_niter_4")
    assert torch.allclose(logits(model), logits(base), atol=1e-4)


def test_additional_target_is_trained_and_saved(build, tmp_path):
    from safetensors import safe_open

    model = build(additional_target="lm_head")
    assert any("lm_head.modules_to_save.default.weight" in n for n in trainable(model))
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "adapter_model.safetensors", "pt") as f:
        assert "base_model.model.lm_head.weight" in set(f.keys())
    with pytest.raises(ConfigError, match=r"additional_target: lm_haed not found.*did you mean 'lm_head'"):
        build(additional_target="lm_haed")


def test_loraplus_optimizer_learning_rates(build, tmp_path):
    from transformers import TrainingArguments

    model = build(use_dora=True)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.01, report_to=[])
    optimizer = loraplus_optimizer(model, args, loraplus_lr_ratio=16.0, loraplus_lr_embedding=1e-6)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == len(trainable(model))
    for name in trainable(model):
        if "lora_B" in name or "lora_magnitude_vector" in name:
            assert lr_of[id(named[name])] == pytest.approx(1.6e-2), name
        else:
            assert "lora_A" in name and lr_of[id(named[name])] == pytest.approx(1e-3), name
    assert isinstance(optimizer, torch.optim.AdamW)


# adapters on disk ---------------------------------------------------------------------------------------------


def saved_adapter(build, path, seed):
    model = build(lora_rank=4, lora_target="q_proj,v_proj,down_proj")
    perturb_lora(model, seed=seed)
    model.save_pretrained(path)
    return logits(model)


def test_adapter_resumes_for_training_and_merges_for_inference(build, tmp_path):
    expected = saved_adapter(build, tmp_path / "a1", seed=1)
    resumed = build(adapters=[str(tmp_path / "a1")])
    assert hasattr(resumed, "peft_config")
    names = trainable(resumed)
    assert names and all("lora_" in n for n in names)
    assert torch.allclose(logits(resumed), expected, atol=1e-5)
    merged = build(is_trainable=False, adapters=[str(tmp_path / "a1")])
    assert not hasattr(merged, "peft_config") and not trainable(merged)
    assert torch.allclose(logits(merged), expected, atol=1e-5)


def test_stacked_adapters_with_create_new_adapter(build, tmp_path):
    saved_adapter(build, tmp_path / "a1", seed=1)
    saved_adapter(build, tmp_path / "a2", seed=2)
    stack = [str(tmp_path / "a1"), str(tmp_path / "a2")]
    merged = logits(build(is_trainable=False, adapters=stack))
    fresh = build(adapters=stack, create_new_adapter=True, lora_rank=2)
    assert fresh.peft_config["default"].r == 2  # a new adapter, not the loaded one
    assert all(p.abs().sum() == 0 for n, p in fresh.named_parameters() if "lora_B" in n)
    assert torch.allclose(logits(fresh), merged, atol=1e-5)
    continued = build(adapters=stack)  # a1 merged, a2 continues
    assert continued.peft_config["default"].r == 4
    assert torch.allclose(logits(continued), merged, atol=1e-5)


def test_merged_lora_matches_unmerged(build):
    model = build(lora_rank=4)
    perturb_lora(model, seed=3)
    before = logits(model)
    assert not torch.allclose(before, logits(build(is_trainable=False)), atol=1e-3)  # not a no-op
    assert torch.allclose(model.merge_and_unload()(input_ids=IDS).logits, before, atol=1e-5)


def test_missing_adapter_folder_names_it(build, tmp_path):
    with pytest.raises(ModelError, match=f"adapter folder not found: {tmp_path / 'nope'}"):
        build(adapters=[str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="is not a LoRA adapter folder"):
        build(adapters=[str(tmp_path / "empty")])


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # peft 0.21 on transformers 5
def test_pissa_convert_gives_a_plain_lora_on_the_original_base(build, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = build(pissa_init=True, pissa_iter=4, pissa_convert=True, lora_rank=4, lora_target="q_proj,up_proj")
    save_pissa_init(model, tmp_path)
    perturb_lora(model, seed=4)  # "training"
    trained = logits(model)
    model.save_pretrained(tmp_path)  # the trainer's final save
    save_pissa_converted(model, tmp_path)
    assert torch.allclose(logits(model), trained)  # the live model is untouched
    assert (tmp_path / "pissa_init" / "adapter_model.safetensors").is_file()

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path)
    assert plain.peft_config["default"].r == 8 and plain.peft_config["default"].init_lora_weights is True
    assert torch.allclose(logits(plain), trained, atol=1e-4)
