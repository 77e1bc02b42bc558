"""LLaMA-Factory's training features on the tiny model: optimizer switches, OFT, LLaMA Pro, train_from_scratch and
added tokens, each trained a few steps through `tunesmith train`."""

import importlib.util
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.test_train import DEMO_DATA, losses, train
from tunesmith.cli import main


def _needs(module):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"needs {module} (pip install 'tunesmith[optim]')"
    )


FULL = ("finetuning_type=full", "disable_gradient_checkpointing=true", "learning_rate=1e-3")


@pytest.mark.parametrize(
    "switch",
    [
        pytest.param(
            ("use_galore=true", "galore_rank=4", "galore_update_interval=2", "galore_scale=1.0"),
            marks=_needs("galore_torch"),
            id="galore",
        ),
        pytest.param(
            ("use_galore=true", "galore_rank=4", "galore_layerwise=true", "galore_target=q_proj,v_proj"),
            marks=_needs("galore_torch"),
            id="galore-layerwise",
        ),
        pytest.param(
            ("use_apollo=true", "apollo_rank=4", "apollo_scale=1.0", "apollo_update_interval=2"),
            marks=_needs("apollo_torch"),
            id="apollo",
        ),
        pytest.param(
            ("use_badam=true", "badam_mode=ratio", "badam_update_ratio=0.5"), marks=_needs("badam"), id="badam-ratio"
        ),
        pytest.param(("use_adam_mini=true",), marks=_needs("adam_mini"), id="adam-mini"),
        pytest.param(("use_muon=true",), id="muon"),
    ],
)
def test_optimizer_switch_trains_and_the_loss_falls(tiny_model_dir, tmp_path, switch):
    out = train(tiny_model_dir, tmp_path / "opt", *FULL, *switch, dataset="tunesmith_identity", steps=6)
    seen = losses(out)
    assert len(seen) == 6 and seen[-1] < seen[0], seen


@_needs("badam")
def test_badam_layer_mode_updates_only_the_active_block(tiny_model_dir, tmp_path):
    out = train(
        tiny_model_dir,
        tmp_path / "badam",
        *FULL,
        "use_badam=true",
        "badam_mode=layer",
        "badam_switch_mode=fixed",
        "badam_start_block=1",
        "badam_switch_interval=50",
        dataset="tunesmith_identity",
        steps=4,
    )
    seen = losses(out)
    assert seen[-1] < seen[0], seen
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    changed = {name for name in before if name in after and not torch.equal(before[name], after[name])}
    assert changed and all(".layers.1." in name for name in changed), sorted(changed)


@pytest.mark.parametrize(
    "switch, message",
    [
        (("use_galore=true",), "finetuning_type: full"),
        (("use_badam=true", "use_apollo=true", "finetuning_type=full"), "choose one optimizer switch"),
        (
            ("use_galore=true", "galore_layerwise=true", "finetuning_type=full", "gradient_accumulation_steps=2"),
            "gradient_accumulation_steps: 1",
        ),
    ],
)
def test_optimizer_switch_refusals(tiny_model_dir, tmp_path, capsys, switch, message):
    out = tmp_path / "refused"
    code = main(
        [
            "train",
            f"model_name_or_path={tiny_model_dir}",
            "dataset=tunesmith_identity",
            f"output_dir={out}",
            "max_steps=1",
            *switch,
        ]
    )
    assert code != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_oft_trains_only_its_blocks_saves_and_reloads_for_chat(tiny_model_dir, tmp_path):
    from tunesmith.config.load import load_config, run_values
    from tunesmith.infer.loader import load_for_inference
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_model_dir),
            "finetuning_type": "oft",
            "oft_block_size": 16,
            "oft_target": "q_proj,v_proj",
        },
    )
    model = load_model(config.model, config.method, load_tokenizer(config.model), lf_method=config.lf_method)
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and all(".oft_" in name for name in trainable), trainable
    assert {part for name in trainable for part in name.split(".") if part.endswith("_proj")} == {"q_proj", "v_proj"}

    out = train(
        tiny_model_dir,
        tmp_path / "oft",
        "finetuning_type=oft",
        "oft_block_size=16",
        "learning_rate=1e-2",
        dataset="tunesmith_identity",
        steps=6,
    )
    seen = losses(out)
    assert seen[-1] < seen[0], seen
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "OFT" and adapter["oft_block_size"] == 16
    assert all("oft_" in key for key in load_file(out / "adapter_model.safetensors"))
    assert not (out / "model.safetensors").exists()

    _, _, chat = load_for_inference(load_config(None, run_values(out)), place=False)
    base = load_file(tiny_model_dir / "model.safetensors")
    merged = chat.state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[name], base[name])  # the OFT rotation is merged into the weight


@_needs("bitsandbytes")
def test_qoft_trains_on_a_4bit_base(tiny_model_dir, tmp_path):
    out = train(
        tiny_model_dir,
        tmp_path / "qoft",
        "finetuning_type=oft",
        "oft_block_size=16",
        "quantization_bit=4",
        "learning_rate=1e-2",
        dataset="tunesmith_identity",
        steps=4,
    )
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "OFT"
    assert all(math.isfinite(loss) for loss in losses(out))


def test_oft_takes_rank_or_block_size(tiny_model_dir, tmp_path, capsys):
    code = main(
        [
            "train",
            f"model_name_or_path={tiny_model_dir}",
            "dataset=tunesmith_identity",
            f"dataset_dir={DEMO_DATA}",
            f"output_dir={tmp_path / 'x'}",
            "max_steps=1",
            "finetuning_type=oft",
            "oft_rank=4",
        ]
    )
    assert code != 0 and "exactly one of them non-zero" in capsys.readouterr().err


def test_llama_pro_freeze_trains_only_the_expanded_blocks(tiny_model_dirs, tmp_path):
    from tunesmith.config.load import load_config
    from tunesmith.model.load import load_model, load_tokenizer

    # LLaMA-Factory reads freeze_trainable_layers as the count of expanded blocks: the last of every count/n layers
    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_model_dirs["llama"]),
            "finetuning_type": "freeze",
            "use_llama_pro": True,
            "freeze_trainable_layers": 1,
        },
    )
    model = load_model(config.model, config.method, load_tokenizer(config.model), lf_method=config.lf_method)
    count = model.config.num_hidden_layers
    trainable = {name.split(".")[2] for name, param in model.named_parameters() if param.requires_grad}
    assert trainable == {str(count - 1)}  # one expanded block: the last one

    lora = load_config(
        None,
        {
            "model_name_or_path": str(tiny_model_dirs["llama"]),
            "use_llama_pro": True,
            "freeze_trainable_layers": 1,
            "lora_target": "q_proj",
        },
    )
    peft_model = load_model(lora.model, lora.method, load_tokenizer(lora.model), lf_method=lora.lf_method)
    wrapped = {name for name, param in peft_model.named_parameters() if param.requires_grad}
    assert wrapped and all(f".layers.{count - 1}.self_attn.q_proj." in name for name in wrapped), wrapped
    oft = load_config(
        None,
        {
            "model_name_or_path": str(tiny_model_dirs["llama"]),
            "use_llama_pro": True,
            "finetuning_type": "oft",
            "oft_block_size": 16,
            "freeze_trainable_layers": 1,
        },
    )
    oft_model = load_model(oft.model, oft.method, load_tokenizer(oft.model), lf_method=oft.lf_method)
    wrapped = {name for name, param in oft_model.named_parameters() if param.requires_grad}
    assert wrapped and all(f".layers.{count - 1}." in name for name in wrapped), wrapped

    out = train(
        tiny_model_dirs["llama"],
        tmp_path / "pro",
        "finetuning_type=freeze",
        "use_llama_pro=true",
        "freeze_trainable_layers=1",
        "learning_rate=1e-2",
        dataset="tunesmith_identity",
        steps=4,
    )
    seen = losses(out)
    assert seen[-1] < seen[0], seen


def test_llama_pro_refusals(tiny_model_dir):
    from tunesmith.config.load import load_config
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match="freeze, lora or oft"):
        load_config(None, {"finetuning_type": "full", "use_llama_pro": True})


def test_train_from_scratch_starts_from_random_weights(tiny_model_dir, tmp_path):
    from tunesmith.config.load import load_config
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(
        None, {"model_name_or_path": str(tiny_model_dir), "finetuning_type": "full", "train_from_scratch": True}
    )
    model = load_model(config.model, config.method, load_tokenizer(config.model), lf_model=config.lf_model)
    saved = load_file(tiny_model_dir / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    assert model.state_dict()[name].shape == saved[name].shape
    assert not torch.allclose(model.state_dict()[name], saved[name])

    scratch = train(
        tiny_model_dir,
        tmp_path / "scratch",
        "finetuning_type=full",
        "train_from_scratch=true",
        dataset="tunesmith_identity",
        steps=4,
    )
    loaded = train(tiny_model_dir, tmp_path / "loaded", "finetuning_type=full", dataset="tunesmith_identity", steps=4)
    assert losses(scratch)[0] != losses(loaded)[0]
    assert losses(scratch)[-1] < losses(scratch)[0]


def test_added_tokens_train_save_and_reload(tiny_model_dir, tmp_path):
    from tunesmith.config.load import load_config, run_values
    from tunesmith.infer.loader import load_for_inference

    out = train(
        tiny_model_dir,
        tmp_path / "tokens",
        "add_tokens=<alpha>,<beta>",
        "add_special_tokens=<tool>",
        dataset="tunesmith_identity",
        steps=2,
    )
    weights = load_file(out / "adapter_model.safetensors")
    assert any("embed_tokens" in key for key in weights)  # the new rows train and are saved with the adapter
    tokenizer, _, model = load_for_inference(load_config(None, run_values(out)), place=False)
    ids = tokenizer.convert_tokens_to_ids(["<alpha>", "<beta>", "<tool>"])
    assert len(set(ids)) == 3 and tokenizer.unk_token_id not in ids
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert "<tool>" in tokenizer.all_special_tokens or "<tool>" in [
        t.content for t in tokenizer.added_tokens_decoder.values()
    ]
    assert (
        tokenizer.decode(tokenizer("x <tool>", add_special_tokens=False)["input_ids"], skip_special_tokens=True).strip()
        == "x"
    )


@pytest.mark.parametrize("method", ["noise_init", "desc_init", "desc_init_w_noise"])
def test_new_special_tokens_start_as_lf_initialises_them(tiny_model_dir, method):
    from tunesmith.config.load import load_config
    from tunesmith.model.load import load_model, load_tokenizer

    config = load_config(
        None,
        {
            "model_name_or_path": str(tiny_model_dir),
            "finetuning_type": "full",
            "new_special_tokens_config": {"<plan>": "hello world"},
            "init_special_tokens": method,
        },
    )
    tokenizer = load_tokenizer(config.model, config.lf_model)
    model = load_model(config.model, config.method, tokenizer, lf_model=config.lf_model)
    weight = model.get_input_embeddings().weight.detach()
    row = weight[tokenizer.convert_tokens_to_ids("<plan>")]
    described = weight[tokenizer("hello world", add_special_tokens=False)["input_ids"]].mean(dim=0)
    if method == "desc_init":
        assert torch.allclose(row, described)
    else:  # noise of std 1/sqrt(dim) around the description's mean (or the mean of the old rows)
        assert not torch.allclose(row, described)
        assert row.std() > 0
